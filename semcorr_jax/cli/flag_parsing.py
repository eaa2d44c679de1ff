"""Flags of the command-line tools: help, packaged configs, one-line errors.

* `show_help_if_asked`: `--help` (also `-h`, `-?`, `--helpshort`) prints the
  tool's module docstring, with its examples, and the tool's own flags with
  their help; `--helpfull` every flag of every library. absl's own short
  help lists the key flags of `__main__`, which for a console script is the
  wrapper pip generates and defines none: `adopt_flags` registers the
  tool's flags as key flags of that module too.
* `parse_flags`: absl's parse, after resolving a config file flag's
  packaged config (`--config=sfnet:quick`; `config_files.resolve`), with
  every error as one `SemcorrError` line: an unknown flag; a choice flag's
  bad value (the values and the closest one); an unknown config field or
  variant (the closest one); a value a config field does not take (its type
  and current value); a config file that does not load.

`semcorr_jax.cli.common.run` uses both for every tool.
"""

from __future__ import annotations

import re
import shlex
import sys
import types
from typing import Any, Sequence
import warnings

from absl import app
from absl import flags
import ml_collections
from ml_collections.config_flags import config_flags as config_file_flags

from semcorr_jax import config_files
from semcorr_jax.errors import SemcorrError

# Arguments that ask for help: the tool's flags, or every flag.
HELP_ARGS = ('-h', '-?', '--help', '-help', '--helpshort', '-helpshort')
HELPFULL_ARGS = ('--helpfull', '-helpfull')
# Flags defined by modules of this package are the tools' own (the tool's
# module, common's --verbose, the importers' release_workdir).
_PACKAGE = 'semcorr_jax.'


# --- help ---------------------------------------------------------------------
def _module_key(module: types.ModuleType) -> str:
  """The name absl files `module`'s flags under (sys.argv[0] for
  `__main__`, as absl does)."""
  return sys.argv[0] if module.__name__ == '__main__' else module.__name__


def tool_flags(module: types.ModuleType,
               flag_values: flags.FlagValues = flags.FLAGS
               ) -> list[flags.Flag]:
  """The flags of the tool in `module`: its own first, then those the
  package's shared modules define for it (e.g. --verbose), each once."""
  by_module = flag_values.flags_by_module_dict()
  key = _module_key(module)
  found = list(by_module.get(key, []))
  for name, defined in by_module.items():
    if name != key and name.startswith(_PACKAGE):
      found.extend(defined)
  unique = []
  for flag in found:
    if flag not in unique:
      unique.append(flag)
  return unique


