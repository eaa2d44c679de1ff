"""The generic trainer: `train_and_evaluate(config, workdir)`.

Data-parallel over every device of every host (`semcorr_jax.parallel`), donated
train state, randomness from `fold_in(rng, step)`, Orbax checkpoints with
automatic resume from `workdir`, metrics to `metrics.jsonl` and TensorBoard, a
progress line, the evaluators of `config.evals`, model selection by the one
evaluator with a `select` metric (best checkpoint kept in `workdir/best/`),
and a guard that stops on a non-finite loss without overwriting the last good
checkpoint.

It knows no method and no evaluator by name: it reads what the method
declares (`batch_keys`, `flows`, parameter groups through its optimiser) and
what the data declares (`num_examples`, `dummy_batch`, `batch_spec`).

Initial state, in order: (1) the latest checkpoint in `workdir/checkpoints`
(resume; nothing else applies); (2) a fresh initialisation, then pretrained
weights the config names (`method.load_pretrained`), then the variables of
another run (`config.init_from`).
"""

from __future__ import annotations

import os
from typing import Any

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from semcorr_jax import checkpointing
from semcorr_jax import methods
from semcorr_jax import metric_writers
from semcorr_jax import parallel
from semcorr_jax import workdirs
from semcorr_jax.data import pipeline
from semcorr_jax.errors import NonFiniteLossError
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import evaluators as evaluators_lib


def total_train_steps(config: ml_collections.ConfigDict) -> int:
  """`config.num_train_steps`, or `num_epochs` over the training examples."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  num_examples = pipeline.num_examples(config.data, 'train')
  return max(1, int(config.num_epochs * num_examples) // config.batch_size)


def check_batch_keys(method: methods.Method,
                     data_config: ml_collections.ConfigDict) -> None:
  """The data yields every batch key the method's train step reads."""
  spec = pipeline.batch_spec(data_config, 1)
  missing = [k for k in method.batch_keys if k not in spec]
  if missing:
    raise SemcorrError(
        f'method {type(method).__name__} trains on batches with '
        f'{list(method.batch_keys)}, but data.source='
        f'{data_config.source!r} yields {sorted(spec)} (missing: {missing})')


def create_state(method: methods.Method, config: ml_collections.ConfigDict,
                 mesh: jax.sharding.Mesh, rng: jax.Array):
  """Initialises the train state replicated over `mesh`, without a host copy.

  Returns:
    (state, abstract_state) where `abstract_state` carries the shardings and is
    the restore target for checkpoints.
  """
  batch = jax.tree.map(jnp.asarray, pipeline.dummy_batch(config.data, 1))
  abstract = jax.eval_shape(method.init_state, rng, batch)
  replicated = parallel.replicated(mesh)
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
      abstract)
  state = jax.jit(method.init_state, out_shardings=replicated)(rng, batch)
  return state, abstract


def load_pretrained(method: methods.Method, state: Any,
                    mesh: jax.sharding.Mesh) -> Any:
  """Applies `method.load_pretrained` (e.g. backbone weights) to a state."""
  variables = parallel.to_host(method.state_variables(state))
  loaded = method.load_pretrained(variables)
  if loaded is variables:
    return state
  return method.with_state_variables(state, parallel.replicate(loaded, mesh))


def check_init_from(config: ml_collections.ConfigDict) -> None:
  """One clear error for `init_from.subtrees` without a run to read them.

  A config that names subtrees is a later stage (e.g. configs/camnet.py:
  quick on a trained SFNet); training it from scratch would be a silent
  mistake.
  """
  init = config.get('init_from')
  if init is not None and init.subtrees and not init.workdir:
    raise SemcorrError(
        f'init_from.subtrees={tuple(init.subtrees)} names what to copy from '
        'another run, but init_from.workdir is not set: pass '
        '--config.init_from.workdir=<a trained run> (or '
        "--config.init_from.subtrees='()' to start from scratch).")


def apply_init_from(method: methods.Method, state: Any,
                    config: ml_collections.ConfigDict,
                    mesh: jax.sharding.Mesh) -> Any:
  """Copies `config.init_from`'s variables (another run) into a fresh state."""
  check_init_from(config)
  init = config.init_from
  if not init.workdir:
    return state
  source = workdirs.restore(init.workdir, init.step, for_inference=False,
                            folder=init.folder)
  variables = parallel.to_host(method.state_variables(state))
  variables, copied = workdirs.copy_subtrees(
      variables, parallel.to_host(source.variables),
      tuple(init.subtrees))
  if jax.process_index() == 0:
    print(f'Initialised {copied} arrays from {init.workdir} (step '
          f'{source.step}, method {source.config.method})', flush=True)
  return method.with_state_variables(state, parallel.replicate(variables,
                                                               mesh))


def initial_state(method, config, mesh, rng):
  """A fresh state with pretrained weights and `init_from` applied."""
  state, abstract = create_state(method, config, mesh, rng)
  state = load_pretrained(method, state, mesh)
  return apply_init_from(method, state, config, mesh), abstract


def jit_train_step(method: methods.Method, mesh: jax.sharding.Mesh):
  """`method.train_step` jitted over `mesh`: replicated state (donated),
  batch sharded on 'data', replicated metrics."""
  # One sharding as a prefix for the whole state: everything is replicated.
  replicated = parallel.replicated(mesh)
  return jax.jit(
      method.train_step,
      in_shardings=(replicated, parallel.data_sharded(mesh), replicated),
      out_shardings=(replicated, replicated),
      donate_argnums=0)


