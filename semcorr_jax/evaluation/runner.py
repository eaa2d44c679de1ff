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
`prepare_example` (optional), `score_pair`, `summarize`, `markdown`. Only
the per-pair records and the `num_worst` pairs with the lowest primary
metric (pairs whose metric is NaN are never "worst") are kept in memory.
Predictions with base mappings or confidence maps (CAMNet) get base-flow and
confidence metrics on the keypoint benchmarks (`keypoint_benchmark`,
`evaluation.confidence`); TSS and Caltech-101 score the final mapping only.

Files written under `out_dir` (stem `<benchmark>_<split>`, plus `_<label>`
when a label is given, e.g. `pf_pascal_test_untrained`):

* `<stem>.json`: {'benchmark', 'split', 'label', 'step' (when given),
  'protocol' (every field), 'summary'}; strict JSON (NaN -> null).
* `<stem>.md`: a header stating the protocol, then the scorer's tables (and
  SPair-71k's per-factor tables).
* `<stem>_pairs.csv`: one row per pair with every record field.
* `<stem>_worst.png`: the worst pairs (`worst_pairs.draw_worst_pairs`).

All four are written to temporary files first and renamed only once all of
them are complete: a failing run never leaves half a file and never removes
results written before.
"""

from __future__ import annotations

import heapq
import importlib
import inspect
import math
import os
import sys
from typing import Any, Callable, Iterable, Mapping, Sequence

import ml_collections
import numpy as np

from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import protocol as protocol_lib
from semcorr_jax.evaluation import reports

SCORERS = {
    'keypoints': 'semcorr_jax.evaluation.keypoint_benchmark',
    'flow': 'semcorr_jax.evaluation.tss',
    'masks': 'semcorr_jax.evaluation.caltech',
}
SUFFIXES = ('.json', '.md', '_pairs.csv', '_worst.png')
_CHOICES = {'direction': ('ts', 'st'), 'threshold': ('img', 'bbox', 'kps'),
            'frame': ('square', 'original')}
PredictFn = Callable[[np.ndarray, np.ndarray], Mapping[str, Any]]


def scorer_of(benchmark: str):
  """The scoring module of a benchmark's record kind."""
  from semcorr_jax.data import benchmarks  # pylint: disable=g-import-not-at-top
  return importlib.import_module(SCORERS[benchmarks.info(benchmark).kind])


def default_split(benchmark: str) -> str:
  """'test' when the benchmark has it, else its last split."""
  from semcorr_jax.data import benchmarks  # pylint: disable=g-import-not-at-top
  splits = benchmarks.info(benchmark).splits
  return 'test' if 'test' in splits else splits[-1]


def build_protocol(benchmark: str, preset: str | None = None,
                   **overrides: Any) -> ml_collections.ConfigDict:
  """`default_protocol(benchmark)`, a preset, then single fields.

  Args:
    benchmark: a benchmark name.
    preset: None or a key of `protocol.PRESETS` ('resize', 'sfnet').
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
    protocol[key] = value
  return protocol


def method_predict_fn(method: Any, variables: Any) -> PredictFn:
  """A jitted `predict_fn(source, target)` of a trained method.

  `jax.jit(method.predict)` (cached on the method, so the trained and the
  untrained variables share one compilation) with the variables on one
  device. A batch smaller than the largest seen so far is filled up by
  repeating its last pair, so a final partial batch does not recompile.

  Args:
    method: a `Method`.
    variables: its inference variables.

  Returns:
    `(source (B, Hm, Wm, 3) float32 in [0, 1], target) -> outputs`, numpy
    arrays (B, ...).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from semcorr_jax.evaluation import synthetic  # pylint: disable=g-import-not-at-top
  fn = synthetic.jitted_predict(method)
  variables = synthetic.to_one_device(variables)
  largest = [0]

  def predict_fn(source, target):
    n = len(source)
    largest[0] = max(largest[0], n)
    pad = largest[0] - n
    if pad:
      source = np.concatenate([source, np.repeat(source[-1:], pad, 0)])
      target = np.concatenate([target, np.repeat(target[-1:], pad, 0)])
    out = jax.device_get(dict(fn(variables, np.asarray(source, np.float32),
                                 np.asarray(target, np.float32))))
    return {k: np.asarray(v)[:n] for k, v in out.items()
            if np.ndim(v) > 0 and np.shape(v)[0] == n + pad}

  return predict_fn


