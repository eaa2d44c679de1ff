"""Scoring of keypoint benchmarks (PF-PASCAL, PF-WILLOW, SPair-71k).

The runner calls, for one benchmark, `prepare_example` on each record,
`score_pair(example, prediction, protocol)` on each pair and
`summarize(records, protocol)` / `markdown(summary)` at the end; the TSS and
Caltech-101 modules implement the same interface.

Per pair (protocol fields: `semcorr_jax.evaluation.protocol`):

* only keypoints with `keypoint_valid` count, everywhere (PCK, error, the
  'kps' extent);
* direction 'ts': the target keypoints are moved into the source with
  `prediction.transfer(..., 'ts')` and compared with the source keypoints in
  the source image; 'st' the reverse. The threshold comes from the image
  compared in;
* frame 'square': predicted and ground-truth points (and the object box) of
  the compared image are scaled by (side / W, side / H), plain scaling as
  the references (`pck.square_points`); 'img' then gives L = side. Frame
  'original': original pixels, 'img' gives L = max(H, W);
* 'bbox': L = max side of the compared image's object box (NaN box -> PCK
  NaN); 'kps': L = max side of the compared image's valid keypoints' extent,
  optionally with the DHPF/CATs -1 padding (`pck.keypoint_extent_threshold`);
* correct when `d <= alpha L`; PCK of a pair = mean over its valid keypoints;
  the reported PCK = mean over pairs, pairs without valid keypoints (NaN)
  skipped (weakalign `pck`, reference-facts.md §D.4).

A prediction is one flow's maps (the runner scores every declared flow
through its own `PairPrediction` and prefixes the keys `is_flow_metric`
names, `evaluation.per_flow`). With the confidence map of the direction
('confidence_ts' on the target grid for 'ts', read at the moved keypoints,
`PairPrediction.read_map`) the records keep the valid keypoints'
'keypoint_confidence' and 'keypoint_error_px' (comparison frame), and the
summary holds their pooled `evaluation.confidence` metrics 'confidence_*'.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import confidence as conf_lib
from semcorr_jax.evaluation import keypoints as kp
from semcorr_jax.evaluation import pck as pck_lib
from semcorr_jax.evaluation import per_flow
from semcorr_jax.evaluation import protocol as protocol_lib
from semcorr_jax.evaluation.protocol import PairPrediction

PRIMARY_METRIC = 'pck@0.1'
COMMON_FIELDS = frozenset((
    'pair_id', 'source_image', 'target_image', 'source_file', 'target_file',
    'category', 'source_keypoints', 'target_keypoints', 'keypoint_valid',
    'source_bbox', 'target_bbox', 'flip'))
_RECORD_FIELDS = frozenset(('pair_id', 'category', 'num_keypoints',
                            'threshold_px'))
# Fields of a record or summary that depend on the flow scored.
_FLOW_FIELDS = frozenset(('mean_error_px', 'keypoint_confidence',
                          'keypoint_error_px'))
alpha_key = pck_lib.alpha_key


def is_flow_metric(key: str) -> bool:
  """Whether a record or summary key depends on the flow scored."""
  return (key in _FLOW_FIELDS or key.startswith('pck@') or
          (key.startswith(conf_lib.PREFIX) and key != 'confidence_split'))


def metric_names(protocol: ml_collections.ConfigDict,
                 confidence: bool = False) -> set[str]:
  """The scalar summary keys of one flow (`confidence`: with its map)."""
  names = {'num_pairs', 'num_keypoints', 'mean_error_px'}
  names |= {f'pck@{alpha_key(a)}' for a in protocol.alphas}
  if confidence:
    names |= {conf_lib.PREFIX + k
              for k in conf_lib.metric_names(protocol.alphas)}
    names.add('confidence_split')
  return names


def prepare_example(example: Mapping[str, Any]) -> Mapping[str, Any]:
  """Nothing to prepare for keypoint records: returned as is."""
  return example


def _text(value: Any) -> str:
  if isinstance(value, bytes):
    return value.decode()
  if isinstance(value, np.ndarray) and value.ndim == 0:
    return _text(value.item())
  return str(value)


def _scalar_extra(value: Any) -> Any:
  """A Python int/bool for int/bool scalars, else None."""
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, np.ndarray) and value.ndim == 0:
    if value.dtype == np.bool_:
      return bool(value)
    if np.issubdtype(value.dtype, np.integer):
      return int(value)
  return None


def _check(protocol: ml_collections.ConfigDict) -> None:
  for field, values in protocol_lib.CHOICES.items():
    if protocol[field] not in values:
      raise SemcorrError(f'protocol.{field} must be one of {values}, got '
                         f'{protocol[field]!r}')


def _image_hw(example: Mapping[str, Any], side: str,
              fallback: Sequence[int]) -> tuple[int, int]:
  image = example.get(f'{side}_image')
  if image is None:
    return tuple(fallback)
  hw = tuple(int(s) for s in np.shape(image)[:2])
  if hw != tuple(fallback):
    raise SemcorrError(f'{side} image is {hw[0]}x{hw[1]} but the prediction '
                       f'was made for {fallback[0]}x{fallback[1]}')
  return hw


def score_pair(example: Mapping[str, Any], prediction: PairPrediction,
               protocol: ml_collections.ConfigDict) -> dict[str, Any]:
  """PCK and mean error of one pair (module docstring).

  Args:
    example: a keypoint-pair record (`data/benchmarks/common.py`):
      'source_keypoints', 'target_keypoints' (K, 2), 'keypoint_valid' (K,),
      'source_bbox', 'target_bbox' (4,), 'pair_id', 'category', images
      optional (used only to check sizes).
    prediction: the pair's `PairPrediction`.
    protocol: `direction`, `threshold`, `frame`, `square_side`,
      `kps_padding_bug`, `alphas`.

  Returns:
    'pair_id', 'category' (str), 'num_keypoints' (valid ones),
    'threshold_px' (L at alpha = 1 in the comparison frame), 'pck@<alpha>',
    'mean_error_px', plus the example's extra int/bool scalars (e.g. SPair's
    'viewpoint_variation'); with a confidence map the fields
    of the module docstring ('keypoint_confidence', 'keypoint_error_px').
  """
  _check(protocol)
  src_hw = _image_hw(example, 'source', prediction.source_hw)
  tgt_hw = _image_hw(example, 'target', prediction.target_hw)
  src_kps = np.asarray(example['source_keypoints'], np.float64).reshape(-1, 2)
  tgt_kps = np.asarray(example['target_keypoints'], np.float64).reshape(-1, 2)
  valid = example.get('keypoint_valid')
  valid = (np.ones(src_kps.shape[0], bool) if valid is None
           else np.asarray(valid, bool).reshape(-1))
  if not src_kps.shape[0] == tgt_kps.shape[0] == valid.shape[0]:
    raise SemcorrError(f'pair {_text(example.get("pair_id"))}: keypoint '
                       'arrays differ in length')
  direction = protocol.direction
  if direction == 'ts':
    moved, gt, hw, side = tgt_kps[valid], src_kps[valid], src_hw, 'source'
  else:
    moved, gt, hw, side = src_kps[valid], tgt_kps[valid], tgt_hw, 'target'
  pred = (prediction.transfer(moved, direction) if len(moved)
          else np.zeros((0, 2)))
  bbox = np.asarray(example.get(f'{side}_bbox', [np.nan] * 4),
                    np.float64).reshape(4)
  if protocol.frame == 'square':
    s = float(protocol.square_side)
    pred = pck_lib.square_points(pred, hw, s)
    gt = pck_lib.square_points(gt, hw, s)
    bbox = pck_lib.square_points(bbox.reshape(2, 2), hw, s).reshape(4)
    img_side = s
  else:
    img_side = float(max(hw))
  if protocol.threshold == 'img':
    length = img_side
  elif protocol.threshold == 'bbox':
    length = kp.bbox_max_side(bbox)
  else:
    length = pck_lib.keypoint_extent_threshold(
        1.0, gt, padding_bug=bool(protocol.kps_padding_bug))
  record = {'pair_id': _text(example.get('pair_id', '')),
            'category': _text(example.get('category', '')),
            'num_keypoints': int(len(gt)),
            'threshold_px': float(length)}
  for alpha in protocol.alphas:
    record[f'pck@{alpha_key(alpha)}'] = pck_lib.pck(
        pred, gt, float(alpha) * length)
  record['mean_error_px'] = pck_lib.end_point_error(pred, gt)
  if f'{conf_lib.PREFIX}{direction}' in prediction.outputs:
    conf = (prediction.read_map(moved, direction) if len(moved)
            else np.zeros(0))
    record['keypoint_confidence'] = conf.tolist()
    record['keypoint_error_px'] = pck_lib.point_distances(pred, gt).tolist()
  for key, value in example.items():
    if key in COMMON_FIELDS or key in record:
      continue
    value = _scalar_extra(value)
    if value is not None:
      record[key] = value
  return record


def _metrics_keys(alphas: Sequence[float]) -> list[str]:
  return [f'pck@{alpha_key(a)}' for a in alphas] + ['mean_error_px']


def _group(records: Sequence[Mapping[str, Any]], alphas: Sequence[float]
           ) -> dict[str, Any]:
  out = {'num_pairs': len(records),
         'num_keypoints': int(sum(r['num_keypoints'] for r in records))}
  for key in _metrics_keys(alphas):
    out[key] = pck_lib.mean_over_pairs([r[key] for r in records])
  return out


def _confidence_summary(records: Sequence[Mapping[str, Any]],
                        alphas: Sequence[float]) -> dict[str, Any]:
  """Pooled confidence metrics of the records' per-keypoint lists."""
  scored = [r for r in records if 'keypoint_confidence' in r]
  if not scored:
    return {}
  lengths = [np.full(len(r['keypoint_confidence']), r['threshold_px'])
             for r in scored]
  metrics = conf_lib.confidence_metrics(
      np.concatenate([r['keypoint_confidence'] for r in scored]),
      np.concatenate([r['keypoint_error_px'] for r in scored]),
      np.concatenate(lengths), alphas)
  out = conf_lib.prefixed(metrics, conf_lib.PREFIX)
  out['confidence_split'] = conf_lib.DEFAULT_SPLIT
  return out


