"""The `jlfc` method: configs and ablation rows, parameter groups and their
learning rates, both read-outs, and a short run of the real trainer
followed by semcorr-match."""

import functools
import importlib.util
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from semcorr_jax import api
from semcorr_jax import config_files
from semcorr_jax import methods
from semcorr_jax import train
from semcorr_jax.cli import match
from semcorr_jax.errors import SemcorrError
from semcorr_jax.methods import base
from helpers import paths
from helpers import pf_fixture

CONFIG = str(paths.CONFIGS / 'jlfc.py')
ALL_TERMS = ('raw', 'agg_to_raw', 'agg', 'raw_to_agg')
# Row -> (loss.terms, loss.confidence_mask), paper 002 Tables 2 and 3.
ROWS = {
    'full': (ALL_TERMS, True),                 # T2 (a), T3 (d)
    'no_joint': (('raw', 'agg'), True),        # T2 (b), T3 (c)
    'no_confidence': (ALL_TERMS, False),       # T2 (c)
    'agg_only': (('agg',), True),              # T3 (a)
    'agg_cross': (('agg', 'raw_to_agg'), True),  # T3 (b)
}
GROUPS = ('backbone', 'features', 'aggregator')


def _config(variant='test,ncnet', **overrides):
  return config_files.load(f'{CONFIG}:{variant}', overrides or None)


def _method(variant='test,ncnet', **overrides):
  return methods.get('jlfc')(_config(variant, **overrides), 10)


def _batch(size=2, hw=(64, 64)):
  k1, k2 = jax.random.split(jax.random.key(0))
  return {'source_image': jax.random.uniform(k1, (size, *hw, 3)),
          'target_image': jax.random.uniform(k2, (size, *hw, 3))}


def _flat(tree):
  return flax.traverse_util.flatten_dict(jax.device_get(tree), sep='/')


def _group(key):
  """The group a flat param key belongs to, from its name alone."""
  top = key.split('/')[0]
  if top == 'backbone':
    return 'backbone'
  return 'features' if top.startswith('adapt_') else 'aggregator'


# --- configs ------------------------------------------------------------------


@pytest.mark.parametrize('size', ['test', 'quick', 'paper'])
@pytest.mark.parametrize('aggregator', ['ncnet', 'cats'])
def test_every_variant_parses_and_rows_set_the_loss(size, aggregator):
  for row, (terms, masked) in ROWS.items():
    c = _config(f'{size},{aggregator},{row}')
    assert c.method == 'jlfc' and c.model.aggregator == aggregator
    assert tuple(c.loss.terms) == terms, row
    assert c.loss.confidence_mask == masked, row
  # The aggregator defaults to ncnet, the row to full.
  c = _config(size)
  assert c.model.aggregator == 'ncnet' and tuple(c.loss.terms) == ALL_TERMS
  assert c.optimizer.groups.backbone.frozen == (size != 'paper')


