"""The `cats` method: configs, supervision, parameter groups, trainer run."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import semcorr_jax
from semcorr_jax import methods
from semcorr_jax import train
from semcorr_jax.data import pipeline
from semcorr_jax.errors import SemcorrError


def _flat(tree):
  return flax.traverse_util.flatten_dict(jax.device_get(tree), sep='/')


def _batch(config, size=2):
  batch = {k: jnp.asarray(v)
           for k, v in pipeline.dummy_batch(config.data, size).items()}
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  batch['source_image'] = jax.random.uniform(k1, batch['source_image'].shape)
  batch['target_image'] = jax.random.uniform(k2, batch['target_image'].shape)
  if 'mapping_ts' in batch:  # a shift by 8 pixels, all visible foreground
    h, w = batch['source_image'].shape[1:3]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    batch['mapping_ts'] = jnp.broadcast_to(
        jnp.stack([xs - 8.0, ys], -1), batch['mapping_ts'].shape)
    batch['valid_ts'] = jnp.ones_like(batch['valid_ts'])
    batch['target_mask'] = jnp.ones_like(batch['target_mask'])
  return batch


def test_paper_settings(load_config):
  c = load_config('cats', 'paper')
  assert c.method == 'cats' and c.data.source == 'spair71k'
  assert tuple(c.backbone.features) == tuple(
      f'hyper_{i}' for i in (0, 8, 20, 21, 26, 28, 29, 30))
  assert (c.backbone.depth, tuple(c.data.image_size)) == (101, (256, 256))
  m = c.model
  assert (m.feature_size, m.proj_dim, m.depth, m.num_heads, m.mlp_ratio,
          m.temperature) == (16, 128, 1, 6, 4.0, 0.02)
  o = c.optimizer
  assert (o.name, o.lr, o.weight_decay, o.groups.backbone.lr) == (
      'adamw', 3e-5, 0.05, 3e-6)
  assert tuple(o.decay_at) == (0.7, 0.8, 0.9) and o.decay_factor == 0.5
  assert (c.batch_size, c.num_epochs) == (32, 100)
  assert not o.groups.backbone.frozen and o.groups.aggregator.lr is None
  assert c.loss.supervision == 'keypoints' and 'synthetic' not in c.evals
  assert c.evals.spair.threshold == 'bbox'
  assert c.evals.spair_val.select == 'pck@0.1'
  pf = load_config('cats', 'paper,pf_pascal,frozen')
  assert pf.data.source == 'pf_pascal' and pf.optimizer.groups.backbone.frozen
  assert tuple(pf.backbone.features) == tuple(
      f'hyper_{i}' for i in (2, 17, 21, 22, 25, 26, 28))
  for name in ('pf_pascal', 'pf_pascal_val'):
    ev = pf.evals[name]
    assert (ev.threshold, ev.frame, ev.direction, ev.protocol) == (
        'img', 'square', 'ts', 'resize')
  # pf_pascal_val reads pf_pascal's folder unless given its own.
  pf = load_config('cats', 'paper,pf_pascal',
                   **{'evals.pf_pascal.data_dir': '/data/pf'})
  assert pf.evals.pf_pascal_val.data_dir == '/data/pf'
  assert load_config('cats', 'quick').optimizer.groups.backbone.frozen


@pytest.mark.parametrize('variant', ['quick,spair', 'paper,pf_willow',
                                     'huge'])
def test_unknown_variants_are_refused(load_config, variant):
  with pytest.raises(SemcorrError, match='variant'):
    load_config('cats', variant)


def test_supervision_decides_the_batch_keys(load_config):
  dense = load_config('cats', 'test')
  method = methods.get('cats')(dense, 10)
  assert set(method.batch_keys) <= set(pipeline.batch_spec(dense.data, 1))
  assert 'mapping_ts' in method.batch_keys
  real = load_config('cats', 'test,pf_pascal')
  method = methods.get('cats')(real, 10)
  assert set(method.batch_keys) <= set(pipeline.batch_spec(real.data, 1))
  assert 'target_keypoints' in method.batch_keys
  with pytest.raises(SemcorrError, match='supervision'):
    methods.get('cats')(load_config('cats', 'test', **{
        'loss.supervision': 'boxes'}), 10)
  with pytest.raises(SemcorrError, match='num_heads'):
    methods.get('cats')(load_config('cats', 'test', **{
        'model.num_heads': 5}), 10)


def test_train_step_fine_tunes_the_backbone_when_asked(load_config):
  """groups.backbone.frozen=False (the paper's best setting): one step
  moves the backbone, the projections and the aggregator. (The frozen
  default: tests/models/test_cats_model.py, zero backbone gradient.)"""
  config = load_config('cats', 'test', **{
      'optimizer.groups.backbone.frozen': False})
  method = methods.get('cats')(config, 10)
  batch = _batch(config)
  state = jax.jit(method.init_state)(jax.random.PRNGKey(0), batch)
  labels = _flat(method.param_groups(state.params))
  assert {k for k, v in labels.items() if v == 'backbone'} == {
      k for k in labels if k.startswith('backbone/')}
  assert set(labels.values()) == {'backbone', 'aggregator'}
  after, metrics = jax.jit(method.train_step)(state, batch,
                                              jax.random.PRNGKey(1))
  assert np.isfinite(float(metrics['loss'])) and float(metrics['loss']) > 0
  assert 0 < float(metrics['covered_fraction']) <= 1
  assert float(metrics['learning_rate/backbone']) == pytest.approx(3e-6)
  before, now = _flat(state.params), _flat(after.params)
  moved = {k.split('/')[0] for k in before
           if not np.array_equal(before[k], now[k])}
  assert {'backbone', 'decoder', 'proj_0', 'proj_1', 'proj_2'} <= moved


def test_keypoint_loss_reads_the_target_to_source_flow(load_config):
  """One keypoint pair on real-pair batches: the loss is the mean EPE, over
  the cells around the target point, of predict's `feature_mapping_ts`
  (not `_st`) against the keypoint displacement in cells."""
  config = load_config('cats', 'test,pf_pascal')
  method = methods.get('cats')(config, 10)
  batch = _batch(config, size=1)
  kps = np.full(batch['source_keypoints'].shape, -1.0, np.float32)
  kps_t = kps.copy()
  kps[0, 0], kps_t[0, 0] = [50.0, 10.0], [21.0, 42.0]
  valid = np.zeros(batch['keypoint_valid'].shape, np.float32)
  valid[0, 0] = 1.0
  batch.update(source_keypoints=jnp.asarray(kps),
               target_keypoints=jnp.asarray(kps_t),
               keypoint_valid=jnp.asarray(valid))
  variables = jax.jit(method.init_variables)(jax.random.PRNGKey(0), batch)
  params = variables['params']
  state = {k: v for k, v in variables.items() if k != 'params'}
  loss, (metrics, _) = jax.jit(method.loss)(params, state, batch,
                                            jax.random.PRNGKey(0))
  out = jax.jit(method.predict)(variables, batch['source_image'],
                                batch['target_image'])
  s = config.model.feature_size
  scale = (s - 1) / (64 - 1)
  t = np.array([21.0, 42.0]) * scale
  d = (np.array([50.0, 10.0]) - [21.0, 42.0]) * scale
  ys, xs = np.mgrid[0:s, 0:s]
  cells = (np.abs(xs - t[0]) <= 17 / 16) & (np.abs(ys - t[1]) <= 17 / 16)
  flow = np.asarray(out['feature_mapping_ts'][0]) - np.stack([xs, ys], -1)
  want = np.linalg.norm(flow - d, axis=-1)[cells].mean()
  np.testing.assert_allclose(float(loss), want, rtol=1e-4)
  assert float(metrics['covered_fraction']) == pytest.approx(cells.mean())
  # Nothing annotated: nothing to learn.
  batch['keypoint_valid'] = jnp.zeros_like(batch['keypoint_valid'])
  loss, _ = jax.jit(method.loss)(params, state, batch, jax.random.PRNGKey(0))
  assert float(loss) == 0.0


@pytest.mark.slow  # a whole tiny run through the trainer, with evaluations
def test_trainer_runs_the_test_config_and_the_run_predicts(load_config,
                                                            tmp_path):
  config = load_config('cats', 'test')
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['step'] == config.num_train_steps
  synthetic = results['evals']['synthetic']
  for key in ('pck@0.05', 'pck@0.1'):
    assert 0.0 <= synthetic['trained'][key] <= 1.0
    assert 0.0 <= synthetic['untrained'][key] <= 1.0
  matcher = semcorr_jax.load(str(tmp_path))
  rng = np.random.default_rng(0)
  source = rng.uniform(size=(50, 70, 3)).astype(np.float32)
  out = matcher.match(source, source[:, ::-1])
  assert out['mapping_st'].shape == (50, 70, 2)
  assert out['mapping_ts'].shape == (50, 70, 2)
  assert np.all(np.isfinite(out['mapping_ts']))
