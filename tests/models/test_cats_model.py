"""CATs' network (semcorr_jax/models/cats.py): filter, read-out, aggregator."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import backbones
from semcorr_jax.models import cats

S = 4  # feature size of the small cases
P = S * S


def _flat(tree):
  return flax.traverse_util.flatten_dict(jax.device_get(tree), sep='/')


def test_mutual_filter_hand_case():
  """c * (c / max over targets) * (c / max over sources), no ReLU, a zero
  maximum replaced by 1e-30."""
  c = np.array([[0.5, 0.25, 0.0],
                [1.0, -0.5, 0.0]], np.float32)[None, None]  # (1, 1, Ps, Pt)
  # Rows (best target per source): 0.5, 1.0; columns (best source per
  # target): 1.0, 0.25, 0 -> 1e-30.
  want = np.array([[0.5 * (0.5 / 0.5) * (0.5 / 1.0),
                    0.25 * (0.25 / 0.5) * (0.25 / 0.25), 0.0],
                   [1.0 * 1.0 * 1.0, -0.5 * (-0.5 / 1.0) * (-0.5 / 0.25),
                    0.0]], np.float32)
  got = np.asarray(cats.mutual_nn_filter(jnp.asarray(c)))[0, 0]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # A negative column maximum is kept as it is (no ReLU): -0.5 is the best
  # source of a column holding -0.5 and -2.
  c = np.array([[1.0, -0.5], [2.0, -2.0]], np.float32)
  got = np.asarray(cats.mutual_nn_filter(jnp.asarray(c)))
  np.testing.assert_allclose(got[0, 1], -0.5 * (-0.5 / 1.0) * (-0.5 / -0.5))
  # An all-zero column divides by 1e-30: zeros stay zeros, nothing is NaN.
  z = cats.mutual_nn_filter(jnp.zeros((1, 1, 3, 3)))
  assert np.all(np.asarray(z) == 0.0)


def _shift_volume(shift, sharp=1.0):
  """(1, P_src, P_trg): target cell t peaks at source t + shift."""
  c = np.zeros((1, P, P), np.float32)
  for y in range(S):
    for x in range(S):
      sx, sy = min(x + shift[0], S - 1), min(y + shift[1], S - 1)
      c[0, sy * S + sx, y * S + x] = sharp
  return jnp.asarray(c)


def test_soft_argmax_recovers_a_known_shift():
  """Every target cell t maps to source t + (1, 2) (clamped at the border):
  the read-out is in source cells, x first, at temperature 0.02."""
  mapping = np.asarray(cats.soft_argmax_ts(_shift_volume((1, 2)), S, 0.02))
  ys, xs = np.mgrid[0:S, 0:S]
  want = np.stack([np.minimum(xs + 1, S - 1), np.minimum(ys + 2, S - 1)], -1)
  np.testing.assert_allclose(mapping[0], want, atol=1e-4)
  # The temperature divides the scores: at 1.0 the same volume blurs towards
  # the grid centre.
  soft = np.asarray(cats.soft_argmax_ts(_shift_volume((1, 2)), S, 1.0))
  assert np.abs(soft[0] - want).max() > 0.5


def test_soft_argmax_is_a_softmax_over_the_source():
  """Two sources share one target's mass as exp(c / T): 0.01 apart at T =
  0.02 gives weights 1 : e^0.5."""
  c = np.zeros((1, P, P), np.float32)
  c[0, 0, 5] = 0.0 + 1.0      # source (0, 0)
  c[0, 3, 5] = 0.01 + 1.0     # source (3, 0)
  c[0, :, 5] -= 1.0           # every other source at -1: weight ~e^-50
  got = np.asarray(cats.soft_argmax_ts(jnp.asarray(c), S, 0.02))[0, 1, 1]
  w = np.exp(0.5)
  np.testing.assert_allclose(got, [3 * w / (1 + w), 0.0], atol=1e-5)


def _aggregator(n=2, depth=1, proj=8):
  return cats.TransformerAggregator(num_levels=n, feature_size=S,
                                    embed_dim=P + proj, depth=depth,
                                    num_heads=6)


def _inputs(n=2, proj=8, b=2):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  return (jax.random.normal(k1, (b, n, P, P)),
          jax.random.normal(k2, (b, n, P, proj)),
          jax.random.normal(k3, (b, n, P, proj)))


@pytest.mark.parametrize('depth', [1, 2])
def test_aggregator_uses_the_same_blocks_and_proj_twice(depth):
  """One set of blocks and one proj for both passes: the parameter count is
  that of a single pass."""
  n, proj = 3, 8
  e = P + proj
  model = _aggregator(n, depth, proj)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          *_inputs(n, proj))['params']
  hidden = 4 * e
  attn = e * 3 * e + 3 * e + e * e + e
  mlp = e * hidden + hidden + hidden * e + e
  block = 4 * 2 * e + 2 * attn + 2 * mlp
  want = 2 * n * S * (e // 2) + depth * block + e * P + P
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
  assert count == want
  assert sorted(params) == sorted(
      ['pos_embed_x', 'pos_embed_y', 'proj'] +
      [f'blocks_{d}' for d in range(depth)])
  assert params['pos_embed_x'].shape == (1, n, 1, S, e // 2)
  assert params['pos_embed_y'].shape == (1, n, S, 1, e // 2)
  assert params['proj']['kernel'].shape == (e, P)


def test_aggregator_residual_wiring_with_a_zero_proj():
  """proj = 0 (`zero_proj`): both passes return their residual `corr`, so
  the output is the mean of the levels (and the first pass's transpose is
  undone)."""
  corr, src, trg = _inputs()
  zero_model = cats.TransformerAggregator(
      num_levels=2, feature_size=S, embed_dim=P + 8, zero_proj=True)
  zero = jax.jit(zero_model.init)(jax.random.PRNGKey(0), corr, src, trg)
  assert not np.any(np.asarray(zero['params']['proj']['kernel']))
  out = jax.jit(zero_model.apply)(zero, corr, src, trg)
  np.testing.assert_allclose(out, jnp.mean(corr, axis=1), atol=1e-6)
  # With CATs' init the result depends on the appearance embeddings.
  model = _aggregator()
  params = jax.jit(model.init)(jax.random.PRNGKey(0), corr, src, trg)[
      'params']
  apply = jax.jit(model.apply)
  a = apply({'params': params}, corr, src, trg)
  b = apply({'params': params}, corr, src, trg + 1.0)
  assert np.abs(np.asarray(a - b)).max() > 1e-4


def test_one_level_keeps_the_release_tree():
  """N = 1 skips the cross-level attention and mlp2 (as the reference) but
  the tree still holds them."""
  corr, src, trg = _inputs(n=1)
  model = _aggregator(n=1)
  params = jax.jit(model.init)(jax.random.PRNGKey(0), corr, src, trg)[
      'params']
  assert {'attn_multiscale', 'mlp2', 'norm3', 'norm4'} <= set(
      params['blocks_0'])
  apply = jax.jit(model.apply)
  out = apply({'params': params}, corr, src, trg)
  changed = dict(params, blocks_0=dict(
      params['blocks_0'],
      mlp2=jax.tree.map(lambda x: x + 1.0, params['blocks_0']['mlp2'])))
  np.testing.assert_array_equal(out, apply({'params': changed}, corr, src,
                                           trg))


def test_aggregator_init_is_trunc_normal_and_zero_bias():
  params = jax.jit(_aggregator().init)(jax.random.PRNGKey(0),
                                       *_inputs())['params']
  flat = _flat(params)
  kernels = np.concatenate([v.ravel() for k, v in flat.items()
                            if k.endswith('kernel')])
  assert abs(kernels.std() - 0.02) < 0.002
  assert all(np.all(v == 0) for k, v in flat.items()
             if k.endswith('/bias') and '/norm' not in k)
  assert all(np.all(v == 1) for k, v in flat.items() if k.endswith('scale'))


def _model(**kw):
  spec = backbones.BackboneSpec(name='resnet', stage_sizes=(1, 1, 1, 1),
                                width=8,
                                features=('hyper_0', 'hyper_2', 'hyper_4'))
  return cats.CATs(spec, feature_size=S, proj_dim=8, num_heads=6, **kw)


@pytest.fixture(scope='module')
def model_and_variables():
  model = _model()
  x = jnp.zeros((1, 48, 40, 3))
  return model, jax.jit(model.init)(jax.random.PRNGKey(0), x, x)


def test_model_tree_and_shapes(model_and_variables):
  model, variables = model_and_variables
  params = variables['params']
  # The release's names: proj.<l> -> proj_<l>, decoder, backbone.
  assert set(params) == {'backbone', 'proj_0', 'proj_1', 'proj_2', 'decoder'}
  channels = model.backbone_spec.channels
  for l, c in enumerate(channels):
    assert params[f'proj_{l}']['kernel'].shape == (c, 8)
  k1, k2 = jax.random.split(jax.random.PRNGKey(1))
  src = jax.random.uniform(k1, (2, 48, 40, 3))
  tgt = jax.random.uniform(k2, (2, 48, 40, 3))
  out = jax.jit(model.apply, static_argnums=3)(variables, src, tgt, True)
  assert out['corr'].shape == (2, P, P)
  assert out['mapping_ts'].shape == out['mapping_st'].shape == (2, S, S, 2)
  assert out['feature_hw'] == (S, S)
  for key in ('mapping_ts', 'mapping_st'):
    m = np.asarray(out[key])
    assert m.min() >= -1e-4 and m.max() <= S - 1 + 1e-4
  # mapping_st is the network run with the images swapped.
  swapped = jax.jit(model.apply)(variables, tgt, src)
  np.testing.assert_allclose(out['mapping_st'], swapped['mapping_ts'],
                             atol=1e-4)


def test_frozen_backbone_gets_no_gradient(model_and_variables):
  """The default model stops the gradient at the taps; the aggregator and
  the projections get one (training the backbone: tests/methods)."""
  model, variables = model_and_variables
  x = jax.random.uniform(jax.random.PRNGKey(2), (1, 48, 40, 3))

  def loss(params):
    out = model.apply({**variables, 'params': params}, x, x[:, ::-1])
    return jnp.sum(out['mapping_ts'] ** 2)
  grads = _flat(jax.jit(jax.grad(loss))(variables['params']))
  for key, value in grads.items():
    if key.startswith('backbone/'):
      assert np.all(value == 0), key
    else:
      assert np.abs(value).max() > 0, key


def test_embedding_sizes_are_checked():
  cats.check_sizes(16, 128, 6)  # 384 = 6 x 64
  with pytest.raises(SemcorrError, match='num_heads'):
    cats.check_sizes(10, 128, 8)  # 228 is not a multiple of 8
