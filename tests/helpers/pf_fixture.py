"""Tiny PF-PASCAL and PF-WILLOW folders in the official layouts, for tests.

`write_pf_pascal(root, layout)` and `write_pf_willow(root, layout)` write the
files and return the manual dir to give the builders. Everything is
deterministic and known here:

* Every image of a class carries the same keypoints in unit coordinates
  (`PASCAL_UNIT_KEYPOINTS`, `WILLOW_UNIT_KEYPOINTS`): pixel
  `(x, y) = (u (W - 1), v (H - 1))` (`unit_to_pixels`). Hence, for every pair,
  **target keypoints = `scale_points(source keypoints, source size, target
  size)`**, the align-corners squash `x_t = x_s (W_t - 1) / (W_s - 1)`; a fake
  model whose mapping is that squash transfers every keypoint exactly.
  Multiples of 1/4 keep every value exact in float32 and in the CSV text.
* PF-PASCAL boxes: `(1, 2, W - 3, H - 2)` (`pascal_bbox`); NaN for the image
  without an annotation file (`NO_MAT_IMAGE`). PF-WILLOW has no boxes.
* Invisible PF-PASCAL keypoints (NaN in the .mat): `PASCAL_IMAGES[id][3]`.
  The SCNet-style val/test CSVs list only the points visible in both images
  (`csv_points`); the .mat route keeps all K rows with a validity flag
  (`mat_points`).

PF-PASCAL layouts (`layout`):
  'official'      PF-dataset-PASCAL/{JPEGImages,Annotations}/ + ncnet CSVs
                  beside it: train_pairs.csv and val_pairs.csv with
                  `source_image,target_image,class,flip` (val all 0, so its
                  keypoints come from the .mat files), test_pairs.csv with
                  XA,YA,XB,YB.
  'cnngeometric'  the same folder holding train_pairs_pf_pascal.csv (flip)
                  and val/test_pairs_pf_pascal.csv (XA..YB).
  'dhpf'          PF-PASCAL/{trn,val,test}_pairs.csv (val/test with XA..YB),
                  JPEGImages/, Annotations/; names `JPEGImages/<id>.jpg`.
PF-WILLOW layouts: 'official' (PF-dataset/<class>/*.png + test_pairs_pf.csv
beside it) and 'dhpf' (PF-WILLOW/<class>/*.png + PF-WILLOW/test_pairs.csv).
"""

from __future__ import annotations

import csv
import io
import pathlib

import numpy as np
from PIL import Image
import scipy.io

VOC_CLASSES = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
    'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
    'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')

# id -> (class, width, height, invisible keypoint rows or None = no .mat).
PASCAL_IMAGES = {
    '2007_000001': ('aeroplane', 32, 24, ()),
    '2007_000002': ('aeroplane', 28, 36, (3,)),
    '2008_000003': ('bicycle', 40, 30, ()),
    '2008_000004': ('bicycle', 24, 32, ()),  # A grey JPEG.
    '2009_000005': ('cat', 36, 28, ()),
    '2009_000006': ('cat', 30, 40, (0,)),
    '2010_000007': ('cat', 26, 34, None),  # No Annotations .mat file.
}
NO_MAT_IMAGE = '2010_000007'
GREY_IMAGE = '2008_000004'
PASCAL_UNIT_KEYPOINTS = {
    'aeroplane': ((0.25, 0.25), (0.75, 0.25), (0.5, 0.75), (1.0, 0.5)),
    'bicycle': ((0.0, 0.5), (0.5, 0.5), (1.0, 0.75), (0.5, 0.0)),
    'cat': ((0.5, 0.25), (0.25, 0.75), (0.75, 0.75), (0.5, 1.0),
            (0.25, 0.0)),
}
# (source id, target id, flip): train rows repeat pairs, as the real CSV.
PASCAL_TRAIN = (
    ('2007_000001', '2007_000002', 0),
    ('2008_000003', '2008_000004', 1),
    ('2007_000001', '2007_000002', 1),  # Row 0 flipped.
    ('2009_000005', '2009_000006', 0),
    ('2008_000003', '2008_000004', 0),  # Row 1 unflipped.
    ('2009_000006', '2010_000007', 0),  # No .mat: zero keypoints.
)
PASCAL_VAL = (
    ('2007_000002', '2007_000001'),
    ('2009_000006', '2009_000005'),
    ('2008_000004', '2008_000003'),
)
PASCAL_TEST = (
    ('2007_000001', '2007_000002'),
    ('2008_000003', '2008_000004'),
    ('2009_000005', '2009_000006'),
    ('2009_000006', '2009_000005'),
)
PASCAL_LAYOUTS = ('official', 'cnngeometric', 'dhpf')
# Whether the validation split's keypoints come from the .mat files.
VAL_FROM_MAT = {'official': True, 'cnngeometric': False, 'dhpf': False}

