"""Tests for the SFNet model (models/sfnet.py) and the `sfnet` method.

configs/sfnet.py:test: backbone stage sizes (1, 1, 1, 1), width 8, 64x64
images -> 4x4 feature grid (layer3 128 channels, layer4 256).
"""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from semcorr_jax import config_files
from semcorr_jax import geometry
from semcorr_jax import methods
from semcorr_jax import outputs
from semcorr_jax import weights
from semcorr_jax.data import pipeline
from semcorr_jax.models import backbones
from semcorr_jax.models import sfnet
from helpers import paths

IMAGE = 64
GRID = 4


@pytest.fixture(scope='module', autouse=True)
def _fast_compiles():
  # Compilation dominates these tiny graphs on CPU.
  old = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', old)


def _config(variant='test', **overrides):
  return config_files.load(f'{paths.CONFIGS / "sfnet"}.py:{variant}',
                           {'optimizer.lr': 1e-2, **overrides})


def _batch(b=2, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  source = jax.random.uniform(k1, (b, IMAGE, IMAGE, 3))
  target = jax.random.uniform(k2, (b, IMAGE, IMAGE, 3))
  mask = jnp.zeros((b, IMAGE, IMAGE)).at[:, 12:52, 16:48].set(1.0)
  return {'source_image': source, 'target_image': target,
          'source_mask': mask, 'target_mask': jnp.roll(mask, 4, axis=2)}


@pytest.fixture(scope='module')
def method():
  return methods.get('sfnet')(_config(), total_steps=10)


@pytest.fixture(scope='module')
def state(method):
  return jax.jit(method.init_state)(jax.random.key(0), _batch())


@pytest.fixture(scope='module')
def variables(state):
  return state.variables()


@pytest.fixture(scope='module')
def apply_fn(method):
  return jax.jit(method.model.apply, static_argnames=('train', 'mutable'))


def test_paper_config_is_the_paper_setting():
  c = _config('paper')
  m = sfnet.SFNet.from_config(c.model, backbones.backbone_config(c))
  spec = m.backbone_spec
  assert (spec.name, spec.depth, spec.features) == ('resnet', 101,
                                                    ('layer3', 'layer4'))
  assert (m.adapt_kernels, m.adapt_units) == ((5, 3), 2)
  assert (m.beta, m.kernel_sigma, m.dtype) == (50.0, 5.0, 'float32')
  assert spec.resnet_stage_sizes == (3, 4, 23, 3)
  assert spec.strides == (16, 32) and spec.channels == (1024, 2048)
  # Adaptation layers of the full model: ~52.4 M (layer3) + ~75.5 M (layer4).
  image = jnp.zeros((1, 320, 320, 3))
  shapes = jax.eval_shape(m.init, jax.random.key(0), image, image)
  count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))
  assert count(shapes['params']['adapt_layer3']) == 2 * (
      1024 * 1024 * 25 + 1024 + 2 * 1024)
  assert count(shapes['params']['adapt_layer4']) == 2 * (
      2048 * 2048 * 9 + 2048 + 2 * 2048)


def test_output_shapes_and_normalisation(method, variables, apply_fn):
  batch = _batch()
  out = apply_fn(variables, batch['source_image'], batch['target_image'])
  assert out['mapping_st'].shape == (2, GRID, GRID, 2)
  assert out['mapping_ts'].shape == (2, GRID, GRID, 2)
  assert out['corr_st'].shape == (2, GRID, GRID, GRID, GRID)
  assert tuple(int(v) for v in out['feature_hw']) == (GRID, GRID)
  for key in ('mapping_st', 'mapping_ts', 'corr_st', 'corr_ts'):
    assert out[key].dtype == jnp.float32
  # Soft-argmax expectations stay inside the other grid.
  for key in ('mapping_st', 'mapping_ts'):
    assert np.all((out[key] >= 0) & (out[key] <= GRID - 1))
  # L2-normalised over the other side, non-negative (ReLU'd levels).
  np.testing.assert_allclose(jnp.sum(out['corr_st']**2, axis=(3, 4)), 1.0,
                             atol=1e-4)
  np.testing.assert_allclose(jnp.sum(out['corr_ts']**2, axis=(3, 4)), 1.0,
                             atol=1e-4)
  assert float(out['corr_st'].min()) >= 0.0
  # Same read-out as the geometry module on the returned volumes.
  np.testing.assert_allclose(
      out['mapping_st'], geometry.kernel_soft_argmax(out['corr_st'], 50., 5.),
      atol=1e-5)
  del method


