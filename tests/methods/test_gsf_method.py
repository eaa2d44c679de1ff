"""The `gsf` method: configs, parameter groups, stages, rows, outputs."""

import os
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import kill_resume
from helpers import paths
from semcorr_jax import config_files
from semcorr_jax import methods
from semcorr_jax import outputs
from semcorr_jax import workdirs
from semcorr_jax.cli import match
from semcorr_jax.data import pipeline
from semcorr_jax.methods import gsf as gsf_method
from semcorr_jax.models import gsf as gsf_model

CONFIG = str(paths.REPO / 'configs' / 'gsf.py')


def _config(variant='test,stage1', **overrides):
  config = config_files.load(f'{CONFIG}:{variant}')
  config.unlock()
  for key, value in overrides.items():
    section, field = key.split('.')
    config[section][field] = value
  config.lock()
  return config


def _batch(config, size=2):
  batch = {k: jnp.asarray(v)
           for k, v in pipeline.dummy_batch(config.data, size).items()}
  rng = jax.random.PRNGKey(0)
  batch['source_image'] = jax.random.uniform(rng, batch['source_image'].shape)
  batch['target_image'] = jnp.roll(batch['source_image'], 16, axis=2)
  batch['source_mask'] = jnp.ones_like(batch['source_mask'])
  batch['target_mask'] = jnp.ones_like(batch['target_mask'])
  return batch


def _method_and_state(config):
  method = methods.get(config.method)(config, 10)
  state = method.init_state(jax.random.PRNGKey(0), _batch(config))
  return method, state


def _flat(tree):
  return flax.traverse_util.flatten_dict(jax.device_get(tree), sep='/')


def test_paper_setting_and_stages():
  config = _config('paper,stage1')
  assert config.method == 'gsf' and config.stage == 1
  assert config.model.rho == 0.9
  assert (config.model.c_p, config.model.c_m) == (7.0, 5.0)
  assert config.loss.match_radius == 5
  assert config.backbone.depth == 101
  assert tuple(config.backbone.features) == ('layer3', 'layer4')
  groups = config.optimizer.groups
  assert [groups[g].frozen for g in gsf_method.GROUPS] == [
      True, True, False, True]
  stage2 = _config('paper,stage2').optimizer.groups
  assert [stage2[g].frozen for g in gsf_method.GROUPS] == [
      True, False, False, False]
  finetune = _config('quick,finetune')
  assert finetune.data.source == 'pf_pascal' and finetune.stage == 2
  # Real pairs have no dense ground truth for the synthetic evaluator.
  assert 'synthetic' not in finetune.evals
  assert set(_config('paper,finetune').evals) == {
      'pf_pascal', 'pf_pascal_val', 'pf_willow'}


@pytest.mark.parametrize('row, key, value', [
    ('no_pruning', 'model.pruning', False),
    ('no_mls', 'model.mls', False),
    ('no_matching', 'model.matching', False),
    ('sil_only', 'loss.geo_weight', 0.0),
    ('geo_only', 'loss.sil_weight', 0.0),
])
def test_table3_rows_are_switches(row, key, value):
  section, field = key.split('.')
  assert _config(f'test,stage2,{row}')[section][field] == value
  assert _config('test,stage2')[section][field] != value


def test_unknown_variant_part_is_refused():
  with pytest.raises(Exception, match='stage9'):
    config_files.load(f'{CONFIG}:test,stage9')


def test_param_groups():
  method, state = _method_and_state(_config())
  labels = _flat(method.param_groups(state.params))
  assert set(labels.values()) == set(gsf_method.GROUPS)
  for key, label in labels.items():
    top = key.split('/')[0]
    if '/backbone/' in f'/{key}':
      assert label == 'backbone', key
    elif top in ('pruning', 'matching'):
      assert label == top, key
    else:
      assert top == 'features' and label == 'features', key


def test_stage1_changes_only_the_pruning_network():
  config = _config('test,stage1')
  method, state = _method_and_state(config)
  batch = _batch(config)
  after = state
  for i in range(2):
    after, metrics = jax.jit(method.train_step)(after, batch,
                                                jax.random.PRNGKey(i))
  assert float(metrics['grad_norm']) > 0
  before_vars, after_vars = _flat(state.variables()), _flat(after.variables())
  changed = [k for k in before_vars
             if not np.array_equal(before_vars[k], after_vars[k])]
  assert changed and all(k.startswith('params/pruning/') for k in changed)


