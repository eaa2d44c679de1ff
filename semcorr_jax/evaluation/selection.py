"""Model selection history: the selecting evaluator's metric at each step.

The evaluator whose `select` names a metric (`evaluation.evaluators`; e.g.
'pck@0.1' on PF-PASCAL validation, as SFNet and CAMNet select) is scored
every `every` steps; each score is added to `workdir/eval/model_selection.json`:

  {'evaluator', 'metric', <what the evaluator says about itself, e.g.
   'benchmark', 'split'>, 'history': [{'step', 'value'}, ...], 'best_step',
   'best_value'}

The checkpoint of the best step is kept by the trainer (Orbax `best_fn`,
`workdir/best/`), so `semcorr-eval --best` scores the selected model.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from semcorr_jax import output_paths
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import reports

FILE = 'model_selection.json'


def path(workdir: str) -> str:
  return os.path.join(workdir, 'eval', FILE)


def record(workdir: str, step: int, value: float, *, metric: str,
           about: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Adds (step, value) to eval/model_selection.json (atomic) and returns it.

  A step already in the history (a resumed run) is replaced, so the file
  stays one entry per step; the best is the highest finite value, earliest
  step on ties.

  Args:
    workdir: the run's folder.
    step: the training step scored.
    value: the metric's value (NaN never wins).
    metric: the metric's name.
    about: stored beside it, e.g. {'evaluator': 'pf_pascal_val',
      'benchmark': 'pf_pascal', 'split': 'validation'}.

  Raises:
    SemcorrError: an existing file cannot be read.
  """
  file = path(workdir)
  data = {**dict(about or {}), 'metric': metric, 'history': []}
  if output_paths.as_path(file).exists():
    try:
      data['history'] = json.loads(
          output_paths.as_path(file).read_text()).get('history', [])
    except (OSError, ValueError) as e:
      raise SemcorrError(f'cannot read {file}: {e}') from e
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
  output_paths.makedirs(os.path.dirname(file))
  reports.write_json(file, data)
  return data
