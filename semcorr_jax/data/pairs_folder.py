"""A folder of the user's own annotated pairs (the `pairs` benchmark).

Layout, one sub-folder per pair (scored in name order; hidden entries, whose
names start with '.', and files beside the pair folders are ignored):

  my_pairs/
    cat_01/
      source.jpg        the source image: exactly one `source.<ext>`, any
                        format Pillow reads (`image_files.read_image`)
      target.png        the target image: exactly one `target.<ext>`
      points.csv        x_source,y_source,x_target,y_target
      target_box.txt    optional: x_min,y_min,x_max,y_max of the object in
                        the target (alpha_bbox when scoring source -> target)
      source_box.txt    optional: the same in the source (target -> source)
    cat_02/
      ...

`points.csv` holds one corresponding point per row, in pixels of the
upright images (EXIF orientation applied, as `semcorr-match` reads them),
the pixel centre of the top-left pixel at (0, 0). Its header names the four
columns (any order and case; other columns are ignored), the header of
the `<output>_keypoints.csv` that `semcorr-match --keypoints` writes.
Cells are separated by `,`, `;` or tabs (with `;` or tabs `10,5` is a
decimal comma); Excel's UTF-8 byte-order mark is fine. A row with an
empty or `nan` cell is a point annotated on one side only: kept, but not
scored. A scored point must lie on its image (x in [-0.5, W - 0.5], y in
[-0.5, H - 0.5]), which catches swapped x and y.

A box file holds four numbers separated by commas or spaces, with
x_min < x_max and y_min < y_max.

`load_pair` turns a pair into the keypoint-pair record of the benchmark
builders (`semcorr_jax.data.benchmarks.common`): 'pair_id' (the folder's
name), images (H, W, 3) uint8, 'source_file'/'target_file' (relative to
the folder), 'category' '' (one group), keypoints (K, 2) float32 with
`keypoint_valid` (K,) (invalid rows hold -1), boxes (4,) float32 (NaN when
absent), 'flip' False. Every problem is one SemcorrError line naming the
file.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from typing import Any

import numpy as np

from semcorr_jax import image_files
from semcorr_jax.data import folder_source
from semcorr_jax.errors import SemcorrError

POINT_COLUMNS = ('x_source', 'y_source', 'x_target', 'y_target')
POINTS_FILE = 'points.csv'
BOX_FILES = {'source': 'source_box.txt', 'target': 'target_box.txt'}
_DECIMAL_COMMA = re.compile(r'[+-]?\d*,\d+')


@dataclasses.dataclass(frozen=True)
class PairFiles:
  """The files of one pair folder (layout: module docstring).

  Attributes:
    name: the pair folder's name ('pair_id').
    folder: its path.
    source, target: the image files.
    points: the points.csv file.
    source_box, target_box: the box files, or None.
  """
  name: str
  folder: str
  source: str
  target: str
  points: str
  source_box: str | None
  target_box: str | None


def _image_file(folder: str, side: str, names: list[str]) -> str:
  # Only image files count: a `source.json` of notes beside `source.jpg`
  # is not a second source image.
  found = [n for n in names if os.path.splitext(n)[0] == side
           and os.path.splitext(n)[1].lower() in
           folder_source.IMAGE_EXTENSIONS
           and os.path.isfile(os.path.join(folder, n))]
  if len(found) != 1:
    what = ('no' if not found else
            f'{len(found)} ({", ".join(sorted(found))}), not one')
    raise SemcorrError(f'pair folder {image_files.shown(folder)} has {what} '
                       f'{side} image; it needs one {side}.<ext> (e.g. '
                       f'{side}.jpg)')
  return os.path.join(folder, found[0])


def list_pairs(data_dir: Any, setting: str = '--data_dir'
               ) -> list[PairFiles]:
  """The pairs of a folder, sorted by name; no file is read.

  Args:
    data_dir: the folder (`~` expanded).
    setting: how the user gives it, for messages.

  Raises:
    SemcorrError: no folder given, no such folder, no pair folders, or a
      pair folder without its images or points.csv.
  """
  if not data_dir:
    raise SemcorrError(f'pairs needs {setting}: the folder of annotated '
                       'pairs (one sub-folder per pair with source.<ext>, '
                       f'target.<ext> and {POINTS_FILE})')
  folder = os.path.expanduser(os.fsdecode(data_dir))
  if not os.path.isdir(folder):
    what = 'is a file, not a folder' if os.path.exists(folder) else (
        'does not exist')
    raise SemcorrError(f'{setting}={image_files.shown(folder)} {what}')
  pairs = []
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if name.startswith('.') or not os.path.isdir(path):
      continue
    names = os.listdir(path)
    points = os.path.join(path, POINTS_FILE)
    source = _image_file(path, 'source', names)
    target = _image_file(path, 'target', names)
    if not os.path.isfile(points):
      raise SemcorrError(f'pair folder {image_files.shown(path)} has no '
                         f'{POINTS_FILE} (header '
                         f'{",".join(POINT_COLUMNS)})')
    boxes = {side: os.path.join(path, file) for side, file in BOX_FILES.items()
             if os.path.isfile(os.path.join(path, file))}
    pairs.append(PairFiles(name, path, source, target, points,
                           boxes.get('source'), boxes.get('target')))
  if not pairs:
    raise SemcorrError(
        f'{setting}={image_files.shown(folder)} holds no pair folders; put '
        'each pair in its own sub-folder with source.<ext>, target.<ext> and '
        f'{POINTS_FILE}')
  return pairs


def _cell(text: str, decimal_comma: bool, label: str, line: int) -> float:
  text = text.strip()
  if not text or text.lower() == 'nan':
    return float('nan')
  if decimal_comma and _DECIMAL_COMMA.fullmatch(text):
    text = text.replace(',', '.')
  try:
    value = float(text)
  except ValueError:
    value = float('inf')
  if not np.isfinite(value):
    raise SemcorrError(f'{label} line {line}: {text!r} is not a number')
  return value


def read_points(path: str) -> tuple[np.ndarray, np.ndarray]:
  """`(source points, target points)`, each (K, 2) float64, NaN rows where a
  side is not annotated (format: module docstring).

  Raises:
    SemcorrError: unreadable file, a header without the four columns, a
      short row, a cell that is not a number, no rows.
  """
  label = f'points {image_files.shown(path)}'
  lines, delimiter = image_files.read_text_table(path, label)
  delimiter = delimiter or ','
  rows = [(n, next(csv.reader([line], delimiter=delimiter)))
          for n, line in lines]
  header = [c.strip().lower() for c in rows[0][1]] if rows else []
  missing = [c for c in POINT_COLUMNS if c not in header]
  if missing:
    raise SemcorrError(f'{label}: the first line must be the header '
                       f'{",".join(POINT_COLUMNS)} (missing {missing[0]})')
  columns = [header.index(c) for c in POINT_COLUMNS]
  values = []
  for n, row in rows[1:]:
    if len(row) <= max(columns):
      raise SemcorrError(f'{label} line {n}: expected the four values '
                         f'{",".join(POINT_COLUMNS)}, got '
                         f'{delimiter.join(row)!r}')
    values.append([_cell(row[c], delimiter != ',', label, n)
                   for c in columns])
  if not values:
    raise SemcorrError(f'{label} holds no points (rows after the header)')
  values = np.asarray(values, np.float64)
  return values[:, :2], values[:, 2:]


def read_box(path: str) -> np.ndarray:
  """(4,) float64 (x_min, y_min, x_max, y_max) of a box file.

  Raises:
    SemcorrError: not four numbers, or an empty box.
  """
  label = f'box {image_files.shown(path)}'
  try:
    with open(path, encoding='utf-8-sig') as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise SemcorrError(f'{label}: cannot read it ({e})') from e
  try:
    box = np.asarray([float(v) for v in re.split(r'[,;\s]+', text.strip())
                      if v], np.float64)
  except ValueError:
    box = np.zeros(0)
  if box.shape != (4,) or not np.all(np.isfinite(box)):
    raise SemcorrError(f'{label}: expected four numbers x_min,y_min,x_max,'
                       f'y_max, got {" ".join(text.split())!r}')
  if box[0] >= box[2] or box[1] >= box[3]:
    raise SemcorrError(f'{label}: x_min < x_max and y_min < y_max must '
                       f'hold, got {" ".join(text.split())!r}')
  return box


def _check_on_image(points: np.ndarray, hw: tuple[int, int], side: str,
                    pair: PairFiles) -> None:
  h, w = hw
  finite = np.all(np.isfinite(points), axis=1)
  outside = finite & ((points[:, 0] < -0.5) | (points[:, 0] > w - 0.5) |
                      (points[:, 1] < -0.5) | (points[:, 1] > h - 0.5))
  if outside.any():
    row = int(np.argmax(outside))
    x, y = points[row]
    raise SemcorrError(
        f'points {image_files.shown(pair.points)} line {row + 2}: the '
        f'{side} point ({x:g}, {y:g}) lies off the {w}x{h} {side} image '
        f'(x in [-0.5, {w - 0.5:g}], y in [-0.5, {h - 0.5:g}]); are x and y '
        'swapped?')


def load_pair(pair: PairFiles) -> dict[str, Any]:
  """The keypoint-pair record of one pair (module docstring).

  Raises:
    SemcorrError: an unreadable image, points file or box, or a point off
      its image.
  """
  source = image_files.read_image(pair.source, 'source image')
  target = image_files.read_image(pair.target, 'target image')
  src, tgt = read_points(pair.points)
  _check_on_image(src, source.shape[:2], 'source', pair)
  _check_on_image(tgt, target.shape[:2], 'target', pair)
  # As `benchmarks.common.keypoint_arrays`: invalid rows hold -1.
  valid = np.all(np.isfinite(src), axis=1) & np.all(np.isfinite(tgt), axis=1)
  boxes = {side: (read_box(path) if path else np.full(4, np.nan))
           for side, path in (('source', pair.source_box),
                              ('target', pair.target_box))}
  root = os.path.dirname(pair.folder)
  return {
      'pair_id': pair.name,
      'source_image': source,
      'target_image': target,
      'source_file': os.path.relpath(pair.source, root),
      'target_file': os.path.relpath(pair.target, root),
      'category': '',
      'source_keypoints': np.where(valid[:, None], src, -1).astype(
          np.float32),
      'target_keypoints': np.where(valid[:, None], tgt, -1).astype(
          np.float32),
      'keypoint_valid': valid,
      'source_bbox': boxes['source'].astype(np.float32),
      'target_bbox': boxes['target'].astype(np.float32),
      'flip': False,
  }