def adopt_flags(module: types.ModuleType,
                flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Registers the tool's flags as key flags of the main module.

  absl's short help (`app.usage`, `FlagValues.main_module_help`) lists the
  key flags of `sys.argv[0]`'s module; a console script's `__main__` is the
  wrapper pip generates, which defines none.
  """
  for flag in tool_flags(module, flag_values):
    flag_values.register_key_flag_for_module(sys.argv[0], flag)


def help_requested(argv: list[str]) -> str | None:
  """'short' or 'full' if `argv` (program first) asks for help, else None.

  Arguments after `--` are not flags.
  """
  for arg in argv[1:]:
    if arg == '--':
      break
    if arg in HELPFULL_ARGS:
      return 'full'
    if arg in HELP_ARGS:
      return 'short'
  return None


def help_text(module: types.ModuleType,
              flag_values: flags.FlagValues = flags.FLAGS,
              full: bool = False) -> str:
  """The tool's module docstring and its flags (every flag when `full`)."""
  doc = (module.__doc__ or f'USAGE: {sys.argv[0]} [flags]').strip('\n')
  if full:
    listing = flag_values.get_help()
  else:
    key = _module_key(module)
    for flag in tool_flags(module, flag_values):
      flag_values.register_key_flag_for_module(key, flag)
    listing = flag_values.module_help(key).strip('\n')
    header = f'{key}:'
    if listing.startswith(header):  # absl heads the list with the module
      listing = listing[len(header):]
  listing = listing.strip('\n')
  text = f'{doc}\n\nflags:\n{listing}\n'
  if not full:
    text += '\nTry --helpfull to get a list of all flags.\n'
  return text


def show_help_if_asked(argv: list[str], module: types.ModuleType,
                       flag_values: flags.FlagValues = flags.FLAGS) -> bool:
  """Prints `help_text` on stdout if `argv` asks for help; says whether."""
  asked = help_requested(argv)
  if asked is None:
    return False
  if asked == 'full' and flag_values is flags.FLAGS:
    app.define_help_flags()  # listed with the others, as absl does
  try:
    sys.stdout.write(help_text(module, flag_values, full=asked == 'full'))
    sys.stdout.flush()
  except BrokenPipeError:  # `semcorr-train --help | head`
    pass
  return True


# --- parsing ------------------------------------------------------------------
def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS
                ) -> list[str]:
  """Parses `argv` into `flag_values` as absl does; returns the rest.

  A config file flag's packaged config (`--config=sfnet:quick`) is resolved
  to its file first (`config_files.resolve`).

  Raises:
    SemcorrError: one line for any flag error, naming the flag; for a
      choice flag, its values and the closest one; for a config file flag
      (ml_collections): a missing file, a file that does not run, an
      unknown variant or override key (the closest one, and the file's
      variants or the fields where it went wrong), or a value the field
      does not take (its type and current value).
  """
  try:
    with warnings.catch_warnings():  # ml_collections uses load_module()
      warnings.filterwarnings('ignore', message='the load_module',
                              category=DeprecationWarning)
      rest = flag_values(resolve_config_specs(argv, flag_values))
  except Exception as e:  # pylint: disable=broad-except
    raise SemcorrError(_config_error_line(argv, flag_values) or
                       _flag_error_line(e, argv, flag_values)) from e
  for name, _, _ in _config_flag_args(argv, flag_values):
    value = flag_values[name].value
    if value is not None and not isinstance(value, ml_collections.ConfigDict):
      # ml_collections defers a missing file's error to the first use.
      line = _config_error_line(argv, flag_values)
      if line:
        raise SemcorrError(line)
  return rest


def resolve_config_specs(argv: list[str],
                         flag_values: flags.FlagValues = flags.FLAGS
                         ) -> list[str]:
  """`argv` with each config file flag's FILE resolved to the packaged
  config it names (`--config=sfnet:quick` -> `--config=<the package's
  configs>/sfnet.py:quick`); other arguments unchanged."""
  names = _config_flag_names(flag_values)
  out, i = list(argv), 0
  while i < len(out):
    arg = out[i]
    if arg == '--':
      break
    head, eq, value = arg.lstrip('-').partition('=')
    if arg.startswith('-') and head in names:
      if eq:
        out[i] = f'{arg[:len(arg) - len(value)]}{config_files.resolve(value)}'
      elif i + 1 < len(out):
        out[i + 1] = config_files.resolve(out[i + 1])
        i += 1
    i += 1
  return out


def _config_flag_names(flag_values: flags.FlagValues) -> list[str]:
  """Names of the config file flags (ml_collections' DEFINE_config_file)."""
  return [name for name in list(flag_values)
          if name == flag_values[name].name and isinstance(
              flag_values[name].parser, config_file_flags.ConfigFileFlagParser)]


def _config_error_line(argv: list[str], flag_values: flags.FlagValues
                       ) -> str:
  """What is wrong with the config files and keys on the command line, in
  one line ('' when they load)."""
  for name, spec, keys in _config_flag_args(argv, flag_values):
    try:
      config = config_files.load(spec)
    except SemcorrError as e:
      return f'--{name}: {e}'
    for key in keys:
      missing = config_files.missing_field(config, key)
      if missing:
        return f'--{name}: {missing}'
  return ''


