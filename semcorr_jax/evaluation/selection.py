"""Model selection on a real benchmark's validation split during training.

With `config.eval.select_benchmark` set (e.g. 'pf_pascal', as SFNet and
CAMNet select on PF-PASCAL validation), the trainer scores the model on
`config.eval.select_split` every `config.eval_every` steps and at the end,
logs `config.eval.select_metric` (split 'val' of metrics.jsonl and
TensorBoard) and keeps `workdir/eval/model_selection.json`:

  {'benchmark', 'split', 'metric', 'history': [{'step', 'value'}, ...],
   'best_step', 'best_value'}

Checkpoints are kept by `keep_checkpoints` as always; the paper configs keep
every checkpoint (None) and checkpoint at the evaluation steps, so
`semcorr-eval --step=<best_step>` scores the selected model.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import ml_collections

from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import reports

FILE = 'model_selection.json'


def enabled(config: ml_collections.ConfigDict) -> bool:
  return bool(config.eval.get('select_benchmark'))


def check(config: ml_collections.ConfigDict) -> None:
  """Fails before training if selection is asked for without its data.

  Raises:
    SemcorrError: unknown benchmark, missing data folder, or no
      `eval_every`.
  """
  if not enabled(config):
    return
  from semcorr_jax.evaluation import runner  # pylint: disable=g-import-not-at-top
  ev = config.eval
  benchmark = ev.select_benchmark
  try:
    runner.scorer_of(benchmark)
  except (KeyError, ValueError, SemcorrError) as e:
    raise SemcorrError(f'eval.select_benchmark={benchmark!r}: {e}') from e
  if not ev.get('select_data_dir'):
    raise SemcorrError(
        f'eval.select_benchmark={benchmark!r} needs '
        f'--config.eval.select_data_dir=<folder with the {benchmark} files> '
        "(docs/benchmarks.md), or --config.eval.select_benchmark='' to train "
        'without model selection')
  runner.check_data_dir(benchmark, ev.select_data_dir)
  if int(config.get('eval_every', 0)) <= 0:
    raise SemcorrError('eval.select_benchmark needs eval_every > 0 (steps '
                       'between validation runs)')


def validate(method: Any, variables: Any,
             config: ml_collections.ConfigDict) -> float:
  """`config.eval.select_metric` of the model on the selection split."""
  from semcorr_jax.evaluation import runner  # pylint: disable=g-import-not-at-top
  ev = config.eval
  results = runner.evaluate_benchmark(
      runner.method_predict_fn(method, variables), ev.select_benchmark,
      model_size=tuple(config.data.image_size), split=ev.select_split,
      data_dir=ev.select_data_dir, num_pairs=ev.get('select_num_pairs'),
      progress=False)
  summary = results['summary']
  if ev.select_metric not in summary:
    raise SemcorrError(
        f'eval.select_metric={ev.select_metric!r} is not reported for '
        f'{ev.select_benchmark}; available: '
        f'{sorted(k for k, v in summary.items() if isinstance(v, float))}')
  return float(summary[ev.select_metric])


def record(workdir: str, config: ml_collections.ConfigDict, step: int,
           value: float) -> dict[str, Any]:
  """Adds (step, value) to eval/model_selection.json (atomic) and returns it.

  A step already in the history (a resumed run) is replaced, so the file
  stays one entry per step; the best is the highest finite value, earliest
  step on ties.
  """
  ev = config.eval
  path = os.path.join(workdir, 'eval', FILE)
  data = {'benchmark': ev.select_benchmark, 'split': ev.select_split,
          'metric': ev.select_metric, 'history': []}
  if os.path.exists(path):
    try:
      with open(path) as f:
        data['history'] = json.load(f).get('history', [])
    except (OSError, ValueError) as e:
      raise SemcorrError(f'cannot read {path}: {e}') from e
  # NaN is stored as null.
  history = [{'step': int(h['step']),
              'value': float('nan') if h['value'] is None else h['value']}
             for h in data['history'] if int(h['step']) != int(step)]
  history.append({'step': int(step), 'value': float(value)})
  history.sort(key=lambda h: h['step'])
  finite = [h for h in history if math.isfinite(h['value'])]
  best = max(finite, key=lambda h: (h['value'], -h['step']), default=None)
  data.update(history=history,
              best_step=best['step'] if best else None,
              best_value=best['value'] if best else None)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  reports.write_json(path, data)
  return data
