"""Loading `configs/<method>.py:<variant>` files from Python (tests, colabs).

The CLIs use `ml_collections.config_flags`; this is the same thing for code:

  config = config_files.load('configs/sfnet.py:quick', {'batch_size': 16})
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Mapping

import ml_collections

from semcorr_jax.errors import SemcorrError


def load(spec: str, overrides: Mapping[str, Any] | None = None
         ) -> ml_collections.ConfigDict:
  """Returns `get_config(variant)` of `path:variant`, with dotted overrides.

  Args:
    spec: 'path/to/config.py' or 'path/to/config.py:variant'.
    overrides: {'optimizer.lr': 1e-3, ...}; keys must exist in the config.
  """
  path, _, variant = spec.partition(':')
  if not os.path.isfile(path):
    raise SemcorrError(f'config file {path!r}: no such file')
  module_spec = importlib.util.spec_from_file_location(
      f'_semcorr_config_{abs(hash(path))}', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(variant) if variant else module.get_config()
  with config.unlocked():
    for key, value in (overrides or {}).items():
      *parents, leaf = key.split('.')
      node = config
      for p in parents:
        node = node[p]
      if leaf not in node:
        raise SemcorrError(f'config has no field {key!r}')
      node[leaf] = value
  return config