def _flag_error_line(error: Exception, argv: list[str],
                     flag_values: flags.FlagValues) -> str:
  """One line for any other error raised while flags parse."""
  if isinstance(error, flags.UnrecognizedFlagError):
    name = error.flagname
    close = [f'--{c}' for c in config_files.closest(name, list(flag_values))]
    hint = (f'; {config_files.did_you_mean(close)}' if close
            else '; see --helpshort')
    return f'Unknown command line flag {name!r}{hint}'
  text = ' '.join(str(error).split())
  bad = re.match(r'flag --([^=\s]+)=(.*?): (.*)$', text)
  if bad and bad.group(1) in flag_values:
    name, value, reason = bad.groups()
    flag = flag_values[name]
    if isinstance(flag.parser, flags.EnumParser):
      return choice_error_line(f'--{name}={value}', value,
                               flag.parser.enum_values)
    line = _config_value_error_line(name, value, reason, argv, flag_values)
    if line:
      return line
  if 'Traceback (most recent call last)' in str(error):  # a config's error
    lines = [l.strip() for l in str(error).splitlines() if l.strip()]
    text = f'{lines[0]} {lines[-1]}'
  if not isinstance(error, flags.Error):
    text = f'{type(error).__name__}: {text}'
  return f'{text}; see --helpshort'


def choice_error_line(what: str, value: str, choices: Sequence[str]) -> str:
  """`<what>: not one of a, b, c; did you mean 'b'?` (the closest choice)."""
  line = f'{what}: not one of {", ".join(choices)}'
  close = config_files.closest(value, choices)
  return f'{line}; {config_files.did_you_mean(close)}' if close else line


def _config_value_error_line(name: str, value: str, reason: str,
                             argv: list[str], flag_values: flags.FlagValues
                             ) -> str:
  """For `--config.field=value` that the field does not take: the reason,
  the field's type and an example with its current value ('' otherwise)."""
  for config_name, spec, _ in _config_flag_args(argv, flag_values):
    if not name.startswith(f'{config_name}.'):
      continue
    key = name[len(config_name) + 1:]
    try:
      config = config_files.load(spec)
    except SemcorrError:
      return ''
    if config_files.missing_field(config, key):
      return ''
    current = config_files.field_value(config, key)
    shown = shlex.quote(str(current))  # e.g. '(64, 64)' for a tuple
    return (f'--{name}={value}: {reason}; config.{key} takes '
            f'{type(current).__name__} values, e.g. --{name}={shown} (its '
            f'value in {spec})')
  return ''


def _config_flag_args(argv: list[str], flag_values: flags.FlagValues
                      ) -> list[tuple[str, str, list[str]]]:
  """(name, 'file:variant', [override keys]) of each config file flag given
  on the command line (`--name=spec` or `--name spec`)."""
  found = []
  for name in _config_flag_names(flag_values):
    spec, keys = None, []
    for i, arg in enumerate(argv):
      if arg == '--':
        break
      if not arg.startswith('-'):
        continue
      head, eq, value = arg.lstrip('-').partition('=')
      if head == name:
        spec = value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
      elif head.startswith(f'{name}.'):
        keys.append(head[len(name) + 1:])
    if spec:
      found.append((name, spec, keys))
  return found


# --- values of comma-separated flags ------------------------------------------
def number_list(flag: str, text: str | None, cast, expected: str
                ) -> tuple[Any, ...] | None:
  """'a,b,...' -> tuple of `cast` values (None when the flag is unset).

  Raises:
    SemcorrError: `--<flag>=<text>: expected <expected>` when a value does
      not convert or there is none.
  """
  if text is None:
    return None
  try:
    values = tuple(cast(v) for v in text.split(',') if v.strip())
  except ValueError:
    values = ()
  if not values:
    raise SemcorrError(f'--{flag}={text!r}: expected {expected}')
  return values


def size_pair(flag: str, text: str | None) -> tuple[int, int] | None:
  """'H,W' or 'N' (-> N,N) -> (H, W), both >= 2 (None when unset)."""
  values = number_list(flag, text, int, 'H,W or N, e.g. 288,288')
  if values is not None and len(values) == 1:
    values = values * 2
  if values is not None and (len(values) != 2 or min(values) < 2):
    raise SemcorrError(f'--{flag}={text!r}: expected H,W or N (>= 2), '
                       'e.g. 288,288')
  return values


def name_list(flag: str, text: str | None) -> list[str] | None:
  """'a,b' -> ['a', 'b'] (None when unset; blank names dropped)."""
  if text is None:
    return None
  names = [n.strip() for n in text.split(',') if n.strip()]
  if not names:
    raise SemcorrError(f'--{flag}={text!r}: expected names separated by '
                       'commas')
  return names
