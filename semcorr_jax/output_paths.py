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

Paths with a scheme (`gs://bucket/run`, any `etils.epath` URI) are
remote: they are read and written through `etils.epath.Path`, as Orbax
does. For them the checks are what a listing shows: the bucket exists
and can be reached (credentials), a file is not a folder nor the other
way round. Permissions are not probed (that would write and delete an
object): a store that refuses writes fails at the first one. Object
stores have no folders to create (a prefix exists once an object is
under it) and no rename (a rename is a copy and a delete), so
`atomic_write` keeps the whole content in memory and uploads it in one
request when the block ends: a GCS or S3 upload is all-or-nothing, so a
reader sees the old object or the new one, and a failed block uploads
nothing.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile

from etils import epath

from semcorr_jax.errors import SemcorrError


def is_remote(path) -> bool:
  """Whether `path` is a URI (`gs://...`, `s3://...`): no `os` calls work
  on it, only `etils.epath`."""
  return '://' in os.fspath(path)


def absolute(path) -> str:
  """A local path made absolute (`os.path.abspath`); a URI as given (less a
  trailing '/')."""
  path = os.fspath(path)
  if is_remote(path):
    scheme, rest = path.split('://', 1)
    return f'{scheme}://{rest.rstrip("/")}'
  return os.path.abspath(path)


def resolve(path) -> str:
  """`absolute`, with a local path's `~` expanded first (for paths a user
  typed)."""
  path = os.fspath(path)
  return absolute(path if is_remote(path) else os.path.expanduser(path))


def as_path(path) -> epath.Path:
  """`path` (str or PathLike, local or a URI) as an `etils.epath.Path`."""
  return epath.Path(absolute(path))


def _remote_kind(path: str, what: str) -> str:
  """'file', 'folder' or 'none' for a URI; checks the bucket first.

  Raises:
    SemcorrError: the bucket is missing or cannot be reached (credentials,
      network, no client library for the scheme).
  """
  scheme, rest = path.split('://', 1)
  bucket = f'{scheme}://{rest.split("/", 1)[0]}'
  try:
    if not epath.Path(bucket).exists():
      raise SemcorrError(f'{what} {path}: the bucket {bucket} does not exist '
                         f'(or is not visible to these credentials)')
    target = epath.Path(path)
    if target.is_dir():
      return 'folder'
    return 'file' if target.exists() else 'none'
  except SemcorrError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise SemcorrError(
        f'{what} {path}: cannot reach {bucket} ({type(e).__name__}: '
        f'{" ".join(str(e).split())[:200]}); check the credentials, the '
        f'network and that the client library for {scheme}:// is installed '
        '(gcsfs for gs://)') from e


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
      not writable; for a URI: a folder, or a bucket that is missing or
      cannot be reached (`_remote_kind`).
  """
  path = resolve(path)
  if is_remote(path):
    if _remote_kind(path, what) == 'folder':
      raise SemcorrError(f'{what} {path} is a folder; name the file to write '
                         'inside it')
    return path
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
      existing ancestor) is not a writable folder; for a URI: a file, or a
      bucket that is missing or cannot be reached (`_remote_kind`).
  """
  path = resolve(path)
  if is_remote(path):
    if _remote_kind(path, what) == 'file':
      raise SemcorrError(f'{what} {path} is a file, not a folder; choose '
                         f'another {what}')
    return path
  if os.path.lexists(path) and not os.path.isdir(path):
    raise SemcorrError(f'{what} {path} is a file, not a folder; choose '
                       f'another {what}')
  _check_folder(path if os.path.isdir(path) else _existing_ancestor(path),
                path, what)
  return path


def temporary_path(path) -> str:
  """Where `path` is written before its final rename: `.<name>.tmp` beside
  it."""
  directory, name = os.path.split(absolute(path))
  return os.path.join(directory, f'.{name}.tmp')


def _encode(text: str, kwargs) -> bytes:
  return text.encode(kwargs.get('encoding') or 'utf-8')


@contextlib.contextmanager
def atomic_write(path, mode: str = 'wb', **kwargs):
  """Opens the temporary file of `path`; renamed to `path` when the block
  ends, removed (and `path` left as it was) when it raises.

  Every file the package writes goes through here, so a crash or a full
  disk never leaves half a file nor replaces a good one. A URI gets an
  in-memory file instead, uploaded in one request when the block ends
  (nothing is uploaded when it raises): object stores replace an object
  whole or not at all.
  """
  if is_remote(path):
    buffer = io.BytesIO() if 'b' in mode else io.StringIO()
    yield buffer
    data = buffer.getvalue()
    as_path(path).write_bytes(data if 'b' in mode else _encode(data, kwargs))
    return
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


def replace(src, dst) -> None:
  """Renames `src` to `dst`, replacing it: `os.replace` locally (atomic);
  on an object store a copy then a delete, each object whole."""
  if is_remote(src) or is_remote(dst):
    as_path(src).replace(as_path(dst))
  else:
    os.replace(src, dst)


def remove(path) -> None:
  """Removes the file `path` if it exists."""
  with contextlib.suppress(FileNotFoundError):
    if is_remote(path):
      as_path(path).unlink()
    else:
      os.remove(path)


def makedirs(path) -> None:
  """Creates the folder `path` and its parents; nothing on an object store,
  where a folder is the prefix of the objects written under it."""
  if not is_remote(path):
    os.makedirs(path, exist_ok=True)


def append_text(path, text: str) -> None:
  """Appends `text` to the file `path` (created if missing).

  Locally an append (`open(path, 'a')`). Object stores cannot append: the
  object is read and uploaded again whole, so a reader sees it with or
  without `text`, never half of it (each call costs a read and a write of
  the whole object: for small, growing files such as logs).
  """
  if not is_remote(path):
    with open(path, 'a', encoding='utf-8') as f:
      f.write(text)
    return
  target = as_path(path)
  try:
    old = target.read_bytes()
  except FileNotFoundError:
    old = b''
  target.write_bytes(old + text.encode('utf-8'))