@pytest.mark.parametrize('aggregator', ['ncnet', 'cats'])
def test_paper_settings(aggregator):
  c = _config(f'paper,{aggregator}')
  assert (c.backbone.name, c.backbone.depth) == ('resnet', 101)
  assert tuple(c.data.image_size) == (256, 256)
  assert c.data.source == 'pf_pascal'
  if aggregator == 'ncnet':
    assert tuple(c.backbone.features) == ('layer3',)  # 16 x 16 at 256
  else:
    assert tuple(c.backbone.features) == tuple(
        f'hyper_{i}' for i in (2, 17, 21, 22, 25, 26, 28))
    assert c.model.feature_size == 16
  o = c.optimizer
  assert (o.name, o.weight_decay) == ('adamw', 0.05)
  assert (o.groups.backbone.lr, o.groups.features.lr,
          o.groups.aggregator.lr) == (3e-5, 3e-5, 3e-6)
  assert not any(o.groups[g].frozen for g in GROUPS)
  loss = c.loss
  assert (loss.alpha1, loss.alpha2, loss.alpha_unit) == (0.1, 0.05, 'cells')
  # CATs' aggregator is asymmetric: both directions of A are trained.
  assert loss.directions == ('st' if aggregator == 'ncnet' else 'both')
  assert c.model.adapt_kernel == (5 if aggregator == 'ncnet' else 1)
  assert (loss.raw_weight, loss.agg_weight) == (0.5, 0.5)
  assert tuple(loss.terms) == ALL_TERMS and loss.confidence_mask
  assert set(c.evals) == {'pf_pascal', 'pf_pascal_val', 'pf_willow', 'tss'}
  assert c.evals.pf_pascal_val.select == 'pck@0.1'
  assert c.evals.pf_pascal_val.split == 'validation'
  assert c.evals.pf_pascal.split == 'test'
  # PF-WILLOW: L = max side of the source keypoints' extent (NCNet's rule).
  assert (c.evals.pf_willow.threshold, c.evals.pf_willow.frame) == (
      'kps', 'original')
  assert (c.evals.pf_pascal.threshold, c.evals.pf_pascal.frame) == (
      'img', 'square')
  # pf_pascal_val reads pf_pascal's folder unless given its own.
  c = _config(f'paper,{aggregator}', **{'evals.pf_pascal.data_dir': '/pf'})
  assert c.evals.pf_pascal_val.data_dir == '/pf'


@pytest.mark.parametrize('variant', ['test,nope', 'huge', 'quick,cats,x',
                                     'paper,ncnet,full,extra'])
def test_unknown_variant_parts_are_refused(variant):
  with pytest.raises(SemcorrError, match='unknown variant') as e:
    _config(variant)
  assert '\n' not in str(e.value)


def test_sweep_adds_every_row_once():
  spec = importlib.util.spec_from_file_location('jlfc_config', CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  calls = []
  module.sweep(lambda **overrides: calls.append(overrides))
  assert len(calls) == len(ROWS)
  got = []
  for overrides in calls:
    c = _config('test', **overrides)
    got.append((tuple(c.loss.terms), c.loss.confidence_mask))
  assert sorted(got) == sorted(ROWS.values())


@pytest.mark.parametrize('overrides, match', [
    ({'loss.terms': ('nope',)}, 'loss.terms'),
    ({'loss.terms': ()}, 'loss.terms'),
    ({'loss.terms': ('raw', 'raw')}, 'loss.terms'),
    ({'loss.directions': 'ts'}, 'loss.directions'),
    ({'loss.alpha_unit': 'inch'}, 'loss.alpha_unit'),
    ({'loss.temperature': 0.0}, 'loss.temperature'),
    ({'loss.agg_temperature': -1.0}, 'loss.agg_temperature'),
    ({'loss.alpha2': -0.1}, 'loss.alpha2'),
    ({'model.readout': 'x'}, 'model.readout'),
    ({'model.readout_temperature': 0.0}, 'model.readout_temperature'),
])
def test_wrong_config_is_one_line(overrides, match):
  """Refused when the method is built, before anything is traced."""
  with pytest.raises(SemcorrError, match=re.escape(match)) as e:
    _method(**overrides)
  assert '\n' not in str(e.value)


def test_agg_temperature_defaults_to_the_temperature():
  config = _config()
  assert config.loss.agg_temperature is None
  assert _method().agg_temperature == config.loss.temperature
  method = _method(**{'loss.agg_temperature': 0.2, 'loss.temperature': 0.07})
  assert method.agg_temperature == 0.2
  assert method.config.loss.temperature == 0.07


# --- parameter groups and their learning rates --------------------------------


@pytest.mark.parametrize('aggregator', ['ncnet', 'cats'])
def test_param_groups_label_the_real_tree(aggregator):
  method = _method(f'test,{aggregator}')
  shapes = jax.eval_shape(method.init_variables, jax.random.key(0), _batch())
  labels = _flat(method.param_groups(shapes['params']))
  assert set(labels.values()) == set(GROUPS)
  for key, label in labels.items():
    assert label == _group(key), key
  tops = {k.split('/')[0] for k, v in labels.items() if v == 'aggregator'}
  assert tops == ({'consensus'} if aggregator == 'ncnet' else
                  {'decoder', 'proj_0', 'proj_1', 'proj_2'})


@pytest.fixture(scope='module')
def unfrozen_grads():
  """Parameters, state and gradients of one batch with every group
  trainable (the gradients do not depend on the learning rates)."""
  method = _method(**{'optimizer.groups.backbone.frozen': False})

  @jax.jit
  def init_and_grad(batch):
    variables = method.init_variables(jax.random.key(0), batch)
    params = variables.pop('params')
    grads, (_, model_state) = jax.grad(method.loss, has_aux=True)(
        params, variables, batch, jax.random.key(1))
    return params, model_state, grads
  return init_and_grad(_batch())


@pytest.mark.parametrize('still', GROUPS)
def test_a_zero_learning_rate_leaves_its_group_bit_identical(unfrozen_grads,
                                                             still):
  """AdamW (weight decay 0.05, scaled by the rate) with `still`'s lr = 0:
  after one update its params are bit-identical, every other group moved.
  Every group has a nonzero gradient, so a wrong label would show."""
  params, model_state, grads = unfrozen_grads
  flat_grads = _flat(grads)
  for group in GROUPS:
    assert any(np.abs(g).max() > 0 for k, g in flat_grads.items()
               if _group(k) == group), group
  method = _method(**{'optimizer.groups.backbone.frozen': False,
                      f'optimizer.groups.{still}.lr': 0.0})
  state = base.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          model_state=model_state,
                          opt_state=method.tx.init(params), tx=method.tx)
  after, metrics = jax.jit(method.apply_gradients)(state, grads, model_state)
  assert float(metrics[f'learning_rate/{still}']) == 0.0
  before, now = _flat(params), _flat(after.params)
  moved = {_group(k) for k in before if not np.array_equal(before[k], now[k])}
  assert moved == set(GROUPS) - {still}
  for key in before:
    if _group(key) == still:
      assert np.array_equal(before[key], now[key]), key


