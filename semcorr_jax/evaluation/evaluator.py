"""The evaluator interface (`Evaluator`); `evaluators` builds them.

An evaluator scores one model with a predict function and writes its files;
`evaluators`' docstring describes the settings, the results and the files.
"""

from __future__ import annotations

import abc
import math
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from semcorr_jax import output_paths
from semcorr_jax import outputs
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import predict
from semcorr_jax.evaluation import reports

COMMON = {'type': '', 'every': 0, 'untrained_baseline': False, 'select': ''}
Writers = list[tuple[str, Callable[[str], Any]]]


class Evaluator(abc.ABC):
  """One named evaluation (`evaluators` describes settings and files).

  Attributes:
    name: its key in `config.evals` (the stem of its files).
    type: its type name.
    every: steps between evaluations while training; 0 = only at the end.
    untrained_baseline: whether the starting model is scored beside.
    select: '' or the metric to maximise (model selection).
    settings: every setting, defaults filled in.
    flows: the method's declared flows.
    config: the run's config.
  """

  # The type's own settings and their defaults (besides `COMMON`).
  SETTINGS: Mapping[str, Any] = {}

  def __init__(self, name: str, settings: Mapping[str, Any],
               config: Any, flows: Sequence[outputs.Flow]):
    self.name = name
    self.config = config
    self.flows = outputs.check(flows)
    given = dict(settings)
    self._unknown = sorted(set(given) - set(COMMON) - set(self.SETTINGS))
    self.settings = {**COMMON, **self.SETTINGS}
    self.settings.update({k: v for k, v in given.items() if v is not None})
    try:
      self.type = str(self.settings['type'])
      self.every = int(self.settings['every'])
      self.untrained_baseline = bool(self.settings['untrained_baseline'])
      self.select = str(self.settings['select'] or '')
    except (TypeError, ValueError) as e:
      raise SemcorrError(f'evals.{name}: {e}') from e

  # --- what each type defines ------------------------------------------------
  @abc.abstractmethod
  def metric_names(self) -> set[str]:
    """Every scalar key `run` reports (for `select`); settings are valid."""

  @abc.abstractmethod
  def run(self, predict_fn: predict.PredictFn, variables: Any,
          progress: bool = False) -> dict[str, Any]:
    """Scores one model (`evaluators` describes the results).

    Args:
      predict_fn: `(variables, source, target) -> flat outputs` of the
        declared flows (jitted: one compilation for any variables).
      variables: the model variables.
      progress: show a progress bar on stderr.
    """

  @abc.abstractmethod
  def markdown(self, results: Mapping[str, Any],
               untrained: Mapping[str, Any] | None = None,
               step: int | None = None, label: str = '') -> str:
    """The Markdown report of `results`, `untrained` beside if given.

    Args:
      results: `run` output (or read back from a file).
      untrained: the untrained model's, or None.
      step: the checkpoint step, or None.
      label: what `results` are, if not the trained model ('untrained').
    """

  def validate(self) -> None:
    """Checks the type's own settings (cheap; no data read)."""

  def prepare(self) -> None:
    """Gets the data ready (e.g. builds a TFDS dataset); `check` calls it."""

  def describe(self) -> dict[str, Any]:
    """What the evaluator scores, stored in eval/model_selection.json."""
    return {'type': self.type}

  def file_writers(self, out_dir: str, stem: str, results: Mapping[str, Any],
                   step: int | None, trained: bool) -> Writers:
    """Files besides the JSON and Markdown (from the results' artefacts)."""
    del out_dir, stem, results, step, trained
    return []

  # --- shared machinery -------------------------------------------------------
  def setting(self, key: str) -> str:
    """How a user sets `key`, for messages."""
    return f'--config.evals.{self.name}.{key}'

  def check(self) -> None:
    """Fails before anything is trained or written, with one clear error.

    Raises:
      SemcorrError: unknown settings, bad values (`validate`), a `select`
        this evaluator cannot report or that has no `every`, missing or
        incomplete data (`prepare`).
    """
    if self._unknown:
      raise SemcorrError(
          f'evals.{self.name}: unknown settings {self._unknown} for type '
          f'{self.type!r}; its settings: '
          f'{", ".join(sorted(set(COMMON) | set(self.SETTINGS)))}')
    if self.every < 0:
      raise SemcorrError(f'evals.{self.name}.every must be >= 0 (0: only at '
                         f'the end), got {self.every}')
    self.validate()
    if self.select:
      if self.every <= 0:
        raise SemcorrError(
            f'evals.{self.name}.select={self.select!r} needs every > 0 (the '
            f'steps between validation runs): set {self.setting("every")}')
      names = self.metric_names()
      if self.select not in names:
        raise SemcorrError(
            f'evals.{self.name}.select={self.select!r} is not a metric this '
            f'evaluator reports; it reports: {", ".join(sorted(names))}')
    self.prepare()

  def scalars(self, results: Mapping[str, Any]) -> dict[str, float]:
    """The flat numeric metrics of `results` (for metric writers)."""
    return {k: float(v) for k, v in results.items()
            if isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, (bool, np.bool_))}

  def select_value(self, results: Mapping[str, Any]) -> float:
    """The `select` metric of `results`.

    Raises:
      SemcorrError: no `select`, or the results lack it.
    """
    value = self.scalars(results).get(self.select)
    if value is None:
      raise SemcorrError(f'evals.{self.name}: the results hold no '
                         f'{self.select!r} to select on')
    return value

  def summary(self, results: Mapping[str, Any],
              untrained: Mapping[str, Any] | None = None) -> str:
    """A short Markdown table for the console: `headline` metrics of
    `results` (and `untrained`)."""
    cols = [('trained', results)] + (
        [('untrained', untrained)] if untrained is not None else [])
    lines = ['| metric | ' + ' | '.join(n for n, _ in cols) + ' |',
             '|---|' + '---:|' * len(cols)]
    for key in self.headline():
      lines.append(f'| {key} | ' + ' | '.join(
          _fmt(self.scalars(r).get(key)) for _, r in cols) + ' |')
    return '\n'.join(lines)

  def headline(self) -> list[str]:
    """The metrics `summary` shows: every flow's main metrics."""
    return sorted(self.metric_names())

  def write(self, workdir: str, results: Mapping[str, Any],
            untrained: Mapping[str, Any] | None = None,
            step: int | None = None) -> list[str]:
    """Writes the files of `results` (`evaluators`' docstring), all or none.

    With `untrained`, it goes beside the trained results into <name>.json
    and .md, and into <name>_untrained.* (`write_untrained`).

    Returns:
      The paths written.
    """
    out = os.path.join(workdir, 'eval')
    doc = {'evaluator': self.name, 'type': self.type}
    if step is not None:
      doc['step'] = int(step)
    doc['trained'] = results
    if untrained is not None:
      doc['untrained'] = untrained
    base = os.path.join(out, self.name)
    writers = [
        (base + '.json', lambda p: reports.write_json(p, doc, False)),
        (base + '.md', lambda p: reports.write_text(
            p, self.markdown(results, untrained, step), False))]
    writers += self.file_writers(out, self.name, results, step, True)
    if untrained is not None:
      writers += self._untrained_writers(out, untrained)
    return reports.write_all(writers) + self.write_inputs(out, results)

  def write_untrained(self, workdir: str, untrained: Mapping[str, Any]
                      ) -> list[str]:
    """Writes <name>_untrained.json/.md (and per-pair files), all or none."""
    out = os.path.join(workdir, 'eval')
    return reports.write_all(self._untrained_writers(out, untrained))

  def read_untrained(self, workdir: str) -> dict[str, Any] | None:
    """The results `write_untrained` wrote (NaN restored), or None."""
    stem = f'{self.name}_untrained'
    if not output_paths.as_path(
        os.path.join(workdir, 'eval', f'{stem}.json')).exists():
      return None
    return reports.read_eval(workdir, stem)

  def _untrained_writers(self, out: str, untrained: Mapping[str, Any]
                         ) -> Writers:
    base = os.path.join(out, f'{self.name}_untrained')
    return [(base + '.json', lambda p: reports.write_json(p, untrained,
                                                          False)),
            (base + '.md', lambda p: reports.write_text(
                p, self.markdown(untrained, label='untrained'), False))
            ] + self.file_writers(out, f'{self.name}_untrained', untrained,
                                  None, False)

  def write_inputs(self, out: str, results: Mapping[str, Any]) -> list[str]:
    """Files that are inputs for other tools, written after the reports."""
    del out, results
    return []


def _fmt(value: float | None) -> str:
  if value is None or not math.isfinite(value):
    return 'n/a'
  return f'{value:.4f}'
