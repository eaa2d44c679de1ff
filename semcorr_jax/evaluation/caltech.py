"""Caltech-101 mask-transfer metrics: LT-ACC, IoU, LOC-ERR (numpy).

The protocol of CNNGeometric/weakalign (`weakalign/util/eval_util.py:
area_metrics`), which took it from DSP (Kim et al., CVPR 2013). Everything
happens in the TARGET frame at the original resolutions:

1. Each polygon is rasterised at its image's size (`polygon_to_mask`).
2. The source mask is warped into the target frame by sampling it at
   `mapping_ts` (for every target pixel, its (x, y) in the source):
   'weakalign' (default) samples bilinearly with zeros outside the source
   (PyTorch `grid_sample`, align_corners=True) and keeps values > 0.5;
   'dsp' (the Matlab code of DSP / CNNGeometric) rounds the flow
   `mapping_ts - grid` half away from zero and reads the nearest pixel,
   background where it leaves the source.
3. LT-ACC = share of ALL target pixels whose warped label equals the target
   label (foreground and background alike); IoU = |warped & target| /
   |warped | target|. weakalign's `intersection_over_union` weights per-part
   IoUs by part area ("part-weighted", for PASCAL-Parts); a Caltech mask is
   one part, so it is the plain IoU.
4. LOC-ERR: every pixel is given box-relative coordinates
   `((x - left) / w, (y - top) / h)`, the object's bounding box in pixels
   (w = right - left + 1). For each target pixel whose `mapping_ts` lands
   inside the source, error = |dx_rel| + |dy_rel| between it and the source
   pixel it lands on; LOC-ERR is the mean over those pixels (background
   included), so lower is better. 'weakalign' (Python port) keeps only
   points strictly inside (0 < x < W_s - 1, 0 < y < H_s - 1), reads the
   source pixel `floor(mapping)`, and computes relative coordinates as
   `(x + 1 - left) / w` (1-based pixel minus 0-based box corner: a bias of
   1/w_t - 1/w_s when the boxes differ). 'dsp' keeps 0 <= x <= W_s - 1, uses
   the rounded flow and `(x - left) / w`.

Polygons are (x, y) in original pixels as the CSV writes them.
`polygon_offset` (default 0, as weakalign and HPF do) is added before
rasterising: -1 treats them as 1-based Matlab coordinates.

Per-pair values are NaN where undefined (an empty union, an empty mask for
LOC-ERR, no in-bound pixel); `summarize` averages the finite ones, as
weakalign filters NaN before its mean over pairs.

Coordinates: docs/architecture.md (x first, pixel centres at integers).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from semcorr_jax import errors
from semcorr_jax.evaluation import per_flow

PRIMARY_METRIC = 'iou'
METRICS = ('label_transfer_accuracy', 'iou', 'localization_error')
REFERENCES = ('weakalign', 'dsp')
_LABELS = {'label_transfer_accuracy': 'LT-ACC', 'iou': 'IoU',
           'localization_error': 'LOC-ERR'}


def is_flow_metric(key: str) -> bool:
  """Whether a record or summary key depends on the flow scored."""
  return key in METRICS


def metric_names(protocol: Any = None, confidence: bool = False) -> set[str]:
  """The scalar summary keys of one flow (no confidence metrics here)."""
  del protocol, confidence
  return set(METRICS) | {'num_pairs'}


def polygon_to_mask(polygon: np.ndarray, height: int, width: int
                    ) -> np.ndarray:
  """Rasterises a polygon: pixels whose centre is inside or on its outline.

  Pixel (x, y) has its centre at the integer point (x, y). Each centre is
  classified with O'Rourke's ray-crossing test ("Computational Geometry in
  C", ch. 7): it counts the edges crossing the horizontal ray to its right
  and to its left; odd right crossings mean inside (even-odd rule), unequal
  parities mean on an edge, and a centre within 1e-12 of a vertex is a
  vertex. Inside, edge and vertex pixels are all foreground. This is the rule
  of scikit-image's `draw.polygon` (which weakalign calls), pixel for pixel.
  Parts outside the image are clipped.

  Args:
    polygon: (N, 2) (x, y) vertices in pixels, closed implicitly.
    height: H of the image.
    width: W of the image.

  Returns:
    (H, W) bool mask.
  """
  poly = np.asarray(polygon, np.float64).reshape(-1, 2)
  mask = np.zeros((int(height), int(width)), bool)
  if poly.shape[0] == 0 or mask.size == 0:
    return mask
  # No centre outside the polygon's box can be inside it.
  x0 = max(int(np.ceil(poly[:, 0].min())), 0)
  x1 = min(int(np.floor(poly[:, 0].max())), width - 1)
  y0 = max(int(np.ceil(poly[:, 1].min())), 0)
  y1 = min(int(np.floor(poly[:, 1].max())), height - 1)
  if x0 > x1 or y0 > y1:
    return mask
  px, py = np.meshgrid(np.arange(x0, x1 + 1, dtype=np.float64),
                       np.arange(y0, y1 + 1, dtype=np.float64))
  right = np.zeros(px.shape, bool)  # Parity of crossings right of the centre.
  left = np.zeros(px.shape, bool)
  vertex = np.zeros(px.shape, bool)
  eps = 1e-12
  previous = poly[-1]
  for current in poly:
    # Edge previous -> current, relative to each centre.
    ax, ay = current[0] - px, current[1] - py
    bx, by = previous[0] - px, previous[1] - py
    vertex |= (np.abs(ax) < eps) & (np.abs(ay) < eps)
    with np.errstate(divide='ignore', invalid='ignore'):
      crossing_x = (ax * by - bx * ay) / (by - ay)
    right ^= ((ay > 0) != (by > 0)) & (crossing_x > 0)
    left ^= ((ay < 0) != (by < 0)) & (crossing_x < 0)
    previous = current
  mask[y0:y1 + 1, x0:x1 + 1] = vertex | right | left
  return mask


def _check_reference(reference: str) -> str:
  if reference not in REFERENCES:
    raise errors.SemcorrError(
        f'caltech_reference={reference!r}; use one of {", ".join(REFERENCES)}')
  return reference


def _round_half_away(values: np.ndarray) -> np.ndarray:
  """Matlab's round: halves go away from zero."""
  return np.sign(values) * np.floor(np.abs(values) + 0.5)


def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  return np.meshgrid(np.arange(width, dtype=np.float64),
                     np.arange(height, dtype=np.float64))


def warp_mask(source_mask: np.ndarray, mapping_ts: np.ndarray,
              reference: str = 'weakalign') -> np.ndarray:
  """The source mask seen in the target frame (module docstring, step 2).

  Args:
    source_mask: (H_s, W_s) bool or {0, 1}.
    mapping_ts: (H_t, W_t, 2) source (x, y) for every target pixel;
      non-finite entries count as outside the source.
    reference: 'weakalign' (bilinear, zeros outside, > 0.5) or 'dsp'
      (nearest through the rounded flow, outside = background).

  Returns:
    (H_t, W_t) bool.
  """
  _check_reference(reference)
  values = np.asarray(source_mask, np.float64)
  hs, ws = values.shape
  mapping = np.asarray(mapping_ts, np.float64)
  x, y = mapping[..., 0], mapping[..., 1]
  finite = np.isfinite(x) & np.isfinite(y)
  x = np.where(finite, x, -2.0)
  y = np.where(finite, y, -2.0)
  if reference == 'dsp':
    gx, gy = _pixel_grid(*mapping.shape[:2])
    sx = gx + _round_half_away(x - gx)
    sy = gy + _round_half_away(y - gy)
    ok = finite & (sx >= 0) & (sx <= ws - 1) & (sy >= 0) & (sy <= hs - 1)
    read = values[np.clip(sy, 0, hs - 1).astype(np.int64),
                  np.clip(sx, 0, ws - 1).astype(np.int64)]
    return ok & (read > 0.5)
  fx, fy = np.floor(x), np.floor(y)
  total = np.zeros(x.shape)
  for dx in (0, 1):
    for dy in (0, 1):
      cx, cy = fx + dx, fy + dy
      weight = (1 - np.abs(x - cx)) * (1 - np.abs(y - cy))
      ok = (cx >= 0) & (cx <= ws - 1) & (cy >= 0) & (cy <= hs - 1)
      read = values[np.clip(cy, 0, hs - 1).astype(np.int64),
                    np.clip(cx, 0, ws - 1).astype(np.int64)]
      total += np.where(ok, weight * read, 0.0)
  return total > 0.5


def label_transfer_accuracy(pred_mask: np.ndarray, gt_mask: np.ndarray
                            ) -> float:
  """Share of all pixels where the two masks agree (weakalign LT-ACC).

  Args:
    pred_mask: (H, W) bool (warped source mask).
    gt_mask: (H, W) bool (target mask).
  """
  pred, gt = _masks(pred_mask, gt_mask)
  return float(np.mean(pred == gt)) if pred.size else float('nan')


def intersection_over_union(pred_mask: np.ndarray, gt_mask: np.ndarray
                            ) -> float:
  """|pred & gt| / |pred | gt| of (H, W) masks; NaN when both are empty."""
  pred, gt = _masks(pred_mask, gt_mask)
  union = np.count_nonzero(pred | gt)
  if union == 0:
    return float('nan')
  return float(np.count_nonzero(pred & gt) / union)


def _masks(pred_mask, gt_mask) -> tuple[np.ndarray, np.ndarray]:
  pred = np.asarray(pred_mask) > 0.5
  gt = np.asarray(gt_mask) > 0.5
  if pred.shape != gt.shape:
    raise errors.SemcorrError(
        f'masks differ in shape: {pred.shape} vs {gt.shape}')
  return pred, gt


def box_relative_coordinates(mask: np.ndarray, offset: float = 0.0
                             ) -> tuple[np.ndarray, np.ndarray] | None:
  """((x + offset - left) / w, (y + offset - top) / h) for every pixel.

  Args:
    mask: (H, W); the box is that of the pixels > 0.5, w = right - left + 1.
    offset: 1 reproduces weakalign's port (`obj_ptr`), 0 the DSP original.

  Returns:
    Two (H, W) float64 arrays, or None for an empty mask.
  """
  mask = np.asarray(mask) > 0.5
  ys, xs = np.nonzero(mask)
  if xs.size == 0:
    return None
  left, top = xs.min(), ys.min()
  box_w, box_h = xs.max() - left + 1, ys.max() - top + 1
  gx, gy = _pixel_grid(*mask.shape)
  return (gx + offset - left) / box_w, (gy + offset - top) / box_h


def localization_error(source_mask: np.ndarray, target_mask: np.ndarray,
                       mapping_ts: np.ndarray, reference: str = 'weakalign'
                       ) -> float:
  """LOC-ERR of a dense mapping (module docstring, step 4).

  Args:
    source_mask: (H_s, W_s) object mask of the source.
    target_mask: (H_t, W_t) object mask of the target.
    mapping_ts: (H_t, W_t, 2) source (x, y) for every target pixel.
    reference: 'weakalign' or 'dsp'.

  Returns:
    Mean |dx_rel| + |dy_rel| over target pixels mapped inside the source;
    NaN if a mask is empty or no pixel lands inside.
  """
  _check_reference(reference)
  offset = 1.0 if reference == 'weakalign' else 0.0
  target_rel = box_relative_coordinates(target_mask, offset)
  source_rel = box_relative_coordinates(source_mask, offset)
  if target_rel is None or source_rel is None:
    return float('nan')
  hs, ws = np.asarray(source_mask).shape
  mapping = np.asarray(mapping_ts, np.float64)
  if mapping.shape[:2] != np.asarray(target_mask).shape:
    raise errors.SemcorrError(
        f'mapping_ts is {mapping.shape}; expected the target mask shape '
        f'{np.asarray(target_mask).shape} + (2,)')
  x, y = mapping[..., 0], mapping[..., 1]
  finite = np.isfinite(x) & np.isfinite(y)
  x = np.where(finite, x, -2.0)
  y = np.where(finite, y, -2.0)
  if reference == 'weakalign':
    valid = finite & (x > 0) & (x < ws - 1) & (y > 0) & (y < hs - 1)
    sx, sy = np.floor(x), np.floor(y)
  else:
    gx, gy = _pixel_grid(*mapping.shape[:2])
    sx = gx + _round_half_away(x - gx)
    sy = gy + _round_half_away(y - gy)
    valid = finite & (sx >= 0) & (sx <= ws - 1) & (sy >= 0) & (sy <= hs - 1)
  if not np.any(valid):
    return float('nan')
  sx = sx[valid].astype(np.int64)
  sy = sy[valid].astype(np.int64)
  error = (np.abs(target_rel[0][valid] - source_rel[0][sy, sx])
           + np.abs(target_rel[1][valid] - source_rel[1][sy, sx]))
  return float(np.mean(error))


def _option(protocol, name: str, default):
  if protocol is None:
    return default
  return protocol.get(name, default)


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def pair_masks(example: Mapping[str, Any], protocol=None
               ) -> tuple[np.ndarray, np.ndarray]:
  """(source mask (H_s, W_s), target mask (H_t, W_t)) of a record.

  Reads the optional `protocol.polygon_offset` (default 0.0).
  """
  offset = float(_option(protocol, 'polygon_offset', 0.0))
  masks = []
  for side in ('source', 'target'):
    height, width = np.asarray(example[f'{side}_image']).shape[:2]
    polygon = np.asarray(example[f'{side}_polygon'], np.float64) + offset
    masks.append(polygon_to_mask(polygon, height, width))
  return masks[0], masks[1]


def score_pair(example: Mapping[str, Any], prediction, protocol=None
               ) -> dict[str, Any]:
  """LT-ACC, IoU and LOC-ERR of one pair.

  Args:
    example: a `caltech101` record (`semcorr_jax.data.benchmarks.examples`):
      images (H, W, 3), polygons (N, 2) (x, y).
    prediction: has `.dense('ts')` -> `mapping_ts` (H_t, W_t, 2), source
      (x, y) for every target pixel at the original resolutions.
    protocol: ConfigDict or None; optional `caltech_reference`
      ('weakalign' | 'dsp', default 'weakalign') and `polygon_offset`
      (default 0.0).

  Returns:
    {'pair_id', 'category', 'label_transfer_accuracy', 'iou',
     'localization_error'}.
  """
  reference = _check_reference(
      str(_option(protocol, 'caltech_reference', 'weakalign')))
  source_mask, target_mask = pair_masks(example, protocol)
  mapping_ts = np.asarray(prediction.dense('ts'), np.float64)
  expected = target_mask.shape + (2,)
  if mapping_ts.shape != expected:
    raise errors.SemcorrError(
        f'pair {_text(example["pair_id"])}: mapping_ts has shape '
        f'{mapping_ts.shape}; expected {expected} (the original target '
        'size)')
  warped = warp_mask(source_mask, mapping_ts, reference)
  return {
      'pair_id': _text(example['pair_id']),
      'category': _text(example['category']),
      'label_transfer_accuracy': label_transfer_accuracy(warped, target_mask),
      'iou': intersection_over_union(warped, target_mask),
      'localization_error': localization_error(
          source_mask, target_mask, mapping_ts, reference),
  }


def _mean(values: Sequence[float]) -> tuple[float, int]:
  finite = [float(v) for v in values if v is not None and math.isfinite(v)]
  return (float(np.mean(finite)) if finite else float('nan')), len(finite)


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Means over pairs of each metric (non-finite values left out).

  Returns:
    {metric: mean, 'num_pairs': int, 'num_valid': {metric: int},
     'per_category': {category: {metric: mean}}}.
  """
  summary: dict[str, Any] = {'num_pairs': len(records), 'num_valid': {}}
  for metric in METRICS:
    summary[metric], summary['num_valid'][metric] = _mean(
        [r[metric] for r in records])
  categories: dict[str, list] = {}
  for record in records:
    categories.setdefault(record['category'], []).append(record)
  summary['per_category'] = {
      name: {m: _mean([r[m] for r in group])[0] for m in METRICS}
      for name, group in sorted(categories.items())}
  return summary


def markdown(summary: Mapping[str, Any]) -> str:
  """A Markdown table of LT-ACC, IoU and LOC-ERR (and the pair count); one
  column per flow when `summary['flows']` names several."""
  flows = per_flow.described(summary)
  views = [per_flow.view(summary, f['prefix'], is_flow_metric)
           for f in flows]
  names = [f['name'] for f in flows] if len(flows) > 1 else ['value']
  lines = ['| metric | ' + ' | '.join(names) + ' |',
           '|---|' + '---:|' * len(names)]
  for metric in METRICS:
    cells = []
    for view in views:
      value = view.get(metric)
      cells.append('n/a' if value is None or not math.isfinite(value)
                   else f'{value:.3f}')
    arrow = ' (lower is better)' if metric == 'localization_error' else ''
    lines.append(f'| {_LABELS[metric]}{arrow} | ' + ' | '.join(cells) + ' |')
  lines.append(f'| pairs | {summary.get("num_pairs", 0)} |')
  return '\n'.join(lines)
