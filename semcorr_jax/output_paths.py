"""Checks that an output location can be written, before any work starts.

A tool that downloads, converts, matches or evaluates for minutes and then
cannot write its result has wasted the run; these checks make it fail first,
with one `SemcorrError` line naming the flag and the path:

  output = check_writable_output(args.output, '--output')   # a file
  workdir = check_writable_dir(FLAGS.workdir, '--workdir')  # a folder

Both expand `~` and return the absolute path; they create nothing (a
nameless probe file tells that the folder takes files). A file's
folder must already exist unless `make_parents=True` (then the nearest
existing ancestor must be a writable folder; the caller creates the rest).
Writing itself is atomic (`atomic_write`: a temporary file beside the
output, then `os.replace`, the temporary removed on error): these checks
cannot foresee a full disk.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from semcorr_jax.errors import SemcorrError


def _writable(directory: str) -> bool:
  """Whether files can be created in `directory` (read-only mounts too)."""
  if os.access in os.supports_effective_ids:
    allowed = os.access(directory, os.W_OK | os.X_OK, effective_ids=True)
  else:
    allowed = os.access(directory, os.W_OK | os.X_OK)
  if not allowed:
    return False
  try:  # Also what permissions do not show (e.g. /proc, some mounts).
    with tempfile.TemporaryFile(dir=directory):  # Nameless where possible.
      pass
  except OSError:
    return False
  return True


def _existing_ancestor(path: str) -> str:
  """The nearest of `path`'s ancestors that exists (as anything)."""
  parent = os.path.dirname(path)
  while not os.path.lexists(parent):
    parent = os.path.dirname(parent)
  return parent


def _check_folder(folder: str, path: str, what: str) -> None:
  """`folder`, an existing ancestor of `path`, must be a writable folder."""
  if not os.path.isdir(folder):
    raise SemcorrError(f'{what} {path}: {folder} is a file, not a folder; '
                       f'choose another {what}')
  if not _writable(folder):
    raise SemcorrError(f'{what} {path}: the folder {folder} is not writable '
                       f'(permissions or a read-only disk); choose another '
                       f'{what}')


def check_writable_output(path, what: str = '--output', *,
                          make_parents: bool = False) -> str:
  """Checks that the file `path` can be (re)written; returns it absolute.

  Args:
    path: the output file (str or PathLike; `~` is expanded).
    what: how the user named it, e.g. '--output', for the message.
    make_parents: the caller will create missing parent folders: then only
      the nearest existing ancestor must be a writable folder.

  Returns:
    The absolute path.

  Raises:
    SemcorrError: `path` is a folder, its folder is missing, is a file or is
      not writable.
  """
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if os.path.isdir(path):
    raise SemcorrError(f'{what} {path} is a folder; name the file to write '
                       'inside it')
  folder = os.path.dirname(path)
  if not make_parents and not os.path.lexists(folder):
    raise SemcorrError(f'{what} {path}: the folder {folder} does not exist; '
                       'create it first')
  if not os.path.isdir(folder):
    folder = _existing_ancestor(path)
  _check_folder(folder, path, what)
  return path


def check_writable_dir(path, what: str = '--workdir') -> str:
  """Checks that the folder `path` exists writable or can be created.

  Args:
    path: the folder (str or PathLike; `~` is expanded).
    what: how the user named it, e.g. '--workdir', for the message.

  Returns:
    The absolute path.

  Raises:
    SemcorrError: `path` is a file, or it (or, when missing, its nearest
      existing ancestor) is not a writable folder.
  """
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if os.path.lexists(path) and not os.path.isdir(path):
    raise SemcorrError(f'{what} {path} is a file, not a folder; choose '
                       f'another {what}')
  _check_folder(path if os.path.isdir(path) else _existing_ancestor(path),
                path, what)
  return path


def temporary_path(path) -> str:
  """Where `path` is written before its final rename: `.<name>.tmp` beside
  it."""
  directory, name = os.path.split(os.path.abspath(os.fspath(path)))
  return os.path.join(directory, f'.{name}.tmp')


@contextlib.contextmanager
def atomic_write(path, mode: str = 'wb', **kwargs):
  """Opens the temporary file of `path`; renamed to `path` when the block
  ends, removed (and `path` left as it was) when it raises.

  Every file the package writes goes through here, so a crash or a full
  disk never leaves half a file nor replaces a good one.
  """
  tmp = temporary_path(path)
  try:
    with open(tmp, mode, **kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise
