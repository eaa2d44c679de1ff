"""A tiny TSS in the official layout, written at test time.

`write_tss(root)` writes

  root/TSS_CVPR2016/<group>/<pair>/image1.png, image2.png  noise RGB PNGs
                                   flow1.flo, flow2.flo    exact GT flows
                                   mask1.png, mask2.png    foregrounds
                                   flip_gt.txt, pair.txt
  root/test_pairs_tss.csv          header + 2 rows per pair

and returns `root` (the manual dir). One pair per group (`PAIRS`), each
with a known affine map from image1 to image2 (pixel centres at integers):

* FG3DCar/001_005: 24 x 32 (H x W) both, translation x + 3, y - 2;
* JODS/car_01_02: image1 16 x 24, image2 24 x 36, scale 1.5 about (0, 0);
  masks are palette PNGs with indices {0, 1} (as JODS ships them);
* PASCAL/bike_01_03: 20 x 28 both, mirror x -> 27 - x (flip_gt 1 and
  flip_img_A 1 on both rows): the objects face opposite ways.

mask1 is the box `mask1_box` (inclusive); mask2 is every image2 pixel whose
preimage lies in that box. flow1 (image1 grid) = A(p) - p on mask1, flow2
(image2 grid) = A^-1(q) - q on mask2, 1e10 elsewhere, as TSS stores them.
The CSV rows of a pair are (image1 -> image2, flow_direction 2) then
(image2 -> image1, flow_direction 1); the header
`source,target,flow_direction,flip_img_A,pair_category` is our assumption
(the references read the columns by position).
"""

from __future__ import annotations

import dataclasses
import io
import pathlib

import numpy as np
from PIL import Image

CSV_NAME = 'test_pairs_tss.csv'
CSV_HEADER = 'source,target,flow_direction,flip_img_A,pair_category'
UNKNOWN = 1e10


@dataclasses.dataclass(frozen=True)
class TssPair:
  """One fixture pair: `affine` maps image1 (x, y, 1) to image2 (x, y)."""

  group: str
  folder: str
  size1: tuple[int, int]  # (H, W)
  size2: tuple[int, int]
  affine: tuple[tuple[float, ...], tuple[float, ...]]
  mask1_box: tuple[int, int, int, int]  # x0, y0, x1, y1 inclusive
  flip: bool
  category: int
  palette_masks: bool = False


PAIRS = (
    TssPair('FG3DCar', '001_005', (24, 32), (24, 32),
            ((1, 0, 3), (0, 1, -2)), (4, 6, 15, 17), False, 1),
    TssPair('JODS', 'car_01_02', (16, 24), (24, 36),
            ((1.5, 0, 0), (0, 1.5, 0)), (0, 0, 5, 3), False, 2,
            palette_masks=True),
    TssPair('PASCAL', 'bike_01_03', (20, 28), (20, 28),
            ((-1, 0, 27), (0, 1, 0)), (3, 4, 12, 15), True, 3),
)


def _matrix(pair: TssPair) -> np.ndarray:
  return np.array(pair.affine + ((0, 0, 1),), np.float64)


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
  """(N, 2) points through a 3 x 3 homogeneous affine matrix."""
  points = np.asarray(points, np.float64).reshape(-1, 2)
  ones = np.ones((points.shape[0], 1))
  return (np.concatenate([points, ones], axis=1) @ matrix.T)[:, :2]


def grid(size: tuple[int, int]) -> np.ndarray:
  """(H * W, 2) (x, y) of every pixel, row-major."""
  xs, ys = np.meshgrid(np.arange(size[1]), np.arange(size[0]), indexing='xy')
  return np.stack([xs.ravel(), ys.ravel()], axis=-1).astype(np.float64)


def mask1(pair: TssPair) -> np.ndarray:
  """(H1, W1) bool foreground of image1."""
  x0, y0, x1, y1 = pair.mask1_box
  mask = np.zeros(pair.size1, bool)
  mask[y0:y1 + 1, x0:x1 + 1] = True
  return mask