def test_matching_correlations_formula():
  """corr_st / corr_ts against a direct numpy version of SFNet's layout."""
  rng = np.random.default_rng(0)
  f = [rng.normal(size=(2, 3, 4, c)).astype(np.float32) for c in (5, 5, 7, 7)]
  corr_st, corr_ts = sfnet.matching_correlations([f[0], f[2]], [f[1], f[3]])

  def level(a, b):
    a = a / np.sqrt((a**2).sum(-1, keepdims=True) + 1e-6)
    b = b / np.sqrt((b**2).sum(-1, keepdims=True) + 1e-6)
    return np.maximum(np.einsum('bijc,bklc->bijkl', a, b), 0.0)

  prod = level(f[0], f[1]) * level(f[2], f[3])  # (B, hs, ws, ht, wt)
  want_st = prod / np.sqrt((prod**2).sum((3, 4), keepdims=True) + 1e-6)
  prod_t = prod.transpose(0, 3, 4, 1, 2)
  want_ts = prod_t / np.sqrt((prod_t**2).sum((3, 4), keepdims=True) + 1e-6)
  np.testing.assert_allclose(corr_st, want_st, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(corr_ts, want_ts, rtol=1e-5, atol=1e-6)


def test_identical_images_match_themselves(variables, apply_fn):
  image = _batch()['source_image']
  out = apply_fn(variables, image, image)
  ident = geometry.pixel_grid(GRID, GRID)
  # Cosine of a feature with itself is the maximum of every level, hence of
  # the product: the hard argmax is the identity cell.
  np.testing.assert_array_equal(geometry.hard_argmax(out['corr_st']),
                                jnp.broadcast_to(ident, (2, GRID, GRID, 2)))
  # The product is symmetric when s = t, so both directions agree exactly.
  np.testing.assert_allclose(out['corr_ts'], out['corr_st'], atol=1e-6)
  np.testing.assert_allclose(out['mapping_ts'], out['mapping_st'], atol=1e-5)
  # The soft read-out is pulled towards the identity (less than half a cell
  # on average; random images of the tiny net give nearly flat correlations).
  err = jnp.mean(jnp.linalg.norm(out['mapping_st'] - ident, axis=-1))
  other = apply_fn(variables, image, _batch(seed=1)['target_image'])
  err_other = jnp.mean(
      jnp.linalg.norm(other['mapping_st'] - ident, axis=-1))
  assert float(err) < float(err_other)


def test_side_batch_norm_uses_per_side_statistics():
  x = jax.random.normal(jax.random.key(0), (6, 3, 3, 4))
  x = x.at[3:].multiply(3.0).at[3:].add(5.0)  # Target side differs.
  bn = sfnet.SideBatchNorm()
  v = bn.init(jax.random.key(0), x, train=False)
  apply = jax.jit(bn.apply, static_argnames=('train', 'mutable'))
  y, upd = apply(v, x, train=True, mutable=('batch_stats',))
  ref = flax.linen.BatchNorm(use_running_average=False, epsilon=1e-5)
  ref_vars = ref.init(jax.random.key(0), x[:3])
  for side in (slice(0, 3), slice(3, 6)):
    want, _ = ref.apply(ref_vars, x[side], mutable=['batch_stats'])
    np.testing.assert_allclose(y[side], want, atol=1e-5)
  # Running stats: two sequential PyTorch updates (momentum 0.1, unbiased var).
  n = 3 * 3 * 3
  mean = [np.asarray(x[s]).mean((0, 1, 2)) for s in (slice(0, 3), slice(3, 6))]
  var = [np.asarray(x[s]).var((0, 1, 2)) * n / (n - 1)
         for s in (slice(0, 3), slice(3, 6))]
  want_mean = 0.9 * (0.9 * 0.0 + 0.1 * mean[0]) + 0.1 * mean[1]
  want_var = 0.9 * (0.9 * 1.0 + 0.1 * var[0]) + 0.1 * var[1]
  np.testing.assert_allclose(upd['batch_stats']['mean'], want_mean, rtol=1e-5)
  np.testing.assert_allclose(upd['batch_stats']['var'], want_var, rtol=1e-5)
  # Eval mode normalises with the running statistics.
  v2 = {'params': v['params'], **upd}
  y_eval = apply(v2, x, train=False)
  np.testing.assert_allclose(
      y_eval, (x - want_mean) / np.sqrt(want_var + 1e-5), rtol=1e-4, atol=1e-5)


def test_train_step_updates_adaptation_only(method, state):
  batch = _batch()
  step = jax.jit(method.train_step)
  new, metrics = step(state, batch, jax.random.key(1))
  assert int(new.step) == 1
  for key in ('loss', 'mask_loss', 'flow_loss', 'smooth_loss', 'mean_flow',
              'grad_norm'):
    assert np.isfinite(float(metrics[key])), key
  # One learning rate per trainable group: the backbone is frozen.
  assert metrics['learning_rate/model'] == pytest.approx(1e-2)
  assert not any(k.startswith('learning_rate') and k != 'learning_rate/model'
                 for k in metrics)
  np.testing.assert_allclose(
      metrics['loss'], 3 * metrics['mask_loss'] + 16 * metrics['flow_loss']
      + 0.5 * metrics['smooth_loss'], rtol=1e-5)

  def changed(a, b):
    return [bool(np.any(np.asarray(x) != np.asarray(y)))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]

  assert not any(changed(state.params['backbone'], new.params['backbone']))
  assert all(changed(state.params['adapt_layer3'], new.params['adapt_layer3']))
  assert all(changed(state.params['adapt_layer4'], new.params['adapt_layer4']))
  stats, new_stats = (state.model_state['batch_stats'],
                      new.model_state['batch_stats'])
  assert not any(changed(stats['backbone'], new_stats['backbone']))
  assert all(changed(stats['adapt_layer3'], new_stats['adapt_layer3']))
  assert 'model_state' not in metrics


def test_param_groups_put_the_backbone_apart(method, variables):
  labels = flax.traverse_util.flatten_dict(
      method.param_groups(variables['params']))
  assert set(labels.values()) == {'backbone', 'model'}
  for key, label in labels.items():
    assert label == ('backbone' if key[0] == 'backbone' else 'model'), key
  # The config freezes the backbone group (the train step test shows it).
  assert method.config.optimizer.groups.backbone.frozen


def test_declarations(method, variables):
  # The batch keys are what the synthetic pipeline yields.
  spec = pipeline.batch_spec(method.config.data, 2)
  assert set(method.batch_keys) <= set(spec)
  assert set(method.batch_keys) >= {'source_mask', 'target_mask'}
  assert [f.name for f in method.flows] == ['final']
  batch = _batch(b=1)
  out = jax.eval_shape(method.predict, variables, batch['source_image'],
                       batch['target_image'])
  split = outputs.split(method.flows, out)
  assert set(split) == {'final'}
  assert set(split['final']) == {'mapping_st', 'mapping_ts'}
  assert split['final']['mapping_st'].shape == (1, IMAGE, IMAGE, 2)


def test_predict_lifts_mappings_to_image_resolution(method, variables):
  batch = _batch()
  out = jax.jit(method.predict)(variables, batch['source_image'],
                                batch['target_image'])
  for d in ('st', 'ts'):
    m, fm = out[f'mapping_{d}'], out[f'feature_mapping_{d}']
    assert m.shape == (2, IMAGE, IMAGE, 2)
    assert fm.shape == (2, GRID, GRID, 2)
    assert np.all((m >= 0) & (m <= IMAGE - 1))
    # Align corners: corner pixels read the corner cells, scaled 63 / 3.
    scale = (IMAGE - 1) / (GRID - 1)
    np.testing.assert_allclose(m[:, 0, 0], fm[:, 0, 0] * scale, rtol=1e-5)
    np.testing.assert_allclose(m[:, -1, -1], fm[:, -1, -1] * scale,
                               rtol=1e-5)


def test_bfloat16_compute_keeps_float32_matching(variables):
  c = _config(**{'model.dtype': 'bfloat16'})
  model = sfnet.SFNet.from_config(c.model, backbones.backbone_config(c))
  assert model.dtype == 'bfloat16'
  batch = _batch(b=1)
  out = jax.eval_shape(model.apply, variables, batch['source_image'],
                       batch['target_image'])
  for key in ('mapping_st', 'mapping_ts', 'corr_st', 'corr_ts'):
    assert out[key].dtype == jnp.float32, key


def test_load_pretrained_fills_the_backbone_only(method, variables, tmp_path):
  assert method.load_pretrained(variables) is variables  # None: no-op.
  # A "checkpoint": a perturbed copy of the backbone.
  other = jax.tree.map(lambda x: np.asarray(x) * 0.5 + 0.25,
                       jax.device_get(variables))
  path = str(tmp_path / 'backbone.npz')
  weights.save_npz(
      weights.export_torchvision_resnet(other, subtree=('backbone',)), path)
  config = _config()
  config.backbone.weights = path
  loaded = methods.get('sfnet')(config, total_steps=1).load_pretrained(
      jax.device_get(variables))
  for col in ('params', 'batch_stats'):
    jax.tree.map(np.testing.assert_array_equal, loaded[col]['backbone'],
                 other[col]['backbone'])
  jax.tree.map(np.testing.assert_array_equal, loaded['params']['adapt_layer3'],
               jax.device_get(variables['params']['adapt_layer3']))


def test_backbone_config_reads_pre_backbone_run_configs(method, variables):
  # A workdir's config.json from before `config.backbone` existed.
  old = ml_collections.ConfigDict({'model': {
      'backbone_depth': 50, 'backbone_width': 16,
      'backbone_stage_sizes': (1, 1, 1, 1), 'backbone_weights': None,
      'adapt_kernels': (5, 3)}})
  cfg = backbones.backbone_config(old)
  spec = backbones.BackboneSpec.from_config(cfg)
  assert spec == backbones.BackboneSpec(depth=50, width=16,
                                        stage_sizes=(1, 1, 1, 1))
  assert spec.features == ('layer3', 'layer4')
  assert spec.describe() == 'resnet(1,1,1,1)/w16 layer3+layer4'
  # weights='none' asks for the random initialisation, as None does.
  config = _config()
  config.backbone.weights = 'none'
  assert methods.get('sfnet')(config, total_steps=1).load_pretrained(
      variables) is variables
  del method
