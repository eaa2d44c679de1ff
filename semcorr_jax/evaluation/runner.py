"""Benchmark runner: a model over a real benchmark, scores and report files.

  from semcorr_jax.evaluation import runner
  results = runner.evaluate_benchmark(
      runner.method_predict_fn(method, variables), 'pf_pascal',
      model_size=config.data.image_size, data_dir='~/data/pf_pascal',
      out_dir='runs/x/eval')

The records of the split (`semcorr_jax.data.benchmarks.examples`, prepared
into `tfds_dir` from the downloaded files in `data_dir` on first use) are
streamed in groups of `protocol.batch_size` pairs through
`protocol.predict_pairs` and scored one by one by the module of their record
kind (`SCORERS`: keypoints -> `keypoint_benchmark`, flow -> `tss`, masks ->
`caltech`), which share one interface: `PRIMARY_METRIC` (higher is better),
`prepare_example` (optional), `score_pair`, `summarize`, `markdown`,
`is_flow_metric` and `metric_names`. Only the per-pair records and the
`num_worst` pairs with the lowest primary metric (pairs whose metric is NaN
are never "worst") are kept in memory.

Every declared flow (`flows`, `semcorr_jax.outputs`) is scored: each pair's
prediction is split into one `PairPrediction` per flow, scored and
summarised alone, and the other flows' keys join the primary flow's with
their prefixes (`per_flow.merge`: 'base_pck@0.1' for a flow named 'base',
also per category and per factor). A flow declaring a confidence also gets
the confidence metrics on the keypoint benchmarks (`evaluation.confidence`).

Files written under `out_dir` (stem `<benchmark>_<split>`, plus `_<label>`
when a label is given, e.g. `pf_pascal_test_untrained`):

* `<stem>.json`: {'benchmark', 'split', 'label', 'step' (when given),
  'protocol' (every field), 'summary'}; strict JSON (NaN -> null). The
  summary names the flows it holds under 'flows'.
* `<stem>.md`: a header stating the protocol, then the scorer's tables (and
  SPair-71k's per-factor tables).
* `<stem>_pairs.csv`: one row per pair with every record field.
* `<stem>_worst.png`: the worst pairs (`worst_pairs.draw_worst_pairs`),
  one row per pair and flow.

All four are written to temporary files first and renamed only once all of
them are complete: a failing run never leaves half a file and never removes
results written before.
"""

from __future__ import annotations

import dataclasses
import heapq
import inspect
import math
import os
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

import ml_collections
import numpy as np
from tqdm import tqdm

from semcorr_jax import outputs
from semcorr_jax.data import benchmarks
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import benchmark_reports
from semcorr_jax.evaluation import caltech
from semcorr_jax.evaluation import keypoint_benchmark
from semcorr_jax.evaluation import pck as pck_lib
from semcorr_jax.evaluation import per_flow
from semcorr_jax.evaluation import predict
from semcorr_jax.evaluation import protocol as protocol_lib
from semcorr_jax.evaluation import reports
from semcorr_jax.evaluation import spair_tables
from semcorr_jax.evaluation import tss

SCORERS = {'keypoints': keypoint_benchmark, 'flow': tss, 'masks': caltech}
_CHOICES = protocol_lib.CHOICES
PredictFn = Callable[[np.ndarray, np.ndarray], Mapping[str, Any]]


def scorer_of(benchmark: str):
  """The scoring module of a benchmark's record kind."""
  return SCORERS[benchmarks.info(benchmark).kind]


def default_split(benchmark: str) -> str:
  """'test' when the benchmark has it, else its last split."""
  splits = benchmarks.info(benchmark).splits
  return 'test' if 'test' in splits else splits[-1]


def build_protocol(benchmark: str, preset: str | None = None,
                   **overrides: Any) -> ml_collections.ConfigDict:
  """`default_protocol(benchmark)`, a preset, then single fields.

  Args:
    benchmark: a benchmark name.
    preset: None or a key of `protocol.PRESETS` ('resize', 'padded').
    **overrides: protocol fields (e.g. direction='st', alphas=(0.1,));
      None values are ignored.

  Raises:
    SemcorrError: unknown preset or field, or a value out of its choices.
  """
  protocol = protocol_lib.default_protocol(benchmark)
  if preset:
    protocol = protocol_lib.apply_preset(protocol, preset)
  for key, value in overrides.items():
    if value is None:
      continue
    if key not in protocol:
      raise SemcorrError(f'unknown protocol field {key!r}; fields: '
                         f'{", ".join(sorted(protocol.keys()))}')
    if key in _CHOICES and value not in _CHOICES[key]:
      raise SemcorrError(f'{key} must be one of {", ".join(_CHOICES[key])}, '
                         f'got {value!r}')
    if key == 'alphas':
      value = tuple(float(a) for a in value)
      if not value or not all(0 < a <= 1 for a in value):
        raise SemcorrError(f'alphas must be in (0, 1], got {value}')
    if key == 'batch_size' and int(value) < 1:
      raise SemcorrError(f'batch_size must be >= 1, got {value}')
    if key == 'input_size':
      value = tuple(int(v) for v in value)
    protocol[key] = value
  return protocol


