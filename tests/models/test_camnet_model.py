"""Tests for CAMNet's modules (models/camnet.py, models/patchgan.py).

configs/camnet.py:test: the tiny SFNet base (ResNet stages (1, 1, 1, 1),
width 8) at 64x64 -> a 4x4 matching grid; heads of width 8, D of width 4.
"""

import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax import config_files
from semcorr_jax import geometry
from semcorr_jax.data import pipeline
from semcorr_jax.models import camnet
from semcorr_jax.models import patchgan
from helpers import paths

REPO = str(paths.REPO)
IMAGE = 64
GRID = 4
B = 2


def _config(variant='test'):
  return config_files.load(
      os.path.join(REPO, 'configs', f'camnet.py:{variant}'))


# --- fusion (Eq. 3) and flow units --------------------------------------------


def test_fuse_flows_eq3():
  base = jnp.asarray([[[[1.0, 2.0], [-4.0, 8.0]]]])     # (1, 1, 2, 2)
  update = jnp.asarray([[[[5.0, -2.0], [0.0, 0.0]]]])
  ones = jnp.ones((1, 1, 2))
  # C = 1 keeps the base flow, C = 0 takes the update.
  np.testing.assert_array_equal(camnet.fuse_flows(base, update, ones), base)
  np.testing.assert_array_equal(camnet.fuse_flows(base, update, 0 * ones),
                                update)
  # C = 0.25: 0.25 * (1, 2) + 0.75 * (5, -2) = (4, -1);
  #           0.25 * (-4, 8) + 0.75 * (0, 0) = (-1, 2).
  np.testing.assert_allclose(
      camnet.fuse_flows(base, update, 0.25 * ones),
      [[[[4.0, -1.0], [-1.0, 2.0]]]], rtol=1e-6)
  # Per-cell confidence: cell 0 trusts the base, cell 1 the update.
  np.testing.assert_allclose(
      camnet.fuse_flows(base, update, jnp.asarray([[[1.0, 0.0]]])),
      [[[[1.0, 2.0], [0.0, 0.0]]]])


def test_fusing_mappings_equals_fusing_flows():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  grid = geometry.pixel_grid(3, 5)
  flow_b = jax.random.normal(k1, (2, 3, 5, 2))
  flow_u = jax.random.normal(k2, (2, 3, 5, 2))
  conf = jax.random.uniform(k3, (2, 3, 5))
  # The weights C and 1 - C sum to one: grid * C + grid * (1 - C) = grid.
  np.testing.assert_allclose(
      camnet.fuse_flows(grid + flow_b, grid + flow_u, conf),
      grid + camnet.fuse_flows(flow_b, flow_u, conf), rtol=1e-5, atol=1e-5)
  # Likewise in normalised units (an affine change of units).
  norm = lambda m: geometry.normalized_flow(m, (3, 5))
  np.testing.assert_allclose(
      norm(camnet.fuse_flows(grid + flow_b, grid + flow_u, conf)),
      camnet.fuse_flows(norm(grid + flow_b), norm(grid + flow_u), conf),
      rtol=1e-5, atol=1e-5)


# --- the CAMNet module --------------------------------------------------------


@pytest.fixture(scope='module')
def batch():
  ds = pipeline.make_pair_dataset(_config().data, 'train', batch_size=B,
                                  seed=0)
  return jax.tree.map(jnp.asarray, next(ds.as_numpy_iterator()))


@pytest.fixture(scope='module')
def model():
  return camnet.build(_config())


@pytest.fixture(scope='module')
def variables(model, batch):
  return jax.jit(model.init)(jax.random.key(0), batch['source_image'][:1],
                             batch['target_image'][:1])


@pytest.fixture(scope='module')
def apply_fn(model):
  return jax.jit(model.apply, static_argnames=('train', 'mutable'))


def _perturbed(variables, scale=0.3):
  """The refinement's zero-initialised last conv set to random values."""
  params = flax.core.unfreeze(jax.device_get(variables['params']))
  flow = params['refinement']['flow']
  flow['kernel'] = scale * np.asarray(
      jax.random.normal(jax.random.key(7), flow['kernel'].shape))
  flow['bias'] = np.asarray([0.05, -0.05], np.float32)
  return {**variables, 'params': params}


