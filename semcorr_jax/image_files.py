"""Image and keypoint files, read the same way by the CLIs and the Python API.

Images (`read_image`): any file Pillow reads (its first frame), or
`skimage:<name>`, a photo bundled with scikit-image (`skimage:<name>_warped`:
the same photo under a fixed affine warp). Every image becomes (H, W, 3)
uint8 RGB:

* the EXIF orientation is applied, so the image is upright as photo viewers
  show it, and keypoints refer to that upright image;
* 16-bit (and 32-bit integer) grey images are scaled by their bit depth
  (65535 -> 255), never clipped;
* float images (e.g. TIFF mode 'F') must hold values in [0, 1], scaled by 255;
* transparency (an alpha channel or a transparent palette entry) is flattened
  onto white; grey, palette and CMYK images are converted by Pillow;
* images of more pixels than `PIL.Image.MAX_IMAGE_PIXELS` (Pillow's guard
  against decompression bombs, 89,478,485 by default) are refused.

Keypoints (`read_keypoints_csv`): one point per row, x and y in pixels of the
(upright) image. See its docstring for the accepted spreadsheet dialects.

Paths may be str, bytes or os.PathLike; names that are not valid UTF-8 are
read as they are and shown escaped in messages.
"""

from __future__ import annotations

import csv
import os
import re
from typing import Any
import warnings

import numpy as np
from PIL import Image
from PIL import ImageOps
from PIL import UnidentifiedImageError
import skimage.data
from skimage import transform

from semcorr_jax.errors import SemcorrError

SKIMAGE_PREFIX = 'skimage:'
WARPED_SUFFIX = '_warped'
SKIMAGE_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'retina',
                  'immunohistochemistry', 'hubble_deep_field', 'camera')
# Delimiters tried in this order; a file whose every line holds none of them
# is split at whitespace.
DELIMITERS = (';', '\t', ',')
# Pillow's "Image size (N pixels) exceeds limit of M pixels" message.
_BOMB_PIXELS = re.compile(r'\((\d+) pixels\)')
# Pillow modes with an alpha channel (else transparency is in `info`), and
# the other modes whose conversion to RGB Pillow gets right ('LAB' is not).
_ALPHA_MODES = ('RGBA', 'RGBa', 'LA', 'La', 'PA')
_RGB_MODES = ('1', 'L', 'P', 'RGB', 'RGBX', 'CMYK', 'YCbCr', 'HSV')
# A number written with a decimal comma (spreadsheets in many locales).
_DECIMAL_COMMA = re.compile(r'[+-]?\d*,\d+')


def shown(path: Any) -> str:
  """`path` quoted for a message: one printable line, whatever its bytes."""
  return repr(os.fsdecode(path))


def printable(path: Any) -> str:
  """`path` unquoted, bytes that are not UTF-8 written as `\\xNN`."""
  return os.fsencode(path).decode('utf-8', 'backslashreplace')