def method_predict_fn(method: Any, variables: Any) -> PredictFn:
  """A jitted `predict_fn(source, target)` of a model with a `predict`.

  `predict.bind` of `jax.jit(method.predict)` (cached on the method, so the
  trained and the untrained variables share one compilation) with the
  variables on one device.
  """
  return predict.bind(predict.jitted_predict(method),
                      predict.to_one_device(variables))


def check_data_dir(benchmark: str, data_dir: str | None,
                   setting: str = '--data_dir') -> str:
  """`data_dir` with ~ expanded, or a SemcorrError if it is not a folder.

  Args:
    benchmark: its name.
    data_dir: the folder with its downloaded files.
    setting: how the user sets it, for the message.
  """
  if not data_dir:
    raise SemcorrError(
        f'{benchmark} needs {setting}: the folder with its downloaded files '
        '(see docs/benchmarks.md for what to download)')
  data_dir = os.path.expanduser(data_dir)
  if not os.path.isdir(data_dir):
    raise SemcorrError(f'{benchmark}: data_dir {data_dir} does not exist; '
                       'download the dataset there (docs/benchmarks.md)')
  return data_dir


def prepare_dataset(benchmark: str, split: str | None = None, *,
                    data_dir: str | None, tfds_dir: str | None = None
                    ) -> int:
  """Builds the benchmark's TFDS dataset if needed; returns the split size.

  Raises:
    SemcorrError: no `data_dir`, unknown benchmark or split, missing or
      incomplete files (the builders say what is missing and where to get
      it).
  """
  entry = benchmarks.info(benchmark)
  split = split or default_split(benchmark)
  if split not in entry.splits:
    raise SemcorrError(f'{benchmark} has no split {split!r}; it has '
                       f'{", ".join(entry.splits)}')
  data_dir = check_data_dir(benchmark, data_dir)
  builder = benchmarks.prepare(benchmark, data_dir=_tfds_dir(data_dir,
                                                             tfds_dir),
                               manual_dir=data_dir)
  return int(builder.info.splits[split].num_examples)


def _tfds_dir(data_dir: str, tfds_dir: str | None) -> str:
  return os.path.expanduser(tfds_dir) if tfds_dir else os.path.join(
      data_dir, 'tensorflow_datasets')


def _primary(record: Mapping[str, Any], name: str) -> float:
  try:
    value = float(record[name])
  except (KeyError, TypeError, ValueError):
    return float('nan')
  return value


class _Worst:
  """The `n` items with the lowest finite score seen so far (a heap)."""

  def __init__(self, n: int):
    self.n = max(0, int(n))
    self._heap: list[tuple[float, int, Any]] = []
    self._count = 0

  def offer(self, score: float, make_item: Callable[[], Any]) -> None:
    if not self.n or not math.isfinite(score):
      return
    self._count += 1
    entry = (-score, -self._count, None)
    if len(self._heap) < self.n:
      heapq.heappush(self._heap, entry[:2] + (make_item(),))
    elif entry[:2] > self._heap[0][:2]:  # lower score (earlier on ties)
      heapq.heapreplace(self._heap, entry[:2] + (make_item(),))

  def items(self) -> list[Any]:
    """Worst first; equal scores in stream order."""
    return [item for _, _, item in sorted(self._heap, reverse=True)]


def _light_copy(prediction: Any, flows: Sequence[outputs.Flow]) -> Any:
  """The prediction with its own copies of what the picture draws only:
  every flow's mappings and confidences (a batch's arrays are not kept
  alive by the few pairs held for the picture)."""
  drawn = [outputs.key(flows, f.name, kind, d) for f in flows
           for kind in (outputs.MAPPING, outputs.CONFIDENCE)
           for d in outputs.DIRECTIONS]
  return protocol_lib.PairPrediction(
      {k: np.array(prediction.outputs[k]) for k in drawn
       if k in prediction.outputs},
      prediction.source_hw, prediction.target_hw, prediction.input_size,
      prediction.pad)


