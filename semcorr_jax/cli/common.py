"""Shared pieces of the command-line tools: help, flags, errors, outputs.

Every tool goes through `run` (absl flags, `app.run`):

* `--help` (also `-h`, `-?`, `--helpshort`) prints the tool's module
  docstring, with its examples, and the tool's own flags with their help,
  then exits 0; `--helpfull` lists every flag (`flag_parsing`).
* `--config=sfnet:quick` names a packaged config (`config_files.resolve`).
* Flag errors are one `error:` line with the closest right answer where
  there is one: an unknown flag, a choice flag's bad value, an unknown
  config field or variant, a value a config field does not take, a config
  file that does not load (`flag_parsing.parse_flags`).
* `main` is wrapped by `main_wrapper`: any failure prints one line
  `error: <message>` on stderr and exits with status 1, without a traceback
  (`--verbose` or SEMCORR_VERBOSE=1 adds it); errors of background threads
  are one line too.

Outputs are written atomically (temporary file + rename, the temporary
removed on failure), so a failure never leaves a half-written file and never
removes one written before.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import os
import sys
import tempfile
import threading
import traceback
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
import numpy as np

from semcorr_jax import background_noise
from semcorr_jax import image_files
from semcorr_jax import output_paths
from semcorr_jax.cli import flag_parsing
from semcorr_jax.errors import SemcorrError

SKIMAGE_PREFIX = image_files.SKIMAGE_PREFIX
WARPED_SUFFIX = image_files.WARPED_SUFFIX
SKIMAGE_PHOTOS = image_files.SKIMAGE_PHOTOS
# Flag parsing and help (`flag_parsing`), shared by every tool.
parse_flags = flag_parsing.parse_flags


def hide_gpus_from_tensorflow(import_if_needed: bool = True) -> None:
  """Keeps TensorFlow (tf.data only) off the accelerators JAX uses.

  Args:
    import_if_needed: import TensorFlow to do it; False = only act when it is
      already imported (saves seconds in tools that may not need it).
  """
  if not import_if_needed and 'tensorflow' not in sys.modules:
    return
  try:
    # Optional (the `train` extra); inference runs without it.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # already initialised: nothing more to do
    pass


# Set by `run`: after the one-line error, stderr is closed so that background
# threads (e.g. Orbax reads cut short by a mismatched checkpoint) cannot add
# tracebacks while the process shuts down. Off when `main` is called in-process.
_QUIET_EXIT = False
# Where `_fail` writes while `native_stderr_held` holds fd 2 (None: stderr).
_ERROR_FD = None
# Set to 1 (or pass --verbose) to see the traceback behind an `error:` line.
VERBOSE_ENV = background_noise.VERBOSE_ENV
_HINT = f'(set {VERBOSE_ENV}=1 or pass --verbose for the traceback)'
_VERBOSE_ARGS = ('--verbose', '-verbose', '--verbose=true', '--verbose=1')
# The first line of an unexpected error is cut to this many characters.
_MAX_DETAIL = 300

if 'verbose' not in flags.FLAGS:  # every tool, once (`-v` is absl's verbosity)
  flags.DEFINE_bool('verbose', False,
                    'on failure, print the full traceback above the error '
                    f'line (as {VERBOSE_ENV}=1 does)')


def verbose() -> bool:
  """Whether failures show their traceback (--verbose or SEMCORR_VERBOSE)."""
  env = os.environ.get(VERBOSE_ENV, '').strip().lower()
  return (env not in ('', '0', 'false', 'no', 'off')
          or bool(flags.FLAGS['verbose'].value))


def run(main: Callable[[list[str]], Any]) -> None:
  """Runs an absl `main` (wrapped by `main_wrapper`) as a console tool.

  `--help` shows the docstring and flags of `main`'s module and exits 0.
  Flag errors (an unknown flag or config key, a config file that does not
  load, a bad value) are one `error:` line too (`parse_flags`), and an
  exception in a background thread is one line (`thread_excepthook`).
  """
  global _QUIET_EXIT
  _QUIET_EXIT = True
  threading.excepthook = thread_excepthook
  module = sys.modules[main.__module__]
  flag_parsing.adopt_flags(module)
  if flag_parsing.show_help_if_asked(sys.argv, module):
    sys.exit(0)
  app.run(main, flags_parser=_parse_flags_or_fail)


def _parse_flags_or_fail(argv: list[str]) -> list[str]:
  try:
    return parse_flags(argv)
  except SemcorrError as e:
    if any(a in _VERBOSE_ARGS for a in argv):
      flags.FLAGS['verbose'].value = True
    _fail(str(e), e)


def main_wrapper(main: Callable[[list[str]], Any]
                 ) -> Callable[[list[str]], Any]:
  """Turns any failure of `main` into `error: <one line>` and exit status 1.

  A `SemcorrError` (or `app.UsageError`) prints its message; an OS error
  (a full disk, permissions) its file and reason; anything else its type
  and first line, with a hint to run again with `--verbose` (or
  SEMCORR_VERBOSE=1), which prints the full traceback above the line.
  KeyboardInterrupt exits with status 130.

  Also lowers absl logging (Orbax logs every step at INFO) to warnings unless
  `--verbosity` was given.
  """

  @functools.wraps(main)
  def wrapped(argv):
    if 'verbosity' in flags.FLAGS and not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    if flags.FLAGS['verbose'].value:  # the library reads the environment
      os.environ[VERBOSE_ENV] = '1'
    try:
      return main(argv)
    except KeyboardInterrupt:
      sys.stdout.flush()
      _write_error('interrupted\n')
      sys.exit(130)
    except Exception as e:  # pylint: disable=broad-except
      _fail(error_line(e, hint=not verbose()), e)

  return wrapped


def error_line(error: BaseException, hint: bool = True) -> str:
  """The one line an error is shown as (see `main_wrapper`)."""
  if isinstance(error, (SemcorrError, app.UsageError)):
    return str(error)
  if isinstance(error, OSError) and error.strerror:
    where = f'{error.filename}: ' if error.filename else ''
    return f'{where}{error.strerror}'
  first = next((l.strip() for l in str(error).splitlines() if l.strip()), '')
  if len(first) > _MAX_DETAIL:
    first = first[:_MAX_DETAIL] + '...'
  line = f'{type(error).__name__}: {first}' if first else type(error).__name__
  return f'{line} {_HINT}' if hint else line


def thread_excepthook(args) -> None:
  """`threading.excepthook` of the tools: one `error:` line per thread that
  dies of an exception (its traceback too with --verbose)."""
  if args.exc_type is SystemExit:
    return
  if verbose():
    threading.__excepthook__(args)
  name = args.thread.name if args.thread is not None else '?'
  line = ' '.join(error_line(args.exc_value, hint=not verbose()).split())
  sys.stderr.write(f'error: in thread {name!r}: {line}\n')
  sys.stderr.flush()


def _fail(message: str, error: BaseException | None = None) -> None:
  """Prints `error: <message>` (after `error`'s traceback when verbose) and
  exits with status 1."""
  message = ' '.join(str(message).split()) or 'unknown error'
  sys.stdout.flush()
  text = f'error: {message}\n'
  if error is not None and verbose():
    text = ''.join(traceback.format_exception(error)) + text
  _write_error(text)
  if _QUIET_EXIT:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stderr.fileno())
  sys.exit(1)


def _write_error(text: str) -> None:
  """Writes to the user's stderr, also while `native_stderr_held` holds it."""
  if _ERROR_FD is not None:
    os.write(_ERROR_FD, text.encode('utf-8', 'backslashreplace'))
  else:
    sys.stderr.write(text)
    sys.stderr.flush()


@contextlib.contextmanager
def native_stderr_held():
  """Holds back everything written to fd 2 (C++ and Python) inside the block.

  On success the held output is written to stderr; on an exception it is
  dropped and fd 2 stays held, so that only `_fail`'s one line reaches the
  user (background threads of a failed Orbax restore print tracebacks while
  the checkpoint manager closes). Only active under `run` (a real process),
  and not with --verbose (everything is shown then).
  """
  global _ERROR_FD
  if not _QUIET_EXIT or verbose():
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  held = tempfile.TemporaryFile()
  os.dup2(held.fileno(), 2)
  try:
    yield
  except BaseException:
    _ERROR_FD = saved
    raise
  sys.stderr.flush()
  os.dup2(saved, 2)
  os.close(saved)
  held.seek(0)
  text = held.read().decode(errors='replace')
  held.close()
  if text:
    sys.stderr.write(text)
    sys.stderr.flush()


# --- inputs: `semcorr_jax.image_files`, shared with the Python API ------------
read_image = image_files.read_image
read_keypoints_csv = image_files.read_keypoints_csv
warp_fixed = image_files.warp_fixed


# --- outputs ------------------------------------------------------------------
# Atomic writes (temporary file + rename): `output_paths.atomic_write`.
atomic_write = output_paths.atomic_write


def save_npy(path: str, array: np.ndarray) -> str:
  """Writes `array` as .npy, atomically."""
  with atomic_write(path) as f:
    np.save(f, array)
  return path


def write_keypoints_csv(path: str, points_s: np.ndarray,
                        points_t: np.ndarray) -> str:
  """Writes `x_source,y_source,x_target,y_target` rows, atomically."""
  with atomic_write(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['x_source', 'y_source', 'x_target', 'y_target'])
    for (xs, ys), (xt, yt) in zip(points_s, points_t):
      writer.writerow([f'{xs:.6g}', f'{ys:.6g}', f'{xt:.4f}', f'{yt:.4f}'])
  return path


def run_own_flags(prog: str, module: Any,
                  flag_values: Callable[[], flags.FlagValues],
                  body: Callable[[flags.FlagValues, list[str]], Any],
                  argv: list[str] | None = None) -> int:
  """Runs a tool that keeps its flags in a FlagValues of its own (it may run
  several times in one process, beside other tools' flags).

  Args:
    prog: the tool's name, for messages.
    module: the tool's module: `--help` prints its docstring and the flags.
    flag_values: makes the tool's FlagValues.
    body: `body(values, positional arguments)` does the work.
    argv: the arguments without the program name (None: sys.argv[1:]).

  Returns:
    The exit status: 0, or 1 after one `error:` line on stderr.
  """
  argv = [prog, *(sys.argv[1:] if argv is None else argv)]
  values = flag_values()
  if flag_parsing.show_help_if_asked(argv, module, values):
    return 0
  try:
    body(values, flag_parsing.parse_flags(argv, values)[1:])
  except (SemcorrError, OSError) as e:  # OSError: a full disk, ...
    print(f'error: {" ".join(error_line(e, hint=False).split())}',
          file=sys.stderr)
    return 1
  return 0
