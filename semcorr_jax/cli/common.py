"""Shared pieces of the command-line tools: error handling, inputs, outputs.

Every tool's `main` is wrapped by `main_wrapper`: a `SemcorrError` (or an OS
error such as a full disk) prints one line `error: <message>` on stderr and
exits with status 1, without a traceback. Outputs are written atomically
(temporary file + rename), so a failure never leaves a half-written file and
never removes one written before.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import os
import sys
import tempfile
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError
import skimage.data
from skimage import transform

from semcorr_jax.errors import SemcorrError

SKIMAGE_PREFIX = 'skimage:'
WARPED_SUFFIX = '_warped'
SKIMAGE_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'retina',
                  'immunohistochemistry', 'hubble_deep_field', 'camera')


def hide_gpus_from_tensorflow(import_if_needed: bool = True) -> None:
  """Keeps TensorFlow (tf.data only) off the accelerators JAX uses.

  Args:
    import_if_needed: import TensorFlow to do it; False = only act when it is
      already imported (saves seconds in tools that may not need it).
  """
  if not import_if_needed and 'tensorflow' not in sys.modules:
    return
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError:  # pragma: no cover
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


def run(main: Callable[[list[str]], Any]) -> None:
  """Runs an absl `main` (wrapped by `main_wrapper`) as a console tool."""
  global _QUIET_EXIT
  _QUIET_EXIT = True
  app.run(main)


def main_wrapper(main: Callable[[list[str]], Any]
                 ) -> Callable[[list[str]], Any]:
  """Turns user errors of `main` into `error: <message>` and exit status 1.

  Also lowers absl logging (Orbax logs every step at INFO) to warnings unless
  `--verbosity` was given.
  """

  @functools.wraps(main)
  def wrapped(argv):
    if 'verbosity' in flags.FLAGS and not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    try:
      return main(argv)
    except SemcorrError as e:
      _fail(str(e))
    except OSError as e:  # disk full, permissions, ...: not a bug of ours
      where = f'{e.filename}: ' if e.filename else ''
      _fail(f'{where}{e.strerror or e}')
    except KeyboardInterrupt:
      print('interrupted', file=sys.stderr)
      sys.exit(130)

  return wrapped


def _fail(message: str) -> None:
  message = ' '.join(str(message).split()) or 'unknown error'
  sys.stdout.flush()
  if _ERROR_FD is not None:
    os.write(_ERROR_FD, f'error: {message}\n'.encode())
  else:
    print(f'error: {message}', file=sys.stderr, flush=True)
  if _QUIET_EXIT:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stderr.fileno())
  sys.exit(1)


@contextlib.contextmanager
def native_stderr_held():
  """Holds back everything written to fd 2 (C++ and Python) inside the block.

  On success the held output is written to stderr; on an exception it is
  dropped and fd 2 stays held, so that only `_fail`'s one line reaches the
  user (background threads of a failed Orbax restore print tracebacks while
  the checkpoint manager closes). Only active under `run` (a real process).
  """
  global _ERROR_FD
  if not _QUIET_EXIT:
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


# --- inputs -------------------------------------------------------------------
def _skimage_photo(spec: str) -> np.ndarray:
  """`skimage:<name>` or `skimage:<name>_warped` -> (H, W, 3) uint8."""
  name = spec[len(SKIMAGE_PREFIX):]
  warped = name.endswith(WARPED_SUFFIX)
  if warped:
    name = name[:-len(WARPED_SUFFIX)]
  known = set(getattr(skimage.data, '__all__', ())) - {'download_all'}
  loader = getattr(skimage.data, name, None) if name in known else None
  hint = (f"bundled photos include {', '.join(SKIMAGE_PHOTOS)}; add "
          f"'{WARPED_SUFFIX}' for a fixed affine warp, e.g. skimage:chelsea"
          f'{WARPED_SUFFIX}')
  if not callable(loader):
    raise SemcorrError(f'{spec}: no scikit-image photo {name!r}; {hint}')
  try:
    image = np.asarray(loader())
  except Exception as e:  # pylint: disable=broad-except
    raise SemcorrError(f'{spec}: cannot load it ({type(e).__name__}); '
                       f'{hint}') from e
  if image.dtype != np.uint8 or not (
      image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
    raise SemcorrError(f'{spec} is not a photo (shape {image.shape}, dtype '
                       f'{image.dtype}); {hint}')
  image = _to_rgb(image)
  return warp_fixed(image) if warped else image


def _to_rgb(image: np.ndarray) -> np.ndarray:
  if image.ndim == 2:
    image = np.stack([image] * 3, axis=-1)
  return np.ascontiguousarray(image[..., :3])


def warp_fixed(image: np.ndarray, degrees: float = 8.0) -> np.ndarray:
  """A fixed affine warp: rotation about the centre plus the zoom that keeps
  the whole output inside the photo (so no border or edge streaks).

  Used for `skimage:<name>_warped`, a second view of a bundled photo for
  demos.
  """
  h, w = image.shape[:2]
  c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
  zoom = 1.02 * max((w * c + h * s) / w, (w * s + h * c) / h)
  centre = np.array([w / 2.0, h / 2.0])
  move = (transform.AffineTransform(translation=-centre) +
          transform.AffineTransform(scale=zoom, rotation=np.deg2rad(degrees))
          + transform.AffineTransform(translation=centre))
  out = transform.warp(image, move.inverse, mode='edge', preserve_range=True)
  return np.round(out).astype(np.uint8)


def read_image(spec: str, what: str = 'image') -> np.ndarray:
  """Reads a photo file (any format Pillow reads) or `skimage:<name>`.

  Args:
    spec: a file path, `skimage:<name>` (a photo bundled with scikit-image,
      e.g. `skimage:chelsea`) or `skimage:<name>_warped`.
    what: the flag it came from, for messages.

  Returns:
    (H, W, 3) uint8 RGB.

  Raises:
    SemcorrError: missing file, unreadable or corrupt image.
  """
  if not spec:
    raise SemcorrError(f'no {what} given')
  if spec.startswith(SKIMAGE_PREFIX):
    return _skimage_photo(spec)
  if not os.path.exists(spec):
    raise SemcorrError(f'{what} {spec!r}: no such file')
  if os.path.isdir(spec):
    raise SemcorrError(f'{what} {spec!r} is a folder, not an image file')
  try:
    with Image.open(spec) as im:
      im.load()  # decode now: truncated files fail here, not later
      image = np.asarray(im.convert('RGB'))
  except UnidentifiedImageError as e:
    raise SemcorrError(f'{what} {spec!r} is corrupt or not an image '
                       '(Pillow cannot identify it)') from e
  except (OSError, ValueError, SyntaxError) as e:
    raise SemcorrError(f'{what} {spec!r} is corrupt or unreadable: '
                       f'{" ".join(str(e).split())}') from e
  if image.shape[0] < 2 or image.shape[1] < 2:
    raise SemcorrError(f'{what} {spec!r} is too small ({image.shape[1]}x'
                       f'{image.shape[0]} pixels)')
  return image


def read_keypoints_csv(path: str) -> np.ndarray:
  """Reads keypoints `x,y` per row; an optional header row is skipped.

  With a header that names columns `x` and `y` those columns are used,
  otherwise the first two. Blank lines are ignored.

  Returns:
    (N, 2) float64 (x, y) in pixels, N >= 1.

  Raises:
    SemcorrError: missing file, a non-numeric or short row, no points.
  """
  if not os.path.isfile(path):
    raise SemcorrError(f'keypoints {path!r}: no such file')
  try:
    with open(path, newline='') as f:
      rows = [(i + 1, r) for i, r in enumerate(csv.reader(f))
              if any(c.strip() for c in r)]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise SemcorrError(f'keypoints {path!r}: cannot read it ({e})') from e
  cols = (0, 1)
  if rows and not _is_number(rows[0][1][0]):
    header = [c.strip().lower() for c in rows[0][1]]
    if 'x' in header and 'y' in header:
      cols = (header.index('x'), header.index('y'))
    rows = rows[1:]
  points = []
  for line, row in rows:
    try:
      points.append([float(row[cols[0]]), float(row[cols[1]])])
    except (IndexError, ValueError) as e:
      raise SemcorrError(f'keypoints {path!r} line {line}: expected two '
                         f'numbers x,y, got {",".join(row)!r}') from e
  points = np.asarray(points, np.float64).reshape(-1, 2)
  if points.shape[0] == 0:
    raise SemcorrError(f'keypoints {path!r} holds no points (rows x,y)')
  if not np.all(np.isfinite(points)):
    raise SemcorrError(f'keypoints {path!r} has NaN or infinite values')
  return points


def _is_number(text: str) -> bool:
  try:
    float(text)
    return True
  except ValueError:
    return False


# --- outputs ------------------------------------------------------------------
def atomic_path(path: str) -> str:
  """The temporary name a file is written to before the final rename."""
  directory, name = os.path.split(os.path.abspath(path))
  return os.path.join(directory, f'.{name}.tmp')


def save_npy(path: str, array: np.ndarray) -> str:
  """Writes `array` as .npy, atomically."""
  tmp = atomic_path(path)
  with open(tmp, 'wb') as f:
    np.save(f, array)
  os.replace(tmp, path)
  return path


def write_keypoints_csv(path: str, points_s: np.ndarray,
                        points_t: np.ndarray) -> str:
  """Writes `x_source,y_source,x_target,y_target` rows, atomically."""
  tmp = atomic_path(path)
  with open(tmp, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['x_source', 'y_source', 'x_target', 'y_target'])
    for (xs, ys), (xt, yt) in zip(points_s, points_t):
      writer.writerow([f'{xs:.6g}', f'{ys:.6g}', f'{xt:.4f}', f'{yt:.4f}'])
  os.replace(tmp, path)
  return path
