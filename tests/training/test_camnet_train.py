"""Trainer-level tests of the `camnet` method: data parallelism and resume.

The GAN state (the generator's and the discriminator's train states) goes
through the generic trainer (semcorr_jax/train.py) as one pytree; these tests
follow the SFNet ones in tests/training/test_train.py.
"""

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
from semcorr_jax.data import pipeline
from semcorr_jax.errors import SemcorrError
from semcorr_jax.methods import camnet as camnet_method

from helpers import kill_resume
from helpers import paths

REPO = str(paths.REPO)
# (state, field) pairs of the GAN state that must match.
STATE_FIELDS = tuple((part, field)
                     for part in ('generator', 'discriminator')
                     for field in ('params', 'model_state', 'opt_state'))


def _field(state, part_field):
  part, field = part_field
  return getattr(getattr(state, part), field)


def _config(**overrides):
  return config_files.load(os.path.join(REPO, 'configs', 'camnet.py:test'),
                           overrides)


def _counts(opt_state):
  """The integer leaves (optax step counts) of an optimiser state."""
  return {int(x) for x in jax.tree.leaves(jax.device_get(opt_state))
          if np.issubdtype(np.asarray(x).dtype, np.integer)}


# --- data parallelism ---------------------------------------------------------


def _one_step(config, devices, batch, state=None):
  """One jitted train step on a mesh of `devices` (from `state` if given)."""
  mesh = parallel.make_mesh(devices)
  method = methods.get(config.method)(config, total_steps=10)
  replicated = parallel.replicated(mesh)
  if state is None:
    state, _ = starting_state.create_state(method, config, mesh,
                                           jax.random.key(0))
  else:  # the same initial state, replicated over this mesh
    # This method instance's optimisers (static fields of the state).
    state = jax.device_put(state.replace(
        generator=state.generator.replace(tx=method.tx),
        discriminator=state.discriminator.replace(tx=method.disc_tx)),
                           replicated)
  step = jax.jit(method.train_step,
                 in_shardings=(replicated, parallel.data_sharded(mesh),
                               replicated),
                 out_shardings=(replicated, replicated))
  new_state, metrics = step(state, parallel.host_to_global(batch, mesh),
                            jax.random.key(1))
  return (jax.device_get(state), jax.device_get(new_state),
          jax.device_get(metrics))


def test_gan_step_on_8_devices_matches_1_device():
  assert jax.device_count() == 8
  # Plain SGD for G and D (Adam's first step is lr * sign(grad): float noise
  # in near-zero gradients would become lr-sized differences).
  config = _config(**{'optimizer.name': 'sgd', 'optimizer.lr': 1e-3,
                      'disc_optimizer.name': 'sgd', 'disc_optimizer.lr': 0.1})
  assert config.batch_size == 8
  # The stream's second batch: on the first one a pre-ReLU value of the
  # tiny random net (adapt_layer4 unit 0, channel 139) lies 4e-7 from the
  # kink, so summation-order noise flips its ReLU and one channel's gradient.
  ds = pipeline.make_pair_dataset(config.data, 'train',
                                  batch_size=config.batch_size,
                                  seed=config.seed,
                                  start_index=config.batch_size)
  batch = next(ds.as_numpy_iterator())
  init1, state1, metrics1 = _one_step(config, jax.devices()[:1], batch)
  init8, state8, metrics8 = _one_step(config, jax.devices(), batch, init1)
  assert isinstance(state8, camnet_method.GANTrainState)
  for key in ('loss', 'align_loss', 'confidence_loss', 'adv_loss',
              'disc_loss', 'disc_real_loss', 'disc_fake_loss'):
    np.testing.assert_allclose(metrics8[key], metrics1[key], rtol=1e-5,
                               err_msg=key)
  for key in ('grad_norm', 'disc_grad_norm'):
    np.testing.assert_allclose(metrics8[key], metrics1[key], rtol=1e-4,
                               err_msg=key)
  for field in STATE_FIELDS:
    for a, b in zip(jax.tree.leaves(_field(state8, field)),
                    jax.tree.leaves(_field(state1, field))):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6,
                                 err_msg=str(field))
  # Both G and D really moved (equal but unchanged would be vacuous).
  for part in ('generator', 'discriminator'):
    moved = [not np.allclose(a, b) for a, b in zip(
        jax.tree.leaves(getattr(state8, part).params),
        jax.tree.leaves(getattr(init8, part).params))]
    assert any(moved), part
  assert int(state8.step) == int(state1.step) == 1
  assert _counts(state8.discriminator.opt_state) == {1}


# --- kill and resume ----------------------------------------------------------


def _train_cmd(workdir, steps):
  return [sys.executable, '-m', 'semcorr_jax.cli.train',
          f'--config={REPO}/configs/camnet.py:test', f'--workdir={workdir}',
          f'--config.num_train_steps={steps}', '--config.batch_size=4',
          '--config.checkpoint_every=2', '--config.log_every=2',
          '--config.evals.synthetic.untrained_baseline=False']


def _final_state(workdir):
  """The whole latest train state (G, D, both optimisers) of a workdir."""
  config = checkpointing.load_config(str(workdir))
  method = methods.get(config.method)(config, total_steps=1)
  batch = jax.tree.map(jnp.asarray, pipeline.dummy_batch(config.data))
  abstract = jax.eval_shape(method.init_state, jax.random.key(0), batch)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
      abstract)
  ckpt = checkpointing.Checkpointer(str(workdir), read_only=True)
  try:
    step = ckpt.latest_step()
    state, meta = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  assert meta['step'] == step
  return step, jax.device_get(state)


@pytest.mark.slow  # three training subprocesses
def test_killed_gan_run_resumes_and_ends_like_an_uninterrupted_run(tmp_path):
  # The three runs compile the same programs: a persistent compilation cache
  # lets the second and third reuse the first one's executables.
  env = dict(os.environ,
             XLA_FLAGS='--xla_force_host_platform_device_count=2',
             JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'xla_cache'),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  steps = 6
  ref = tmp_path / 'uninterrupted'
  result = subprocess.run(_train_cmd(ref, steps), env=env, timeout=600,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]

  run = tmp_path / 'killed'
  kill_resume.kill_then_resume(_train_cmd(run, steps), run, steps, env)
  step_a, state_a = _final_state(ref)
  step_b, state_b = _final_state(run)
  assert step_a == step_b == steps
  assert isinstance(state_a, camnet_method.GANTrainState)
  assert int(state_a.step) == int(state_b.step) == steps
  # One G and one D update per step, both counted in the restored states.
  for part in ('generator', 'discriminator'):
    assert int(getattr(state_a, part).step) == steps, part
    assert _counts(getattr(state_a, part).opt_state) == _counts(
        getattr(state_b, part).opt_state) == {steps}, part
  for field in STATE_FIELDS:
    leaves_a = jax.tree.leaves(_field(state_a, field))
    leaves_b = jax.tree.leaves(_field(state_b, field))
    # D has no model state (instance norm).
    assert len(leaves_a) == len(leaves_b), field
    assert leaves_a or field == ('discriminator', 'model_state'), field
    for a, b in zip(leaves_a, leaves_b):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7,
                                 err_msg=str(field))


# --- config checks -------------------------------------------------------------


def test_bad_override_leaves_an_existing_run_config_untouched(tmp_path):
  (tmp_path / 'config.json').write_text('{"kept": true}')
  config = _config(**{'gan.disc_steps': 0})
  with pytest.raises(SemcorrError, match='disc_steps'):
    train.train_and_evaluate(config, str(tmp_path))
  assert (tmp_path / 'config.json').read_text() == '{"kept": true}'
