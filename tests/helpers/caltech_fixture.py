"""A tiny Caltech-101 pair set in the official layout, for tests.

`write_caltech(root)` writes, under `root/caltech-101/` (weakalign's
`datasets/caltech-101/`):

  test_pairs_caltech_with_category.csv   header + one row per `PAIRS` entry
  101_ObjectCategories/<class>/image_XXXX.jpg

Every target polygon is its source polygon moved by `shift` (dx, dy), so the
translation `mapping_ts(p) = p - shift` is a perfect prediction (IoU 1,
LT-ACC 1, LOC-ERR 0) and the identity mapping scores `IDENTITY_METRICS`
(hand-computed below). Faces/image_0001.jpg is a greyscale JPEG.
"""

from __future__ import annotations

import csv
import io
import pathlib
from typing import NamedTuple

import numpy as np
from PIL import Image

CSV_NAME = 'test_pairs_caltech_with_category.csv'
# Column names as in PF-PASCAL's CSVs; the builder reads by position.
CSV_HEADER = ('source_image', 'target_image', 'class', 'XA', 'YA', 'XB', 'YB')
GREY_IMAGE = '101_ObjectCategories/Faces/image_0001.jpg'


class Pair(NamedTuple):
  source_file: str
  target_file: str
  category: str
  category_number: int  # 1-based, as in the CSV.
  source_size: tuple[int, int]  # (H, W)
  target_size: tuple[int, int]
  source_polygon: tuple[tuple[float, float], ...]  # (x, y) vertices
  shift: tuple[float, float]  # target polygon = source polygon + shift

  @property
  def target_polygon(self) -> tuple[tuple[float, float], ...]:
    return tuple((x + self.shift[0], y + self.shift[1])
                 for x, y in self.source_polygon)


PAIRS = (
    # Rectangle x 4..11, y 3..10 (8 x 8 = 64 px) -> x 7..14, y 5..12.
    Pair('101_ObjectCategories/Faces/image_0001.jpg',
         '101_ObjectCategories/Faces/image_0002.jpg', 'Faces', 1,
         (20, 24), (20, 24), ((4, 3), (11, 3), (11, 10), (4, 10)), (3, 2)),
    # Rectangle x 2..9, y 4..9 (8 x 6 = 48 px; 5 vertices, one on an edge)
    # -> x 10..17, y 8..13; images of different sizes.
    Pair('101_ObjectCategories/airplanes/image_0001.jpg',
         '101_ObjectCategories/airplanes/image_0002.jpg', 'airplanes', 6,
         (18, 30), (22, 26), ((2, 4), (6, 4), (9, 4), (9, 9), (2, 9)),
         (8, 4)),
    # Half-pixel corners: pixels x 4..11, y 3..12; target = source.
    Pair('101_ObjectCategories/Leopards/image_0003.jpg',
         '101_ObjectCategories/Leopards/image_0001.jpg', 'Leopards', 3,
         (16, 16), (16, 16),
         ((3.5, 2.5), (11.5, 2.5), (11.5, 12.5), (3.5, 12.5)), (0, 0)),
)

# (LT-ACC, IoU, LOC-ERR) of the identity mapping_ts, per pair.
IDENTITY_METRICS = (
    # Overlap x 7..11 (5) by y 5..10 (6) = 30; union 64 + 64 - 30 = 98;
    # disagreeing pixels 98 - 30 = 68 of 20 * 24 = 480. LOC-ERR: every pixel
    # is off by dx / w + dy / h = 3 / 8 + 2 / 8 (equal boxes).
    (412 / 480, 30 / 98, 0.625),
    # No overlap: 48 + 48 disagreeing pixels of 22 * 26 = 572;
    # LOC-ERR 8 / 8 + 4 / 6.
    (476 / 572, 0.0, 1 + 4 / 6),
    (1.0, 1.0, 0.0),
)


def _number(value: float) -> str:
  return f'{float(value):g}'


def _polygon_columns(polygon) -> tuple[str, str]:
  return (','.join(_number(x) for x, _ in polygon),
          ','.join(_number(y) for _, y in polygon))


def _jpeg(path: str, size: tuple[int, int], grey: bool) -> bytes:
  seed = sum(ord(c) for c in path)
  rng = np.random.default_rng(seed)
  shape = size if grey else size + (3,)
  pixels = rng.integers(0, 256, shape, dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels, 'L' if grey else 'RGB').save(
      buffer, format='JPEG', quality=95)
  return buffer.getvalue()


def image_sizes() -> dict[str, tuple[int, int]]:
  """(H, W) of every image the fixture writes, by CSV path."""
  sizes = {}
  for pair in PAIRS:
    sizes[pair.source_file] = pair.source_size
    sizes[pair.target_file] = pair.target_size
  sizes['101_ObjectCategories/Faces/image_0003.jpg'] = (12, 14)  # unlisted
  return sizes


def write_caltech(root: pathlib.Path, subdir: str = 'caltech-101'
                  ) -> pathlib.Path:
  """Writes the fixture; returns the manual dir (`root`).

  Args:
    root: the manual dir to create.
    subdir: folder under `root` holding the dataset root ('' = `root`).
  """
  root = pathlib.Path(root)
  base = root / subdir if subdir else root
  for path, size in image_sizes().items():
    target = base / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(_jpeg(path, size, grey=path == GREY_IMAGE))
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(CSV_HEADER)
  for pair in PAIRS:
    writer.writerow((pair.source_file, pair.target_file,
                     pair.category_number,
                     *_polygon_columns(pair.source_polygon),
                     *_polygon_columns(pair.target_polygon)))
  (base / CSV_NAME).write_text(buffer.getvalue())
  return root
