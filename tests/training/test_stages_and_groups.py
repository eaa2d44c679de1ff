"""Parameter groups, `init_from` subtree copying and the batch-key check."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from semcorr_jax import methods
from semcorr_jax import starting_state
from semcorr_jax import train
from semcorr_jax import workdirs
from semcorr_jax.errors import SemcorrError
from semcorr_jax.methods import base

PARAMS = {'backbone': {'w': jnp.ones(3)}, 'head': {'w': jnp.ones(2)},
          'features': {'backbone': {'b': jnp.ones(1)}}}


def _optimizer_config(**groups):
  return ml_collections.ConfigDict(dict(
      name='sgd', lr=0.1, decay_at=(0.5,), decay_factor=0.1, momentum=None,
      grad_clip_norm=None, groups=groups))


def _labels(params):
  return base.labels_by_key(params, {'backbone': 'backbone'}, 'model')


def test_labels_by_key_finds_the_module_anywhere_in_the_path():
  labels = _labels(PARAMS)
  assert labels == {'backbone': {'w': 'backbone'}, 'head': {'w': 'model'},
                    'features': {'backbone': {'b': 'backbone'}}}


def test_each_group_gets_its_own_settings_and_a_frozen_one_none():
  config = _optimizer_config(backbone=dict(frozen=True),
                             model=dict(lr=0.5, name='adam', b1=0.9,
                                        b2=0.999))
  assert base.group_settings(config, 'backbone') is None
  model = base.group_settings(config, 'model')
  assert model.lr == 0.5 and model.name == 'adam'
  assert model.decay_at == (0.5,)  # not overridden: the top-level value


def test_sgd_steps_follow_each_groups_learning_rate():
  config = _optimizer_config(backbone=dict(lr=0.01), model=dict(lr=1.0))
  tx = base.make_optimizer(config, 10, ('model', 'backbone'), _labels)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  np.testing.assert_allclose(updates['head']['w'], -1.0)
  np.testing.assert_allclose(updates['backbone']['w'], -0.01)
  np.testing.assert_allclose(updates['features']['backbone']['b'], -0.01)
  rates = base.learning_rates(config, 10, ('model', 'backbone'),
                              jnp.asarray(7))
  # decay_at 0.5 of 10 steps: x0.1 from step 5 on, per group.
  np.testing.assert_allclose(rates['learning_rate/model'], 0.1, rtol=1e-6)
  np.testing.assert_allclose(rates['learning_rate/backbone'], 0.001,
                             rtol=1e-6)


def test_frozen_group_never_moves_and_logs_no_rate():
  config = _optimizer_config(backbone=dict(frozen=True))
  tx = base.make_optimizer(config, 10, ('model', 'backbone'), _labels)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  new = optax.apply_updates(PARAMS, updates)
  np.testing.assert_array_equal(new['backbone']['w'], PARAMS['backbone']['w'])
  assert not np.array_equal(new['head']['w'], PARAMS['head']['w'])
  rates = base.learning_rates(config, 10, ('model', 'backbone'),
                              jnp.asarray(0))
  assert set(rates) == {'learning_rate/model'}


def test_unknown_group_is_one_clear_error():
  config = _optimizer_config(decoder=dict(lr=1.0))
  with pytest.raises(SemcorrError, match=r"\['decoder'\].*\['model', "
                     r"'backbone'\]"):
    base.make_optimizer(config, 10, ('model', 'backbone'), _labels)


def test_copy_subtrees_everything_and_mapped():
  dst = {'params': {'base': {'a': np.zeros(2), 'b': np.zeros(3)},
                    'head': {'c': np.zeros(1)}},
         'batch_stats': {'base': {'m': np.zeros(2)}}}
  src = {'params': {'a': np.ones(2), 'b': np.full(3, 2.0)},
         'batch_stats': {'m': np.full(2, 3.0)}}
  # A whole run placed under `base` (CAMNet from SFNet).
  out, copied = workdirs.copy_subtrees(
      dst, src, ('params:params/base', 'batch_stats:batch_stats/base'))
  assert copied == 3
  np.testing.assert_array_equal(out['params']['base']['b'], 2.0)
  np.testing.assert_array_equal(out['batch_stats']['base']['m'], 3.0)
  np.testing.assert_array_equal(out['params']['head']['c'], 0.0)  # kept
  # Everything at the same paths.
  same, copied = workdirs.copy_subtrees(dst, dst, ())
  assert copied == 4


@pytest.mark.parametrize('subtrees,match', [
    (('params/nothere',), 'names no variables'),
    (('params',), 'no counterpart'),
    (('params/b:params/base/a',), 'shape'),
])
def test_copy_subtrees_errors(subtrees, match):
  dst = {'params': {'base': {'a': np.zeros(2)}}}
  src = {'params': {'a': np.ones(2), 'b': np.ones(3)}}
  with pytest.raises(SemcorrError, match=match):
    workdirs.copy_subtrees(dst, src, subtrees)


def test_method_that_needs_dense_ground_truth_refuses_real_pairs(
    load_config):
  config = load_config('camnet', **{'data.source': 'pf_pascal'})
  method = methods.get('camnet')(config, 1)
  with pytest.raises(SemcorrError, match=r"data.source='pf_pascal'.*"
                     r"missing: \['source_mask'"):
    train.check_batch_keys(method, config.data)


def test_subtrees_without_a_run_to_read_are_one_clear_error(
    load_config, tmp_path):
  # configs/camnet.py:quick is a second stage: it names the subtrees.
  config = load_config('camnet', **{
      'init_from.subtrees': ('params:params/base',)})
  workdir = tmp_path / 'run'
  with pytest.raises(SemcorrError, match=r'init_from.workdir is not set.*'
                     r'--config.init_from.workdir='):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists() or not any(workdir.iterdir())
  starting_state.check_init_from(load_config('camnet'))  # no subtrees: fine


@pytest.mark.slow  # trains a tiny SFNet
def test_camnet_starts_from_a_trained_sfnet_through_init_from(
    load_config, tmp_path):
  sfnet = load_config('sfnet', **{'num_train_steps': 2,
                                  'checkpoint_every': 2,
                                  'evals.synthetic.untrained_baseline': False,
                                  'evals.synthetic.num_pairs': 1})
  train.train_and_evaluate(sfnet, str(tmp_path / 'sfnet'))
  camnet = load_config('camnet', **{
      'init_from.workdir': str(tmp_path / 'sfnet'),
      'init_from.subtrees': ('params:params/base',
                             'batch_stats:batch_stats/base')})
  method = methods.get('camnet')(camnet, 1)
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ('data',))
  state, _ = starting_state.initial_state(method, camnet, mesh,
                                          jax.random.key(0))
  got = method.state_variables(state)
  want = workdirs.restore(str(tmp_path / 'sfnet')).variables
  for path in (('params', 'adapt_layer3'), ('batch_stats', 'adapt_layer3')):
    a = jax.tree.leaves(got[path[0]]['base'][path[1]])
    b = jax.tree.leaves(want[path[0]][path[1]])
    assert a and len(a) == len(b)
    for x, y in zip(a, b):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_backbone_fine_tuning_is_two_overrides(load_config):
  config = load_config('sfnet', **{'optimizer.groups.backbone.frozen': False,
                                   'optimizer.groups.backbone.lr': 1e-5})
  assert base.group_settings(config.optimizer, 'backbone').lr == 1e-5
  assert base.group_settings(config.optimizer, 'model').lr == (
      config.optimizer.lr)
  default = load_config('camnet')
  assert base.group_settings(default.optimizer, 'backbone') is None