# name under PF-dataset/ -> (width, height).
WILLOW_IMAGES = {
    'car(G)/Cars_006a.png': (32, 24),
    'car(G)/Cars_007a.png': (28, 30),
    'duck(S)/060_0071.png': (36, 28),
    'duck(S)/060_0072.png': (24, 32),
    'winebottle(wC)/bottle_001.png': (20, 40),
    'winebottle(wC)/bottle_002.png': (26, 34),
}
WILLOW_UNIT_KEYPOINTS = (
    (0.0, 0.0), (0.25, 0.0), (0.5, 0.25), (0.75, 0.5), (1.0, 0.75),
    (0.25, 1.0), (0.5, 0.5), (0.75, 0.25), (1.0, 1.0), (0.0, 0.75))
WILLOW_PAIRS = (
    ('car(G)/Cars_006a.png', 'car(G)/Cars_007a.png'),
    ('duck(S)/060_0071.png', 'duck(S)/060_0072.png'),
    ('winebottle(wC)/bottle_001.png', 'winebottle(wC)/bottle_002.png'),
    ('car(G)/Cars_007a.png', 'car(G)/Cars_006a.png'),
)
# Header of the fixture's test_pairs_pf.csv (the builder reads by position).
WILLOW_HEADER = (['imageA', 'imageB']
                 + [f'{c}{s}{i}' for s in 'AB' for c in 'XY'
                    for i in range(1, 11)])


def unit_to_pixels(unit, width: int, height: int) -> np.ndarray:
  """(K, 2) unit (u, v) -> pixels (u (W - 1), v (H - 1)), float64."""
  unit = np.asarray(unit, np.float64).reshape(-1, 2)
  return unit * np.array([width - 1, height - 1], np.float64)


def scale_points(points, from_size, to_size) -> np.ndarray:
  """Align-corners squash of (K, 2) points from (W, H) to (W', H')."""
  points = np.asarray(points, np.float64)
  scale = ((np.array(to_size, np.float64) - 1)
           / (np.array(from_size, np.float64) - 1))
  return points * scale


def pascal_size(image_id: str) -> tuple[int, int]:
  """(W, H) of a PF-PASCAL fixture image."""
  _, width, height, _ = PASCAL_IMAGES[image_id]
  return width, height


def pascal_keypoints(image_id: str) -> np.ndarray:
  """(K, 2) keypoints of an image as in its .mat (NaN rows invisible)."""
  category, width, height, invisible = PASCAL_IMAGES[image_id]
  points = unit_to_pixels(PASCAL_UNIT_KEYPOINTS[category], width, height)
  points[list(invisible or ()), :] = np.nan
  return points


def pascal_bbox(image_id: str) -> np.ndarray:
  """(4,) float32 box of an image; NaN when it has no .mat file."""
  _, width, height, invisible = PASCAL_IMAGES[image_id]
  if invisible is None:
    return np.full(4, np.nan, np.float32)
  return np.array([1, 2, width - 3, height - 2], np.float32)


def pascal_class_number(image_id: str) -> int:
  """1..20 (VOC order) of an image's class."""
  return VOC_CLASSES.index(PASCAL_IMAGES[image_id][0]) + 1


def mat_points(source: str, target: str):
  """(source (K, 2), target (K, 2), valid (K,)) as read from the .mats.

  Invalid rows hold -1 (the record convention); a missing .mat gives K = 0.
  """
  if (PASCAL_IMAGES[source][3] is None or PASCAL_IMAGES[target][3] is None):
    return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0, bool)
  src, tgt = pascal_keypoints(source), pascal_keypoints(target)
  valid = np.isfinite(src).all(1) & np.isfinite(tgt).all(1)
  src[~valid] = -1
  tgt[~valid] = -1
  return src, tgt, valid


def csv_points(source: str, target: str):
  """(source (K', 2), target (K', 2)): the SCNet CSV's both-visible points."""
  src, tgt, valid = mat_points(source, target)
  return src[valid], tgt[valid]


