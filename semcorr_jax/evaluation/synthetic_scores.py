"""Scores of the held-out synthetic evaluation (`evaluation.synthetic`).

`score_batch` scores each pair of a batch in both directions for every
declared flow (keypoints on a grid over the foreground, the flow's predicted
mapping read at them, compared with the ground truth); `summarize` averages
over pairs, the primary flow's keys unprefixed and every other flow's with
its prefix (`semcorr_jax.outputs`), and adds the pooled confidence metrics
(`evaluation.confidence`) of flows that declare a confidence. The protocol
is stated in `evaluation.synthetic`'s docstring. Points are `(x, y)` in
pixels (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from semcorr_jax import outputs
from semcorr_jax.evaluation import confidence as conf_lib
from semcorr_jax.evaluation import keypoints as kp
from semcorr_jax.evaluation import pck as pck_lib
from semcorr_jax.evaluation import per_flow

alpha_key = pck_lib.alpha_key
DIRECTIONS = outputs.DIRECTIONS


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


def _score_flow(batch, flow, i, stride, alphas, image_hw):
  """{'st', 'ts'} scores of pair i for one flow's maps ('mapping_st', ...)."""
  def conf(d):
    c = flow.get(f'{outputs.CONFIDENCE}_{d}')
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
                alphas: Sequence[float],
                flows: Sequence[outputs.Flow] = outputs.DEFAULT_FLOWS
                ) -> list[dict[str, dict[str, dict[str, Any]]]]:
  """Per-pair, per-flow, per-direction scores of one batch.

  Args:
    batch: a pipeline batch (docs/architecture.md), numpy.
    prediction: flat outputs of every declared flow (`semcorr_jax.outputs`):
      the mappings (B, H, W, 2) in image pixels and, for flows declaring it,
      the confidence (B, H, W) on the grid of the image it maps from.
    stride: keypoint grid stride in pixels.
    alphas: PCK alphas.
    flows: the declared flows.

  Returns:
    One dict per pair: {flow name: {'st': scores, 'ts': scores}}, where
    scores hold `n` (keypoints), `epe` and `img@<alpha>` / `bbox@<alpha>`
    PCKs (NaN when the pair has no keypoints in that direction), plus
    'confidence' and 'distance' (N,) with a confidence map.

  Raises:
    SemcorrError: a declared flow's mapping is missing.
  """
  image_hw = batch['source_image'].shape[1:3]
  maps = per_flow.split(flows, prediction)
  return [{name: _score_flow(batch, m, i, stride, alphas, image_hw)
           for name, m in maps.items()}
          for i in range(len(batch['source_image']))]


def _nanmean2(a: float, b: float) -> float:
  return pck_lib.mean_over_pairs([a, b])


def _pooled_confidence(pairs, alphas, image_hw, split) -> dict[str, Any]:
  """`confidence_metrics` of every keypoint with a confidence ({} if none)."""
  scored = [p[d] for p in pairs for d in DIRECTIONS if 'confidence' in p[d]]
  if not scored:
    return {}
  return conf_lib.confidence_metrics(
      np.concatenate([s['confidence'] for s in scored]),
      np.concatenate([s['distance'] for s in scored]),
      float(max(image_hw)), alphas, split)


def _summarize_flow(pairs, alphas) -> dict[str, Any]:
  """Means over pairs of one flow's {'st', 'ts'} scores."""
  res: dict[str, Any] = {}
  for d in DIRECTIONS:
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
  return out


def summarize(pairs: Sequence[Mapping[str, Mapping[str, Any]]],
              alphas: Sequence[float], *,
              image_hw: Sequence[int] | None = None,
              confidence_split: float = conf_lib.DEFAULT_SPLIT,
              flows: Sequence[outputs.Flow] = outputs.DEFAULT_FLOWS
              ) -> dict[str, Any]:
  """Means over pairs of `score_batch` outputs, per direction and averaged.

  Args:
    pairs: `score_batch` outputs (of the same `flows`).
    alphas: PCK alphas.
    image_hw: (H, W) of the images; needed only for the confidence metrics
      (L = max(H, W), alpha_img).
    confidence_split: confidence >= it counts as high.
    flows: the declared flows.

  Returns:
    The flat results of `evaluate_synthetic` (without 'alphas', 'flows' and
    'conventions'): the primary flow's keys ('pck@0.1', 'epe', ...,
    'num_pairs', 'num_keypoints'), every other flow's with its prefix
    (counts not repeated: the keypoints are the same), and for flows with
    confidences '<prefix>confidence_*' and once 'confidence_split'.
  """
  out: dict[str, Any] = {}
  for flow in flows:
    p = outputs.prefix(flows, flow.name)
    scores = [pair[flow.name] for pair in pairs]
    res = _summarize_flow(scores, alphas)
    out.update({p + k: v for k, v in res.items()
                if not (p and k.startswith('num_'))})
    if image_hw is not None:
      metrics = _pooled_confidence(scores, alphas, image_hw,
                                   confidence_split)
      if metrics:
        out['confidence_split'] = float(confidence_split)
        out.update(conf_lib.prefixed(metrics, p + conf_lib.PREFIX))
  return out


def metric_names(alphas: Sequence[float],
                 flows: Sequence[outputs.Flow] = outputs.DEFAULT_FLOWS
                 ) -> set[str]:
  """Every scalar key `summarize` returns for these flows (with image_hw)."""
  one = set(_summarize_flow([], alphas))
  confidence = {conf_lib.PREFIX + k for k in conf_lib.metric_names(alphas)}
  names = set()
  for flow in flows:
    p = outputs.prefix(flows, flow.name)
    names |= {p + k for k in one if not (p and k.startswith('num_'))}
    if per_flow.has_confidence(flow):
      names |= {p + k for k in confidence} | {'confidence_split'}
  return names