# --- images -------------------------------------------------------------------
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
    raise SemcorrError(f'{shown(spec)}: no scikit-image photo {name!r}; '
                       f'{hint}')
  try:
    image = np.asarray(loader())
  except Exception as e:  # pylint: disable=broad-except
    raise SemcorrError(f'{shown(spec)}: cannot load it ({type(e).__name__}); '
                       f'{hint}') from e
  if image.dtype != np.uint8 or not (
      image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
    raise SemcorrError(f'{shown(spec)} is not a photo (shape {image.shape}, '
                       f'dtype {image.dtype}); {hint}')
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


def _bit_depth(im: Image.Image, values: np.ndarray) -> int:
  """Bits per sample of an integer grey image (mode 'I;16*' or 'I').

  16 for 16-bit modes; a TIFF's BitsPerSample up to 16 (e.g. 12); else
  (32-bit containers) 16 when every value fits in 16 bits, 32 otherwise.
  """
  if im.mode.startswith('I;16'):
    return 16
  bits = getattr(im, 'tag_v2', {}).get(258)  # TIFF BitsPerSample
  if isinstance(bits, tuple):
    bits = bits[0]
  if isinstance(bits, int) and 1 <= bits <= 16:
    return bits
  return 16 if values.size == 0 or values.max() <= 65535 else 32


def _rgb_pixels(im: Image.Image, label: str) -> np.ndarray:
  """A loaded Pillow image -> (H, W, 3) uint8 (rules: module docstring)."""
  if im.mode.startswith('I'):
    values = np.asarray(im).astype(np.float32)
    scale = 255.0 / (2.0 ** _bit_depth(im, values) - 1)
    return _to_rgb(np.clip(np.round(values * scale), 0, 255).astype(np.uint8))
  if im.mode == 'F':
    values = np.asarray(im, np.float64)
    low, high = (values.min(), values.max()) if values.size else (0.0, 0.0)
    if not np.all(np.isfinite(values)) or low < -1e-3 or high > 1 + 1e-3:
      raise SemcorrError(f'{label} is a float image with values in '
                         f'[{low:.3g}, {high:.3g}]; expected [0, 1] (or save '
                         'it as an 8- or 16-bit image)')
    return _to_rgb(np.round(np.clip(values, 0, 1) * 255).astype(np.uint8))
  if im.mode not in _ALPHA_MODES + _RGB_MODES:
    raise SemcorrError(f'{label}: cannot convert its Pillow mode {im.mode!r} '
                       'to RGB; save it as an RGB or grey image')
  try:
    if im.mode in _ALPHA_MODES or 'transparency' in im.info:
      white = Image.new('RGBA', im.size, (255, 255, 255, 255))
      im = Image.alpha_composite(white, im.convert('RGBA'))
    return np.asarray(im.convert('RGB'))
  except ValueError as e:
    raise SemcorrError(f'{label}: cannot convert its Pillow mode {im.mode!r} '
                       f'to RGB ({e}); save it as an RGB or grey image') from e


def _bomb_message(label: str, pixels: Any) -> str:
  return (f'{label} has {pixels} pixels, more than the limit of '
          f'{Image.MAX_IMAGE_PIXELS} (PIL.Image.MAX_IMAGE_PIXELS, a guard '
          'against decompression bombs); shrink the image, or raise that '
          'limit in Python if the file is trusted')


def read_image(spec: Any, what: str = 'image') -> np.ndarray:
  """Reads an image file or `skimage:<name>` (rules: module docstring).

  Args:
    spec: a file path (str, bytes or os.PathLike), `skimage:<name>` (a photo
      bundled with scikit-image, e.g. `skimage:chelsea`) or
      `skimage:<name>_warped`.
    what: the flag or argument it came from, for messages.

  Returns:
    (H, W, 3) uint8 RGB, upright as its EXIF orientation says.

  Raises:
    SemcorrError: missing file, unreadable or corrupt image, a float image
      outside [0, 1], more pixels than `PIL.Image.MAX_IMAGE_PIXELS`.
  """
  if spec is None or (isinstance(spec, (str, bytes)) and not spec):
    raise SemcorrError(f'no {what} given')
  spec = os.fsdecode(spec)
  if spec.startswith(SKIMAGE_PREFIX):
    return _skimage_photo(spec)
  label = f'{what} {shown(spec)}'
  if not os.path.exists(spec):
    raise SemcorrError(f'{label}: no such file')
  if os.path.isdir(spec):
    raise SemcorrError(f'{label} is a folder, not an image file')
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      with Image.open(spec) as im:
        limit = Image.MAX_IMAGE_PIXELS
        if limit and im.width * im.height > limit:
          raise SemcorrError(_bomb_message(label, im.width * im.height))
        im.load()  # decode now: truncated files fail here, not later
        ImageOps.exif_transpose(im, in_place=True)
        image = _rgb_pixels(im, label)
  except Image.DecompressionBombError as e:
    found = _BOMB_PIXELS.search(str(e))
    raise SemcorrError(_bomb_message(
        label, found.group(1) if found else 'too many')) from e
  except UnidentifiedImageError as e:
    raise SemcorrError(f'{label} is corrupt or not an image (Pillow cannot '
                       'identify it)') from e
  except (OSError, ValueError, SyntaxError) as e:
    raise SemcorrError(f'{label} is corrupt or unreadable: '
                       f'{" ".join(str(e).split())}') from e
  if image.shape[0] < 2 or image.shape[1] < 2:
    raise SemcorrError(f'{label} is too small ({image.shape[1]}x'
                       f'{image.shape[0]} pixels)')
  return image


# --- keypoints ----------------------------------------------------------------
def read_text_table(path: str, label: str
                    ) -> tuple[list[tuple[int, str]], str | None]:
  """The non-blank lines of a small text table and its delimiter.

  Args:
    path: a UTF-8 text file (a byte-order mark is dropped).
    label: how errors name the file, e.g. "keypoints 'a.csv'".

  Returns:
    `([(line number from 1, line), ...], delimiter)`: the first of
    `DELIMITERS` found on every line, None when no one is.

  Raises:
    SemcorrError: the file cannot be read as UTF-8 text.
  """
  try:
    with open(path, encoding='utf-8-sig', newline='') as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise SemcorrError(f'{label}: cannot read it as UTF-8 text '
                       f'({" ".join(str(e).split())})') from e
  lines = [(i + 1, line) for i, line in enumerate(text.splitlines())
           if line.strip()]
  delimiter = next((d for d in DELIMITERS
                    if lines and all(d in line for _, line in lines)), None)
  return lines, delimiter


def read_keypoints_csv(path: Any) -> np.ndarray:
  """Reads keypoints, one point per row, x and y in pixels.

  What spreadsheets and scripts write is accepted: UTF-8 with or without a
  byte-order mark (Excel's "CSV UTF-8"); `;`, tab or `,` as the delimiter
  (the first that every non-blank line holds, else runs of whitespace); with
  a delimiter other than `,`, decimal commas (`10,5`); quoted fields;
  blank lines. A first row that is not all numbers is a header: the columns
  whose names hold the word `x` and `y` (any case, e.g. `y,x`, `X,Y`,
  `x_source,y_source,...` (source columns preferred), `id,x,y`) are used; a
  header naming no x or no y column is refused. Without a header the first
  two columns are x, y.

  Args:
    path: the file (str, bytes or os.PathLike).

  Returns:
    (N, 2) float64 (x, y) in pixels, N >= 1.

  Raises:
    SemcorrError: missing or non-UTF-8 file, a header without x and y, a
      non-numeric or short row, no points, NaN or infinite values.
  """
  path = os.fsdecode(path)
  label = f'keypoints {shown(path)}'
  if not os.path.isfile(path):
    raise SemcorrError(f'{label}: no such file')
  lines, delimiter = read_text_table(path, label)
  try:
    rows = [(n, line, _fields(line, delimiter)) for n, line in lines]
  except csv.Error as e:
    raise SemcorrError(f'{label}: cannot read it as CSV ({e})') from e
  comma = delimiter != ','
  cols = (0, 1)
  if rows and not all(_number(c, comma) is not None for c in rows[0][2]):
    n, line, header = rows.pop(0)
    cols = _xy_columns(header)
    if None in cols or cols[0] == cols[1]:
      raise SemcorrError(f'{label} line {n}: the header {line.strip()!r} '
                         'names no x and y columns; name them x and y')
  points = []
  for n, line, row in rows:
    point = [_number(row[c], comma) if c < len(row) else None for c in cols]
    if None in point:
      raise SemcorrError(f'{label} line {n}: expected two numbers x,y, got '
                         f'{line.strip()!r}')
    points.append(point)
  points = np.asarray(points, np.float64).reshape(-1, 2)
  if points.shape[0] == 0:
    raise SemcorrError(f'{label} holds no points (rows x,y)')
  if not np.all(np.isfinite(points)):
    raise SemcorrError(f'{label} has NaN or infinite values')
  return points


def _fields(line: str, delimiter: str | None) -> list[str]:
  if delimiter is None:
    return line.split()
  return [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]


def _xy_columns(header: list[str]) -> tuple[int | None, int | None]:
  """The x and y columns a header names (source columns first)."""
  words = [set(re.split(r'[^a-z0-9]+', name.lower())) for name in header]

  def column(axis):
    found = [i for i, w in enumerate(words) if axis in w]
    source = [i for i in found if words[i] & {'source', 'src'}]
    return (source or found or [None])[0]

  return column('x'), column('y')


def _number(text: str, decimal_comma: bool = False) -> float | None:
  """`text` as a float, or None; `10,5` is 10.5 where `decimal_comma`."""
  if decimal_comma and _DECIMAL_COMMA.fullmatch(text):
    text = text.replace(',', '.')
  try:
    return float(text)
  except ValueError:
    return None
