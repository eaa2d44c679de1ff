"""Loading `configs/<method>.py:<variant>` files, from Python and the CLIs.

  config = config_files.load('configs/sfnet.py:quick', {'batch_size': 16})
  config = config_files.load('sfnet:quick')  # the packaged configs/sfnet.py

A spec is `FILE[:VARIANT]`. When FILE is not a file on disk and names a
packaged config (`sfnet`, `sfnet.py` or `configs/sfnet.py`), it is that file
of the `semcorr_jax.configs` subpackage: the repository's configs/ folder,
which a pip install carries as that subpackage, or, in a checkout where the
subpackage is not importable, the configs/ folder beside the package
(`resolve`). The CLIs resolve their `--config` flags the same way before
absl parses them (`semcorr_jax.cli.common.parse_flags`), so
`semcorr-train --config=sfnet:quick` works from any folder.

Loading is ml_collections' own: `config_flags.ConfigFileFlagParser` runs the
file's `get_config(variant)` exactly as `--config=FILE:VARIANT` does, and
`ConfigDict.update_from_flattened_dict` applies the dotted overrides. What
this module adds is the errors: one `SemcorrError` line naming the file,
variant or field, with the closest right answer (`did you mean ...?`,
difflib over the packaged configs, the variants the file's own error lists
or its `VARIANTS`, or the fields at the level where a key went wrong).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import re
import sys
from typing import Any, Mapping, Sequence
import warnings

import ml_collections
from ml_collections.config_flags import config_flags

from semcorr_jax.errors import SemcorrError

PACKAGE = 'semcorr_jax.configs'
# Words of a config file's variant error that are prose, not variant parts.
_PROSE = frozenset(
    'a an and as of one or the with only exists size dataset datasets stage '
    'stages row rows part unknown variant table aggregator'.split())
# ml_collections re-raises a config file's TypeError/ValueError under this
# message, with the original as its context.
_REWRAPPED = 'Error whilst parsing config file'


def configs_dir() -> str:
  """The folder of the packaged configs (`semcorr_jax.configs`).

  The repository's configs/ beside the package when the subpackage is not
  importable (a checkout whose packaging does not map it).
  """
  try:
    spec = importlib.util.find_spec(PACKAGE)
  except (ImportError, ValueError):
    spec = None
  if spec is not None and spec.submodule_search_locations:
    return list(spec.submodule_search_locations)[0]
  package = os.path.dirname(os.path.abspath(__file__))
  return os.path.join(os.path.dirname(package), 'configs')


def packaged_names() -> list[str]:
  """Names of the packaged configs, e.g. ['camnet', 'cats', ..., 'sfnet']."""
  try:
    files = os.listdir(configs_dir())
  except OSError:
    return []
  return sorted(f[:-3] for f in files
                if f.endswith('.py') and not f.startswith('_'))


def resolve(spec: str) -> str:
  """`spec` with FILE replaced by the packaged config it names, if any.

  'sfnet:quick', 'sfnet.py:quick' and 'configs/sfnet.py:quick' become
  '<configs_dir()>/sfnet.py:quick' when no such file exists where they
  point; any other spec is returned unchanged.
  """
  path, sep, variant = spec.partition(':')
  if not path or os.path.isfile(os.path.expanduser(path)):
    return spec
  folder, name = os.path.split(os.path.normpath(path))
  if folder not in ('', 'configs'):
    return spec
  if not name.endswith('.py'):
    name += '.py'
  packaged = os.path.join(configs_dir(), name)
  if not os.path.isfile(packaged):
    return spec
  return f'{packaged}{sep}{variant}'


def load(spec: str, overrides: Mapping[str, Any] | None = None
         ) -> ml_collections.ConfigDict:
  """Returns `get_config(variant)` of `FILE:VARIANT`, with dotted overrides.

  Args:
    spec: 'path/to/config.py', 'path/to/config.py:variant', or a packaged
      config: 'sfnet:quick', 'sfnet.py:quick' (`resolve`).
    overrides: {'optimizer.lr': 1e-3, ...}; keys must exist in the config.

  Raises:
    SemcorrError: a missing file, a file that does not run, an unknown
      variant (the file's own message, which lists the variants, and the
      closest one), an unknown override key (the fields where it went
      wrong and the closest one) or a value its field does not take.
  """
  path, _, variant = resolve(spec).partition(':')
  path = os.path.expanduser(path)
  if not os.path.isfile(path):
    raise SemcorrError(_no_such_file(spec.partition(':')[0]))
  config = _run_config_file(spec, path, variant)
  for key, value in (overrides or {}).items():
    missing = missing_field(config, key)
    if missing:
      raise SemcorrError(missing)
    try:
      config.update_from_flattened_dict({key: value})
    except (TypeError, ValueError, KeyError) as e:
      raise SemcorrError(f'config field {key!r} cannot be set to {value!r}: '
                         f'{value_hint(config, key, e)}') from e
  return config


def _run_config_file(spec: str, path: str, variant: str
                     ) -> ml_collections.ConfigDict:
  """`ConfigFileFlagParser(...).parse(path:variant)`, errors as one line."""
  # Each file gets its own module name: ml_collections registers the module
  # in sys.modules under `<name>_config` and a second load under the same
  # name runs in the first one's namespace (a config that loads another,
  # as camnet.py loads sfnet.py, while the CLI's --config flag holds
  # 'config_config'). Removed afterwards, as every load runs the file anew.
  digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:12]
  name = f'semcorr_config_{digest}'
  module_name = f'{name}_config'
  parser = config_flags.ConfigFileFlagParser(name=name, lock_config=False)
  sys.modules.pop(module_name, None)
  try:
    with warnings.catch_warnings():  # ml_collections uses load_module()
      warnings.filterwarnings('ignore', message='the load_module',
                              category=DeprecationWarning)
      try:
        config = parser.parse(f'{path}:{variant}' if variant else path)
      except Exception as e:  # pylint: disable=broad-except
        error = e
      else:
        error = _deferred_error(config)
    module = sys.modules.get(module_name)
  finally:
    sys.modules.pop(module_name, None)
  if error is None:
    return config
  if str(error).startswith(_REWRAPPED) and error.__context__ is not None:
    error = error.__context__
  if module is None:  # the file itself failed to run
    raise SemcorrError(f'config file {path!r} does not load: '
                       f'{_one_line(error)}') from error
  # A config built from another file (config_files.load) says what is wrong
  # after its own name; this file's name replaces it.
  detail = getattr(error, 'detail', None)
  if detail is None:
    detail = (' '.join(str(error).split())
              if isinstance(error, (ValueError, SemcorrError))
              else _one_line(error))
  raise _ConfigError(f'config {spec!r}', detail,
                     _variant_hint(variant, detail, module)) from error


def _deferred_error(config: Any) -> BaseException | None:
  """The error ml_collections keeps in place of a config (an OSError of
  the file or its get_config), raised on first use; None for a config."""
  if isinstance(config, ml_collections.ConfigDict):
    return None
  try:
    getattr(config, 'lock', None)
  except OSError as e:
    return e.__cause__ or e
  return TypeError(f'get_config() returned {type(config).__name__}, not a '
                   'ConfigDict')


def _variant_hint(variant: str, detail: str, module: Any) -> str:
  """'; did you mean 'quick,spair'?' for the unknown variant (part) that
  `detail` (the file's error) names, or ''.

  The candidates: the config file's `VARIANTS` if it declares them, and the
  words of its error after the unknown name (`unknown variant 'tst': test,
  quick or paper`).
  """
  match = re.search(r"unknown [^']*'([^']*)'", detail)
  if not match or not variant:
    return ''
  candidates = {str(v) for v in getattr(module, 'VARIANTS', ()) or ()}
  candidates.update(w for w in re.findall(r'[A-Za-z_][\w-]*',
                                          detail[match.end():])
                    if w.lower() not in _PROSE)
  if not candidates or variant in candidates:
    return ''
  bad = set(match.group(1).split(','))
  parts, changed = variant.split(','), False
  for i, part in enumerate(parts):
    if part in bad and part not in candidates:
      close = closest(part, sorted(candidates))
      if close:
        parts[i], changed = close[0], True
  return f"; {did_you_mean([','.join(parts)])}" if changed else ''


def closest(name: str, choices: Sequence[str]) -> list[str]:
  """The right answers closest to a wrong `name`, best first (or []).

  The choices `name` begins (a cut-short name: 'spair' -> 'spair71k'; up
  to 3, as 'pf' -> 'pf_pascal', 'pf_willow'), else difflib's closest one,
  case ignored.
  """
  lower = {c.lower(): c for c in choices}
  key = name.lower()
  begun = [c for c in lower if key and c.startswith(key)]
  if begun and len(begun) <= 3:
    return [lower[c] for c in begun]
  return [lower[c] for c in difflib.get_close_matches(key, list(lower), n=1)]


def did_you_mean(names: Sequence[str]) -> str:
  """"did you mean 'a'?" / "did you mean 'a' or 'b'?" ('' for none)."""
  if not names:
    return ''
  return f"did you mean {' or '.join(repr(n) for n in names)}?"


def _no_such_file(path: str) -> str:
  """'config file 'x': no such file', with the packaged configs."""
  line = f'config file {path!r}: no such file'
  names = packaged_names()
  if not names:
    return line
  stem = os.path.basename(path)
  stem = stem[:-3] if stem.endswith('.py') else stem
  close = closest(stem, names)
  hint = f'; {did_you_mean(close)}' if close else ''
  return f'{line}{hint} (packaged configs: {", ".join(names)})'


def missing_field(config: ml_collections.ConfigDict, key: str) -> str | None:
  """None if the dotted `key` names a field of `config`, else one line
  naming it, the closest key and the fields where it went wrong."""
  node, done = config, []
  for part in key.split('.'):
    fields = (sorted(node.keys())
              if isinstance(node, (ml_collections.ConfigDict, dict)) else None)
    if fields is None or part not in fields:
      where = f'{".".join(done)!r}' if done else 'the config'
      if fields is None:
        return (f'config has no field {key!r}: {where} is a value, not a '
                'group of fields')
      rest = key.split('.')[len(done) + 1:]
      close = ['.'.join(done + [c] + rest) for c in closest(part, fields)]
      hint = f' {did_you_mean(close)}' if close else ''
      return (f'config has no field {key!r};{hint} {where} has: '
              f'{", ".join(fields)}')
    node = node[part]
    done.append(part)
  return None


def field_value(config: ml_collections.ConfigDict, key: str) -> Any:
  """The value of the dotted `key` (which must exist: `missing_field`)."""
  node = config
  for part in key.split('.'):
    node = node[part]
  return node


def value_hint(config: ml_collections.ConfigDict, key: str,
               error: BaseException) -> str:
  """Why a value does not fit the field `key`: the type the field takes and
  its current value (e.g. 'it takes int values, like its 8'), or the
  error's own words when the field's type says nothing."""
  current = field_value(config, key)
  if isinstance(error, TypeError) and isinstance(
      current, (bool, int, float, str, tuple, list)):
    return (f'it takes {type(current).__name__} values, like its '
            f'{current!r}')
  return ' '.join(str(error).split())


class _ConfigError(SemcorrError):
  """`<where>: <detail><hint>`, the detail kept for configs built from
  others (which add their own hint)."""

  def __init__(self, where: str, detail: str, hint: str = ''):
    super().__init__(f'{where}: {detail}{hint}')
    self.detail = detail


def _one_line(error: BaseException) -> str:
  """`Type: first line` of an error."""
  first = next((l.strip() for l in str(error).splitlines() if l.strip()), '')
  return f'{type(error).__name__}: {first}' if first else type(error).__name__
