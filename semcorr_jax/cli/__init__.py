"""Thin absl command-line tools (console scripts declared in pyproject.toml).

* `semcorr-train` (`cli.train`): train a method from a config.
* `semcorr-eval` (`cli.evaluate`): score a trained workdir beside its
  untrained twin on a benchmark; JSON + Markdown + pictures in workdir/eval.
* `semcorr-match` (`cli.match`): match two image files with a trained model.

User errors print one line `error: <message>` and exit with status 1
(`cli.common.main_wrapper`).
"""