def test_train_step_keeps_the_frozen_backbone_bit_identical():
  """The test variant (backbone frozen): one jitted train_step moves the
  adaptation layers and the consensus, not one backbone parameter."""
  method = _method()

  @jax.jit
  def init_and_step(batch):
    state = method.init_state(jax.random.key(0), batch)
    return (state, *method.train_step(state, batch, jax.random.key(1)))
  state, after, metrics = init_and_step(_batch())
  assert np.isfinite(float(metrics['loss'])) and float(metrics['loss']) > 0
  for term in ALL_TERMS:
    assert np.isfinite(float(metrics[f'loss_{term}'])), term
  assert 'learning_rate/backbone' not in metrics
  before, now = _flat(state.params), _flat(after.params)
  moved = {k for k in before if not np.array_equal(before[k], now[k])}
  assert {_group(k) for k in moved} == {'features', 'aggregator'}
  assert not [k for k in moved if k.startswith('backbone/')]


@pytest.fixture(scope='module')
def ncnet_variables():
  """The test ncnet model's variables and a batch of 2 pairs."""
  batch = _batch()
  return jax.jit(_method().init_variables)(jax.random.key(0), batch), batch


# Term -> the groups its gradient reaches (the backbone is frozen): a term
# scoring C never reaches the aggregator (A only gives it labels and a
# mask, neither differentiable); a term scoring A reaches both.
TERM_GROUPS = {'raw': {'features'}, 'agg_to_raw': {'features'},
               'agg': {'features', 'aggregator'},
               'raw_to_agg': {'features', 'aggregator'}}