def output_paths(out_dir: str, benchmark: str, split: str,
                 label: str = '') -> dict[str, str]:
  """{'json', 'md', 'csv', 'png'}: the files `evaluate_benchmark` writes."""
  stem = f'{benchmark}_{split}' + (f'_{label}' if label else '')
  base = os.path.join(out_dir, stem)
  return dict(zip(('json', 'md', 'csv', 'png'),
                  (base + s for s in SUFFIXES)))


def check_data_dir(benchmark: str, data_dir: str | None) -> str:
  """`data_dir` with ~ expanded, or a SemcorrError if it is not a folder."""
  if not data_dir:
    raise SemcorrError(
        f'{benchmark} needs --data_dir: the folder with its downloaded files '
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
  from semcorr_jax.data import benchmarks  # pylint: disable=g-import-not-at-top
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


def _light_copy(prediction: Any) -> Any:
  """The prediction with its own copies of the mappings only (a batch's
  arrays are not kept alive by the few pairs held for the picture)."""
  return protocol_lib.PairPrediction(
      {k: np.array(prediction.outputs[k]) for k in ('mapping_st',
                                                   'mapping_ts')},
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
  from semcorr_jax.evaluation import spair_tables  # pylint: disable=g-import-not-at-top
  return {reports.alpha_key(a): spair_tables.spair_tables(records, a)
          for a in protocol.alphas}


def summary_markdown(benchmark: str, summary: Mapping[str, Any]) -> str:
  """The scorer's Markdown of a summary (+ SPair-71k's tables per alpha)."""
  text = scorer_of(benchmark).markdown(summary).rstrip('\n')
  if summary.get('spair_tables'):
    from semcorr_jax.evaluation import spair_tables  # pylint: disable=g-import-not-at-top
    text += ''.join('\n\n' + spair_tables.spair_markdown(t).rstrip('\n')
                    for t in summary['spair_tables'].values())
  return text + '\n'


def protocol_lines(protocol: ml_collections.ConfigDict) -> list[str]:
  """The protocol fields as Markdown bullet lines."""
  lines = []
  for key, value in sorted(protocol.to_dict().items()):
    if isinstance(value, (list, tuple)):
      value = ', '.join(str(v) for v in value)
    lines.append(f'* {key}: {value}')
  return lines


def _markdown(results: Mapping[str, Any], body: str) -> str:
  title = f"# {results['benchmark']} ({results['split']})"
  model = []
  if results.get('label'):
    model.append(f"model: {results['label']}")
  if results.get('step') is not None:
    model.append(f"checkpoint step {results['step']}")
  head = [title, '']
  if model:
    text = '; '.join(model)
    head += [text[:1].upper() + text[1:] + '.', '']
  head += ['Protocol:', ''] + protocol_lines(
      ml_collections.ConfigDict(results['protocol'])) + ['']
  return '\n'.join(head) + '\n' + body.rstrip('\n') + '\n'


def evaluate_benchmark(predict_fn: PredictFn, benchmark: str, *,
                       model_size: Sequence[int], split: str | None = None,
                       data_dir: str | None = None,
                       tfds_dir: str | None = None,
                       protocol: ml_collections.ConfigDict | None = None,
                       num_pairs: int | None = None,
                       out_dir: str | None = None, progress: bool = True,
                       num_worst: int = 6, label: str = '',
                       step: int | None = None) -> dict[str, Any]:
  """Scores a model on one split of a real benchmark (module docstring).

  Args:
    predict_fn: `(source (B, Hm, Wm, 3) float32 in [0, 1], target) ->
      {'mapping_st', 'mapping_ts': (B, Hm, Wm, 2)}` in model-input pixels
      (`method_predict_fn`, or a fake of `evaluation.fake`).
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

  Returns:
    The dict written to the JSON file (NaN kept as float NaN).

  Raises:
    SemcorrError: no data_dir, incomplete dataset, bad protocol, no pairs.
  """
  from semcorr_jax.data import benchmarks  # pylint: disable=g-import-not-at-top
  split = split or default_split(benchmark)
  protocol = protocol if protocol is not None else (
      protocol_lib.default_protocol(benchmark))
  scorer = scorer_of(benchmark)
  kind = benchmarks.info(benchmark).kind
  # No pairs: only checks that the protocol's input fits the model.
  protocol_lib.predict_pairs(predict_fn, [], protocol, model_size)
  if num_pairs is not None and int(num_pairs) < 1:
    raise SemcorrError(f'num_pairs must be >= 1, got {num_pairs}')
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
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  with tqdm(total=total, unit='pair', file=sys.stderr, disable=not progress,
            desc=f'{benchmark} {split}', dynamic_ncols=True) as bar:
    for chunk in _chunks(stream, max(1, int(protocol.batch_size)), total):
      chunk = [prepare(ex) for ex in chunk]
      predictions = protocol_lib.predict_pairs(
          predict_fn, [(ex['source_image'], ex['target_image'])
                       for ex in chunk], protocol, model_size)
      for ex, pred in zip(chunk, predictions):
        record = dict(scorer.score_pair(ex, pred, protocol))
        records.append(record)
        worst.offer(_primary(record, scorer.PRIMARY_METRIC),
                    lambda ex=ex, pred=pred, record=record: (
                        ex, _light_copy(pred), record))
      bar.update(len(chunk))
  if not records:
    raise SemcorrError(f'{benchmark} {split} holds no pairs')
  summary = dict(_summarize(scorer, records, protocol))
  if benchmark == 'spair71k':
    summary['spair_tables'] = _spair_tables(records, protocol)
  body = summary_markdown(benchmark, summary)
  results: dict[str, Any] = {'benchmark': benchmark, 'split': split,
                             'label': label}
  if step is not None:
    results['step'] = int(step)
  results['protocol'] = protocol.to_dict()
  results['summary'] = summary
  if out_dir:
    _write_outputs(out_dir, results, _markdown(results, body), records,
                   worst.items(), kind, protocol, scorer.PRIMARY_METRIC)
  return results


def _write_outputs(out_dir, results, markdown, records, worst, kind,
                   protocol, primary) -> dict[str, str]:
  """Writes the four files, all or none (module docstring)."""
  from semcorr_jax.evaluation import worst_pairs  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  paths = output_paths(out_dir, results['benchmark'], results['split'],
                       results.get('label', ''))
  tmp = {k: reports.temporary_path(p) for k, p in paths.items()}
  try:
    reports.write_json(tmp['json'], results, atomic=False)
    reports.write_text(tmp['md'], markdown, atomic=False)
    reports.write_csv(tmp['csv'], records, atomic=False)
    rows = [worst_pairs.worst_pair_row(ex, pred, record, kind, protocol,
                                     primary) for ex, pred, record in worst]
    label = f" ({results['label']})" if results.get('label') else ''
    worst_pairs.draw_worst_pairs(
        tmp['png'], rows,
        title=(f"{results['benchmark']} {results['split']}{label}: the "
               f'{len(rows)} pairs with the lowest {primary}'))
    for key, path in paths.items():
      os.replace(tmp[key], path)
  finally:
    for path in tmp.values():
      if os.path.exists(path):
        os.remove(path)
  return paths
