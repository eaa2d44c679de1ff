"""The evaluators of a training run: periodic scores, untrained baselines,
and model selection (the best checkpoint kept in `workdir/best/`)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from semcorr_jax import checkpointing
from semcorr_jax import parallel
from semcorr_jax.evaluation import evaluators as evaluators_lib


class Evaluations:
  """The run's evaluators: periodic runs, untrained baselines, selection.

  The evaluator with a `select` metric keeps the best model in
  `workdir/best/` (Orbax `best_fn`, one checkpoint).
  """

  def __init__(self, config, method, workdir):
    self.method, self.workdir = method, workdir
    self.writer = None  # set once the workdir may be written
    self.evaluators = evaluators_lib.build(config, method.flows)
    for ev in self.evaluators:
      ev.check()
    self.selector = evaluators_lib.selecting(self.evaluators)
    self.predict = jax.jit(method.predict)
    self.best_ckpt, self.best_value = None, None

  def open_best(self) -> None:
    """Opens `workdir/best/`; its kept value is read from disk once, then
    tracked in memory, so every process takes the same decisions."""
    if self.selector is None:
      return
    self.best_ckpt = checkpointing.Checkpointer(
        self.workdir, max_to_keep=1, folder='best',
        best_metric=self.selector.select)
    self.best_value = self.best_ckpt.best_value(self.selector.select)

  def close(self) -> None:
    if self.best_ckpt is not None:
      self.best_ckpt.wait()
      self.best_ckpt.close()

  def _run(self, ev, state) -> dict[str, Any]:
    variables = parallel.to_host(self.method.inference_variables(state))
    return ev.run(self.predict, variables)

  def baselines(self, make_state) -> None:
    """Scores the model the run starts from (same init, pretrained weights
    and init_from) for every evaluator that asks and has none on disk."""
    todo = [ev for ev in self.evaluators if ev.untrained_baseline and
            ev.read_untrained(self.workdir) is None]
    if not todo:
      return
    fresh = make_state()
    for ev in todo:
      results = self._run(ev, fresh)
      if jax.process_index() == 0:
        ev.write_untrained(self.workdir, results)

  def periodic(self, step: int, state, meta) -> None:
    for ev in self.evaluators:
      if ev.every and step % ev.every == 0:
        self._score(ev, step, state, meta)

  def _score(self, ev, step, state, meta) -> dict[str, Any]:
    results = self._run(ev, state)
    if jax.process_index() == 0:
      self.writer.write(step, ev.scalars(results), split=ev.name)
    if ev is self.selector:
      value = ev.select_value(results)
      if jax.process_index() == 0:
        data = evaluators_lib.record_selection(self.workdir, ev, step, value)
        print(f'step {step}: {ev.name} {ev.select} {value:.4f} (best '
              f'{data["best_value"]:.4f} at step {data["best_step"]})',
              flush=True)
      # Only a strictly better model replaces the kept one: the earliest
      # step wins ties, as in model_selection.json (a resumed run that
      # scores a step again saves nothing new).
      if np.isfinite(value) and (self.best_value is None or
                                 value > self.best_value):
        self.best_ckpt.save(step, state, meta, metrics={ev.select: value})
        self.best_value = value
    return results

  def final(self, step, state, meta) -> dict[str, Any]:
    out = {}
    for ev in self.evaluators:
      trained = self._score(ev, step, state, meta)
      untrained = ev.read_untrained(self.workdir)
      out[ev.name] = {'trained': trained, 'untrained': untrained}
      if jax.process_index() == 0:
        ev.write(self.workdir, trained, untrained, step=step)
        print(f'{ev.name} at step {step}:\n'
              f'{ev.summary(trained, untrained)}', flush=True)
    return out
