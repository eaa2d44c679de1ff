"""TSS flow accuracy (PCK over foreground pixels), as the official kit scores.

Metric (t-taniai/TSS_CVPR2016_EvaluationKit: `compute_scores.m`,
`RunEvaluation.m`, `EvalTool/main.cpp`, readme "Flow accuracy"): for a flow
defined on image a and pointing into image b,

  valid   = pixels of a whose ground-truth vector is known (|u|, |v| <= 1e9;
            in TSS exactly a's foreground mask),
  E(p)    = ||predicted - true|| in b's pixels,
  correct = E(p) <= T / 100 * max(H_b, W_b)  (the kit counts E > thr as
            wrong), i.e. alpha = T / 100 with L = max(H, W) of the image
            the flow POINTS INTO (b), original resolution,
  accuracy = #correct valid / #valid.

The kit sweeps T = 1..50 and reports T = 5: `tss_alpha` = 0.05 (weakalign
#14: "flow accuracy is PCK"). A predicted vector that is unknown or not
finite counts as wrong (as the C++ kit; the Matlab one would count NaN as
right). Comparing mappings instead of flows is the same: the grid cancels.

Per record (one CSV row) the ground truth lies on the TARGET's grid and
points into the SOURCE (`semcorr_jax.data.benchmarks.tss`), so the score
reads `prediction.dense('ts')` (H_t, W_t, 2) and uses L = max(H_s, W_s).

Flip (`example['flip']`, the CSV's flip_img_A): weakalign and DCCNet mirror
image A (the source) left-right before matching. The ground truth is for the
unmirrored images (flip pairs hold mirrored objects; the kit's sample
`PASCAL/bike_01_03` has flip_gt 1 and its flow maps into the original image
2). `prepare_example` mirrors the source image and mask AND rewrites the
ground truth to point into the mirrored source, `x' = W_s - 1 - x` (pixel
centres at integers), so the runner must call it BEFORE predicting:

  example = tss.prepare_example(example)
  prediction = <model on example['source_image'], example['target_image']>
  record = tss.score_pair(example, prediction, protocol)

A mirror is an isometry and keeps L, so this equals un-mirroring the
prediction and scoring it with the kit. weakalign/DCCNet's `flow_metrics`
write the flow into the mirrored A WITHOUT un-mirroring it before the kit
reads it; whether their published numbers carry that is [unverified].
`kit_flow` gives a prediction in the kit's own format (original images).

Averages: the kit is run once per group folder; its "Average" row is the
mean over every flow of the group (both directions, flip pairs included;
"w/o flip" leaves flip_gt = 1 pairs out). Papers' TSS tables give FG3DCar,
JODS, PASCAL and "Avg.", which we take as the plain mean of the three group
numbers (what `summarize` returns as `flow_accuracy`); that the published
Avg. columns are computed so is [unverified] here (not the pair-weighted
mean).

Numpy only; points are (x, y) with pixel centres at integers.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import per_flow

GROUPS = ('FG3DCar', 'JODS', 'PASCAL')
PRIMARY_METRIC = 'flow_accuracy'
DEFAULT_ALPHA = 0.05
_FLOW_FIELDS = frozenset((PRIMARY_METRIC, 'flow_accuracy_no_flip'))


def is_flow_metric(key: str) -> bool:
  """Whether a record or summary key depends on the flow scored."""
  return key in _FLOW_FIELDS


def metric_names(protocol: Any = None, confidence: bool = False) -> set[str]:
  """The scalar summary keys of one flow (no confidence metrics here)."""
  del protocol, confidence
  return set(_FLOW_FIELDS) | {'num_records', 'num_skipped', 'alpha'}


def pixel_grid(height: int, width: int) -> np.ndarray:
  """(H, W, 2) float64 (x, y) of every pixel centre."""
  xs, ys = np.meshgrid(np.arange(width, dtype=np.float64),
                       np.arange(height, dtype=np.float64), indexing='xy')
  return np.stack([xs, ys], axis=-1)


def flow_accuracy(pred_mapping: np.ndarray, gt_mapping: np.ndarray,
                  valid: np.ndarray | None, alpha: float = DEFAULT_ALPHA,
                  image_hw: Sequence[int] | None = None) -> float:
  """Fraction of valid pixels whose predicted match is within alpha * L.

  Args:
    pred_mapping: (H, W, 2) predicted (x, y) in image b for every pixel of a.
    gt_mapping: (H, W, 2) true (x, y) in b.
    valid: (H, W) bools (a's known ground truth / foreground); None: the
      finite entries of `gt_mapping`. Non-finite ground truth never counts.
    alpha: 0.05 is the kit's 5 px at a 100 px larger side.
    image_hw: (H_b, W_b) of image b, the image the mapping points INTO: L =
      max(H_b, W_b) (the kit's definition). None: max of a's own (H, W),
      which is right only when both images have the same size.

  Returns:
    The accuracy in [0, 1]; NaN when no pixel is valid.

  Raises:
    SemcorrError: shapes that do not fit together.
  """
  pred = np.asarray(pred_mapping, np.float64)
  gt = np.asarray(gt_mapping, np.float64)
  if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
    raise SemcorrError(f'prediction {pred.shape} and ground truth '
                       f'{gt.shape} must both be (H, W, 2)')
  known = np.all(np.isfinite(gt), axis=-1)
  if valid is not None:
    valid = np.asarray(valid, bool)
    if valid.shape != gt.shape[:2]:
      raise SemcorrError(f'valid {valid.shape} does not fit {gt.shape[:2]}')
    known &= valid
  if not known.any():
    return float('nan')
  hw = gt.shape[:2] if image_hw is None else image_hw
  threshold = float(alpha) * float(max(int(hw[0]), int(hw[1])))
  with np.errstate(invalid='ignore'):
    error = np.sqrt(np.sum(np.square(pred[known] - gt[known]), axis=-1))
    correct = np.isfinite(error) & (error <= threshold)
  return float(np.mean(correct))


def gt_mapping_ts(example: Mapping[str, Any]) -> np.ndarray:
  """(H_t, W_t, 2) true source (x, y) per target pixel (NaN where unknown)."""
  flow = np.asarray(example['flow'], np.float64)
  mapping = pixel_grid(*flow.shape[:2]) + flow
  valid = np.asarray(example['flow_valid'], bool)
  return np.where(valid[..., None], mapping, np.nan)


def prepare_example(example: Mapping[str, Any]) -> dict[str, Any]:
  """The example as the model must see it: flip rows get a mirrored source.

  When `example['flip']` is true, `source_image` and `source_mask` are
  mirrored left-right and the ground-truth `flow` (target grid -> source) is
  rewritten to point into the mirrored source: `u' = W_s - 1 - 2 x_t - u`,
  v unchanged. Sets `flip_applied`; calling it again changes nothing.

  Args:
    example: a record of `benchmarks.examples('tss', 'test', ...)`.

  Returns:
    A new dict (the input is not modified).
  """
  out = dict(example)
  if not bool(out.get('flip', False)) or out.get('flip_applied', False):
    out.setdefault('flip_applied', False)
    return out
  width = np.asarray(out['source_image']).shape[1]
  out['source_image'] = np.ascontiguousarray(
      np.asarray(out['source_image'])[:, ::-1])
  if out.get('source_mask') is not None:
    out['source_mask'] = np.ascontiguousarray(
        np.asarray(out['source_mask'])[:, ::-1])
  flow = np.asarray(out['flow'], np.float32).copy()
  valid = np.asarray(out['flow_valid'], bool)
  x_t = pixel_grid(*flow.shape[:2])[..., 0]
  flow[..., 0] = np.where(valid, width - 1 - 2 * x_t - flow[..., 0], 0.0)
  out['flow'] = flow
  out['flip_applied'] = True
  return out


def _group_name(group: Any) -> str:
  if isinstance(group, bytes):
    group = group.decode()
  if isinstance(group, (int, np.integer)):
    group = GROUPS[int(group)]
  group = str(group)
  if group not in GROUPS:
    raise SemcorrError(f'TSS group {group!r} is not one of {GROUPS}')
  return group


def _text(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def score_pair(example: Mapping[str, Any], prediction: Any,
               protocol: Any = None) -> dict[str, Any]:
  """Flow accuracy of one record (module docstring).

  Args:
    example: a record AFTER `prepare_example`.
    prediction: has `.dense('ts')` -> (H_t, W_t, 2) source (x, y) per target
      pixel at the original resolution (of the prepared images).
    protocol: a ConfigDict (or mapping, or None); reads `tss_alpha`
      (default 0.05).

  Returns:
    {'pair_id', 'group', 'flow_accuracy', 'num_pixels', 'flip', 'alpha'}.

  Raises:
    SemcorrError: a flip row not prepared, or a prediction of the wrong size.
  """
  if bool(example.get('flip', False)) and not example.get('flip_applied'):
    raise SemcorrError(
        f'TSS pair {_text(example.get("pair_id"))} is a flip row: call '
        'semcorr_jax.evaluation.tss.prepare_example(example) before '
        'predicting and scoring it')
  alpha = DEFAULT_ALPHA if protocol is None else float(
      protocol.get('tss_alpha', DEFAULT_ALPHA))
  gt = gt_mapping_ts(example)
  pred = np.asarray(prediction.dense('ts'))
  if pred.shape != gt.shape:
    raise SemcorrError(
        f'TSS prediction mapping_ts is {pred.shape}; the target grid needs '
        f'{gt.shape} (original resolution)')
  source_hw = np.asarray(example['source_image']).shape[:2]
  valid = np.asarray(example['flow_valid'], bool)
  return {
      'pair_id': _text(example['pair_id']),
      'group': _group_name(example['group']),
      'flow_accuracy': flow_accuracy(pred, gt, valid, alpha, source_hw),
      'num_pixels': int(valid.sum()),
      'flip': bool(example.get('flip', False)),
      'alpha': alpha,
  }


def kit_flow(example: Mapping[str, Any], mapping_ts: np.ndarray
             ) -> np.ndarray:
  """A prediction as the Matlab kit wants it: `flow<d>.flo` of the pair.

  Args:
    example: the record (prepared or not).
    mapping_ts: (H_t, W_t, 2) source (x, y) per target pixel, in the source
      the model saw (mirrored when the example was prepared with a flip).

  Returns:
    (H_t, W_t, 2) float32 flow into the ORIGINAL source (mirror undone);
    write it with `semcorr_jax.data.flow_io.write_flo(
    <results>/<pair>/flow<d>.flo, flow)` (non-finite vectors become the
    unknown value 1e10).
  """
  mapping = np.asarray(mapping_ts, np.float64).copy()
  if example.get('flip_applied'):
    width = np.asarray(example['source_image']).shape[1]
    mapping[..., 0] = width - 1 - mapping[..., 0]
  return (mapping - pixel_grid(*mapping.shape[:2])).astype(np.float32)


def _mean(values: Sequence[float]) -> float:
  return float(np.mean(values)) if values else float('nan')


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Per-group means and their plain mean (the tables' Avg.).

  Records with a NaN accuracy (no valid pixel) are left out and counted in
  `num_skipped`. Groups without records are NaN and left out of the Avg.

  Returns:
    {'groups': {group: {'flow_accuracy', 'flow_accuracy_no_flip',
    'num_records'}}, 'flow_accuracy' (mean of the group means),
    'flow_accuracy_no_flip', 'num_records', 'num_skipped', 'alpha'}.
  """
  values = {g: [] for g in GROUPS}
  no_flip = {g: [] for g in GROUPS}
  alphas, skipped = set(), 0
  for record in records:
    group = _group_name(record['group'])
    accuracy = float(record['flow_accuracy'])
    if 'alpha' in record:
      alphas.add(float(record['alpha']))
    if not math.isfinite(accuracy):
      skipped += 1
      continue
    values[group].append(accuracy)
    if not record.get('flip', False):
      no_flip[group].append(accuracy)
  groups = {g: {'flow_accuracy': _mean(values[g]),
                'flow_accuracy_no_flip': _mean(no_flip[g]),
                'num_records': len(values[g])} for g in GROUPS}

  def avg(key):
    return _mean([s[key] for s in groups.values() if math.isfinite(s[key])])

  return {
      'groups': groups,
      PRIMARY_METRIC: avg('flow_accuracy'),
      'flow_accuracy_no_flip': avg('flow_accuracy_no_flip'),
      'num_records': sum(len(v) for v in values.values()),
      'num_skipped': skipped,
      'alpha': alphas.pop() if len(alphas) == 1 else float('nan'),
  }


def _fmt(value: float) -> str:
  return f'{value:.3f}' if math.isfinite(value) else 'n/a'


def markdown(summary: Mapping[str, Any]) -> str:
  """The summary as the papers' TSS table: FG3DCar | JODS | PASCAL | Avg.

  With several flows (`summary['flows']`) two rows per flow, named after it.
  """
  alpha = summary.get('alpha', float('nan'))
  title = (f'PCK@{alpha:g}' if math.isfinite(alpha) else 'PCK')
  lines = [f'| TSS flow accuracy ({title}) | ' + ' | '.join(GROUPS)
           + ' | Avg. |', '|---|' + '---:|' * (len(GROUPS) + 1)]
  flows = per_flow.described(summary)
  for flow in flows:
    view = per_flow.view(summary, flow['prefix'], is_flow_metric)
    groups = view['groups']
    suffix = f" ({flow['name']})" if len(flows) > 1 else ''
    for name, key in (('all rows', 'flow_accuracy'),
                      ('w/o flip', 'flow_accuracy_no_flip')):
      cells = [_fmt(groups[g][key]) for g in GROUPS] + [_fmt(view[key])]
      lines.append(f'| {name}{suffix} | ' + ' | '.join(cells) + ' |')
  groups = summary['groups']
  counts = [str(groups[g]['num_records']) for g in GROUPS]
  lines.append('| records | ' + ' | '.join(counts)
               + f' | {summary["num_records"]} |')
  return '\n'.join(lines)


__all__ = ['GROUPS', 'PRIMARY_METRIC', 'flow_accuracy', 'gt_mapping_ts',
           'is_flow_metric', 'metric_names',
           'kit_flow', 'markdown', 'pixel_grid', 'prepare_example',
           'score_pair', 'summarize']
