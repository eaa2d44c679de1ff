"""Tests for the `camnet` method (methods/camnet.py): G and D steps, state.

configs/camnet.py:test with two D updates per step and plain SGD for G and D
(Adam's first step is lr * sign(grad), which turns float noise in the
near-zero gradients of biases in front of a normalisation into lr-sized
differences between two compilations of the same step).
"""

import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax import config_files
from semcorr_jax import geometry
from semcorr_jax import methods
from semcorr_jax import outputs
from semcorr_jax.data import pipeline
from semcorr_jax.errors import SemcorrError
from semcorr_jax.losses import camnet as camnet_losses
from semcorr_jax.methods import base
from semcorr_jax.methods import camnet as camnet_method
from helpers import paths

REPO = str(paths.REPO)
IMAGE = 64
GRID = 4
B = 2
OVERRIDES = {'gan.disc_steps': 2, 'optimizer.name': 'sgd',
             'optimizer.lr': 1e-3, 'disc_optimizer.name': 'sgd',
             'disc_optimizer.lr': 0.1}


def _config(variant='test', **overrides):
  return config_files.load(
      os.path.join(REPO, 'configs', f'camnet.py:{variant}'), overrides)


def _leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) and la
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(la, lb))


def _changed(a, b):
  """{path: bool} whether each leaf differs."""
  fa = flax.traverse_util.flatten_dict(jax.device_get(a))
  fb = flax.traverse_util.flatten_dict(jax.device_get(b))
  assert fa.keys() == fb.keys()
  return {k: not np.array_equal(fa[k], fb[k]) for k in fa}


def _counts(opt_state):
  """The integer leaves (optax step counts) of an optimiser state."""
  return [int(x) for x in jax.tree.leaves(jax.device_get(opt_state))
          if np.issubdtype(np.asarray(x).dtype, np.integer)]


@pytest.fixture(scope='module')
def config():
  return _config(**OVERRIDES)


@pytest.fixture(scope='module')
def method(config):
  return methods.get('camnet')(config, total_steps=10)


@pytest.fixture(scope='module')
def batch(config):
  ds = pipeline.make_pair_dataset(config.data, 'train', batch_size=B, seed=0)
  return jax.tree.map(jnp.asarray, next(ds.as_numpy_iterator()))


@pytest.fixture(scope='module')
def state(method, batch):
  return jax.jit(method.init_state)(jax.random.key(0), batch)


@pytest.fixture(scope='module')
def disc_step(method):
  return jax.jit(method.discriminator_step)


@pytest.fixture(scope='module')
def after_g(method, state, batch):
  """(state, metrics, pairs) after one generator step."""
  return jax.jit(method.generator_step)(state, batch)


def test_config_is_the_paper_setting():
  c = _config()
  assert (c.loss.mask_weight, c.loss.base_weight,
          c.loss.base_confidence_weight, c.loss.align_weight,
          c.loss.confidence_weight, c.loss.adversarial_weight) == (
              0.188, 0.4, 0.4, 288.0, 18.0, 1.0)
  assert c.method == 'camnet' and c.gan.enabled
  assert c.model.refinement == 'confidence_aware'
  paper = _config('paper')
  assert (paper.gan.width, paper.gan.num_layers) == (64, 3)
  assert paper.disc_optimizer.b1 == 0.5
  for row, (refinement, gan) in {
      'sfnet': ('none', False), 'refinement': ('plain', False),
      'confidence': ('confidence_aware', False),
      'full': ('confidence_aware', True)}.items():
    c = _config(f'test,{row}')
    assert (c.model.refinement, c.gan.enabled) == (refinement, gan), row
  with pytest.raises(SemcorrError, match='Table-3'):
    _config('test,bogus')


