"""Keypoints in numpy: bilinear read-out of mappings, grids of points, boxes.

Points are `(x, y)`, x first, in pixels with pixel centres at integer
coordinates; a mapping `mapping_ab` (H_a, W_a, 2) holds for every pixel of a
the matching `(x, y)` in b's pixels (docs/architecture.md). Everything here is
plain numpy, so metrics never depend on a device or on jit.
"""

from __future__ import annotations

import numpy as np


def bilinear_read(field: np.ndarray, points: np.ndarray) -> np.ndarray:
  """Reads a dense field at sub-pixel points, clamping points into the field.

  Args:
    field: (H, W, C) values on a pixel grid.
    points: (N, 2) absolute (x, y) in the field's pixels. Points outside
      [0, W - 1] x [0, H - 1] are clamped to the border first.

  Returns:
    (N, C) float64 bilinear interpolation of `field` at `points`.
  """
  field = np.asarray(field, np.float64)
  points = np.asarray(points, np.float64).reshape(-1, 2)
  h, w = field.shape[:2]
  x = np.clip(points[:, 0], 0.0, w - 1.0)
  y = np.clip(points[:, 1], 0.0, h - 1.0)
  # Left/top neighbour, kept one pixel inside so the right/bottom one exists.
  x0 = np.clip(np.floor(x), 0, max(w - 2, 0)).astype(np.int64)
  y0 = np.clip(np.floor(y), 0, max(h - 2, 0)).astype(np.int64)
  x1 = np.minimum(x0 + 1, w - 1)
  y1 = np.minimum(y0 + 1, h - 1)
  wx = (x - x0)[:, None]
  wy = (y - y0)[:, None]
  top = field[y0, x0] * (1 - wx) + field[y0, x1] * wx
  bottom = field[y1, x0] * (1 - wx) + field[y1, x1] * wx
  return top * (1 - wy) + bottom * wy


def transfer_keypoints(mapping_ab: np.ndarray, points_a: np.ndarray
                       ) -> np.ndarray:
  """Moves keypoints of image a into image b by reading `mapping_ab` at them.

  Bilinear interpolation of the mapping, with points clamped to a's borders
  (the mapping is not extrapolated).

  Args:
    mapping_ab: (H_a, W_a, 2) or (B, H_a, W_a, 2) absolute (x, y) in b's
      pixels for every pixel of a.
    points_a: (N, 2) points of a, or (B, N, 2) with a batched mapping.

  Returns:
    (N, 2) or (B, N, 2) float64 absolute (x, y) in b's pixels.
  """
  mapping_ab = np.asarray(mapping_ab)
  points_a = np.asarray(points_a)
  if mapping_ab.ndim == 3:
    return bilinear_read(mapping_ab, points_a)
  if mapping_ab.ndim != 4 or points_a.ndim != 3:
    raise ValueError('expected mapping (H, W, 2) with points (N, 2) or '
                     f'(B, H, W, 2) with (B, N, 2); got {mapping_ab.shape} '
                     f'and {points_a.shape}')
  return np.stack([bilinear_read(m, p) for m, p in zip(mapping_ab, points_a)])


def grid_points(height: int, width: int, stride: int) -> np.ndarray:
  """Pixel centres of a regular grid, offset by `stride // 2` from the corner.

  Args:
    height: H of the image.
    width: W of the image.
    stride: spacing in pixels (>= 1).

  Returns:
    (N, 2) int64 (x, y), row-major (x varies fastest).
  """
  stride = max(int(stride), 1)
  xs = np.arange(stride // 2, width, stride)
  ys = np.arange(stride // 2, height, stride)
  gx, gy = np.meshgrid(xs, ys, indexing='xy')
  return np.stack([gx.ravel(), gy.ravel()], axis=-1).astype(np.int64)


def grid_points_in_mask(mask: np.ndarray, stride: int) -> np.ndarray:
  """The `grid_points` that fall on nonzero pixels of `mask`.

  Args:
    mask: (H, W) values; a pixel counts when it is > 0.5.
    stride: grid spacing in pixels.

  Returns:
    (N, 2) int64 (x, y); N may be 0.
  """
  mask = np.asarray(mask)
  points = grid_points(mask.shape[0], mask.shape[1], stride)
  keep = mask[points[:, 1], points[:, 0]] > 0.5
  return points[keep]


def mask_bbox(mask: np.ndarray) -> np.ndarray | None:
  """Bounding box of the nonzero pixels, on pixel edges.

  A pixel centred at integer (x, y) covers [x - 0.5, x + 0.5], so a single
  foreground pixel gives a 1 x 1 box.

  Args:
    mask: (H, W); a pixel counts when it is > 0.5.

  Returns:
    (4,) float64 (x_min, y_min, x_max, y_max), or None for an empty mask.
  """
  ys, xs = np.nonzero(np.asarray(mask) > 0.5)
  if xs.size == 0:
    return None
  return np.array([xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5,
                   ys.max() + 0.5], np.float64)


def points_bbox(points: np.ndarray) -> np.ndarray | None:
  """Tight box around keypoints (their extent; the PF `'pf'` L_pck box).

  Args:
    points: (N, 2) (x, y).

  Returns:
    (4,) float64 (x_min, y_min, x_max, y_max), or None when N == 0.
  """
  points = np.asarray(points, np.float64).reshape(-1, 2)
  if points.shape[0] == 0:
    return None
  return np.concatenate([points.min(axis=0), points.max(axis=0)])


def bbox_max_side(bbox: np.ndarray) -> float:
  """max(width, height) of a (x_min, y_min, x_max, y_max) box."""
  bbox = np.asarray(bbox, np.float64)
  return float(max(bbox[2] - bbox[0], bbox[3] - bbox[1]))