def conventions(protocol: ml_collections.ConfigDict) -> dict[str, str]:
  """The protocol in words, stored beside the numbers."""
  size = ('the model size minus 2 pad' if protocol.input_size is None
          else 'x'.join(str(int(s)) for s in protocol.input_size))
  direction = {
      'ts': ('target keypoints -> source by the predicted mapping_ts, '
             'compared with the source keypoints in the source image'),
      'st': ('source keypoints -> target by the predicted mapping_st, '
             'compared with the target keypoints in the target image')}
  threshold = {
      'img': 'alpha_img: L = max(H, W) of the image compared in',
      'bbox': 'alpha_bbox: L = max side of the object box of the image '
              'compared in',
      'kps': 'L = max side of the extent of the valid keypoints of the image '
             'compared in' + (', padded with -1 rows to 40 points first '
                              '(a bug of published code: '
                              'pck.keypoint_extent_threshold)'
                              if protocol.kps_padding_bug else '')}
  frame = {
      'square': (f'points (and box) of the compared image scaled by '
                 f'({protocol.square_side}/W, {protocol.square_side}/H), '
                 f'L_img = {protocol.square_side}; distances in that square'),
      'original': 'original image pixels'}
  return {
      'input': (f'each image resized (bilinear, align_corners, Gaussian '
                f'anti-alias when shrinking) to {size}, then padded with '
                f'{int(protocol.pad)} black px per side; model input = '
                'input size + 2 pad'),
      'direction': direction[protocol.direction],
      'read_out': ('keypoints mapped into the model input (x_m = x (w-1)/'
                   '(W-1) + pad), bilinear read of the model-resolution '
                   'mapping, mapped back to original pixels'),
      'frame': frame[protocol.frame],
      'threshold': threshold[protocol.threshold],
      'pck': ('correct if distance <= alpha * L (ties correct, weakalign); '
              'mean over valid keypoints per pair, then over pairs (pairs '
              'without valid keypoints skipped)'),
      'mean_error_px': 'mean distance in the comparison frame, per pair '
                       'then over pairs',
  }