def test_state_holds_generator_and_discriminator(method, state):
  assert isinstance(state, camnet_method.GANTrainState)
  g, d = state.generator, state.discriminator
  assert type(g) is type(d) is base.TrainState
  assert set(g.params) == {'base', 'confidence', 'refinement'}
  assert set(g.model_state) == {'batch_stats'}
  assert set(d.params) == {'conv0', 'conv1', 'conv2', 'norm1', 'norm2',
                           'score'}
  assert d.model_state == {}  # instance norm: D has no state
  # D of the test config: width 4, 2 stride-2 layers, on (warped, reference).
  assert d.params['conv0']['kernel'].shape == (4, 4, 6, 4)
  assert int(state.step) == int(g.step) == int(d.step) == 0
  assert _counts(g.opt_state) and set(_counts(g.opt_state)) == {0}
  assert _counts(d.opt_state) and set(_counts(d.opt_state)) == {0}
  assert d.tx is method.disc_tx and g.tx is method.tx


def test_param_groups_put_the_base_backbone_apart(method, state):
  # The backbone also gets no gradient (stop_gradient in the base network);
  # its frozen group keeps it fixed under weight decay or momentum as well.
  labels = flax.traverse_util.flatten_dict(
      method.param_groups(state.generator.params))
  assert any(k[:2] == ('base', 'backbone') for k in labels)
  for key, label in labels.items():
    assert label == ('backbone' if key[:2] == ('base', 'backbone')
                     else 'model'), key
  assert method.config.optimizer.groups.backbone.frozen


def test_declared_flows_split_the_predictions(method, state, batch):
  # F_r, F_b and U's own F_u (Eq. 2), which has no confidence.
  assert [f.name for f in method.flows] == ['final', 'base', 'update']
  out = jax.eval_shape(method.predict, method.inference_variables(state),
                       batch['source_image'], batch['target_image'])
  split = outputs.split(method.flows, out)
  for name, prefix in (('final', ''), ('base', 'base_')):
    assert set(split[name]) == {'mapping_st', 'mapping_ts', 'confidence_st',
                                'confidence_ts'}, name
    for key, value in split[name].items():
      assert value is out[prefix + key]
  assert set(split['update']) == {'mapping_st', 'mapping_ts'}
  for key, value in split['update'].items():
    assert value is out['update_' + key]
  # The base network alone (Table 3, 'sfnet') has no F_u.
  alone = methods.get('camnet')(_config('test,sfnet'), total_steps=1)
  assert [f.name for f in alone.flows] == ['final', 'base']
  # Without confidence (Table 3, 'refinement'), the flows have no extras.
  plain = methods.get('camnet')(_config('test,refinement'), total_steps=1)
  shapes = jax.eval_shape(plain.init_state, jax.random.key(0), batch)
  out = jax.eval_shape(plain.predict, plain.inference_variables(shapes),
                       batch['source_image'], batch['target_image'])
  assert {k: set(v) for k, v in outputs.split(plain.flows, out).items()} == {
      'final': {'mapping_st', 'mapping_ts'},
      'base': {'mapping_st', 'mapping_ts'},
      'update': {'mapping_st', 'mapping_ts'}}


def test_batch_keys_are_what_the_synthetic_pipeline_yields(method, config):
  spec = pipeline.batch_spec(config.data, B)
  assert set(method.batch_keys) <= set(spec)
  # The dense ground truth and masks CAMNet's losses read.
  assert {'source_mask', 'mapping_st', 'valid_ts'} <= set(method.batch_keys)


def test_state_variables_round_trip(method, state):
  variables = method.state_variables(state)
  assert set(variables) == {'params', 'batch_stats',
                            camnet_method.DISCRIMINATOR}
  assert set(variables[camnet_method.DISCRIMINATOR]) == {'params'}
  doubled = jax.tree.map(lambda x: x * 2, variables)
  new = method.with_state_variables(state, doubled)
  assert type(new) is camnet_method.GANTrainState
  assert _leaves_equal(method.state_variables(new), doubled)
  # Optimiser states and steps are kept.
  assert _leaves_equal(new.generator.opt_state, state.generator.opt_state)
  assert _leaves_equal(new.discriminator.opt_state,
                       state.discriminator.opt_state)
  # Generator variables alone (e.g. from a GAN-off run) leave D as it was.
  g_only = {k: v for k, v in doubled.items()
            if k != camnet_method.DISCRIMINATOR}
  new = method.with_state_variables(state, g_only)
  assert _leaves_equal(new.generator.params, doubled['params'])
  assert _leaves_equal(new.discriminator.params, state.discriminator.params)
  # A random backbone: nothing to load, the same object comes back.
  host = jax.device_get(variables)
  assert method.load_pretrained(host) is host