ALL_KEYS = {
    'corr_st', 'corr_ts', 'feature_hw', 'base_mapping_st', 'base_mapping_ts',
    'mapping_st', 'mapping_ts', 'update_mapping_st', 'update_mapping_ts',
    'base_confidence_logit_st', 'base_confidence_logit_ts',
    'base_confidence_st', 'base_confidence_ts',
    'refined_confidence_logit_st', 'refined_confidence_logit_ts',
    'refined_confidence_st', 'refined_confidence_ts'}
CONFIDENCE_KEYS = {k for k in ALL_KEYS if 'confidence' in k}
UPDATE_KEYS = {'update_mapping_st', 'update_mapping_ts'}


def test_test_config_output_shapes(model, variables, apply_fn, batch):
  assert model.refinement == 'confidence_aware' and model.has_confidence
  out = apply_fn(variables, batch['source_image'], batch['target_image'])
  assert set(out) == ALL_KEYS
  assert tuple(int(v) for v in out['feature_hw']) == (GRID, GRID)
  for key, value in out.items():
    if key == 'feature_hw':
      continue
    if 'corr' in key:
      want = (B, GRID, GRID, GRID, GRID)
    elif 'mapping' in key:
      want = (B, GRID, GRID, 2)
    else:
      want = (B, GRID, GRID)
    assert value.shape == want, key
    assert value.dtype == jnp.float32, key
    assert np.all(np.isfinite(np.asarray(value))), key
  for d in ('st', 'ts'):
    for kind in ('base', 'refined'):
      conf = np.asarray(out[f'{kind}_confidence_{d}'])
      assert np.all((conf >= 0.0) & (conf <= 1.0))
      np.testing.assert_allclose(
          conf, jax.nn.sigmoid(out[f'{kind}_confidence_logit_{d}']),
          rtol=1e-6)


@pytest.mark.parametrize('row,refinement,has_update,has_confidence', [
    ('sfnet', 'none', False, False),
    ('refinement', 'plain', True, False),
    ('confidence', 'confidence_aware', True, True),
    ('full', 'confidence_aware', True, True),
])
def test_table3_rows_params_and_outputs(row, refinement, has_update,
                                        has_confidence):
  config = _config(f'test,{row}')
  assert config.model.refinement == refinement
  assert bool(config.gan.enabled) == (row == 'full')
  model = camnet.build(config)
  image = jnp.zeros((B, IMAGE, IMAGE, 3))
  shapes = jax.eval_shape(model.init, jax.random.key(0), image, image)
  want_params = {'base'} | ({'refinement'} if has_update else set()) | (
      {'confidence'} if has_confidence else set())
  assert set(shapes['params']) == want_params
  assert set(shapes['batch_stats']) == want_params
  out = jax.eval_shape(model.apply, shapes, image, image)
  want_keys = ALL_KEYS - (set() if has_update else UPDATE_KEYS) - (
      set() if has_confidence else CONFIDENCE_KEYS)
  assert set(out) == want_keys
  for d in ('st', 'ts'):
    assert out[f'mapping_{d}'].shape == (B, GRID, GRID, 2)
  if has_update:
    # U's stem reads the h_b w_b = 16 correlation channels of every cell
    # and its (x, y).
    assert shapes['params']['refinement']['stem']['kernel'].shape == (
        3, 3, GRID * GRID + 2, config.model.refine_width)
  if has_confidence:
    # 1x1 projection of the adapted features (layer3 128 + layer4 256 ch.).
    assert shapes['params']['confidence']['project']['kernel'].shape == (
        1, 1, 128 + 256, config.model.confidence_features)
    # conv0 sees the projection plus the 2 flow channels.
    assert shapes['params']['confidence']['conv0']['kernel'].shape == (
        3, 3, config.model.confidence_features + 2,
        config.model.confidence_width)


def test_unknown_refinement_or_confidence_inputs_are_rejected():
  for field in ('refinement', 'confidence_inputs'):
    config = _config()
    config.unlock()
    config.model[field] = 'bogus'
    with pytest.raises(ValueError, match=field):
      camnet.build(config)


