r"""Evaluators: named evaluations of a model, built from `config.evals`.

big_vision's evaluator pattern. `config.evals` maps names to settings; each
entry's `type` picks the evaluator class (`register`, `build`):

  c.evals.synthetic = dict(type='synthetic', every=0,
                           untrained_baseline=True, select='', num_pairs=64)
  c.evals.pf_pascal_val = dict(type='benchmark', benchmark='pf_pascal',
                               split='validation', data_dir=..., every=1000,
                               untrained_baseline=False, select='pck@0.1')

Settings of every type (`COMMON`):
  type: 'synthetic', 'benchmark', another registered type, or
    'module.path:Class' (an `Evaluator` subclass anywhere importable).
  every: steps between evaluations while training (0: only at the end).
  untrained_baseline: also score the model the run starts from; its results
    are reported beside the trained model's.
  select: '' or a metric this evaluator reports, to maximise: model
    selection (history in eval/model_selection.json, `selection`; the best
    checkpoint is kept by the trainer). At most one evaluator selects.

Types:
  'synthetic' (`SyntheticEvaluator`): held-out synthetic pairs with dense
    ground truth (`evaluation.synthetic`); settings num_pairs, batch_size,
    seed, alphas, keypoint_stride, confidence_split, num_pictures.
  'benchmark' (`BenchmarkEvaluator`): a split of a TFDS benchmark through
    `evaluation.runner`; settings benchmark, split (default: test),
    data_dir, tfds_dir, num_pairs (default: all), num_worst, protocol (a
    preset of `evaluation.protocol`) and any protocol field (alphas,
    direction, threshold, frame, input_size, batch_size, ...).
  'pairs' (`pairs_benchmark.PairsEvaluator`): a folder of the user's own
    annotated pairs (`data.pairs_folder`), PCK at alpha_img and alpha_bbox;
    settings data_dir, num_pairs, num_worst, protocol and the fields of
    `pairs_benchmark.PROTOCOL_FIELDS` (direction 'st' by default).

Use (the trainer and `semcorr-eval`; neither knows an evaluator by name):

  evals = evaluators.build(config, method.flows)
  for ev in evals:
    ev.check()                       # before training: one clear error
  predict_fn = jax.jit(method.predict)
  # Once, before training, if ev.untrained_baseline and no baseline yet:
  ev.write_untrained(workdir, ev.run(predict_fn, initial_variables))
  # Every ev.every steps and at the end:
  results = ev.run(predict_fn, variables)
  scalars = ev.scalars(results)      # for metric writers
  if ev.select:                      # eval/model_selection.json
    record_selection(workdir, ev, step, ev.select_value(results))
  ev.write(workdir, results, untrained=ev.read_untrained(workdir), step=step)
  print(ev.summary(results, ev.read_untrained(workdir)))

An evaluator gets a predict function `(variables, source, target) -> flat
outputs` and the method's declared flows (`semcorr_jax.outputs`); it scores
every flow (the primary flow's metrics unprefixed, the others' prefixed,
confidence metrics for flows declaring a confidence) and never builds a
method or reads a checkpoint.

Results of `run`: a dict whose metrics are flat scalars at its top level
('pck@0.1', 'base_pck@0.1', 'confidence_auc@0.1', 'num_pairs', ...; read
them with `scalars`), beside descriptive entries ('alphas', 'flows',
'conventions', 'per_category', ...) and, under `reports.ARTEFACTS`,
in-memory data for the pictures and per-pair files (never written to JSON).

Files under `workdir/eval/` of an evaluator named `<name>`:
  <name>.json            {'evaluator', 'type', 'step', 'trained', 'untrained'}
  <name>.md              the tables, the untrained model's beside
  <name>_untrained.json  the untrained results alone (+ .md)
  synthetic:  <name>_pairs.png (held-out pairs with the trained model's
              matches), pairs/pair_00{0,1}_{source,target}.png
  benchmark, pairs:
              <name>_pairs.csv (one row per pair), <name>_worst.png, and
              the same of the untrained model (<name>_untrained_pairs.csv)
The evaluator named 'synthetic' thus writes synthetic.json, synthetic.md and
synthetic_untrained.json.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Mapping, Sequence

from semcorr_jax import outputs
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import builtin_evaluators
from semcorr_jax.evaluation import evaluator
from semcorr_jax.evaluation import pairs_benchmark
from semcorr_jax.evaluation import selection

# The names a method module or a test uses.
COMMON = evaluator.COMMON
Evaluator = evaluator.Evaluator
SyntheticEvaluator = builtin_evaluators.SyntheticEvaluator
BenchmarkEvaluator = builtin_evaluators.BenchmarkEvaluator


def record_selection(workdir: str, ev: Evaluator, step: int, value: float
                     ) -> dict[str, Any]:
  """Adds `ev`'s `select` metric at `step` to eval/model_selection.json.

  Returns:
    The file's content ('history', 'best_step', 'best_value', ...).
  """
  return selection.record(workdir, step, value, metric=ev.select,
                          about={'evaluator': ev.name, **ev.describe()})


# --- registry -----------------------------------------------------------------
_TYPES: dict[str, type[Evaluator]] = {}


def register(type_name: str, cls: type[Evaluator]) -> None:
  """Makes `type=type_name` in `config.evals` build `cls`.

  A type outside this package can also be named directly in the config
  as 'module.path:Class' (imported when the evaluators are built).

  Raises:
    SemcorrError: the name is taken by another class.
  """
  if _TYPES.get(type_name, cls) is not cls:
    raise SemcorrError(f'evaluator type {type_name!r} is already registered '
                       f'({_TYPES[type_name].__name__})')
  _TYPES[type_name] = cls


def types() -> tuple[str, ...]:
  return tuple(sorted(_TYPES))


register('synthetic', SyntheticEvaluator)
register('benchmark', BenchmarkEvaluator)
register(pairs_benchmark.NAME, pairs_benchmark.PairsEvaluator)


def _as_dict(settings: Any) -> dict[str, Any]:
  return settings.to_dict() if hasattr(settings, 'to_dict') else dict(
      settings)


def from_settings(name: str, settings: Mapping[str, Any], config: Any,
                  flows: Sequence[outputs.Flow]) -> Evaluator:
  """One evaluator of `type=settings['type']`.

  Raises:
    SemcorrError: a bad name, no or an unknown type.
  """
  if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', name):
    raise SemcorrError(f'evaluator name {name!r}: use letters, digits, '
                       "'_', '-' and '.' (it names the files)")
  settings = _as_dict(settings)
  kind = settings.get('type')
  cls = _TYPES.get(kind) if isinstance(kind, str) else None
  if cls is None and isinstance(kind, str) and ':' in kind:
    cls = _import_type(name, kind)
  if cls is None:
    raise SemcorrError(f'evals.{name}.type={kind!r}: unknown evaluator type; '
                       f"known: {', '.join(types())} or 'module:Class'")
  return cls(name, settings, config, flows)


def _import_type(name: str, target: str) -> type[Evaluator]:
  """The Evaluator class `target` = 'module.path:Class' names."""
  module, _, attr = target.partition(':')
  try:
    cls = getattr(importlib.import_module(module), attr)
  except (ImportError, AttributeError) as e:
    raise SemcorrError(f'evals.{name}.type={target!r} does not import: '
                       f'{e}') from e
  if not (isinstance(cls, type) and issubclass(cls, Evaluator)):
    raise SemcorrError(f'evals.{name}.type={target!r} is not an Evaluator '
                       'class')
  return cls


def build(config: Any, flows: Sequence[outputs.Flow],
          names: Sequence[str] | None = None,
          overrides: Mapping[str, Any] | None = None) -> list[Evaluator]:
  """The evaluators of `config.evals`, in its order (a ConfigDict's keys
  are sorted).

  Args:
    config: the run's config (`evals`, and what the types read, e.g. `data`).
    flows: the method's declared flows.
    names: only these evaluators (in this order); None = all.
    overrides: settings applied to every evaluator whose type has them
      (e.g. {'num_pairs': 8}, or a `COMMON` one such as
      untrained_baseline); None values are ignored.

  Raises:
    SemcorrError: an unknown name or type, or more than one `select`.
  """
  evals = _as_dict(config.get('evals') or {})
  if names is None:
    names = list(evals)
  unknown = [n for n in names if n not in evals]
  if unknown:
    raise SemcorrError(f'no evaluator {", ".join(map(repr, unknown))} in the '
                       f'config; it has: {", ".join(evals) or "none"}')
  built = []
  for name in names:
    settings = _as_dict(evals[name])
    cls = _TYPES.get(settings.get('type'))
    for key, value in (overrides or {}).items():
      known = set(COMMON) - {'type'} | set(getattr(cls, 'SETTINGS', ()))
      if value is not None and key in known:
        settings[key] = value
    built.append(from_settings(name, settings, config, flows))
  selecting(built)
  return built


def selecting(evaluators: Sequence[Evaluator]) -> Evaluator | None:
  """The evaluator whose `select` is set, or None.

  Raises:
    SemcorrError: more than one selects (one best checkpoint is kept).
  """
  chosen = [ev for ev in evaluators if ev.select]
  if len(chosen) > 1:
    raise SemcorrError(
        'only one evaluator may select the model (one best checkpoint is '
        f'kept); {", ".join(ev.name for ev in chosen)} all set select')
  return chosen[0] if chosen else None