def test_stage2_trains_features_pruning_and_matching():
  config = _config('test,stage2')
  method, state = _method_and_state(config)
  after, metrics = jax.jit(method.train_step)(state, _batch(config),
                                              jax.random.PRNGKey(0))
  for name in ('match_loss', 'smooth_loss', 'sil_loss', 'geo_loss'):
    assert np.isfinite(float(metrics[name])), name
  before, now = _flat(state.params), _flat(after.params)
  for top in ('features/adapt', 'pruning/', 'matching/'):
    keys = [k for k in before if k.startswith(top)]
    assert any(not np.array_equal(before[k], now[k]) for k in keys), top
  assert all(np.array_equal(before[k], now[k]) for k in before
             if '/backbone/' in k)


def test_ground_truth_never_enters_the_loss():
  """Weak supervision: the dense ground truth of synthetic pairs only
  reaches the evaluators."""
  config = _config('test,stage2')
  method, state = _method_and_state(config)
  batch = _batch(config)
  assert 'mapping_st' in batch
  other = dict(batch, mapping_st=batch['mapping_st'] + 7.0,
               mapping_ts=batch['mapping_ts'] - 3.0,
               valid_st=1.0 - batch['valid_st'])
  loss = jax.jit(method.loss)
  a = loss(state.params, state.model_state, batch, jax.random.PRNGKey(0))
  b = loss(state.params, state.model_state, other, jax.random.PRNGKey(0))
  assert float(a[0]) == float(b[0])
  assert 'mapping_st' not in method.batch_keys


def test_predict_keys_shapes_and_flows():
  config = _config()
  method, state = _method_and_state(config)
  batch = _batch(config)
  out = jax.jit(method.predict)(state.variables(), batch['source_image'],
                                batch['target_image'])
  shape = batch['source_image'].shape[:3]
  for name in ('mapping', 'guidance_mapping'):
    for d in outputs.DIRECTIONS:
      assert out[f'{name}_{d}'].shape == shape + (2,)
  for d in outputs.DIRECTIONS:
    confident = np.asarray(out[f'guidance_confident_{d}'])
    assert confident.shape == shape
    assert set(np.unique(confident)) <= {0.0, 1.0}
  assert [f.name for f in method.flows] == ['final', 'guidance']
  spec = pipeline.batch_spec(config.data, 2)
  assert set(method.batch_keys) <= set(spec)


def test_without_matching_tau_is_the_guidance():
  config = _config('test,stage2,no_matching')
  method, state = _method_and_state(config)
  assert 'matching' not in state.params
  batch = _batch(config)
  out = method.predict(state.variables(), batch['source_image'],
                       batch['target_image'])
  np.testing.assert_array_equal(out['mapping_st'], out['guidance_mapping_st'])


@pytest.mark.parametrize('row', ['no_pruning', 'no_mls'])
def test_rows_train(row):
  config = _config(f'test,stage2,{row}')
  method, state = _method_and_state(config)
  after, metrics = jax.jit(method.train_step)(state, _batch(config),
                                              jax.random.PRNGKey(0))
  assert np.isfinite(float(metrics['loss']))
  assert ('pruning' in state.params) == (row != 'no_pruning')


def _shifted_peaks(size=16, shift=(2, 1), floor=0.2):
  """C with one peak of 1 at i + shift and `floor` elsewhere in each row
  whose i + shift is inside; the other rows are 0 (no match: not in S)."""
  c = np.zeros((1, size, size, size, size), np.float32)
  for y in range(size):
    for x in range(size):
      tx, ty = x + shift[0], y + shift[1]
      if tx < size and ty < size:
        c[0, y, x] = floor
        c[0, y, x, ty, tx] = 1.0
  return jnp.asarray(c)