def _chunks(items: Iterable[Any], size: int, limit: int | None):
  chunk = []
  for i, item in enumerate(items):
    if limit is not None and i >= limit:
      break
    chunk.append(item)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def _summarize(scorer, records, protocol):
  params = inspect.signature(scorer.summarize).parameters
  if len(params) >= 2:
    return scorer.summarize(records, protocol)
  return scorer.summarize(records)


def _spair_tables(records, protocol) -> dict[str, Any]:
  """{alpha_key: `spair_tables.spair_tables(records, alpha)`}."""
  return {pck_lib.alpha_key(a): spair_tables.spair_tables(records, a)
          for a in protocol.alphas}


@dataclasses.dataclass
class Scored:
  """One model scored on one split (`score_benchmark`).

  Attributes:
    results: {'benchmark', 'split', 'label', 'step' (when given),
      'protocol', 'summary'} (the JSON file's content).
    records: one record per pair, every flow's fields (the CSV rows).
    worst: (example, light prediction, record) of the worst pairs.
    kind: the benchmark's record kind ('keypoints', 'flow', 'masks').
    protocol: the protocol used.
    flows: the flows scored (and drawn), primary first.
  """
  results: dict[str, Any]
  records: list[dict[str, Any]]
  worst: list[tuple[Any, Any, dict[str, Any]]]
  kind: str
  protocol: ml_collections.ConfigDict
  flows: tuple[outputs.Flow, ...] = outputs.DEFAULT_FLOWS

  @property
  def primary_metric(self) -> str:
    return SCORERS[self.kind].PRIMARY_METRIC


def _flow_predictions(prediction: protocol_lib.PairPrediction,
                      flows: Sequence[outputs.Flow]
                      ) -> dict[str, protocol_lib.PairPrediction]:
  """One `PairPrediction` per declared flow, holding that flow's maps
  under the primary names ('mapping_st', 'confidence_st', ...)."""
  return {name: protocol_lib.PairPrediction(
      maps, prediction.source_hw, prediction.target_hw,
      prediction.input_size, prediction.pad)
          for name, maps in per_flow.split(flows, prediction.outputs).items()}


def score_benchmark(predict_fn: PredictFn, benchmark: str, *,
                    model_size: Sequence[int], split: str | None = None,
                    data_dir: str | None = None, tfds_dir: str | None = None,
                    protocol: ml_collections.ConfigDict | None = None,
                    num_pairs: int | None = None, progress: bool = True,
                    num_worst: int = 6, label: str = '',
                    step: int | None = None,
                    flows: Sequence[outputs.Flow] = outputs.DEFAULT_FLOWS,
                    data_dir_setting: str = '--data_dir') -> Scored:
  """Scores a model on one split of a real benchmark (module docstring).

  Arguments as `evaluate_benchmark`; writes nothing
  (`benchmark_reports.output_writers` writes the files).
  """
  flows = outputs.check(flows)
  split = split or default_split(benchmark)
  protocol = protocol if protocol is not None else (
      protocol_lib.default_protocol(benchmark))
  scorer = scorer_of(benchmark)
  kind = benchmarks.info(benchmark).kind
  # No pairs: only checks that the protocol's input fits the model.
  protocol_lib.predict_pairs(predict_fn, [], protocol, model_size)
  if num_pairs is not None and int(num_pairs) < 1:
    raise SemcorrError(f'num_pairs must be >= 1, got {num_pairs}')
  check_data_dir(benchmark, data_dir, data_dir_setting)
  total = prepare_dataset(benchmark, split, data_dir=data_dir,
                          tfds_dir=tfds_dir)
  if num_pairs is not None:
    total = min(total, int(num_pairs))
  data_dir = os.path.expanduser(data_dir)
  stream = benchmarks.examples(benchmark, split,
                               data_dir=_tfds_dir(data_dir, tfds_dir),
                               manual_dir=data_dir)
  prepare = getattr(scorer, 'prepare_example', None) or (lambda ex: ex)
  worst = _Worst(num_worst)
  records = []
  flow_records = {f.name: [] for f in flows}
  with tqdm(total=total, unit='pair', file=sys.stderr, disable=not progress,
            desc=f'{benchmark} {split}', dynamic_ncols=True) as bar:
    for chunk in _chunks(stream, max(1, int(protocol.batch_size)), total):
      chunk = [prepare(ex) for ex in chunk]
      predictions = protocol_lib.predict_pairs(
          predict_fn, [(ex['source_image'], ex['target_image'])
                       for ex in chunk], protocol, model_size)
      for ex, pred in zip(chunk, predictions):
        scores = {name: dict(scorer.score_pair(ex, view, protocol))
                  for name, view in _flow_predictions(pred, flows).items()}
        record = dict(scores[flows[0].name])
        for f in flows:
          flow_records[f.name].append(scores[f.name])
          if f is not flows[0]:
            per_flow.merge(record, scores[f.name],
                           outputs.prefix(flows, f.name),
                           scorer.is_flow_metric)
        records.append(record)
        worst.offer(_primary(record, scorer.PRIMARY_METRIC),
                    lambda ex=ex, pred=pred, record=record: (
                        ex, _light_copy(pred, flows), record))
      bar.update(len(chunk))
  if not records:
    raise SemcorrError(f'{benchmark} {split} holds no pairs')
  summary = dict(_summarize(scorer, flow_records[flows[0].name], protocol))
  for f in flows[1:]:
    per_flow.merge(summary,
                   _summarize(scorer, flow_records[f.name], protocol),
                   outputs.prefix(flows, f.name), scorer.is_flow_metric)
  if isinstance(summary.get('conventions'), dict):
    summary['conventions'].update(per_flow.conventions(flows, 'pairs'))
  summary['flows'] = per_flow.describe(flows)
  if benchmark == 'spair71k':
    summary['spair_tables'] = _spair_tables(records, protocol)
  results: dict[str, Any] = {'benchmark': benchmark, 'split': split,
                             'label': label}
  if step is not None:
    results['step'] = int(step)
  results['protocol'] = protocol.to_dict()
  results['summary'] = summary
  return Scored(results, records, worst.items(), kind, protocol, flows)