@pytest.mark.parametrize('term', ALL_TERMS)
def test_each_term_reaches_only_the_modules_it_scores(ncnet_variables, term):
  """d loss / d params of one term alone: exactly zero on every leaf of the
  groups it must not reach, nonzero in those it must."""
  variables, batch = ncnet_variables
  method = _method(**{'loss.terms': (term,)})
  params = variables['params']
  model_state = {k: v for k, v in variables.items() if k != 'params'}

  @jax.jit
  def grad(params):
    return jax.grad(method.loss, has_aux=True)(
        params, model_state, batch, jax.random.key(1))
  grads, (metrics, _) = grad(params)
  assert float(metrics[f'loss_{term}']) > 0, metrics  # some cell unmasked
  labels = _flat(method.param_groups(params))
  largest = {g: 0.0 for g in GROUPS}
  for key, g in _flat(grads).items():
    largest[labels[key]] = max(largest[labels[key]], float(np.abs(g).max()))
  reached = {g for g, v in largest.items() if v > 0}
  assert reached == TERM_GROUPS[term], largest


@pytest.mark.parametrize(
    'aggregator', ['ncnet', pytest.param('cats', marks=pytest.mark.slow)])
def test_bfloat16_compute_gives_float32_costs_and_a_finite_loss(aggregator):
  """model.dtype='bfloat16' (backbone and adaptation convs): both costs
  come out float32 and the training loss is finite."""
  method = _method(f'test,{aggregator}', **{'model.dtype': 'bfloat16'})

  batch = _batch()
  source, target = batch['source_image'], batch['target_image']

  @jax.jit
  def run(batch):
    variables = method.init_variables(jax.random.key(0), batch)
    params = variables.pop('params')
    return method.loss(params, variables, batch, jax.random.key(1))
  shapes = jax.eval_shape(method.init_variables, jax.random.key(0), batch)
  for train in (False, True):  # inference and the loss's pass
    out = jax.eval_shape(
        functools.partial(method.model.apply, train=train,
                          mutable=['batch_stats'] if train else False),
        shapes, source, target)
    out = out[0] if train else out
    for key in ('raw', 'agg'):
      assert out[key].dtype == jnp.float32, (train, key)
  loss, (metrics, _) = run(batch)
  assert loss.dtype == jnp.float32
  assert np.isfinite(float(loss)) and float(loss) > 0
  for key, value in metrics.items():
    assert np.isfinite(float(value)), key


# --- read-outs ----------------------------------------------------------------


@pytest.mark.parametrize('aggregator', ['ncnet', 'cats'])
def test_predict_both_flows_and_the_raw_identity(aggregator):
  """Every key of both flows at the image size (H != W); consistencies in
  [0, 1]; on a pair of identical images the raw cost's WTA is the identity
  (cosine similarity 1 only with itself), so the raw mapping is the pixel
  grid and its Eq. 2 mask is 1 everywhere."""
  method = _method(f'test,{aggregator}')
  h, w = 48, 64
  batch = _batch(size=1, hw=(h, w))
  source = batch['source_image']

  @jax.jit
  def init_and_predict(batch):
    variables = method.init_variables(jax.random.key(0), batch)
    return method.predict(variables, jnp.concatenate([source, source]),
                          jnp.concatenate([source, batch['target_image']]))
  out = init_and_predict(batch)
  maps = ('mapping', 'confidence', 'consistency')
  for prefix in ('', 'raw_'):
    for m in maps:
      for d in ('st', 'ts'):
        key = f'{prefix}{m}_{d}'
        want = (2, h, w, 2) if m == 'mapping' else (2, h, w)
        assert out[key].shape == want, key
        assert np.all(np.isfinite(out[key])), key
        if m != 'mapping':
          assert 0 <= float(out[key].min()) and float(out[key].max()) <= 1
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
  grid = np.stack([xs, ys], -1)
  for d in ('st', 'ts'):
    np.testing.assert_allclose(out[f'raw_mapping_{d}'][0], grid, atol=1e-3)
    np.testing.assert_array_equal(out[f'raw_consistency_{d}'][0], 1.0)
  # The other pair differs: its raw mapping is not the identity.
  assert np.abs(out['raw_mapping_st'][1] - grid).max() > 1
  # The aggregated mappings in cells: layer3 (stride 16) or S x S.
  cells = (3, 4) if aggregator == 'ncnet' else (4, 4)
  assert out['feature_mapping_st'].shape == (2, *cells, 2)