@pytest.mark.parametrize('mls', [True, False])
def test_the_head_centres_the_gaussian_at_i_plus_guidance(mls):
  """Eq. 8 as the model wires it: a constant shift d is found by the
  confident matches (G = d), kept by MLS (G' = d) and read out of C' by
  the matching network at initialisation (tau = d). A Gaussian centred at
  G' itself (a displacement, Eq. 8 as printed) would pull tau towards the
  cell d for every source cell."""
  config = _config('test,stage2,no_pruning', **{'model.mls': mls})
  model = gsf_model.GSF.from_config(config)
  corr = _shifted_peaks()
  variables = model.init(jax.random.PRNGKey(0), corr, method=model._head)
  out = model.apply(variables, corr, method=model._head)
  interior = (slice(None), slice(0, 15), slice(0, 14))  # i + d inside
  np.testing.assert_allclose(out['guidance_raw'][interior], np.broadcast_to(
      [2.0, 1.0], out['guidance_raw'][interior].shape), atol=1e-5)
  np.testing.assert_array_equal(out['confident'][interior], 1.0)
  np.testing.assert_allclose(out['flow'][interior][..., 0], 2.0, atol=0.05)
  np.testing.assert_allclose(out['flow'][interior][..., 1], 1.0, atol=0.05)
  if not mls:  # footnote 1: G' is G on S and 0 elsewhere
    outside = np.asarray(out['confident']) == 0
    assert outside.any()
    np.testing.assert_array_equal(np.asarray(out['guidance'])[outside], 0.0)


def test_nothing_confident_stays_finite():
  """rho = 1: Q' is empty, S is empty; L_geo is 0 and nothing is NaN."""
  config = _config('test,stage2', **{'model.rho': 1.0})
  method, state = _method_and_state(config)
  after, metrics = jax.jit(method.train_step)(state, _batch(config),
                                              jax.random.PRNGKey(0))
  assert float(metrics['confident_fraction']) == 0.0
  assert float(metrics['geo_loss']) == 0.0
  for leaf in jax.tree_util.tree_leaves(after.params):
    assert np.all(np.isfinite(leaf))


def test_real_pairs_use_the_object_box_as_foreground():
  box = jnp.array([[16.0, 0.0, 47.0, 63.0], [0.0, 0.0, 63.0, 63.0]])
  mask = gsf_method.box_mask(box, jnp.array([1.0, 0.0]), (64, 64), (5, 5))
  # Cell x covers pixel x * 63 / 4: cells 2 (31.5) in, 1 (15.75) and 3
  # (47.25) out; an unknown box is the whole image.
  np.testing.assert_array_equal(mask[0, 0], [0, 0, 1, 0, 0])
  assert float(mask[1].min()) == 1.0


def _env():
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      [str(paths.REPO), env.get('PYTHONPATH', '')])
  return env


def _train_cmd(workdir, variant, *extra):
  return [sys.executable, '-m', 'semcorr_jax.cli.train',
          f'--config={CONFIG}:{variant}', f'--workdir={workdir}',
          '--config.num_train_steps=6', '--config.checkpoint_every=2',
          '--config.evals.synthetic.untrained_baseline=False', *extra]


@pytest.mark.slow
def test_stage2_resumes_after_a_kill(tmp_path):
  """Stage 2, started from a finished stage 1, resumes after SIGKILL to the
  same variables as an uninterrupted stage 2 (stage 1 is a plain
  single-optimiser run, which tests/training covers)."""
  stage1 = tmp_path / 'stage1'
  done = subprocess.run(_train_cmd(stage1, 'test,stage1'), env=_env(),
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  extra = (f'--config.init_from.workdir={stage1}',)
  killed = tmp_path / 'stage2_killed'
  kill_resume.kill_then_resume(_train_cmd(killed, 'test,stage2', *extra),
                               killed, steps=6, env=_env())
  reference = tmp_path / 'stage2'
  done = subprocess.run(_train_cmd(reference, 'test,stage2', *extra),
                        env=_env(), capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  a = _flat(workdirs.restore(str(reference)).variables)
  b = _flat(workdirs.restore(str(killed)).variables)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)

  # semcorr-match draws S, G' and tau and writes S (source -> target).
  written = match.match_files(str(killed), 'skimage:chelsea',
                              'skimage:chelsea_warped',
                              str(tmp_path / 'm.png'))
  assert set(written) == {'png', 'npy', 'guidance_confident_st'}
  confident = np.load(written['guidance_confident_st'])
  assert confident.shape == (300, 451)
  assert set(np.unique(confident)) <= {0.0, 1.0}