def test_confidence_inputs_with_matches():
  config = _config()
  assert config.model.confidence_inputs == 'features_flow'  # Eq. 1
  model = _match_model()
  image = jnp.zeros((B, IMAGE, IMAGE, 3))
  shapes = jax.eval_shape(model.init, jax.random.key(0), image, image)
  conf = shapes['params']['confidence']
  # One shared projection of both images' features (384 -> 8 channels);
  # conv0 reads both projections, the flow (2) and the cosine (1).
  assert conf['project']['kernel'].shape == (1, 1, 128 + 256, 8)
  assert conf['conv0']['kernel'].shape == (3, 3, 8 + 8 + 2 + 1, 8)
  out = jax.eval_shape(model.apply, shapes, image, image)
  assert set(out) == ALL_KEYS


def _match_model():
  config = _config()
  config.unlock()
  config.model.confidence_inputs = 'features_flow_match'
  return camnet.build(config)


def test_update_is_the_soft_argmax_readout_at_init(variables, apply_fn, batch):
  flow_conv = variables['params']['refinement']['flow']
  np.testing.assert_array_equal(flow_conv['kernel'], 0.0)
  np.testing.assert_array_equal(flow_conv['bias'], 0.0)
  out = apply_fn(variables, batch['source_image'], batch['target_image'])
  beta = _config().model.beta
  for d in ('st', 'ts'):
    readout = geometry.soft_argmax(out[f'corr_{d}'], beta)
    np.testing.assert_allclose(out[f'update_mapping_{d}'], readout,
                               atol=1e-5)
    # So at init F_r = C_b F_b + (1 - C_b) * soft-argmax(S).
    np.testing.assert_allclose(
        out[f'mapping_{d}'],
        camnet.fuse_flows(out[f'base_mapping_{d}'], readout,
                          out[f'base_confidence_{d}']), rtol=1e-5, atol=1e-5)


def test_refined_mapping_is_the_fusion_of_base_and_update(variables, apply_fn,
                                                          batch):
  out = apply_fn(_perturbed(variables), batch['source_image'],
                 batch['target_image'])
  for d in ('st', 'ts'):
    base, update = out[f'base_mapping_{d}'], out[f'update_mapping_{d}']
    conf = out[f'base_confidence_{d}']
    fused = camnet.fuse_flows(base, update, conf)
    np.testing.assert_allclose(out[f'mapping_{d}'], fused, rtol=1e-6,
                               atol=1e-6)
    # Not vacuous: update and base differ by cells, and C vs 1 - C matters.
    assert float(jnp.max(jnp.abs(update - base))) > 0.1
    swapped = camnet.fuse_flows(base, update, 1.0 - conf)
    assert float(jnp.max(jnp.abs(out[f'mapping_{d}'] - swapped))) > 1e-3


def test_rows_without_confidence_wire_the_flows(variables, batch):
  src, tgt = batch['source_image'], batch['target_image']
  full = _perturbed(variables)
  for row, subtrees in (('sfnet', ('base',)),
                        ('refinement', ('base', 'refinement'))):
    model = camnet.build(_config(f'test,{row}'))
    # These rows' trees are subtrees of the full model's (same shapes).
    sub = {col: {k: full[col][k] for k in subtrees}
           for col in ('params', 'batch_stats')}
    out = jax.jit(model.apply)(sub, src, tgt)
    for d in ('st', 'ts'):
      if row == 'sfnet':  # the base network alone
        np.testing.assert_array_equal(out[f'mapping_{d}'],
                                      out[f'base_mapping_{d}'])
      else:  # plain refinement: F_r = F_u
        np.testing.assert_array_equal(out[f'mapping_{d}'],
                                      out[f'update_mapping_{d}'])
        assert float(jnp.max(jnp.abs(out[f'mapping_{d}']
                                     - out[f'base_mapping_{d}']))) > 0.1