def _image_bytes(seed: int, width: int, height: int, fmt: str,
                 grey: bool = False) -> bytes:
  """A smooth, asymmetric picture (a flip changes it), encoded."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  phase = rng.uniform(0, 2 * np.pi, 3)
  channels = [127 + 120 * np.sin(x / (3 + c) + y / (5 + c) + phase[c])
              * (x + 1) / width for c in range(3)]
  pixels = np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)
  image = Image.fromarray(pixels)
  if grey:
    image = image.convert('L')
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **({'quality': 95} if fmt == 'JPEG' else {}))
  return buffer.getvalue()


def pascal_image_bytes(image_id: str) -> bytes:
  """The JPEG bytes the fixture writes for an image."""
  width, height = pascal_size(image_id)
  return _image_bytes(int(image_id.replace('_', '')), width, height, 'JPEG',
                      grey=image_id == GREY_IMAGE)


def willow_image_bytes(name: str) -> bytes:
  """The PNG bytes the fixture writes for `<class>/<file>.png`."""
  width, height = WILLOW_IMAGES[name]
  seed = sum(ord(c) * (i + 1) for i, c in enumerate(name))
  return _image_bytes(seed, width, height, 'PNG')


def willow_keypoints(name: str) -> np.ndarray:
  """(10, 2) keypoints of a PF-WILLOW fixture image."""
  return unit_to_pixels(WILLOW_UNIT_KEYPOINTS, *WILLOW_IMAGES[name])


def _numbers(values) -> str:
  return ';'.join(repr(float(v)) for v in values)


def _write_csv(path: pathlib.Path, header, rows) -> None:
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(header)
  writer.writerows(rows)
  path.write_text(buffer.getvalue())


def write_pf_pascal(root: pathlib.Path, layout: str = 'official'
                    ) -> pathlib.Path:
  """Writes the PF-PASCAL fixture under `root`; returns the manual dir."""
  if layout not in PASCAL_LAYOUTS:
    raise ValueError(f'layout {layout!r} not in {PASCAL_LAYOUTS}')
  manual = pathlib.Path(root)
  data = manual / ('PF-PASCAL' if layout == 'dhpf' else 'PF-dataset-PASCAL')
  (data / 'JPEGImages').mkdir(parents=True, exist_ok=True)
  for image_id, (category, _, _, invisible) in PASCAL_IMAGES.items():
    (data / 'JPEGImages' / f'{image_id}.jpg').write_bytes(
        pascal_image_bytes(image_id))
    if invisible is not None:
      folder = data / 'Annotations' / category
      folder.mkdir(parents=True, exist_ok=True)
      # As the official files: kps (K, 2) with NaN rows, bbox (1, 4).
      scipy.io.savemat(folder / f'{image_id}.mat', {
          'kps': pascal_keypoints(image_id),
          'bbox': pascal_bbox(image_id).astype(np.float64)[None, :]})
  prefix = ('JPEGImages/' if layout == 'dhpf'
            else 'PF-dataset-PASCAL/JPEGImages/')
  name = lambda image_id: f'{prefix}{image_id}.jpg'

  def flip_rows(pairs, flips):
    return [[name(s), name(t), pascal_class_number(s), f]
            for (s, t), f in zip(pairs, flips)]

  def point_rows(pairs):
    rows = []
    for s, t in pairs:
      src, tgt = csv_points(s, t)
      rows.append([name(s), name(t), pascal_class_number(s),
                   _numbers(src[:, 0]), _numbers(src[:, 1]),
                   _numbers(tgt[:, 0]), _numbers(tgt[:, 1])])
    return rows

  flip_header = ['source_image', 'target_image', 'class', 'flip']
  point_header = ['source_image', 'target_image', 'class', 'XA', 'YA', 'XB',
                  'YB']
  train = flip_rows([r[:2] for r in PASCAL_TRAIN],
                    [r[2] for r in PASCAL_TRAIN])
  if layout == 'official':
    _write_csv(manual / 'train_pairs.csv', flip_header, train)
    _write_csv(manual / 'val_pairs.csv', flip_header,
               flip_rows(PASCAL_VAL, [0] * len(PASCAL_VAL)))
    _write_csv(manual / 'test_pairs.csv', point_header,
               point_rows(PASCAL_TEST))
  else:
    names = (('trn_pairs.csv', 'val_pairs.csv', 'test_pairs.csv')
             if layout == 'dhpf' else
             ('train_pairs_pf_pascal.csv', 'val_pairs_pf_pascal.csv',
              'test_pairs_pf_pascal.csv'))
    _write_csv(data / names[0], flip_header, train)
    _write_csv(data / names[1], point_header, point_rows(PASCAL_VAL))
    _write_csv(data / names[2], point_header, point_rows(PASCAL_TEST))
  return manual


def write_pf_willow(root: pathlib.Path, layout: str = 'official'
                    ) -> pathlib.Path:
  """Writes the PF-WILLOW fixture under `root`; returns the manual dir."""
  if layout not in ('official', 'dhpf'):
    raise ValueError(f'layout {layout!r} not in (official, dhpf)')
  manual = pathlib.Path(root)
  data = manual / ('PF-WILLOW' if layout == 'dhpf' else 'PF-dataset')
  for image_name in WILLOW_IMAGES:
    path = data / image_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(willow_image_bytes(image_name))
  rows = []
  for a, b in WILLOW_PAIRS:
    pa, pb = willow_keypoints(a), willow_keypoints(b)
    rows.append([f'PF-dataset/{a}', f'PF-dataset/{b}']
                + [repr(float(v)) for v in
                   (*pa[:, 0], *pa[:, 1], *pb[:, 0], *pb[:, 1])])
  csv_path = (data / 'test_pairs.csv' if layout == 'dhpf'
              else manual / 'test_pairs_pf.csv')
  _write_csv(csv_path, WILLOW_HEADER, rows)
  return manual
