"""PCK (percentage of correct keypoints) and end-point error, in numpy.

Conventions (reference-facts.md §D.4, weakalign `util/eval_util.py: pck`):

* a predicted point is correct when its Euclidean distance to the ground truth
  is at most the threshold (`d <= alpha * L`, ties count as correct);
* PCK of a pair is the mean over its valid keypoints; a pair without valid
  keypoints has PCK NaN and is left out of the mean over pairs;
* `L` is `max(H, W)` of the image the points are compared in (alpha_img) or
  `max(h, w)` of a box in that image (alpha_bbox: an object box or the extent
  of the keypoints).

Points are `(x, y)` in pixels (docs/architecture.md).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from semcorr_jax.evaluation import keypoints as kp

DEFAULT_ALPHAS = (0.05, 0.1, 0.15)


def alpha_key(alpha: float) -> str:
  """Canonical spelling of alpha in result keys: 0.1 -> '0.1' ('pck@0.1')."""
  return f'{float(alpha):g}'


def point_distances(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """Euclidean distances between matching points.

  Args:
    pred: (N, 2) predicted (x, y).
    gt: (N, 2) ground-truth (x, y).

  Returns:
    (N,) float64 distances in pixels.
  """
  pred = np.asarray(pred, np.float64).reshape(-1, 2)
  gt = np.asarray(gt, np.float64).reshape(-1, 2)
  if pred.shape != gt.shape:
    raise ValueError(f'pred {pred.shape} and gt {gt.shape} differ')
  return np.sqrt(np.sum(np.square(pred - gt), axis=-1))


def _valid(valid: np.ndarray | None, n: int) -> np.ndarray:
  if valid is None:
    return np.ones((n,), bool)
  valid = np.asarray(valid).reshape(-1).astype(bool)
  if valid.shape[0] != n:
    raise ValueError(f'valid has {valid.shape[0]} entries for {n} points')
  return valid


def pck(pred: np.ndarray, gt: np.ndarray, threshold: float,
        valid: np.ndarray | None = None) -> float:
  """Fraction of valid points with `||pred - gt|| <= threshold`.

  Args:
    pred: (N, 2) predicted (x, y) in pixels.
    gt: (N, 2) ground-truth (x, y) in the same image's pixels.
    threshold: distance in pixels, e.g. `alpha_img_threshold(0.1, (H, W))`.
    valid: optional (N,) bools; False points are ignored.

  Returns:
    PCK in [0, 1], or NaN when no point is valid or the threshold is NaN.
  """
  d = point_distances(pred, gt)
  v = _valid(valid, d.shape[0])
  if not v.any() or np.isnan(threshold):
    return float('nan')
  return float(np.mean(d[v] <= threshold))


def end_point_error(pred: np.ndarray, gt: np.ndarray,
                    valid: np.ndarray | None = None) -> float:
  """Mean distance in pixels over valid points (NaN when none is valid).

  Args:
    pred: (N, 2) predicted (x, y).
    gt: (N, 2) ground-truth (x, y).
    valid: optional (N,) bools.
  """
  d = point_distances(pred, gt)
  v = _valid(valid, d.shape[0])
  return float(np.mean(d[v])) if v.any() else float('nan')


def pck_per_pair(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray],
                 thresholds: Sequence[float],
                 valids: Sequence[np.ndarray] | None = None) -> np.ndarray:
  """`pck` of every pair; pairs may have different numbers of points.

  Args:
    preds: P arrays (N_p, 2).
    gts: P arrays (N_p, 2).
    thresholds: P thresholds in pixels.
    valids: optional P arrays (N_p,) of bools.

  Returns:
    (P,) float64, NaN for pairs without valid points.
  """
  if valids is None:
    valids = [None] * len(preds)
  if not len(preds) == len(gts) == len(thresholds) == len(valids):
    raise ValueError('preds, gts, thresholds and valids differ in length')
  return np.array([pck(p, g, t, v)
                   for p, g, t, v in zip(preds, gts, thresholds, valids)],
                  np.float64)


def mean_over_pairs(values: Sequence[float]) -> float:
  """Mean of per-pair values with NaNs (pairs without keypoints) left out.

  Returns NaN when every value is NaN or there are none.
  """
  values = np.asarray(values, np.float64).reshape(-1)
  finite = values[~np.isnan(values)]
  return float(finite.mean()) if finite.size else float('nan')


def alpha_img_threshold(alpha: float, image_hw: Sequence[int]) -> float:
  """alpha_img threshold `alpha * max(H, W)` of the image compared in."""
  return float(alpha) * float(max(image_hw[0], image_hw[1]))


def alpha_bbox_threshold(alpha: float, bbox: np.ndarray) -> float:
  """alpha_bbox threshold `alpha * max(h, w)` of a (x0, y0, x1, y1) box."""
  return float(alpha) * kp.bbox_max_side(bbox)


def alpha_mask_threshold(alpha: float, mask: np.ndarray) -> float:
  """alpha_bbox threshold of a foreground mask's box (NaN for empty masks)."""
  box = kp.mask_bbox(mask)
  return float('nan') if box is None else alpha_bbox_threshold(alpha, box)


def keypoint_extent_threshold(alpha: float, points: np.ndarray,
                              valid: np.ndarray | None = None,
                              padding_bug: bool = False,
                              pad_to: int = 40) -> float:
  """alpha times the max side of the keypoints' extent (PF-WILLOW's L_pck).

  `L = max(max_x - min_x, max_y - min_y)` over the valid points, which is
  what SFNet, NCNet, weakalign and DCCNet use on PF-WILLOW (image A's 10
  keypoints). With `padding_bug` the DHPF/CATs behaviour is reproduced: the
  points are first padded with rows of (-1, -1) up to `pad_to` rows, so the
  minimum becomes -1 and L is inflated (reference-facts.md §D.2, dhpf#3).

  Args:
    alpha: the PCK alpha.
    points: (N, 2) (x, y) of the image compared in.
    valid: optional (N,) bools; invalid points are left out before padding.
    padding_bug: reproduce the -1 padding.
    pad_to: rows after padding (40 in DHPF/CATs); no rows are added when
      there are already `pad_to` valid points or more.

  Returns:
    alpha * L in pixels; NaN when no point is valid.
  """
  points = np.asarray(points, np.float64).reshape(-1, 2)
  points = points[_valid(valid, points.shape[0])]
  if points.shape[0] == 0:
    return float('nan')
  if padding_bug and points.shape[0] < pad_to:
    filler = -np.ones((pad_to - points.shape[0], 2), np.float64)
    points = np.concatenate([points, filler])
  return float(alpha) * kp.bbox_max_side(kp.points_bbox(points))


def square_points(points: np.ndarray, image_hw: Sequence[int], side: float
                  ) -> np.ndarray:
  """Points of an H x W image squashed onto a side x side square.

  Plain scaling `x' = x side / W`, `y' = y side / H`, as every PF-PASCAL
  implementation does before its alpha_img PCK (weakalign/NCNet/DCCNet
  `pck_procedure='scnet'` with side 224, SFNet 288, DHPF 240, CATs 256);
  not the align-corners `(side - 1) / (W - 1)`. The side cancels in PCK
  (L = side); what matters is the anisotropic squash.

  Args:
    points: (N, 2) (x, y) in the image's pixels.
    image_hw: (H, W) of the image.
    side: side of the square.

  Returns:
    (N, 2) float64 (x, y) in the square's pixels.
  """
  points = np.asarray(points, np.float64).reshape(-1, 2)
  scale = np.array([float(side) / image_hw[1], float(side) / image_hw[0]])
  return points * scale