@pytest.mark.parametrize('inputs', ['features_flow', 'features_flow_match'])
def test_confidence_does_not_backpropagate_into_the_flow_it_judges(
    inputs, model, variables, batch):
  if inputs == 'features_flow_match':
    # C also reads the other image's features at the matches: sampled at
    # the flow, another place the flow could get a gradient from C.
    model = _match_model()
    variables = jax.jit(model.init)(jax.random.key(0),
                                    batch['source_image'][:1],
                                    batch['target_image'][:1])
  variables = _perturbed(variables)
  src, tgt = batch['source_image'], batch['target_image']

  def objective(params, key):
    out = model.apply({**variables, 'params': params}, src, tgt)
    return jnp.sum(out[f'{key}_st']) + jnp.sum(out[f'{key}_ts'])

  @jax.jit
  def grads(params):
    return {key: jax.grad(objective)(params, key)
            for key in ('refined_confidence_logit', 'base_confidence_logit',
                        'mapping')}

  g = jax.device_get(grads(variables['params']))
  norm = lambda t: float(sum(np.sum(np.square(x)) for x in jax.tree.leaves(t)))
  # U only moves the refined flow F_r, which C sees through stop_gradient:
  # C_r has no gradient into U (nor has C_b, which comes before U).
  for key in ('refined_confidence_logit', 'base_confidence_logit'):
    for leaf in jax.tree.leaves(g[key]['refinement']):
      np.testing.assert_array_equal(leaf, 0.0)
  # ... while the flows do depend on U, and C_r on C's weights and on the base
  # network (through the features it reads).
  assert norm(g['mapping']['refinement']) > 0
  assert norm(g['refined_confidence_logit']['confidence']) > 0
  assert norm(g['refined_confidence_logit']['base']['adapt_layer3']) > 0
  # The frozen backbone never gets a gradient.
  for leaf in jax.tree.leaves(g['mapping']['base']['backbone']):
    np.testing.assert_array_equal(leaf, 0.0)


# --- PatchGAN discriminator ---------------------------------------------------


def _disc(width=64, num_layers=3, sigmoid_output=True):
  """pix2pix's defaults (ndf 64, 3 layers), as configs/camnet.py:paper."""
  return patchgan.PatchDiscriminator(width=width, num_layers=num_layers,
                                     sigmoid_output=sigmoid_output,
                                     dtype=jnp.float32)


def test_paper_config_discriminator_is_pix2pix(load_config):
  gan = load_config('camnet', 'paper').gan
  assert (gan.width, gan.num_layers, gan.sigmoid_output) == (64, 3, True)


def _pix2pix_size(size, num_layers):
  """4x4 convs with padding 1: out = (in + 2 - 4) // stride + 1."""
  for stride in [2] * num_layers + [1, 1]:
    size = (size + 2 - 4) // stride + 1
  return size


@pytest.mark.parametrize('num_layers,want', [(2, 14), (3, 6)])
def test_patch_discriminator_output_size(num_layers, want):
  # num_layers=3: 64 -> 32 -> 16 -> 8 (stride 2) -> 7 -> 6 (stride 1);
  # num_layers=2: 64 -> 32 -> 16 -> 15 -> 14.
  assert _pix2pix_size(IMAGE, num_layers) == want
  disc = _disc(width=4, num_layers=num_layers)
  image = jnp.zeros((3, IMAGE, IMAGE, 3))
  shapes = jax.eval_shape(disc.init, jax.random.key(0), image, image)
  out = jax.eval_shape(disc.apply, shapes, image, image)
  assert out.shape == (3, want, want) and out.dtype == jnp.float32


def test_patch_discriminator_is_pix2pix_n_layer():
  # pix2pix NLayerDiscriminator(input_nc=6, ndf=64, n_layers=3): widths 64,
  # 128, 256 (stride 2), 512 (stride 1), 1; 70x70 receptive field.
  disc = _disc()
  image = jnp.zeros((1, 256, 256, 3))
  shapes = jax.eval_shape(disc.init, jax.random.key(0), image, image)
  kernels = {k: v['kernel'].shape for k, v in shapes['params'].items()
             if 'kernel' in v}
  assert kernels == {'conv0': (4, 4, 6, 64), 'conv1': (4, 4, 64, 128),
                     'conv2': (4, 4, 128, 256), 'conv3': (4, 4, 256, 512),
                     'score': (4, 4, 512, 1)}
  assert 'bias' in shapes['params']['norm1']  # instance norm, no running stats
  assert set(shapes) == {'params'}
  assert jax.eval_shape(disc.apply, shapes, image, image).shape == (1, 30, 30)
  rf = 1
  for stride in (1, 1, 2, 2, 2):  # score, conv3, conv2, conv1, conv0
    rf = (rf - 1) * stride + 4
  assert rf == 70