def _is_factor(key: str, value: Any) -> bool:
  """An extra int/bool field of the records (e.g. SPair's 'occlusion')."""
  return (key not in _RECORD_FIELDS and not is_flow_metric(key) and
          isinstance(value, (bool, int, np.bool_, np.integer)))


def summarize(records: Sequence[Mapping[str, Any]],
              protocol: ml_collections.ConfigDict) -> dict[str, Any]:
  """Means over pairs, per category and per extra factor (one flow).

  Returns:
    'num_pairs', 'num_keypoints', 'pck@<alpha>', 'mean_error_px',
    'per_category' {name: {'num_pairs', 'num_keypoints', 'pck@..',
    'mean_error_px'}}, 'per_factor' {field: {str(value): same}} for the
    extra int/bool fields (e.g. SPair's 'occlusion'), 'alphas',
    'primary_metric', 'protocol' (dict), 'conventions' (strings); with
    per-keypoint confidences the pooled 'confidence_*' metrics and
    'confidence_split'.
  """
  alphas = tuple(protocol.alphas)
  summary = _group(records, alphas)
  summary.update(_confidence_summary(records, alphas))
  categories = sorted({r['category'] for r in records})
  summary['per_category'] = {
      c: _group([r for r in records if r['category'] == c], alphas)
      for c in categories}
  factors = sorted({k for r in records for k, v in r.items()
                    if _is_factor(k, v)})
  per_factor = {}
  for name in factors:
    values = sorted({r[name] for r in records if name in r})
    per_factor[name] = {
        str(v): _group([r for r in records if r.get(name) == v], alphas)
        for v in values}
  summary['per_factor'] = per_factor
  summary['alphas'] = list(alphas)
  summary['primary_metric'] = PRIMARY_METRIC
  summary['protocol'] = protocol.to_dict()
  summary['conventions'] = conventions(protocol)
  if 'confidence_split' in summary:
    summary['conventions']['confidence_*'] = (
        conf_lib.CONVENTION + ' (L as the PCK threshold)')
  return summary