def test_disc_optimizer_follows_optimizer_overrides():
  """`optimizer.lr` reaches D; `disc_optimizer.lr` changes D's alone."""
  default = _config()
  assert default.disc_optimizer.lr == default.optimizer.lr == 1e-3
  assert default.disc_optimizer.b1 == 0.5
  for overrides, g_lr, d_lr in (
      ({'optimizer.lr': 0.1}, 0.1, 0.1),
      ({'disc_optimizer.lr': 0.2}, 1e-3, 0.2),
      ({'optimizer.lr': 0.1, 'disc_optimizer.lr': 0.2}, 0.1, 0.2),
      ({'disc_optimizer.lr': 0.2, 'optimizer.lr': 0.1}, 0.1, 0.2)):
    c = _config(**overrides)
    assert (c.optimizer.lr, c.disc_optimizer.lr) == (g_lr, d_lr), overrides
    # What the optimisers are built from (references resolved).
    assert base.group_settings(c.disc_optimizer, 'discriminator').lr == d_lr
    assert base.group_settings(c.optimizer, 'model').lr == g_lr
  c = _config(**{'optimizer.decay_at': (0.5,), 'optimizer.decay_factor': 0.1})
  assert (c.disc_optimizer.decay_at, c.disc_optimizer.decay_factor) == (
      (0.5,), 0.1)
  # The paper variant: D as G (Adam 3e-5, x0.2 at 75%), b1 0.5.
  paper = _config('paper', **{'optimizer.lr': 1e-4})
  assert paper.disc_optimizer.lr == 1e-4
  assert paper.disc_optimizer.to_dict() == dict(
      name='adam', lr=1e-4, b1=0.5, b2=0.999, decay_at=(0.75,),
      decay_factor=0.2, weight_decay=0.0, momentum=None,
      grad_clip_norm=None)


def test_discriminator_step_changes_only_the_discriminator(state, after_g,
                                                           disc_step):
  _, _, pairs = after_g
  new, metrics = disc_step(state, pairs)
  # The generator's state is bit-identical.
  assert int(new.step) == 0 and int(new.discriminator.step) == 1
  for field in ('params', 'model_state', 'opt_state'):
    assert _leaves_equal(getattr(new.generator, field),
                         getattr(state.generator, field)), field
  # D moved: every kernel of every conv (biases in front of instance norm
  # have no gradient, up to float noise).
  changed = _changed(state.discriminator.params, new.discriminator.params)
  for key, value in changed.items():
    if key[-1] == 'kernel':
      assert value, key
  assert _counts(new.discriminator.opt_state) and set(
      _counts(new.discriminator.opt_state)) == {1}
  np.testing.assert_allclose(metrics['learning_rate/discriminator'], 0.1,
                             rtol=1e-6)
  np.testing.assert_allclose(
      metrics['disc_loss'],
      metrics['disc_real_loss'] + metrics['disc_fake_loss'], rtol=1e-6)
  for value in metrics.values():
    assert np.isfinite(float(value))