def _all_finite(metrics: dict[str, jax.Array]) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v))
                            for v in jax.tree.leaves(metrics)]))


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


def first_process_first(fn):
  """Runs `fn()` on process 0, then on the others: one process builds a
  TFDS dataset in a shared folder while the others wait, then read it."""
  if jax.process_count() == 1:
    return fn()
  if jax.process_index() != 0:
    multihost_utils.sync_global_devices('semcorr_jax: data prepared')
  result = fn()
  if jax.process_index() == 0:
    multihost_utils.sync_global_devices('semcorr_jax: data prepared')
  return result


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains `config.method` on `config.data` and runs `config.evals`.

  Args:
    config: a config from `configs/<method>.py`.
    workdir: output folder; an existing run there is resumed.

  Returns:
    {'step': last step, 'evals': {evaluator name: {'trained': results,
    'untrained': results or None}}}.
  """
  workdir = os.path.abspath(workdir)
  mesh = parallel.make_mesh()
  local_batch_size = parallel.check_batch_size(config.batch_size, mesh)
  # Built and checked before anything is written; datasets are prepared
  # (downloaded files turned into TFDS records) by process 0 first.
  def prepare():
    steps = total_train_steps(config)
    method = methods.get(config.method)(config, steps)
    check_batch_keys(method, config.data)
    check_init_from(config)
    pipeline.num_examples(config.data, 'train')  # builds a real source
    return steps, method, Evaluations(config, method, workdir)
  total_steps, method, evaluations = first_process_first(prepare)

  rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  evaluations.open_best()
  start_step = ckpt.latest_step()
  if start_step is not None:
    _, abstract = create_state(method, config, mesh, init_rng)
    try:
      state, meta = ckpt.restore(start_step, abstract)
    except SemcorrError as e:
      raise SemcorrError(
          f'{e}. A run saved by an older version cannot resume here; start '
          f'a new run from it: --workdir=<new folder> '
          f'--config.init_from.workdir={workdir}') from e
    print(f'Resumed from step {start_step} in {ckpt.directory}', flush=True)
    data_index = int(meta['data_index'])
  else:
    start_step, data_index = 0, 0
    state, _ = initial_state(method, config, mesh, init_rng)
  # Written once the state is restored or built: a config that cannot
  # resume the run in `workdir` never replaces the run's own.
  if jax.process_index() == 0:
    checkpointing.save_config(workdir, config)
  writer = metric_writers.MetricWriter(workdir)
  evaluations.writer = writer
  # The untrained model (same init, pretrained weights and init_from) is the
  # baseline every result is printed beside: same-image warps are easy.
  evaluations.baselines(
      lambda: state if start_step == 0 else
      initial_state(method, config, mesh, init_rng)[0])

  dataset = pipeline.make_pair_dataset(
      config.data, 'train', batch_size=local_batch_size, seed=config.seed,
      start_index=data_index, process_index=jax.process_index(),
      process_count=jax.process_count())
  batches = dataset.as_numpy_iterator()
  train_step = jit_train_step(method, mesh)

  progress = metric_writers.Progress(total_steps, config.batch_size)
  log_every = config.log_every
  ckpt_every = config.checkpoint_every
  pending, finite = [], jnp.asarray(True)
  last_good = start_step

  def meta(step):
    return {'step': step, 'data_index': step * config.batch_size,
            'seed': config.seed}

  def check_finite(step):
    if not bool(parallel.to_host(finite)):
      writer.close()
      ckpt.wait()
      raise NonFiniteLossError(
          f'non-finite loss or gradient between steps {last_good} and {step}; '
          f'stopped. The last good checkpoint (step {ckpt.latest_step()}) in '
          f'{ckpt.directory} is kept. Lower the learning rate or check the '
          'data.')

  step = start_step
  for step in range(start_step + 1, total_steps + 1):
    try:
      local = next(batches)
    except StopIteration:
      break
    batch = parallel.host_to_global(local, mesh)
    state, metrics = train_step(state, batch, step_rng)
    finite = finite & _all_finite(metrics)
    pending.append(metrics)
    if step == start_step + 1:
      jax.block_until_ready(state)  # exclude compilation from the rates
      progress.mark_start(step)
    if step % log_every == 0 or step == total_steps:
      check_finite(step)
      means = parallel.to_host(jax.tree.map(
          lambda *x: jnp.mean(jnp.stack(x)), *pending))
      pending = []
      scalars = {k: float(v) for k, v in means.items()}
      rate = progress.rate(step)
      if np.isfinite(rate):
        scalars['steps_per_sec'] = rate
        scalars['pairs_per_sec'] = rate * config.batch_size
      writer.write(step, scalars)
      progress.report(step, {'loss': scalars['loss']})
    # Evaluations before the checkpoint of the same step: a run killed
    # while evaluating resumes before that step and evaluates it again.
    if step != total_steps:
      evaluations.periodic(step, state, meta(step))
    if step % ckpt_every == 0 or step == total_steps:
      check_finite(step)
      last_good = step
      ckpt.save(step, state, meta(step))

  ckpt.wait()
  results = {'step': step,
             'evals': evaluations.final(step, state, meta(step))}
  writer.close()
  ckpt.close()
  evaluations.close()
  return results
