"""Confidence metrics: does a model know which of its matches are right?

A flow may declare a `confidence` extra (`semcorr_jax.outputs`): beside its
mappings the method predicts 'confidence_st' (B, H, W) on the source grid for
mapping_st and 'confidence_ts' on the target grid for mapping_ts (prefixed
like the flow's mappings). A keypoint moved from image a to image b by
`mapping_ab` gets the confidence read at it from `confidence_ab` (bilinear,
as the mapping itself: `read_map`).

For each PCK alpha a keypoint is *correct* when its distance `d <= alpha L`
(ties correct, as `evaluation.pck`). `confidence_metrics` pools keypoints
(of every pair and direction; no per-pair mean here) and reports:

* `auc@<alpha>`: ROC AUC of the confidence as a score for "correct"
  (`roc_auc`, the Mann-Whitney form: the probability that a random correct
  keypoint has a higher confidence than a random wrong one, ties 1/2;
  NaN when every keypoint is correct or every one wrong);
* `pck_high@<alpha>` / `pck_low@<alpha>`: the fraction of correct keypoints
  among those with confidence >= `split` / < `split` (NaN for an empty
  group);
* `num_keypoints`, `num_high`, `num_low`, `frac_high`, `frac_low`
  (independent of alpha) and `mean` (mean confidence).

Reports prefix these keys with `PREFIX` after the flow's own prefix
(`confidence_auc@0.1` for the primary flow, `<flow>_confidence_auc@0.1` for
another one; `prefixed`, `unprefixed`). Points are `(x, y)` in pixels
(docs/architecture.md).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from semcorr_jax.evaluation import keypoints as kp
from semcorr_jax.evaluation import pck as pck_lib

DEFAULT_SPLIT = 0.5
PREFIX = 'confidence_'
# Stored beside the numbers under 'confidence_*' in the conventions.
CONVENTION = ("confidence_ab read bilinearly at the keypoints moved by "
              'mapping_ab (<flow>_confidence_* likewise for the other '
              'flows); keypoints pooled over pairs (and directions); '
              'auc@alpha = ROC AUC (Mann-Whitney, ties 1/2) of the confidence '
              'for "distance <= alpha L"; pck_high/pck_low = that PCK among '
              'keypoints with confidence >= / < confidence_split')


def roc_auc(scores: Any, labels: Any) -> float:
  """Area under the ROC curve of `scores` for binary `labels`.

  The Mann-Whitney form, computed from mid-ranks in O(n log n):
  `AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)` with `R_pos` the
  sum of the positives' ranks among all scores (tied scores share their mean
  rank), i.e. `P(s_pos > s_neg) + P(s_pos = s_neg) / 2` over all
  (positive, negative) pairs; equal to `sklearn.metrics.roc_auc_score`.

  Args:
    scores: (N,) real scores, higher = more likely positive. Entries with a
      non-finite score are left out.
    labels: (N,) bools (or 0/1); True = positive.

  Returns:
    The AUC in [0, 1]; NaN when only one class is present (or N == 0).

  Raises:
    ValueError: `scores` and `labels` differ in length.
  """
  scores = np.asarray(scores, np.float64).reshape(-1)
  labels = np.asarray(labels).reshape(-1).astype(bool)
  if scores.shape != labels.shape:
    raise ValueError(f'scores {scores.shape} and labels {labels.shape} '
                     'differ')
  keep = np.isfinite(scores)
  scores, labels = scores[keep], labels[keep]
  n_pos = int(labels.sum())
  n_neg = int(labels.size) - n_pos
  if n_pos == 0 or n_neg == 0:
    return float('nan')
  _, inverse, counts = np.unique(scores, return_inverse=True,
                                 return_counts=True)
  # 1-based rank of each group's last member, minus half the group's spread.
  mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0
  rank_sum = float(mid_ranks[inverse.reshape(-1)][labels].sum())
  return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (float(n_pos) * n_neg)


def read_map(confidence_map: Any, points: Any) -> np.ndarray:
  """Reads a (H, W) map at sub-pixel points (bilinear, clamped to borders).

  The same read-out as `keypoints.transfer_keypoints` applies to a mapping,
  so a keypoint's confidence comes from where its match was read.

  Args:
    confidence_map: (H, W) values on a's pixel grid.
    points: (N, 2) (x, y) in a's pixels.

  Returns:
    (N,) float64.
  """
  confidence_map = np.asarray(confidence_map, np.float64)
  if confidence_map.ndim != 2:
    raise ValueError(f'expected an (H, W) map, got {confidence_map.shape}')
  return kp.bilinear_read(confidence_map[..., None], points)[:, 0]


def _fraction(values: np.ndarray) -> float:
  return float(np.mean(values)) if values.size else float('nan')


def confidence_metrics(confidence: Any, distances: Any, lengths: Any,
                       alphas: Sequence[float],
                       split: float = DEFAULT_SPLIT) -> dict[str, Any]:
  """AUC and high/low-confidence PCK of pooled keypoints (module docstring).

  Args:
    confidence: (N,) confidence of each keypoint's match.
    distances: (N,) its distance to the ground truth in pixels (NaN counts
      as wrong, as in `pck.pck`).
    lengths: (N,) L of each keypoint (its pair's threshold at alpha = 1), or
      one scalar for all; the threshold is `alpha * L`. Keypoints with a
      non-finite L or confidence are left out (their pair's PCK is NaN).
    alphas: PCK alphas.
    split: confidence >= split is 'high', below 'low'.

  Returns:
    {'num_keypoints', 'num_high', 'num_low', 'frac_high', 'frac_low', 'mean',
    'auc@<alpha>', 'pck_high@<alpha>', 'pck_low@<alpha>'} (floats/ints; NaN
    where undefined).
  """
  confidence = np.asarray(confidence, np.float64).reshape(-1)
  distances = np.asarray(distances, np.float64).reshape(-1)
  lengths = np.broadcast_to(np.asarray(lengths, np.float64),
                            confidence.shape)
  if distances.shape != confidence.shape:
    raise ValueError(f'confidence {confidence.shape} and distances '
                     f'{distances.shape} differ')
  keep = np.isfinite(confidence) & np.isfinite(lengths)
  confidence, distances, lengths = (confidence[keep], distances[keep],
                                    lengths[keep])
  high = confidence >= split
  n = int(confidence.size)
  out: dict[str, Any] = {
      'num_keypoints': n, 'num_high': int(high.sum()),
      'num_low': int(n - high.sum()),
      'frac_high': _fraction(high), 'frac_low': _fraction(~high),
      'mean': _fraction(confidence)}
  for alpha in alphas:
    k = pck_lib.alpha_key(alpha)
    correct = distances <= float(alpha) * lengths  # same test as pck.pck
    out[f'auc@{k}'] = roc_auc(confidence, correct)
    out[f'pck_high@{k}'] = _fraction(correct[high])
    out[f'pck_low@{k}'] = _fraction(correct[~high])
  return out


def metric_names(alphas: Sequence[float]) -> set[str]:
  """The keys of `confidence_metrics` (unprefixed)."""
  names = {'num_keypoints', 'num_high', 'num_low', 'frac_high', 'frac_low',
           'mean'}
  for alpha in alphas:
    k = pck_lib.alpha_key(alpha)
    names |= {f'auc@{k}', f'pck_high@{k}', f'pck_low@{k}'}
  return names


def prefixed(metrics: Mapping[str, Any], prefix: str) -> dict[str, Any]:
  """{prefix + key: value}."""
  return {prefix + k: v for k, v in metrics.items()}


def unprefixed(results: Mapping[str, Any], prefix: str) -> dict[str, Any]:
  """The entries whose key starts with `prefix`, with the prefix removed."""
  return {k[len(prefix):]: v for k, v in results.items()
          if k.startswith(prefix)}


def _fmt(value: Any, digits: int = 3) -> str:
  if value is None or (isinstance(value, float) and not np.isfinite(value)):
    return 'n/a'
  return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def markdown_table(rows: Sequence[tuple[str, Mapping[str, Any]]],
                   alphas: Sequence[float],
                   split: float = DEFAULT_SPLIT) -> list[str]:
  """Markdown lines: one row per (model/flow, alpha) of confidence metrics.

  Args:
    rows: (label, unprefixed `confidence_metrics` output) per model or flow;
      rows whose metrics are empty are left out.
    alphas: the alphas to show.
    split: the split used (for the column headings).

  Returns:
    The table's lines (empty when no row has metrics).
  """
  rows = [(name, m) for name, m in rows if m and 'num_keypoints' in m]
  if not rows:
    return []
  head = ['', 'alpha', 'ROC AUC', f'PCK conf >= {split:g}',
          f'PCK conf < {split:g}', f'keypoints conf >= {split:g}',
          'mean conf']
  lines = ['| ' + ' | '.join(head) + ' |', '|---|' + '---:|' * 6]
  for name, m in rows:
    share = (f"{_fmt(m.get('frac_high'))} ({m.get('num_high')} of "
             f"{m.get('num_keypoints')})")
    for a in alphas:
      k = pck_lib.alpha_key(a)
      lines.append('| ' + ' | '.join([
          name, k, _fmt(m.get(f'auc@{k}')), _fmt(m.get(f'pck_high@{k}')),
          _fmt(m.get(f'pck_low@{k}')), share, _fmt(m.get('mean'))]) + ' |')
  return lines
