"""A tiny SPair-71k in the official layout, written at test time.

`write_spair(root)` writes `root/SPair-71k/` with

  JPEGImages/<category>/<image>.jpg        7 noise JPEGs, 20-34 px a side
  ImageAnnotation/<category>/<image>.json  image fields (empty `kps`)
  Segmentation/<category>/<image>.png      box-shaped masks
  PairAnnotation/{trn,val,test}/<line>.json  the pair JSONs (9 pairs)
  Layout/{large,small}/{trn,val,test}.txt  `<number>-<src>-<trg>:<category>`

and returns `root` (the manual dir). Only PairAnnotation, Layout and
JPEGImages are read by the builder; the other folders are there for the
layout's sake and are not consistent with the pairs.

Facts for tests (constants below):

* every pair's target keypoints are its source keypoints plus `SHIFT`
  (x + 3, y + 2): a model whose `mapping_st` is `(x + 3, y + 2)` and whose
  `mapping_ts` is `(x - 3, y - 2)` is exactly right on every pair;
* keypoints are integers inside both images; `src_bndbox` is the keypoints'
  extent grown by `BOX_MARGIN` px (clipped to the image), `trg_bndbox` that
  box plus `SHIFT`;
* `PAIRS` lists the pairs (split, layouts, labels); `expected_pairs(layout,
  split)` gives them in layout-file order;
* the pair JSONs write `*_imsize` as `[width, height, 3]`, except the source
  side of pair `SWAPPED_IMSIZE_LINE`, written `[height, width, 3]` (the image
  must win).
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib

import numpy as np
from PIL import Image

SHIFT = (3, 2)
BOX_MARGIN = 1
# (category, image name) -> (width, height).
IMAGES = {
    ('aeroplane', '2008_000585'): (32, 24),
    ('aeroplane', '2008_002133'): (30, 22),
    ('aeroplane', '2009_000327'): (28, 26),
    ('cat', '2008_000112'): (24, 32),
    ('cat', '2010_001234'): (26, 30),
    ('tvmonitor', '2007_000121'): (34, 20),
    ('tvmonitor', '2011_000456'): (30, 24),
}
CATEGORIES = ('aeroplane', 'cat', 'tvmonitor')
SPLIT_FILES = {'train': 'trn', 'validation': 'val', 'test': 'test'}
POSES = ('Unspecified', 'Frontal', 'Left', 'Rear', 'Right')


@dataclasses.dataclass(frozen=True)
class Pair:
  """One fixture pair; labels as in the pair JSONs."""

  number: int
  split: str  # 'trn', 'val' or 'test'
  category: str
  source: str
  target: str
  src_kps: tuple[tuple[int, int], ...]
  kps_ids: tuple[int, ...]
  viewpoint_variation: int
  scale_variation: int
  truncation: int
  occlusion: int
  mirror: int = 0
  small: bool = False  # Also listed in Layout/small.

  @property
  def line(self) -> str:
    return (f'{self.number:06d}-{self.source}-{self.target}:'
            f'{self.category}')

  @property
  def trg_kps(self) -> tuple[tuple[int, int], ...]:
    return tuple((x + SHIFT[0], y + SHIFT[1]) for x, y in self.src_kps)

  @property
  def source_size(self) -> tuple[int, int]:
    """(width, height) of the source image."""
    return IMAGES[(self.category, self.source)]

  @property
  def target_size(self) -> tuple[int, int]:
    return IMAGES[(self.category, self.target)]

  @property
  def src_bndbox(self) -> tuple[int, int, int, int]:
    xs = [x for x, _ in self.src_kps]
    ys = [y for _, y in self.src_kps]
    width, height = self.source_size
    return (max(min(xs) - BOX_MARGIN, 0), max(min(ys) - BOX_MARGIN, 0),
            min(max(xs) + BOX_MARGIN, width - 1),
            min(max(ys) + BOX_MARGIN, height - 1))

  @property
  def trg_bndbox(self) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = self.src_bndbox
    return (x1 + SHIFT[0], y1 + SHIFT[1], x2 + SHIFT[0], y2 + SHIFT[1])


PAIRS = (
    # trn
    Pair(1, 'trn', 'aeroplane', '2008_000585', '2008_002133',
         ((2, 3), (10, 5), (18, 12)), (0, 4, 7), 0, 0, 0, 0, small=True),
    Pair(2, 'trn', 'aeroplane', '2009_000327', '2008_000585',
         ((4, 4), (12, 9)), (1, 2), 1, 1, 1, 0),
    Pair(3, 'trn', 'cat', '2008_000112', '2010_001234',
         ((5, 6), (9, 9), (14, 3), (7, 12)), (0, 1, 2, 5), 0, 2, 0, 1,
         small=True),
    # val
    Pair(4, 'val', 'cat', '2010_001234', '2008_000112',
         ((3, 3), (15, 10)), (3, 4), 2, 0, 2, 0, small=True),
    Pair(5, 'val', 'tvmonitor', '2007_000121', '2011_000456',
         ((6, 2), (16, 14), (1, 8)), (0, 3, 6), 0, 1, 0, 2),
    # test
    Pair(6, 'test', 'aeroplane', '2008_002133', '2009_000327',
         ((2, 2), (8, 6), (14, 10), (20, 15)), (0, 1, 2, 3), 0, 0, 0, 0,
         small=True),
    Pair(7, 'test', 'aeroplane', '2008_000585', '2009_000327',
         ((5, 5), (11, 11)), (5, 6), 1, 0, 3, 3, mirror=1),
    Pair(8, 'test', 'cat', '2008_000112', '2010_001234',
         ((4, 7), (12, 2), (19, 13)), (0, 2, 4), 2, 2, 1, 2, small=True),
    Pair(9, 'test', 'tvmonitor', '2011_000456', '2007_000121',
         ((10, 10), (3, 4), (17, 1)), (1, 2, 3), 0, 1, 2, 1),
)
SWAPPED_IMSIZE_LINE = PAIRS[7].line
ROOT_NAME = 'SPair-71k'


def expected_pairs(layout: str, split: str) -> list[Pair]:
  """The pairs of a TFDS split ('train', ...) of a layout, in file order."""
  code = SPLIT_FILES[split]
  return [p for p in PAIRS
          if p.split == code and (layout == 'large' or p.small)]


def pair_by_line(line: str) -> Pair:
  return {p.line: p for p in PAIRS}[line]


def pixels(category: str, name: str) -> np.ndarray:
  """The deterministic noise pixels (H, W, 3) uint8 written as the JPEG."""
  width, height = IMAGES[(category, name)]
  seed = int(name.replace('_', '')) + CATEGORIES.index(category)
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _encoded(array: np.ndarray, fmt: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format=fmt)
  return buffer.getvalue()


def _write_json(path: pathlib.Path, value) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(value))


def _pair_json(pair: Pair) -> dict:
  src_w, src_h = pair.source_size
  trg_w, trg_h = pair.target_size
  src_imsize = [src_w, src_h, 3]
  if pair.line == SWAPPED_IMSIZE_LINE:
    src_imsize = [src_h, src_w, 3]
  return {
      'pair_id': pair.number,
      'filename': pair.line,
      'src_imname': f'{pair.source}.jpg',
      'src_imsize': src_imsize,
      'src_bndbox': list(pair.src_bndbox),
      'src_pose': POSES[pair.number % len(POSES)],
      'src_kps': [list(p) for p in pair.src_kps],
      'trg_imname': f'{pair.target}.jpg',
      'trg_imsize': [trg_w, trg_h, 3],
      'trg_bndbox': list(pair.trg_bndbox),
      'trg_pose': POSES[(pair.number + 1) % len(POSES)],
      'trg_kps': [list(p) for p in pair.trg_kps],
      'kps_ids': list(pair.kps_ids),
      'category': pair.category,
      'mirror': pair.mirror,
      'viewpoint_variation': pair.viewpoint_variation,
      'scale_variation': pair.scale_variation,
      'truncation': pair.truncation,
      'occlusion': pair.occlusion,
  }


def write_spair(root: pathlib.Path) -> pathlib.Path:
  """Writes the fixture under `root/SPair-71k/`; returns `root`."""
  base = pathlib.Path(root) / ROOT_NAME
  for (category, name), (width, height) in IMAGES.items():
    image_dir = base / 'JPEGImages' / category
    image_dir.mkdir(parents=True, exist_ok=True)
    (image_dir / f'{name}.jpg').write_bytes(
        _encoded(pixels(category, name), 'JPEG'))
    box = [width // 4, height // 4, 3 * width // 4, 3 * height // 4]
    _write_json(base / 'ImageAnnotation' / category / f'{name}.json', {
        'filename': f'{name}.jpg', 'src_database': 'PASCAL VOC 2012',
        'src_annotation': 'PASCAL VOC 2012', 'src_image': 'PASCAL VOC 2012',
        'image_width': width, 'image_height': height, 'image_depth': 3,
        'category': category, 'pose': 'Unspecified', 'truncated': 0,
        'occluded': 0, 'difficult': 0, 'bndbox': box, 'kps': {},
        'azimuth_id': 0})
    mask = np.zeros((height, width), np.uint8)
    mask[box[1]:box[3] + 1, box[0]:box[2] + 1] = 255
    seg_dir = base / 'Segmentation' / category
    seg_dir.mkdir(parents=True, exist_ok=True)
    (seg_dir / f'{name}.png').write_bytes(_encoded(mask, 'PNG'))
  for pair in PAIRS:
    _write_json(base / 'PairAnnotation' / pair.split / f'{pair.line}.json',
                _pair_json(pair))
  for layout in ('large', 'small'):
    layout_dir = base / 'Layout' / layout
    layout_dir.mkdir(parents=True, exist_ok=True)
    for split, code in SPLIT_FILES.items():
      (layout_dir / f'{code}.txt').write_text(''.join(
          f'{p.line}\n' for p in expected_pairs(layout, split)))
  return pathlib.Path(root)
