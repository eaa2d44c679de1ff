"""The generic trainer: `train_and_evaluate(config, workdir)`.

Data-parallel over every device of every host (`semcorr_jax.parallel`), donated
train state, randomness from `fold_in(rng, step)`, Orbax checkpoints with
automatic resume from `workdir`, metrics to `metrics.jsonl` and TensorBoard, a
progress line, periodic held-out evaluation, and a guard that stops on a
non-finite loss without overwriting the last good checkpoint.

Restore order: (1) the latest checkpoint in `workdir/checkpoints`; (2) a fresh
initialisation, with pretrained backbone weights when the config names them.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from semcorr_jax import checkpointing
from semcorr_jax import methods
from semcorr_jax import metric_writers
from semcorr_jax import parallel
from semcorr_jax.errors import NonFiniteLossError


def total_train_steps(config: ml_collections.ConfigDict) -> int:
  """`config.num_train_steps`, or epochs over the training scenes."""
  if config.get('num_train_steps', 0) and config.num_train_steps > 0:
    return int(config.num_train_steps)
  from semcorr_jax.data import sources  # pylint: disable=g-import-not-at-top
  num_scenes = sources.get_source(config.data, 'train').num_scenes
  return max(1, int(config.num_epochs * num_scenes) // config.batch_size)


def create_state(method: methods.Method, config: ml_collections.ConfigDict,
                 mesh: jax.sharding.Mesh, rng: jax.Array):
  """Initialises the train state replicated over `mesh`, without a host copy.

  Returns:
    (state, abstract_state) where `abstract_state` carries the shardings and is
    the restore target for checkpoints.
  """
  batch = jax.tree.map(jnp.asarray, checkpointing.dummy_batch(config))
  abstract = jax.eval_shape(method.init_state, rng, batch)
  replicated = parallel.replicated(mesh)
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
      abstract)
  state = jax.jit(method.init_state, out_shardings=replicated)(rng, batch)
  return state, abstract


def load_pretrained(method: methods.Method, state: Any,
                    mesh: jax.sharding.Mesh) -> Any:
  """Applies `method.load_pretrained` (e.g. backbone weights) to a fresh state."""
  variables = parallel.to_host(state.variables())
  loaded = method.load_pretrained(variables)
  if loaded is variables:
    return state
  loaded = dict(loaded)
  params = loaded.pop('params')
  return state.replace(params=parallel.replicate(params, mesh),
                       model_state=parallel.replicate(loaded, mesh))


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


def _evaluate(method, state, config, name: str) -> dict[str, Any]:
  from semcorr_jax.evaluation import synthetic  # pylint: disable=g-import-not-at-top
  variables = parallel.to_host(method.inference_variables(state))
  return synthetic.evaluate_synthetic(method, variables, config)


def _all_finite(metrics: dict[str, jax.Array]) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(v))
                            for v in jax.tree.leaves(metrics)]))


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, Any]:
  """Trains `config.method` on `config.data`, evaluating on the held-out split.

  Args:
    config: a config from `configs/<method>.py`.
    workdir: output folder; an existing run there is resumed.

  Returns:
    The final evaluation: {'step', 'trained': {...}, 'untrained': {...}}.
  """
  from semcorr_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from semcorr_jax.evaluation import reports  # pylint: disable=g-import-not-at-top

  from semcorr_jax.evaluation import selection  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(workdir)
  selection.check(config)  # before anything is written or trained
  mesh = parallel.make_mesh()
  local_batch_size = parallel.check_batch_size(config.batch_size, mesh)
  total_steps = total_train_steps(config)
  # Built (and its config checked) before the run's config.json is written,
  # so a bad override never replaces an existing run's config.
  method = methods.get(config.method)(config, total_steps)
  if jax.process_index() == 0:
    checkpointing.save_config(workdir, config)

  rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  state, abstract = create_state(method, config, mesh, init_rng)
  ckpt = checkpointing.Checkpointer(workdir, config.get('keep_checkpoints', 3))
  start_step = ckpt.latest_step()
  writer = metric_writers.MetricWriter(workdir)
  untrained_path = os.path.join(workdir, 'eval', 'synthetic_untrained.json')
  if start_step is not None:
    state, meta = ckpt.restore(start_step, abstract)
    print(f'Resumed from step {start_step} in {ckpt.directory}', flush=True)
    data_index = int(meta['data_index'])
  else:
    start_step, data_index = 0, 0
    state = load_pretrained(method, state, mesh)
  if config.eval.get('untrained', True) and not os.path.exists(untrained_path):
    # The untrained model (same init, same backbone) is the baseline every
    # synthetic number is printed beside: same-image warps are easy.
    fresh, _ = create_state(method, config, mesh, init_rng)
    fresh = load_pretrained(method, fresh, mesh)
    untrained = _evaluate(method, fresh, config, 'untrained')
    del fresh
    if jax.process_index() == 0:
      reports.write_eval(workdir, 'synthetic_untrained', untrained)

  dataset = pipeline.make_pair_dataset(
      config.data, 'train', batch_size=local_batch_size, seed=config.seed,
      start_index=data_index, process_index=jax.process_index(),
      process_count=jax.process_count())
  batches = dataset.as_numpy_iterator()

  train_step = jit_train_step(method, mesh)

  progress = metric_writers.Progress(total_steps, config.batch_size)
  log_every = config.get('log_every', 50)
  ckpt_every = config.get('checkpoint_every', 500)
  eval_every = config.get('eval_every', 0)
  pending, finite = [], jnp.asarray(True)
  last_good = start_step

  def select(step):
    # Validation-split score for model selection (evaluation.selection).
    if not selection.enabled(config):
      return
    variables = parallel.to_host(method.inference_variables(state))
    value = selection.validate(method, variables, config)
    if jax.process_index() == 0:
      data = selection.record(workdir, config, step, value)
      writer.write(step, {config.eval.select_metric: value}, split='val')
      print(f'step {step}: {config.eval.select_benchmark} '
            f'{config.eval.select_split} {config.eval.select_metric} '
            f'{value:.4f} (best {data["best_value"]:.4f} at step '
            f'{data["best_step"]})', flush=True)

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
    if step % ckpt_every == 0 or step == total_steps:
      check_finite(step)
      last_good = step
      ckpt.save(step, state, {'step': step,
                              'data_index': step * config.batch_size,
                              'seed': config.seed})
    if eval_every and step % eval_every == 0 and step != total_steps:
      results = _evaluate(method, state, config, 'trained')
      writer.write(step, {k: v for k, v in results.items()
                          if isinstance(v, (int, float))}, split='eval')
      select(step)

  ckpt.wait()
  select(step)
  results = {'step': step,
             'trained': _evaluate(method, state, config, 'trained')}
  if os.path.exists(untrained_path):
    results['untrained'] = reports.read_eval(workdir, 'synthetic_untrained')
  if jax.process_index() == 0:
    reports.write_eval(workdir, 'synthetic', results)
    writer.write(step, {k: v for k, v in results['trained'].items()
                        if isinstance(v, (int, float))}, split='eval')
    print(reports.format_comparison(results['trained'],
                                      results.get('untrained')), flush=True)
  writer.close()
  ckpt.close()
  return results