def test_generator_step_changes_only_the_generator(state, after_g):
  new, metrics, pairs = after_g
  assert int(new.step) == 1 and int(new.discriminator.step) == 0
  assert _leaves_equal(new.discriminator, state.discriminator)
  assert set(_counts(new.generator.opt_state)) == {1}
  changed = _changed(state.generator.params, new.generator.params)
  # The frozen backbone: bit-identical params and BatchNorm statistics.
  backbone = [v for k, v in changed.items() if k[:2] == ('base', 'backbone')]
  assert backbone and not any(backbone)
  stats = _changed(state.generator.model_state['batch_stats'],
                   new.generator.model_state['batch_stats'])
  assert not any(v for k, v in stats.items()
                 if k[:2] == ('base', 'backbone'))
  # Trainable parts moved: the adaptation layers, the confidence net, and
  # U's last conv (zero at init, so the layers before it get no gradient yet).
  for prefix in (('base', 'adapt_layer3'), ('base', 'adapt_layer4'),
                 ('confidence',), ('refinement', 'flow')):
    kernels = [v for k, v in changed.items()
               if k[:len(prefix)] == prefix and k[-1] == 'kernel']
    assert kernels and all(kernels), prefix
  for head in ('confidence', 'refinement'):
    assert any(v for k, v in stats.items() if k[0] == head), head
  # L_G = 288 L_align + 18 L_confi + L_adv (batch means, Eq. 11).
  np.testing.assert_allclose(
      metrics['loss'], 288.0 * metrics['align_loss']
      + 18.0 * metrics['confidence_loss'] + metrics['adv_loss'], rtol=1e-5)
  assert float(metrics['adv_loss']) > 0 and float(
      metrics['confidence_loss']) > 0
  assert 'model_state' not in metrics and 'batch_stats' not in metrics
  np.testing.assert_allclose(metrics['learning_rate/model'], 1e-3, rtol=1e-6)
  # D's inputs come back without gradient, both directions stacked.
  assert set(pairs) == {'fake', 'real', 'reference'}
  for value in pairs.values():
    assert value.shape == (2 * B, IMAGE, IMAGE, 3)


def test_train_step_is_one_g_step_then_disc_steps_d_steps(
    method, state, batch, after_g, disc_step):
  assert method.config.gan.disc_steps == 2
  new, metrics = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  g_state, g_metrics, pairs = after_g
  once, _ = disc_step(g_state, pairs)
  twice, d_metrics = disc_step(once, pairs)
  assert type(new) is camnet_method.GANTrainState
  assert int(new.step) == 1 and int(new.discriminator.step) == 2
  assert set(_counts(new.discriminator.opt_state)) == {2}
  assert set(_counts(new.generator.opt_state)) == {1}
  for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(twice)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Two D updates, not one: the second moved D well beyond the tolerance.
  gap = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(new.discriminator.params),
                            jax.tree.leaves(once.discriminator.params)))
  assert gap > 1e-3
  np.testing.assert_allclose(metrics['loss'], g_metrics['loss'], rtol=1e-5)
  np.testing.assert_allclose(metrics['disc_loss'], d_metrics['disc_loss'],
                             rtol=1e-5)
  np.testing.assert_allclose(metrics['learning_rate/model'], 1e-3, rtol=1e-6)
  np.testing.assert_allclose(metrics['learning_rate/discriminator'], 0.1,
                             rtol=1e-6)


def test_step_parts_are_the_g_and_d_updates(method):
  # benchmarks/throughput.py times each part; the train step test above
  # checks that G once then D `disc_steps` times is the step.
  parts = method.step_parts
  assert [(name, repeats) for name, _, repeats in parts] == [
      ('generator', 1), ('discriminator', 2)]
  assert parts[0][1] == method.generator_step
  assert parts[1][1] == method.discriminator_step
  plain = methods.get('camnet')(_config('test,confidence'), total_steps=1)
  assert plain.step_parts == ()


def test_gan_disabled_is_the_plain_single_optimiser_step(batch):
  config = _config('test,confidence')
  method = methods.get('camnet')(config, total_steps=10)
  state = jax.eval_shape(method.init_state, jax.random.key(0), batch)
  assert type(state) is base.TrainState
  new, metrics = jax.eval_shape(method.train_step, state, batch,
                                jax.random.key(1))
  assert type(new) is base.TrainState
  assert 'adv_loss' not in metrics and 'disc_loss' not in metrics
  assert {'loss', 'align_loss', 'confidence_loss', 'grad_norm',
          'learning_rate/model'} <= set(metrics)
  assert set(method.state_variables(state)) == {'params', 'batch_stats'}
  full = methods.get('camnet')(_config(), total_steps=10)
  assert type(jax.eval_shape(full.init_state, jax.random.key(0), batch)) is (
      camnet_method.GANTrainState)


