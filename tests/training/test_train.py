"""Trainer tests: data parallelism, checkpoints, resume, NaN guard."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax import checkpointing
from semcorr_jax import config_files
from semcorr_jax import methods
from semcorr_jax import parallel
from semcorr_jax import starting_state
from semcorr_jax import train
from semcorr_jax import workdirs
from semcorr_jax.data import pipeline
from semcorr_jax.errors import NonFiniteLossError
from semcorr_jax.methods import sfnet as sfnet_method

from helpers import kill_resume
from helpers import paths

REPO = str(paths.REPO)


def _config(**overrides):
  return config_files.load(os.path.join(REPO, 'configs', 'sfnet.py:test'),
                           overrides)


def _first_batch(config):
  ds = pipeline.make_pair_dataset(config.data, 'train',
                                  batch_size=config.batch_size,
                                  seed=config.seed)
  return next(ds.as_numpy_iterator())


def _one_step(config, devices, batch):
  mesh = parallel.make_mesh(devices)
  method = methods.get(config.method)(config, total_steps=10)
  state, abstract = starting_state.create_state(method, config, mesh,
                                       jax.random.key(0))
  del abstract
  shardings = parallel.replicated(mesh)
  step = jax.jit(method.train_step,
                 in_shardings=(shardings, parallel.data_sharded(mesh),
                               parallel.replicated(mesh)),
                 out_shardings=(shardings, parallel.replicated(mesh)))
  global_batch = parallel.host_to_global(batch, mesh)
  new_state, metrics = step(state, global_batch, jax.random.key(1))
  return jax.device_get(new_state.params), jax.device_get(metrics)


def test_step_on_8_devices_matches_1_device():
  assert jax.device_count() == 8
  # Plain SGD: Adam's first step is lr * sign(grad), which turns summation-order
  # noise in near-zero gradients into lr-sized parameter differences.
  config = _config(**{'optimizer.name': 'sgd', 'optimizer.lr': 0.1})
  batch = _first_batch(config)
  params8, metrics8 = _one_step(config, jax.devices(), batch)
  params1, metrics1 = _one_step(config, jax.devices()[:1], batch)
  np.testing.assert_allclose(metrics8['loss'], metrics1['loss'], rtol=1e-5)
  np.testing.assert_allclose(metrics8['grad_norm'], metrics1['grad_norm'],
                             rtol=1e-4)
  changed = False
  for p8, p1 in zip(jax.tree.leaves(params8), jax.tree.leaves(params1)):
    np.testing.assert_allclose(p8, p1, rtol=1e-4, atol=1e-6)
  # The step really trained something (equal but unchanged would be vacuous).
  init_params = jax.device_get(_init_params(config))
  for p, p0 in zip(jax.tree.leaves(params8), jax.tree.leaves(init_params)):
    changed |= not np.allclose(p, p0)
  assert changed


def _init_params(config):
  mesh = parallel.make_mesh(jax.devices()[:1])
  method = methods.get(config.method)(config, total_steps=10)
  state, _ = starting_state.create_state(method, config, mesh,
                                         jax.random.key(0))
  return state.params


def test_batch_size_must_divide_devices():
  with pytest.raises(ValueError, match='not divisible'):
    parallel.check_batch_size(6, parallel.make_mesh())


@pytest.mark.slow  # a full tiny run with evaluations, twice
def test_train_and_evaluate_writes_everything(tmp_path):
  config = _config()
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['step'] == config.num_train_steps
  synthetic = results['evals']['synthetic']
  for key in ('pck@0.05', 'pck@0.1', 'pck@0.15'):
    assert 0.0 <= synthetic['trained'][key] <= 1.0
    assert 0.0 <= synthetic['untrained'][key] <= 1.0
  assert json.load(open(tmp_path / 'eval' / 'synthetic.json'))['step'] == 4
  lines = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  train_steps = [l['step'] for l in lines if l['split'] == 'train']
  assert train_steps == [2, 4]
  assert all(np.isfinite(l['loss']) for l in lines if l['split'] == 'train')
  assert sorted(checkpointing.Checkpointer(str(tmp_path)).all_steps()) == [2, 4]
  restored = checkpointing.load_config(str(tmp_path))
  assert restored.backbone.stage_sizes == (1, 1, 1, 1)
  # Running again on a finished workdir resumes at the end: no new steps.
  again = train.train_and_evaluate(config, str(tmp_path))
  assert again['step'] == 4


class NanAfterTwoSteps(sfnet_method.SFNetMethod):
  """SFNet whose loss turns NaN from the third batch (index >= 16) on."""

  def loss(self, params, model_state, batch, rng):
    loss, aux = super().loss(params, model_state, batch, rng)
    bad = jnp.min(batch['index']) >= 16
    return jnp.where(bad, jnp.nan, loss), aux


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path):
  methods.register('sfnet_nan_test', f'{__name__}:NanAfterTwoSteps')
  config = _config(method='sfnet_nan_test', num_train_steps=6,
                   log_every=1, checkpoint_every=2)
  with pytest.raises(NonFiniteLossError, match='last good checkpoint'):
    train.train_and_evaluate(config, str(tmp_path))
  ckpt = checkpointing.Checkpointer(str(tmp_path))
  assert ckpt.all_steps() == [2]
  restored = workdirs.restore(str(tmp_path))
  assert restored.step == 2
  assert all(np.all(np.isfinite(x))
             for x in jax.tree.leaves(restored.variables))


def _train_cmd(workdir, steps):
  return [sys.executable, '-m', 'semcorr_jax.cli.train',
          f'--config={REPO}/configs/sfnet.py:test', f'--workdir={workdir}',
          f'--config.num_train_steps={steps}', '--config.checkpoint_every=4',
          '--config.log_every=4',
          '--config.evals.synthetic.untrained_baseline=False']


def _final_params(workdir):
  restored = workdirs.restore(str(workdir))
  return restored.step, restored.variables['params']


@pytest.mark.slow  # three training subprocesses
def test_killed_run_resumes_and_ends_like_an_uninterrupted_run(tmp_path):
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  steps = 24
  ref = tmp_path / 'uninterrupted'
  subprocess.run(_train_cmd(ref, steps), env=env, check=True, timeout=600,
                 capture_output=True)

  run = tmp_path / 'killed'
  kill_resume.kill_then_resume(_train_cmd(run, steps), run, steps, env)
  step_a, params_a = _final_params(ref)
  step_b, params_b = _final_params(run)
  assert step_a == step_b == steps
  # Same devices, same program, same data from the restored position:
  # bit-identical.
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(a, b)
