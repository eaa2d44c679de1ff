"""The generic trainer: `train_and_evaluate(config, workdir)`.

Data-parallel over every device of every host (`semcorr_jax.parallel`), donated
train state, randomness from `fold_in(rng, step)`, Orbax checkpoints with
automatic resume from `workdir`, metrics to `metrics.jsonl` and TensorBoard, a
progress line, the evaluators of `config.evals`, model selection by the one
evaluator with a `select` metric (best checkpoint kept in `workdir/best/`),
and a guard that stops on a non-finite loss without overwriting the last good
checkpoint. `train_hooks` adds pictures of matches (`config.image_every`), a
profiler trace (`config.profile_steps`) and a clean stop on SIGTERM or a
multi-host preemption notice: the step reached is saved, the run returns
`{'step': ..., 'evals': {}, 'preempted': True}`, and the same command
resumes from that step.

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
import shutil
import sys
from typing import Any

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections

from semcorr_jax import background_noise
from semcorr_jax import checkpointing
from semcorr_jax import methods
from semcorr_jax import metric_writers
from semcorr_jax import output_paths
from semcorr_jax import parallel
from semcorr_jax import run_checks
from semcorr_jax import run_evaluations
from semcorr_jax import starting_state
from semcorr_jax import train_hooks
from semcorr_jax import workdir_lock
from semcorr_jax.data import pipeline
from semcorr_jax.errors import NonFiniteLossError
from semcorr_jax.errors import SemcorrError


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

  The workdir is locked for the run (`workdir_lock`). Everything that can
  fail on a bad config or workdir (field values, the method of a run there,
  its checkpoint, the data, tracing and compiling the train step) is checked
  before anything is written; `config.json` is written when this config
  saves its first checkpoint (a replaced one is kept in `config_history/`).
  A first start that fails before its first checkpoint leaves no workdir.

  Args:
    config: a config from `configs/<method>.py`.
    workdir: output folder; an existing run there is resumed.

  Returns:
    {'step': last step, 'evals': {evaluator name: {'trained': results,
    'untrained': results or None}}}.
  """
  run_checks.check_config_values(config)
  train_hooks.check_config(config)
  workdir = output_paths.absolute(workdir)  # or a URI
  root = output_paths.as_path(workdir)
  created = not root.exists()
  was_empty = created or (root.is_dir() and not any(root.iterdir()))
  lock, remove_folder = None, False
  if jax.process_index() == 0:
    lock = workdir_lock.WorkdirLock(workdir).acquire()
  try:
    return _train_and_evaluate(config, workdir)
  except BaseException:
    if lock is not None and was_empty and not _committed_steps(workdir):
      _empty_folder(workdir, keep=lock.path)
      remove_folder = created
    raise
  finally:
    if lock is not None:
      lock.release()
    if (remove_folder and not output_paths.is_remote(workdir) and
        os.path.isdir(workdir) and not os.listdir(workdir)):
      os.rmdir(workdir)


def _committed_steps(workdir: str) -> list[int]:
  return checkpointing.committed_steps(
      os.path.join(workdir, checkpointing.CHECKPOINT_DIR))


def _empty_folder(folder: str, keep: str) -> None:
  """Removes what a failed first start wrote (all of it: the folder was
  empty), except the lock file `keep`. (An object store's folder goes
  with its last object.)"""
  if output_paths.is_remote(folder):
    for path in output_paths.as_path(folder).iterdir():
      if os.fspath(path) == keep:
        continue
      if path.is_dir():
        path.rmtree()
      else:
        path.unlink()
    return
  for name in os.listdir(folder):
    path = os.path.join(folder, name)
    if path == keep:
      continue
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      os.remove(path)


def _save_failed(ckpt, error: BaseException) -> SemcorrError:
  """One line for a checkpoint save that failed (a full disk, a lost
  mount), after removing what it left half-written."""
  ckpt.abandon()
  steps = ckpt.committed_steps()
  kept = (f'the last complete checkpoint (step {max(steps)}) is kept'
          if steps else 'no complete checkpoint was written')
  return SemcorrError(
      f'saving a checkpoint in {ckpt.directory} failed '
      f'({checkpointing.describe_error(error)}); {kept}: free '
      'space (or fix the folder) and run the same command again to resume')


def _check_saves(ckpt, check, config_saved, workdir, config) -> bool:
  """Runs `check` (raises the error of a failed save, in one line) and
  writes config.json once this config's first checkpoint is complete:
  config.json describes the checkpoints, so a run refused, stopped by a NaN
  or failed before keeps the previous config in place.

  Returns:
    whether config.json is written.
  """
  try:
    check()
  except Exception as e:  # pylint: disable=broad-except
    raise _save_failed(ckpt, e) from e
  if not config_saved and ckpt.last_committed is not None:
    if jax.process_index() == 0:
      checkpointing.save_config(workdir, config)
    return True
  return config_saved


