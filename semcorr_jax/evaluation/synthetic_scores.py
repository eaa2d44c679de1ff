"""Scores of the held-out synthetic evaluation (`evaluation.synthetic`).

`score_batch` scores each pair of a batch in both directions (keypoints on a
grid over the foreground, the predicted mapping read at them, compared with
the ground truth); `summarize` averages over pairs and, when the prediction
has them, adds the base mapping's scores ('base_*') and the pooled
confidence metrics ('confidence_*', `evaluation.confidence`). The protocol
is stated in `evaluation.synthetic`'s docstring. Points are `(x, y)` in
pixels (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from semcorr_jax.evaluation import confidence as conf_lib
from semcorr_jax.evaluation import keypoints as kp
from semcorr_jax.evaluation import pck as pck_lib
from semcorr_jax.evaluation.reports import alpha_key


def _direction(gt_map, pred_map, mask, valid, compare_mask, stride, alphas,
               image_hw, confidence_map=None) -> dict[str, Any]:
  """Per-pair scores of one direction (see the module docstring).

  With a (H, W) `confidence_map` also 'confidence' and 'distance' (N,) per
  keypoint, pooled later by `summarize`.
  """
  points = kp.grid_points_in_mask((mask > 0.5) & (valid > 0.5), stride)
  gt = gt_map[points[:, 1], points[:, 0]].astype(np.float64)
  pred = kp.transfer_keypoints(pred_map, points)
  out = {'n': len(points), 'epe': pck_lib.end_point_error(pred, gt)}
  for a in alphas:
    out[f'img@{alpha_key(a)}'] = pck_lib.pck(
        pred, gt, pck_lib.alpha_img_threshold(a, image_hw))
    out[f'bbox@{alpha_key(a)}'] = pck_lib.pck(
        pred, gt, pck_lib.alpha_mask_threshold(a, compare_mask))
  if confidence_map is not None:
    out['confidence'] = conf_lib.read_map(confidence_map, points)
    out['distance'] = pck_lib.point_distances(pred, gt)
  return out


def _flow(prediction: Mapping[str, np.ndarray], prefix: str
          ) -> dict[str, Any] | None:
  """The mappings and confidences named `<prefix>mapping_st` etc. as
  'mapping_st', ... (None without both mappings; absent confidence None)."""
  if any(prefix + f'mapping_{d}' not in prediction for d in ('st', 'ts')):
    return None
  return {f'{kind}_{d}': prediction.get(f'{prefix}{kind}_{d}')
          for kind in ('mapping', 'confidence') for d in ('st', 'ts')}


def _score_flow(batch, flow, i, stride, alphas, image_hw):
  def conf(d):
    c = flow[f'confidence_{d}']
    return None if c is None else c[i]

  return {
      'st': _direction(batch['mapping_st'][i], flow['mapping_st'][i],
                       batch['source_mask'][i], batch['valid_st'][i],
                       batch['target_mask'][i], stride, alphas, image_hw,
                       conf('st')),
      'ts': _direction(batch['mapping_ts'][i], flow['mapping_ts'][i],
                       batch['target_mask'][i], batch['valid_ts'][i],
                       batch['source_mask'][i], stride, alphas, image_hw,
                       conf('ts')),
  }


def score_batch(batch: Mapping[str, np.ndarray],
                prediction: Mapping[str, np.ndarray], stride: int,
                alphas: Sequence[float]) -> list[dict[str, dict[str, Any]]]:
  """Per-pair, per-direction scores of one batch.

  Args:
    batch: a pipeline batch (docs/architecture.md), numpy.
    prediction: `mapping_st`, `mapping_ts` (B, H, W, 2) in image pixels;
      optionally `confidence_st`/`_ts` (B, H, W) on the source/target grid,
      `base_mapping_st`/`_ts` and `base_confidence_st`/`_ts`.
    stride: keypoint grid stride in pixels.
    alphas: PCK alphas.

  Returns:
    One dict per pair: {'st': scores, 'ts': scores}, where scores hold `n`
    (keypoints), `epe` and `img@<alpha>` / `bbox@<alpha>` PCKs (NaN when the
    pair has no keypoints in that direction), plus 'confidence' and
    'distance' (N,) with a confidence map; with base mappings also
    'base': {'st', 'ts'} of the same form.
  """
  image_hw = batch['source_image'].shape[1:3]
  final, base = _flow(prediction, ''), _flow(prediction, 'base_')
  pairs = []
  for i in range(len(batch['source_image'])):
    pair = _score_flow(batch, final, i, stride, alphas, image_hw)
    if base is not None:
      pair['base'] = _score_flow(batch, base, i, stride, alphas, image_hw)
    pairs.append(pair)
  return pairs


def _nanmean2(a: float, b: float) -> float:
  return pck_lib.mean_over_pairs([a, b])


def _pooled_confidence(pairs, alphas, image_hw, split) -> dict[str, Any]:
  """`confidence_metrics` of every keypoint with a confidence ({} if none)."""
  scored = [p[d] for p in pairs for d in ('st', 'ts') if 'confidence' in p[d]]
  if not scored:
    return {}
  return conf_lib.confidence_metrics(
      np.concatenate([s['confidence'] for s in scored]),
      np.concatenate([s['distance'] for s in scored]),
      float(max(image_hw)), alphas, split)


def summarize(pairs: Sequence[Mapping[str, Mapping[str, Any]]],
              alphas: Sequence[float], *,
              image_hw: Sequence[int] | None = None,
              confidence_split: float = conf_lib.DEFAULT_SPLIT
              ) -> dict[str, Any]:
  """Means over pairs of `score_batch` outputs, per direction and averaged.

  Args:
    pairs: `score_batch` outputs.
    alphas: PCK alphas.
    image_hw: (H, W) of the images; needed only for the confidence metrics
      (L = max(H, W), alpha_img).
    confidence_split: confidence >= it counts as high.

  Returns:
    The flat results of `evaluate_synthetic` (without 'alphas' and
    'conventions'): the final mapping's keys, 'confidence_*' when the
    pairs have confidences, 'base_*' for the base mapping.
  """
  res: dict[str, Any] = {}
  for d in ('st', 'ts'):
    res[f'num_keypoints_{d}'] = int(sum(p[d]['n'] for p in pairs))
    res[f'epe_{d}'] = pck_lib.mean_over_pairs([p[d]['epe'] for p in pairs])
    for a in alphas:
      k = alpha_key(a)
      res[f'pck_{d}@{k}'] = pck_lib.mean_over_pairs(
          [p[d][f'img@{k}'] for p in pairs])
      res[f'pck_bbox_{d}@{k}'] = pck_lib.mean_over_pairs(
          [p[d][f'bbox@{k}'] for p in pairs])
  out: dict[str, Any] = {'num_pairs': len(pairs),
                         'num_keypoints': res['num_keypoints_st'] +
                                          res['num_keypoints_ts']}
  for a in alphas:
    k = alpha_key(a)
    out[f'pck@{k}'] = _nanmean2(res[f'pck_st@{k}'], res[f'pck_ts@{k}'])
    out[f'pck_bbox@{k}'] = _nanmean2(res[f'pck_bbox_st@{k}'],
                                     res[f'pck_bbox_ts@{k}'])
  out['epe'] = _nanmean2(res['epe_st'], res['epe_ts'])
  out.update(res)
  if image_hw is not None:
    metrics = _pooled_confidence(pairs, alphas, image_hw, confidence_split)
    if metrics:
      out['confidence_split'] = float(confidence_split)
      out.update(conf_lib.prefixed(metrics, conf_lib.PREFIX))
  if pairs and all('base' in p for p in pairs):
    base = summarize([p['base'] for p in pairs], alphas, image_hw=image_hw,
                     confidence_split=confidence_split)
    for key, value in base.items():  # same keypoints: counts not repeated
      if not key.startswith(('num_', 'confidence_split')):
        out[conf_lib.BASE_PREFIX + key] = value
  return out