def evaluate_benchmark(predict_fn: PredictFn, benchmark: str, *,
                       model_size: Sequence[int], split: str | None = None,
                       data_dir: str | None = None,
                       tfds_dir: str | None = None,
                       protocol: ml_collections.ConfigDict | None = None,
                       num_pairs: int | None = None,
                       out_dir: str | None = None, progress: bool = True,
                       num_worst: int = 6, label: str = '',
                       step: int | None = None,
                       flows: Sequence[outputs.Flow] = outputs.DEFAULT_FLOWS
                       ) -> dict[str, Any]:
  """Scores a model on one split of a real benchmark (module docstring).

  Args:
    predict_fn: `(source (B, Hm, Wm, 3) float32 in [0, 1], target) ->
      flat outputs of every flow in `flows`, e.g. {'mapping_st',
      'mapping_ts': (B, Hm, Wm, 2)}` in model-input pixels
      (`predict.bind`, `method_predict_fn`, or a fake of `evaluation.fake`).
    benchmark: 'pf_pascal', 'pf_willow', 'spair71k', 'tss' or 'caltech101'.
    model_size: (Hm, Wm) the model runs at.
    split: None = 'test'.
    data_dir: the folder with the downloaded files (the TFDS manual dir).
    tfds_dir: where the prepared TFDS dataset goes; None =
      `<data_dir>/tensorflow_datasets`.
    protocol: None = `protocol.default_protocol(benchmark)`.
    num_pairs: the first pairs of the split only; None = all.
    out_dir: where to write the files; None = write nothing.
    progress: show a progress bar (pairs/s) on stderr.
    num_worst: pairs drawn in the worst-pairs picture.
    label: stored in the JSON and appended to the file stem ('untrained').
    step: the checkpoint step, stored when given.
    flows: the flows the model declares; each is scored.

  Returns:
    The dict written to the JSON file (NaN kept as float NaN).

  Raises:
    SemcorrError: no data_dir, incomplete dataset, bad protocol, no pairs.
  """
  scored = score_benchmark(
      predict_fn, benchmark, model_size=model_size, split=split,
      data_dir=data_dir, tfds_dir=tfds_dir, protocol=protocol,
      num_pairs=num_pairs, progress=progress, num_worst=num_worst,
      label=label, step=step, flows=flows)
  if out_dir:
    paths = benchmark_reports.output_paths(out_dir, benchmark,
                                           scored.results['split'], label)
    reports.write_all(benchmark_reports.output_writers(
        paths, scored, scored.results,
        benchmark_reports.results_markdown(scorer_of(benchmark),
                                           scored.results)))
  return scored.results