def _train_and_evaluate(config, workdir):
  mesh = parallel.make_mesh()
  local_batch_size = parallel.check_batch_size(config.batch_size, mesh)
  # Built and checked before anything is written; datasets are prepared
  # (downloaded files turned into TFDS records) by process 0 first.
  def prepare():
    steps = total_train_steps(config)
    method = methods.get(config.method)(config, steps)
    check_batch_keys(method, config.data)
    starting_state.check_init_from(config)
    pipeline.num_examples(config.data, 'train')  # builds a real source
    return steps, method, run_evaluations.Evaluations(config, method, workdir)
  total_steps, method, evaluations = first_process_first(prepare)
  run_checks.check_same_method(config, workdir)

  rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(rng)
  state, start_step, data_index, damaged = starting_state.restore_or_init(
      method, config, mesh, init_rng, workdir)
  dataset = pipeline.make_pair_dataset(
      config.data, 'train', batch_size=local_batch_size, seed=config.seed,
      start_index=data_index, process_index=jax.process_index(),
      process_count=jax.process_count())
  batches = dataset.as_numpy_iterator()
  train_step = jit_train_step(method, mesh)
  first = None
  if start_step < total_steps:
    # Traced and compiled on the first batch before anything is written:
    # a config whose shapes cannot train fails here.
    first = parallel.host_to_global(next(batches), mesh)
    train_step = train_step.lower(state, first, step_rng).compile()

  # From here on the workdir is written.
  if jax.process_index() == 0:
    for step, message in damaged:
      moved = checkpointing.move_step_aside(workdir, step)
      print(f'warning: {message}; moved to {moved}, resuming from step '
            f'{start_step}', file=sys.stderr, flush=True)
  if damaged and jax.process_count() > 1:
    multihost_utils.sync_global_devices('semcorr_jax: damaged moved')
  if start_step:
    print(f'Resumed from step {start_step} in '
          f'{os.path.join(workdir, checkpointing.CHECKPOINT_DIR)}', flush=True)
  ckpt = checkpointing.Checkpointer(workdir, config.keep_checkpoints)
  evaluations.open_best()
  writer = metric_writers.MetricWriter(
      workdir, resume_step=start_step if start_step else None)
  evaluations.writer = writer
  if not start_step:
    writer.write_hparams(config.to_dict())
  hooks = train_hooks.Hooks(config, method, writer, ckpt.reached_preemption,
                            workdir, start_step, total_steps)
  try:
    with background_noise.orbax_errors_raised_not_logged():
      results = _loop(config, workdir, method, mesh, state, start_step,
                      total_steps, first, batches, train_step,
                      (init_rng, step_rng), ckpt, writer, evaluations, hooks)
  except BaseException:
    ckpt.abandon()
    raise
  finally:
    hooks.close()
    writer.close()
    evaluations.close()
  ckpt.close()
  return results


def _loop(config, workdir, method, mesh, state, start_step, total_steps,
          first, batches, train_step, rngs, ckpt, writer, evaluations, hooks):
  """The training loop, periodic evaluations and checkpoints, the final
  evaluation. `first` is the first batch (already on the mesh); `hooks`
  (`train_hooks.Hooks`) measure, draw, profile and stop on preemption."""
  init_rng, step_rng = rngs
  # The untrained model (same init, pretrained weights and init_from) is the
  # baseline every result is printed beside: same-image warps are easy.
  evaluations.baselines(
      lambda: state if start_step == 0 else
      starting_state.initial_state(method, config, mesh, init_rng)[0])

  pending, finite = [], jnp.asarray(True)
  last_good = start_step
  # A new run's config is written now; one that replaces the config of a
  # run there waits for its first complete checkpoint (`_check_saves`).
  replaces = output_paths.as_path(
      os.path.join(workdir, checkpointing.CONFIG_FILE)).exists()
  if not replaces and jax.process_index() == 0:
    checkpointing.save_config(workdir, config)
  config_saved = not replaces

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

  step, stop = start_step, False
  hooks.start()
  for step in range(start_step + 1, total_steps + 1):
    if first is not None:
      batch, first = first, None
    else:
      try:
        batch = parallel.host_to_global(next(batches), mesh)
      except StopIteration:
        break
    state, metrics = train_step(state, batch, step_rng)
    finite = finite & _all_finite(metrics)
    pending.append(metrics)
    config_saved = _check_saves(ckpt, ckpt.check_for_errors, config_saved,
                                workdir, config)
    if step == start_step + 1:
      jax.block_until_ready(state)  # exclude the first step from the rates
    rates = hooks.progress(step)
    hooks.trace(step, state)
    # A stop (SIGTERM, preemption) logs and saves this step, nothing else.
    stop = hooks.preemption.reached(step)
    if step % config.log_every == 0 or step == total_steps or stop:
      check_finite(step)
      means = parallel.to_host(jax.tree.map(
          lambda *x: jnp.mean(jnp.stack(x)), *pending))
      pending = []
      scalars = {k: float(v) for k, v in means.items()}
      scalars.update(rates)
      writer.write(step, scalars)
      hooks.progress.report(step, {'loss': scalars['loss'], **rates})
    if not stop:
      hooks.images(step, state)
    # Evaluations before the checkpoint of the same step: a run killed
    # while evaluating resumes before that step and evaluates it again.
    if step != total_steps and not stop:
      evaluations.periodic(step, state, meta(step))
    if step % config.checkpoint_every == 0 or step == total_steps or stop:
      check_finite(step)
      last_good = step
      writer.flush()  # a remote metrics.jsonl: records first (metric_writers)
      try:
        ckpt.save(step, state, meta(step))
      except Exception as e:  # pylint: disable=broad-except
        raise _save_failed(ckpt, e) from e
    if stop:
      break

  _check_saves(ckpt, ckpt.wait, config_saved, workdir, config)
  hooks.close()  # saves are done: SIGTERM ends the final evaluation at once
  if stop:
    return hooks.stopped(step, ckpt.directory)
  return {'step': step, 'evals': evaluations.final(step, state, meta(step))}
