"""The `pairs` benchmark: the user's own annotated pairs, scored with PCK.

  semcorr-eval --workdir=runs/mine --benchmark=pairs --data_dir=~/my_pairs

A folder of pairs (layout: `semcorr_jax.data.pairs_folder`; per pair a
source and a target image, points.csv, optional boxes) goes through the
keypoint benchmarks' machinery: `protocol.predict_pairs` runs the model,
`keypoint_benchmark.score_pair` scores each pair, `keypoint_benchmark.
summarize` averages, `benchmark_reports` writes the per-pair CSV and the
worst-pairs picture. Each pair is scored twice, once per threshold:

* alpha_img, keys 'pck@<alpha>': L = max(H, W) of the image compared in;
* alpha_bbox, keys 'pck_bbox@<alpha>': L = max side of that image's box
  (target_box.txt for 'st', source_box.txt for 'ts'); a pair without the
  box has NaN and is left out of the mean, which is NaN (null in the JSON,
  'n/a' in the tables) when no pair has one; 'num_pairs_with_box' counts
  the pairs that do.

The protocol is the keypoint benchmarks' (`evaluation.protocol`), with
direction 'st' by default (source points moved into the target by
mapping_st and compared with the target points in target pixels), the
'original' frame and the images resized to the model size; 'direction',
'frame', 'alphas', 'input_size', 'pad' (or a 'protocol' preset) and
'batch_size' change it. Every declared flow is scored (`per_flow`).

No TFDS dataset is built: the builders exist for the public benchmarks'
fixed files, prepared once; a user's folder changes while it is annotated,
is small, and is read as it is on every run.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any, Mapping, Sequence

import ml_collections
from tqdm import tqdm

from semcorr_jax import outputs
from semcorr_jax.data import pairs_folder
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import benchmark_reports
from semcorr_jax.evaluation import keypoint_benchmark
from semcorr_jax.evaluation import pck as pck_lib
from semcorr_jax.evaluation import per_flow
from semcorr_jax.evaluation import predict
from semcorr_jax.evaluation import protocol as protocol_lib
from semcorr_jax.evaluation import reports
from semcorr_jax.evaluation import runner
from semcorr_jax.evaluation.evaluator import Evaluator

NAME = 'pairs'
PRIMARY_METRIC = keypoint_benchmark.PRIMARY_METRIC
BBOX_PREFIX = 'pck_bbox@'
# Any keypoint benchmark: their protocols share every field.
_TEMPLATE = 'spair71k'
PROTOCOL_FIELDS = ('input_size', 'pad', 'alphas', 'direction', 'frame',
                   'square_side', 'batch_size')
_DEFAULTS = {'direction': 'st', 'threshold': 'img', 'frame': 'original'}
alpha_key = pck_lib.alpha_key


def build_protocol(preset: str | None = None, **fields: Any
                   ) -> ml_collections.ConfigDict:
  """The pairs protocol (module docstring), a preset, then `fields` (None
  values ignored; `runner.build_protocol` checks them)."""
  unknown = sorted(set(fields) - set(PROTOCOL_FIELDS))
  if unknown:
    raise SemcorrError(f'pairs: no protocol field {unknown[0]!r}; its fields: '
                       f'{", ".join(PROTOCOL_FIELDS)}')
  given = {k: v for k, v in fields.items() if v is not None}
  protocol = runner.build_protocol(_TEMPLATE, preset,
                                   **{**_DEFAULTS, **given})
  protocol.benchmark = NAME
  return protocol


def describe_protocol(protocol: ml_collections.ConfigDict) -> dict[str, Any]:
  """The fields that matter for pairs (stored and printed): `PROTOCOL_FIELDS`
  (square_side only for the 'square' frame) and both thresholds."""
  out = {'benchmark': NAME, 'thresholds': ['img', 'bbox']}
  for key in PROTOCOL_FIELDS:
    if key != 'square_side' or protocol.frame == 'square':
      value = protocol[key]
      out[key] = list(value) if isinstance(value, tuple) else value
  return out


# --- the scorer (`runner`'s interface, both thresholds) -----------------------
def is_flow_metric(key: str) -> bool:
  return (keypoint_benchmark.is_flow_metric(key) or
          key.startswith(BBOX_PREFIX))


def metric_names(protocol: ml_collections.ConfigDict,
                 confidence: bool = False) -> set[str]:
  """The scalar summary keys of one flow (`confidence`: with its map)."""
  return (keypoint_benchmark.metric_names(protocol, confidence) |
          {f'{BBOX_PREFIX}{alpha_key(a)}' for a in protocol.alphas} |
          {'num_pairs_with_box'})


def score_pair(example: Mapping[str, Any],
               prediction: protocol_lib.PairPrediction,
               protocol: ml_collections.ConfigDict) -> dict[str, Any]:
  """`keypoint_benchmark.score_pair` at alpha_img, plus 'pck_bbox@<alpha>'
  and 'threshold_bbox_px' (the box's L; NaN without a box) at alpha_bbox."""
  record = keypoint_benchmark.score_pair(
      example, prediction, _with(protocol, threshold='img'))
  bbox = keypoint_benchmark.score_pair(
      example, prediction, _with(protocol, threshold='bbox'))
  record['threshold_bbox_px'] = bbox['threshold_px']
  for alpha in protocol.alphas:
    record[f'{BBOX_PREFIX}{alpha_key(alpha)}'] = bbox[
        f'pck@{alpha_key(alpha)}']
  return record


def _with(protocol, **fields) -> ml_collections.ConfigDict:
  out = ml_collections.ConfigDict(protocol.to_dict())
  out.update(fields)
  return out


def summarize(records: Sequence[Mapping[str, Any]],
              protocol: ml_collections.ConfigDict) -> dict[str, Any]:
  """`keypoint_benchmark.summarize` (alpha_img) plus the alpha_bbox means
  over the pairs with a box and 'num_pairs_with_box'."""
  summary = keypoint_benchmark.summarize(records, _with(protocol,
                                                        threshold='img'))
  summary.pop('per_category', None)  # one group: the folder
  summary['protocol'] = describe_protocol(protocol)
  with_box = [r for r in records if math.isfinite(r['threshold_bbox_px'])]
  summary['num_pairs_with_box'] = len(with_box)
  for alpha in protocol.alphas:
    key = f'{BBOX_PREFIX}{alpha_key(alpha)}'
    summary[key] = pck_lib.mean_over_pairs([r[key] for r in records])
  side = 'target' if protocol.direction == 'st' else 'source'
  conventions = summary['conventions']
  conventions['pck_bbox'] = (
      f'alpha_bbox: L = max side of the {side} box '
      f'({pairs_folder.BOX_FILES[side]}); pairs without it are left out '
      f'(n/a when none has it); {len(with_box)} of {len(records)} pairs have '
      'one')
  return summary


def markdown(summary: Mapping[str, Any]) -> str:
  """The alpha_img tables of `keypoint_benchmark.markdown`, the alpha_bbox
  table (every flow), then the conventions."""
  alphas = summary['alphas']
  head = dict(summary)
  conventions = head.pop('conventions', {}) or {}
  text = keypoint_benchmark.markdown(head).rstrip('\n')
  lines = [text, '', 'alpha_bbox (L = max side of the box of the image '
           f'compared in; {summary.get("num_pairs_with_box", 0)} of '
           f'{summary.get("num_pairs", 0)} pairs have one):', '']
  cells = ['flow'] + [f'PCK_bbox@{alpha_key(a)}' for a in alphas]
  lines += ['| ' + ' | '.join(cells) + ' |', '|---|' + '---:|' * len(alphas)]
  for flow in per_flow.described(summary):
    view = per_flow.view(summary, flow['prefix'], is_flow_metric)
    values = [view.get(f'{BBOX_PREFIX}{alpha_key(a)}') for a in alphas]
    lines.append('| ' + ' | '.join([flow['name']] + [
        f'{v:.3f}' if v is not None and math.isfinite(v) else 'n/a'
        for v in values]) + ' |')
  if conventions:
    lines += ['', 'Conventions:', '']
    lines += [f'* **{k}**: {v}' for k, v in conventions.items()]
  return '\n'.join(lines) + '\n'


# --- scoring a folder ---------------------------------------------------------
def score_pairs(predict_fn: runner.PredictFn, data_dir: str, *,
                model_size: Sequence[int],
                protocol: ml_collections.ConfigDict | None = None,
                num_pairs: int | None = None, num_worst: int = 6,
                progress: bool = False, label: str = '',
                flows: Sequence[outputs.Flow] = outputs.DEFAULT_FLOWS,
                setting: str = '--data_dir') -> runner.Scored:
  """Scores a model on a folder of pairs (module docstring).

  Args:
    predict_fn: `(source (B, Hm, Wm, 3) float32 in [0, 1], target) -> flat
      outputs of every flow` in model-input pixels (`predict.bind`, or a fake
      of `evaluation.fake`).
    data_dir: the folder of pairs.
    model_size: (Hm, Wm) the model runs at.
    protocol: None = `build_protocol()`.
    num_pairs: the first pairs (in name order) only; None = all.
    num_worst: pairs kept for the worst-pairs picture.
    progress: a progress bar on stderr.
    label: stored in the results ('untrained').
    flows: the flows the model declares; each is scored.
    setting: how the user gives `data_dir`, for messages.

  Returns:
    A `runner.Scored` of kind 'keypoints': results {'benchmark': 'pairs',
    'split' (the folder), 'label', 'protocol', 'summary'}, one record per
    pair, the worst pairs (lowest finite 'pck@0.1', earlier first on ties).

  Raises:
    SemcorrError: a bad folder or file (one line naming it), a protocol
      that does not fit the model.
  """
  flows = outputs.check(flows)
  protocol = protocol if protocol is not None else build_protocol()
  protocol_lib.predict_pairs(predict_fn, [], protocol, model_size)
  pairs = pairs_folder.list_pairs(data_dir, setting)
  if num_pairs is not None:
    if int(num_pairs) < 1:
      raise SemcorrError(f'num_pairs must be >= 1, got {num_pairs}')
    pairs = pairs[:int(num_pairs)]
  size = max(1, int(protocol.batch_size))
  records, worst = [], []
  flow_records = {f.name: [] for f in flows}
  with tqdm(total=len(pairs), unit='pair', file=sys.stderr,
            disable=not progress, desc=NAME, dynamic_ncols=True) as bar:
    for start in range(0, len(pairs), size):
      chunk = [pairs_folder.load_pair(p) for p in pairs[start:start + size]]
      predictions = protocol_lib.predict_pairs(
          predict_fn, [(ex['source_image'], ex['target_image'])
                       for ex in chunk], protocol, model_size)
      for ex, pred in zip(chunk, predictions):
        record = _score_flows(ex, pred, protocol, flows, flow_records)
        records.append(record)
        value = record.get(PRIMARY_METRIC, math.nan)
        if math.isfinite(value):
          worst.append((value, len(records), ex, pred, record))
      worst = sorted(worst, key=lambda w: w[:2])[:max(0, int(num_worst))]
      bar.update(len(chunk))
  summary = summarize(flow_records[flows[0].name], protocol)
  for f in flows[1:]:
    per_flow.merge(summary, summarize(flow_records[f.name], protocol),
                   outputs.prefix(flows, f.name), is_flow_metric)
  summary['conventions'].update(per_flow.conventions(flows, 'pairs'))
  summary['flows'] = per_flow.describe(flows)
  folder = os.path.expanduser(os.fsdecode(data_dir))
  results = {'benchmark': NAME, 'split': folder, 'label': label,
             'protocol': describe_protocol(protocol), 'summary': summary}
  return runner.Scored(results, records, [w[2:] for w in worst],
                       'keypoints', protocol, flows)


def _score_flows(example, prediction, protocol, flows, flow_records
                 ) -> dict[str, Any]:
  """One pair's record: the primary flow's fields, the others prefixed."""
  views = per_flow.split(flows, prediction.outputs)
  record = {}
  for f in flows:
    view = protocol_lib.PairPrediction(
        views[f.name], prediction.source_hw, prediction.target_hw,
        prediction.input_size, prediction.pad)
    scores = score_pair(example, view, protocol)
    flow_records[f.name].append(scores)
    if f is flows[0]:
      record.update(scores)
    else:
      per_flow.merge(record, scores, outputs.prefix(flows, f.name),
                     is_flow_metric)
  return record


# --- the evaluator ------------------------------------------------------------
class PairsEvaluator(Evaluator):
  """A folder of the user's annotated pairs (type 'pairs').

  Settings: data_dir (the folder), num_pairs (default: all), num_worst,
  protocol (a preset) and the protocol fields of `PROTOCOL_FIELDS`.
  Files: `<name>.json`, `<name>.md`, `<name>_pairs.csv` (a row per pair),
  `<name>_worst.png`, and `_untrained` ones (`evaluators`).
  """

  SETTINGS = {'data_dir': None, 'num_pairs': None, 'num_worst': 6,
              'protocol': None, **{k: None for k in PROTOCOL_FIELDS}}

  @property
  def protocol(self) -> ml_collections.ConfigDict:
    s = self.settings
    try:
      return build_protocol(s['protocol'],
                            **{k: s[k] for k in PROTOCOL_FIELDS})
    except SemcorrError as e:
      raise SemcorrError(f'evals.{self.name}: {e}') from e

  @property
  def model_size(self) -> tuple[int, int]:
    """The training size, unless the protocol fixes the input."""
    protocol = self.protocol
    if protocol.input_size is None:
      return tuple(int(v) for v in self.config.data.image_size)
    return tuple(int(v) + 2 * int(protocol.pad) for v in protocol.input_size)

  def validate(self) -> None:
    num_pairs = self.settings['num_pairs']
    if num_pairs is not None and int(num_pairs) < 1:
      raise SemcorrError(f'evals.{self.name}.num_pairs must be >= 1, got '
                         f'{num_pairs}')
    protocol_lib.resolve_input_size(self.protocol, self.model_size)
    pairs_folder.list_pairs(self.settings['data_dir'],
                            self.setting('data_dir'))

  def prepare(self) -> None:
    """Reads every pair once: a bad file fails before any model runs."""
    pairs = pairs_folder.list_pairs(self.settings['data_dir'],
                                    self.setting('data_dir'))
    num_pairs = self.settings['num_pairs']
    for pair in pairs[:None if num_pairs is None else int(num_pairs)]:
      pairs_folder.load_pair(pair)

  def describe(self) -> dict[str, Any]:
    return {'type': self.type, 'data_dir': str(self.settings['data_dir'])}

  def metric_names(self) -> set[str]:
    names = set()
    for flow in self.flows:
      p = outputs.prefix(self.flows, flow.name)
      one = metric_names(self.protocol, per_flow.has_confidence(flow))
      names |= {p + k if is_flow_metric(k) else k for k in one}
    return names

  def headline(self) -> list[str]:
    alphas = self.protocol.alphas
    keys = ([f'pck@{alpha_key(a)}' for a in alphas] +
            [f'{BBOX_PREFIX}{alpha_key(a)}' for a in alphas])
    return [outputs.prefix(self.flows, f.name) + k for f in self.flows
            for k in keys]

  def run(self, predict_fn, variables, progress=False):
    s = self.settings
    scored = score_pairs(
        predict.bind(predict_fn, predict.to_one_device(variables)),
        s['data_dir'], model_size=self.model_size, protocol=self.protocol,
        num_pairs=s['num_pairs'], num_worst=int(s['num_worst']),
        progress=progress, flows=self.flows,
        setting=self.setting('data_dir'))
    results = {'benchmark': NAME, 'data_dir': scored.results['split'],
               **scored.results['summary'],
               'protocol': scored.results['protocol']}
    results[reports.ARTEFACTS] = scored
    return results

  def markdown(self, results, untrained=None, step=None, label=''):
    model = [f'Model: {label}.'] if label else []
    model += [f'Checkpoint step {step}.'] if step is not None else []
    head = [f'# {self.name}: pairs in {results.get("data_dir", "")}', '']
    head += [' '.join(model), ''] if model else []
    head += ['Protocol:', ''] + benchmark_reports.protocol_lines(
        describe_protocol(self.protocol)) + ['']
    text = '\n'.join(head) + '\n' + markdown(results)
    if untrained is not None:
      text += ('\n## Untrained model\n\nThe model the run started from '
               '(same seed, pretrained weights if configured), no '
               'training.\n\n' + markdown(untrained))
    return text

  def file_writers(self, out_dir, stem, results, step, trained):
    scored = results.get(reports.ARTEFACTS)
    if scored is None:
      return []
    paths = benchmark_reports.stem_paths(out_dir, stem)
    rows = benchmark_reports.output_writers(paths, scored, {}, '')
    return [w for w in rows if w[0] in (paths['csv'], paths['png'])]


# Flags of `semcorr-eval` that mean nothing for a folder of pairs.
_NOT_FOR_PAIRS = {'split': '--split', 'tfds_dir': '--tfds_dir',
                  'threshold': '--threshold (pairs reports alpha_img and '
                               'alpha_bbox both)',
                  'kps_padding_bug': '--kps_padding_bug'}


def settings_from_flags(settings: Mapping[str, Any]) -> dict[str, Any]:
  """A 'pairs' evaluator's settings from `semcorr-eval`'s benchmark
  settings (`cli.evaluate.benchmark_settings`): None values dropped.

  Raises:
    SemcorrError: a flag that does not apply to pairs was given.
  """
  given = [text for key, text in _NOT_FOR_PAIRS.items()
           if settings.get(key) is not None]
  if given:
    raise SemcorrError(f'--benchmark=pairs takes no {", ".join(given)}')
  out = {k: v for k, v in settings.items()
         if v is not None and k not in _NOT_FOR_PAIRS and k != 'benchmark'}
  out['type'] = NAME
  return out