def _fmt(value: Any, digits: int = 3) -> str:
  if value is None or (isinstance(value, float) and not np.isfinite(value)):
    return 'n/a'
  return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def _table(first: str, rows: Sequence[tuple[str, Mapping[str, Any]]],
           alphas: Sequence[float]) -> list[str]:
  head = ([first, 'pairs', 'keypoints']
          + [f'PCK@{alpha_key(a)}' for a in alphas] + ['mean error (px)'])
  lines = ['| ' + ' | '.join(head) + ' |',
           '|---|' + '---:|' * (len(head) - 1)]
  for name, group in rows:
    cells = [name, str(group['num_pairs']), str(group['num_keypoints'])]
    cells += [_fmt(group.get(f'pck@{alpha_key(a)}')) for a in alphas]
    cells.append(_fmt(group.get('mean_error_px'), 2))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def markdown(summary: Mapping[str, Any]) -> str:
  """Overall row, every flow, confidences, per-category and per-factor
  tables (the primary flow), then the conventions."""
  alphas = summary['alphas']
  lines = _table('', [('all', summary)], alphas) + ['']
  flows = per_flow.described(summary)
  if len(flows) > 1:
    rows = [(f['name'], per_flow.view(summary, f['prefix'], is_flow_metric))
            for f in flows]
    lines += ['Every flow (the first is the primary flow, as above):', '']
    lines += _table('flow', rows, alphas) + ['']
  table = conf_lib.markdown_table(
      per_flow.confidence_rows(summary), alphas,
      summary.get('confidence_split', conf_lib.DEFAULT_SPLIT))
  if table:
    lines += ['Confidence of the matches (valid keypoints of all pairs '
              'pooled; correct = d <= alpha L):', ''] + table + ['']
  if summary.get('per_category'):
    lines += _table('category', list(summary['per_category'].items()),
                    alphas) + ['']
  for name, groups in (summary.get('per_factor') or {}).items():
    lines += _table(name, list(groups.items()), alphas) + ['']
  conv = summary.get('conventions') or {}
  if conv:
    lines += ['Conventions:', '']
    lines += [f'* **{k}**: {v}' for k, v in conv.items()]
    lines.append('')
  return '\n'.join(lines)