def mask2(pair: TssPair) -> np.ndarray:
  """(H2, W2) bool: image2 pixels whose preimage lies in mask1's box."""
  x0, y0, x1, y1 = pair.mask1_box
  back = apply(np.linalg.inv(_matrix(pair)), grid(pair.size2))
  eps = 1e-9
  inside = ((back[:, 0] >= x0 - eps) & (back[:, 0] <= x1 + eps)
            & (back[:, 1] >= y0 - eps) & (back[:, 1] <= y1 + eps))
  return inside.reshape(pair.size2)


def gt_flow(pair: TssPair, direction: int) -> np.ndarray:
  """(H, W, 2) float64 flow<direction> with NaN where unknown."""
  if direction == 1:
    size, mask, matrix = pair.size1, mask1(pair), _matrix(pair)
  else:
    size, mask = pair.size2, mask2(pair)
    matrix = np.linalg.inv(_matrix(pair))
  points = grid(size)
  flow = (apply(matrix, points) - points).reshape(size + (2,))
  return np.where(mask[..., None], flow, np.nan)


def flo_bytes(flow: np.ndarray) -> bytes:
  """Middlebury .flo bytes, written independently of semcorr_jax."""
  flow = np.where(np.isfinite(flow), flow, UNKNOWN)
  height, width = flow.shape[:2]
  return (np.array([202021.25], '<f4').tobytes()
          + np.array([width, height], '<i4').tobytes()
          + flow.astype('<f4').tobytes())


def _png(array: np.ndarray, palette: bool = False) -> bytes:
  if palette:
    image = Image.fromarray(array.astype(np.uint8), mode='P')
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
  else:
    image = Image.fromarray(array)
  buffer = io.BytesIO()
  image.save(buffer, format='PNG')
  return buffer.getvalue()


def image_pixels(pair_index: int, number: int) -> np.ndarray:
  """The noise image `image<number>` of `PAIRS[pair_index]`, (H, W, 3)."""
  pair = PAIRS[pair_index]
  size = pair.size1 if number == 1 else pair.size2
  rng = np.random.default_rng(100 * pair_index + number)
  return rng.integers(0, 256, size + (3,), dtype=np.uint8)


Row = tuple[str, str, int, int, int]


def rows(prefix: str = 'TSS_CVPR2016/') -> list[Row]:
  """The CSV rows: (source, target, flow_direction, flip, category)."""
  out = []
  for pair in PAIRS:
    base = f'{prefix}{pair.group}/{pair.folder}/'
    out.append((base + 'image1.png', base + 'image2.png', 2, int(pair.flip),
                pair.category))
    out.append((base + 'image2.png', base + 'image1.png', 1, int(pair.flip),
                pair.category))
  return out


def write_csv(root: pathlib.Path, prefix: str = 'TSS_CVPR2016/') -> None:
  lines = [CSV_HEADER] + [','.join(str(v) for v in row)
                          for row in rows(prefix)]
  (root / CSV_NAME).write_text('\n'.join(lines) + '\n')


def write_tss(root: pathlib.Path, prefix: str = 'TSS_CVPR2016/'
              ) -> pathlib.Path:
  """Writes the fixture under `root` (see the module docstring).

  Args:
    root: the manual dir (created if needed).
    prefix: what the CSV paths start with before the group folder.

  Returns:
    `root`.
  """
  for index, pair in enumerate(PAIRS):
    folder = root / 'TSS_CVPR2016' / pair.group / pair.folder
    folder.mkdir(parents=True, exist_ok=True)
    for number, mask in ((1, mask1(pair)), (2, mask2(pair))):
      (folder / f'image{number}.png').write_bytes(
          _png(image_pixels(index, number)))
      values = mask.astype(np.uint8) * (1 if pair.palette_masks else 255)
      (folder / f'mask{number}.png').write_bytes(
          _png(values, palette=pair.palette_masks))
      (folder / f'flow{number}.flo').write_bytes(
          flo_bytes(gt_flow(pair, number)))
    (folder / 'flip_gt.txt').write_text(str(int(pair.flip)))
    (folder / 'pair.txt').write_text(
        f'Image1,Image2\n{pair.folder}_a.jpg,{pair.folder}_b.jpg\n')
  write_csv(root, prefix)
  return root