def test_inference_variables_have_no_discriminator(method, state, batch):
  variables = method.inference_variables(state)
  assert set(variables) == {'params', 'batch_stats'}
  model_vars = jax.eval_shape(method.model.init, jax.random.key(0),
                              batch['source_image'][:1],
                              batch['target_image'][:1])
  assert jax.tree.structure(variables) == jax.tree.structure(model_vars)
  n_disc = sum(x.size for x in jax.tree.leaves(state.discriminator.params))
  n_vars = sum(x.size for x in jax.tree.leaves(variables))
  n_model = sum(x.size for x in jax.tree.leaves(model_vars))
  assert n_disc > 0 and n_vars == n_model


def test_predict_keys_and_shapes(method, state, batch):
  variables = method.inference_variables(state)
  out = jax.jit(method.predict)(variables, batch['source_image'],
                                batch['target_image'])
  assert set(out) == {
      'mapping_st', 'mapping_ts', 'base_mapping_st', 'base_mapping_ts',
      'feature_mapping_st', 'feature_mapping_ts', 'confidence_st',
      'confidence_ts', 'base_confidence_st', 'base_confidence_ts',
      'update_mapping_st', 'update_mapping_ts'}
  scale = (IMAGE - 1) / (GRID - 1)
  for d in ('st', 'ts'):
    assert out[f'mapping_{d}'].shape == (B, IMAGE, IMAGE, 2)
    assert out[f'base_mapping_{d}'].shape == (B, IMAGE, IMAGE, 2)
    assert out[f'update_mapping_{d}'].shape == (B, IMAGE, IMAGE, 2)
    assert out[f'feature_mapping_{d}'].shape == (B, GRID, GRID, 2)
    for name in ('confidence', 'base_confidence'):
      conf = np.asarray(out[f'{name}_{d}'])
      assert conf.shape == (B, IMAGE, IMAGE)
      assert np.all((conf >= 0) & (conf <= 1))
    # Align corners: corner pixels read the corner cells, scaled 63 / 3.
    np.testing.assert_allclose(out[f'mapping_{d}'][:, -1, -1],
                               out[f'feature_mapping_{d}'][:, -1, -1] * scale,
                               rtol=1e-5)
  plain = methods.get('camnet')(_config('test,refinement'), total_steps=1)
  shapes = jax.eval_shape(plain.init_state, jax.random.key(0), batch)
  out = jax.eval_shape(plain.predict, shapes.variables(),
                       batch['source_image'], batch['target_image'])
  assert set(out) == {'mapping_st', 'mapping_ts', 'base_mapping_st',
                      'base_mapping_ts', 'feature_mapping_st',
                      'feature_mapping_ts', 'update_mapping_st',
                      'update_mapping_ts'}


# --- the discriminator's inputs -----------------------------------------------


def _identity_outputs(b=B):
  ident = jnp.broadcast_to(geometry.pixel_grid(GRID, GRID), (b, GRID, GRID, 2))
  return {'mapping_st': ident, 'mapping_ts': ident}


def test_adversarial_loss_reaches_the_mappings(method, state, batch):
  disc = method.build_discriminator()

  def adversarial(mapping_ts):
    outputs = dict(_identity_outputs(), mapping_ts=mapping_ts)
    pairs = camnet_losses.discriminator_pairs(outputs, batch,
                                              method.config.gan.real_pair)
    scores = disc.apply(state.discriminator.variables(), pairs['fake'],
                        pairs['reference'])
    return jnp.sum(camnet_losses.lsgan_generator_loss([scores[:B],
                                                       scores[B:]]))

  grad = jax.jit(jax.grad(adversarial))(_identity_outputs()['mapping_ts']
                                         + 0.3)
  # G is trained through D: the warp is differentiable in the mapping.
  assert float(jnp.sum(jnp.abs(grad))) > 0


@pytest.mark.parametrize('overrides, message', [
    ({'gan.disc_steps': 0}, 'disc_steps'),
    ({'gan.real_pair': 'target'}, 'real_pair'),
    ({'loss.confidence_threshold': 0.0}, 'confidence_threshold'),
])
def test_bad_settings_fail_with_one_clear_error(overrides, message):
  config = _config(**overrides)
  with pytest.raises(SemcorrError, match=message):
    methods.get('camnet')(config, total_steps=1)
