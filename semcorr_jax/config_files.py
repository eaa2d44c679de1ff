"""Loading `configs/<method>.py:<variant>` files from Python (tests, colabs).

The CLIs use `ml_collections.config_flags`; this is the same thing for code:

  config = config_files.load('configs/sfnet.py:quick', {'batch_size': 16})
"""

from __future__ import annotations

import importlib.machinery
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

  Raises:
    SemcorrError: a missing file, a file that does not run, an unknown
      variant (with the file's own message, which lists the variants) or an
      unknown override key (listing the fields where it went wrong).
  """
  path, _, variant = spec.partition(':')
  if not os.path.isfile(path):
    raise SemcorrError(f'config file {path!r}: no such file')
  name = f'_semcorr_config_{abs(hash(path))}'
  try:
    loader = importlib.machinery.SourceFileLoader(name, path)
    module = importlib.util.module_from_spec(
        importlib.util.spec_from_file_location(name, path, loader=loader))
    loader.exec_module(module)
    get_config = module.get_config
  except Exception as e:  # pylint: disable=broad-except
    raise SemcorrError(f'config file {path!r} does not load: '
                       f'{_one_line(e)}') from e
  try:
    config = get_config(variant) if variant else get_config()
  except Exception as e:  # pylint: disable=broad-except
    # A config built from another file (config_files.load) says what is
    # wrong after its own name; this file's name replaces it.
    detail = getattr(e, 'detail', None)
    if detail is None:
      detail = (' '.join(str(e).split())
                if isinstance(e, (ValueError, SemcorrError)) else _one_line(e))
    raise _ConfigError(f'config {spec!r}', detail) from e
  with config.unlocked():
    for key, value in (overrides or {}).items():
      missing = missing_field(config, key)
      if missing:
        raise SemcorrError(missing)
      *parents, leaf = key.split('.')
      node = config
      for p in parents:
        node = node[p]
      node[leaf] = value
  return config


def missing_field(config: ml_collections.ConfigDict, key: str) -> str | None:
  """None if the dotted `key` names a field of `config`, else one line
  naming it and the fields where it went wrong."""
  node, done = config, []
  for part in key.split('.'):
    fields = (sorted(node.keys())
              if isinstance(node, (ml_collections.ConfigDict, dict)) else None)
    if fields is None or part not in fields:
      where = f'{".".join(done)!r}' if done else 'the config'
      if fields is None:
        return (f'config has no field {key!r}: {where} is a value, not a '
                'group of fields')
      return (f'config has no field {key!r}; {where} has: '
              f'{", ".join(fields)}')
    node = node[part]
    done.append(part)
  return None


class _ConfigError(SemcorrError):
  """`<where>: <detail>`, the detail kept for configs built from others."""

  def __init__(self, where: str, detail: str):
    super().__init__(f'{where}: {detail}')
    self.detail = detail


def _one_line(error: BaseException) -> str:
  """`Type: first line` of an error."""
  first = next((l.strip() for l in str(error).splitlines() if l.strip()), '')
  return f'{type(error).__name__}: {first}' if first else type(error).__name__