# --- the real trainer, then semcorr-match -------------------------------------


def _png(path, seed):
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, (40, 56, 3), np.uint8)).save(path)
  return str(path)


def _train(aggregator, workdir, baseline):
  """Two steps of `train.train_and_evaluate` on synthetic pairs (the
  method reads the images only); every evaluator scores both flows."""
  config = _config(f'test,{aggregator}', num_train_steps=2, **{
      'evals.synthetic.untrained_baseline': baseline})
  results = train.train_and_evaluate(config, str(workdir))
  assert results['step'] == 2
  synthetic = results['evals']['synthetic']
  for when in ('trained', 'untrained')[:1 + baseline]:
    scores = synthetic[when]
    for key in ('pck@0.1', 'raw_pck@0.1', 'pck@0.05', 'raw_pck@0.05'):
      assert 0.0 <= scores[key] <= 1.0, (when, key)


@pytest.mark.slow  # compiles the sharded step, two evaluations and matching
def test_real_trainer_then_match_writes_the_consistency_maps(tmp_path):
  """The ncnet aggregator: trained and untrained scores of both flows (the
  untrained model includes a randomly initialised adaptation layer, so its
  raw scores are not the paper's WTA row, which needs
  `model.adapt_units=0`); semcorr-match writes both flows' confidence and
  consistency maps beside the picture."""
  workdir = tmp_path / 'run'
  _train('ncnet', workdir, baseline=True)
  matcher = api.load(str(workdir))
  assert [f.name for f in matcher.flows] == ['aggregated', 'raw']
  written = match.match_files(str(workdir), _png(tmp_path / 's.png', 0),
                              _png(tmp_path / 't.png', 1),
                              str(tmp_path / 'out' / 'match.png'))
  assert set(written) == {'png', 'npy', 'confidence_st', 'consistency_st',
                          'raw_confidence_st', 'raw_consistency_st'}
  for key, name in (('consistency_st', 'match_consistency.npy'),
                    ('raw_consistency_st', 'match_raw_consistency.npy')):
    assert written[key] == str(tmp_path / 'out' / name)
    values = np.load(written[key])
    assert values.shape == (40, 56)
    assert values.min() >= 0 and values.max() <= 1
  assert np.load(written['npy']).shape == (40, 56, 2)


@pytest.mark.slow  # compiles the sharded step and a benchmark evaluation
def test_cats_trains_on_real_pairs_without_ground_truth(tmp_path):
  """The cats aggregator on PF-PASCAL train pairs through the real-pair
  source (the paper's data; the keypoints are read but never used by the
  loss), scored by the PF-PASCAL benchmark evaluator on both flows."""
  manual = pf_fixture.write_pf_pascal(tmp_path / 'manual')
  config = _config('test,cats', num_train_steps=2, **{
      'data.source': 'pf_pascal', 'data.manual_dir': str(manual),
      'data.data_dir': str(tmp_path / 'tfds')})
  method = methods.get('jlfc')(config, 2)
  assert set(method.batch_keys) == {'source_image', 'target_image'}
  config.unlock()
  del config.evals['synthetic']
  config.evals.pf = dict(
      type='benchmark', benchmark='pf_pascal', split='test',
      data_dir=str(manual), protocol='resize', direction='ts',
      threshold='img', frame='square', every=0, untrained_baseline=False,
      select='', num_pairs=2)
  config.lock()
  results = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert results['step'] == 2
  scores = results['evals']['pf']['trained']
  for key in ('pck@0.1', 'raw_pck@0.1'):
    assert 0.0 <= scores[key] <= 1.0, key