def test_patch_discriminator_sigmoid_output():
  k1, k2 = jax.random.split(jax.random.key(3))
  warped = jax.random.uniform(k1, (2, IMAGE, IMAGE, 3))
  reference = jax.random.uniform(k2, (2, IMAGE, IMAGE, 3))
  disc = _disc(width=4, num_layers=2)
  linear = _disc(width=4, num_layers=2, sigmoid_output=False)
  variables = jax.jit(disc.init)(jax.random.key(0), warped, reference)
  scores = jax.jit(disc.apply)(variables, warped, reference)
  raw = jax.jit(linear.apply)(variables, warped, reference)
  assert np.all((np.asarray(scores) > 0.0) & (np.asarray(scores) < 1.0))
  np.testing.assert_allclose(scores, jax.nn.sigmoid(raw), rtol=1e-6)
  # The pair is ordered: swapping warped and reference changes the scores.
  swapped = jax.jit(linear.apply)(variables, reference, warped)
  assert float(jnp.max(jnp.abs(swapped - raw))) > 1e-4


# --- U must be able to represent correspondences (position-aware) ------------

_U_GRID = 10      # source cells per side
_U_MARGIN = 3     # the target grid is larger by 2 margins: every match exists


def _translation_batch(key, batch=8, channels=16):
  """Correlations of random features under random integer translations.

  Source cell p matches target cell p + margin + d with d in [-3, 3]^2 per
  pair; the target grid is (grid + 2 margin)^2 so every match exists.

  Returns:
    corr (B, g, g, g + 2m, g + 2m) ReLU'd cosine, L2-normalised over the
    target; the true mapping (B, g, g, 2) in target cells.
  """
  g, m = _U_GRID, _U_MARGIN
  kf, kd = jax.random.split(key)
  target = jax.random.normal(kf, (batch, g + 2 * m, g + 2 * m, channels))
  d = jax.random.randint(kd, (batch, 2), -m, m + 1)
  source = jax.vmap(lambda f, dx, dy: jax.lax.dynamic_slice(
      f, (m + dy, m + dx, 0), (g, g, channels)))(target, d[:, 0], d[:, 1])
  corr = geometry.normalize_over_b(jax.nn.relu(geometry.correlation_4d(
      geometry.l2_normalize(source), geometry.l2_normalize(target))))
  truth = (geometry.pixel_grid(g, g)[None] + m
           + d[:, None, None, :].astype(jnp.float32))
  return corr, truth


def _train_refinement(net, steps, lr=1e-2):
  """Trains U alone on `_translation_batch`; returns its end-point error
  (B, g, g) in target cells on a fresh batch."""
  import optax  # pylint: disable=g-import-not-at-top
  size = _U_GRID + 2 * _U_MARGIN
  corr, _ = _translation_batch(jax.random.key(0))
  variables = net.init(jax.random.key(1), corr, None, False)
  tx = optax.adam(lr)

  def loss_fn(params, stats, corr, truth):
    out, updates = net.apply({'params': params, 'batch_stats': stats}, corr,
                             None, True, mutable=['batch_stats'])
    error = geometry.denormalize_coords(out, size, size) - truth
    return (jnp.mean(jnp.sqrt(jnp.sum(error ** 2, -1) + 1e-6)),
            updates['batch_stats'])

  @jax.jit
  def step(params, stats, opt_state, key):
    corr, truth = _translation_batch(key)
    (_, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, stats, corr, truth)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state

  params, stats = variables['params'], variables['batch_stats']
  opt_state = tx.init(params)
  for i in range(steps):
    params, stats, opt_state = step(params, stats, opt_state,
                                    jax.random.key(100 + i))
  corr, truth = _translation_batch(jax.random.key(999))
  out = net.apply({'params': params, 'batch_stats': stats}, corr, None, False)
  return jnp.linalg.norm(
      geometry.denormalize_coords(out, size, size) - truth, axis=-1)


def _interior(error):
  # U below has 3 convs of 3x3: cells >= 3 from the border never see the
  # zero padding.
  return float(jnp.mean(error[:, 3:-3, 3:-3]))


@pytest.mark.slow
def test_refinement_with_coordinates_learns_translations_old_u_cannot():
  """A translation-equivariant U (no position input, displacement output)
  cannot output a position-dependent displacement away from the border; the
  position channels make it learnable (sub-cell error in 400 steps)."""
  def net(coordinates):
    return camnet.RefinementNet(32, 16, 1, jnp.float32, readout='none',
                                coordinates=coordinates)
  with_position = _interior(_train_refinement(net(True), 400))
  without = _interior(_train_refinement(net(False), 400))
  assert with_position < 1.0, with_position
  # d is uniform on [-3, 3]^2: the best constant output is ~2.2 cells off.
  assert without > 1.5, without


