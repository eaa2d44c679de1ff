"""The method configs, shipped inside the package as `semcorr_jax.configs`.

This folder is the repository's `configs/` and, in an installed package (a
wheel or an editable install), the subpackage `semcorr_jax.configs`:
`[tool.setuptools.package-dir]` in pyproject.toml maps one onto the other,
so that a pip-installed package has its configs too:

  from semcorr_jax.configs import sfnet
  config = sfnet.get_config('quick')

Each module has `get_config(variant)`. The command-line tools read them as
`--config=sfnet:quick` (the packaged file, from any folder) or
`--config=configs/sfnet.py:quick` (a file on disk).
"""