def test_refinement_readout_starts_at_soft_argmax_and_learns():
  corr, truth = _translation_batch(jax.random.key(5))
  size = _U_GRID + 2 * _U_MARGIN
  net = camnet.RefinementNet(16, 8, 1, jnp.float32, readout='soft_argmax',
                             beta=50.0)
  variables = net.init(jax.random.key(1), corr, None, False)
  out = net.apply(variables, corr, None, False)
  np.testing.assert_allclose(
      geometry.denormalize_coords(out, size, size),
      geometry.soft_argmax(corr, 50.0), atol=1e-4)
  error = _train_refinement(net, 60)
  assert _interior(error) < 0.5, _interior(error)


def test_refinement_output_depends_on_position():
  """With non-zero weights, the same correlation pattern translated by d
  moves U's output at interior cells (the old U's was exactly equal)."""
  g = 12
  key = jax.random.key(3)
  features = jax.random.normal(key, (1, g, g, 8))
  corr = geometry.normalize_over_b(jax.nn.relu(geometry.correlation_4d(
      geometry.l2_normalize(features), geometry.l2_normalize(features))))
  # Identity correlation vs the same correlation for a pair translated by
  # (3, 2): source cell p then shows the pattern of cell p + (3, 2).
  # Source features f(p + d) against the target f: S_d(p, q) = S(p + d, q).
  shifted = jnp.roll(corr, shift=(-2, -3), axis=(1, 2))
  outs = {}
  for coordinates in (False, True):
    net = camnet.RefinementNet(8, 4, 1, jnp.float32, readout='none',
                               coordinates=coordinates)
    variables = net.init(jax.random.key(0), corr, None, False)
    variables = jax.tree.map(
        lambda v: v + 0.1 * jax.random.normal(jax.random.key(7), v.shape),
        variables)
    # The displacements U outputs (readout='none' adds the own position).
    own = camnet.cell_coordinates(g, g)
    a = net.apply(variables, corr, None, False) - own
    b = net.apply(variables, shifted, None, False) - own
    # Cell p of `shifted` holds what cell p + (3, 2) of `corr` holds.
    outs[coordinates] = float(jnp.max(jnp.abs(
        jnp.roll(a, shift=(-2, -3), axis=(1, 2))[:, 3:-6, 3:-6]
        - b[:, 3:-6, 3:-6])))
  assert outs[False] < 1e-5, outs
  assert outs[True] > 1e-2, outs


def test_consistency_cues_cycle_error_and_peak():
  b, g = 2, 5
  grid = geometry.pixel_grid(g, g)
  shift = jnp.asarray([1.0, 0.0])
  # st moves one cell right, ts one cell left: consistent inside the grid.
  st = jnp.broadcast_to(grid + shift, (b, g, g, 2))
  ts = jnp.broadcast_to(grid - shift, (b, g, g, 2))
  # The second st row is off by 2 cells in y: its round trip misses by 2.
  st = st.at[1].add(jnp.asarray([0.0, 2.0]))
  corr = jax.random.uniform(jax.random.key(0), (2 * b, g, g, g, g))
  cues = camnet.consistency_cues(jnp.concatenate([st, ts]), corr, b)
  assert cues.shape == (2 * b, g, g, 2)
  # Cells whose round trip stays inside the grid.
  rows, cols = slice(0, g - 3), slice(1, g - 1)
  np.testing.assert_allclose(cues[0, rows, cols, 0], 0.0, atol=1e-5)
  np.testing.assert_allclose(cues[1, rows, cols, 0], np.log1p(2.0),
                             rtol=1e-5)
  np.testing.assert_allclose(
      cues[..., 1], corr.reshape(2 * b, g, g, -1).max(-1), rtol=1e-6)


def test_confidence_cues_widen_the_confidence_input():
  image = jnp.zeros((B, IMAGE, IMAGE, 3))
  config = _config()
  config.unlock()
  config.model.confidence_inputs = 'features_flow_match_cues'
  model = camnet.build(config)
  shapes = jax.eval_shape(model.init, jax.random.key(0), image, image)
  conv0 = shapes['params']['confidence']['conv0']['kernel']
  # Both projections (8 + 8), the flow (2), the cosine (1), the 2 cues.
  assert conv0.shape == (3, 3, 8 + 8 + 2 + 1 + 2, 8)
