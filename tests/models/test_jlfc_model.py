"""JLFC's network (semcorr_jax/models/jlfc.py): the raw cost of the adapted
features, each aggregator on it, the parameter tree the NCNet and CATs
methods share, and the config checks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax import config_files
from semcorr_jax import geometry
from semcorr_jax import methods
from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import cats
from semcorr_jax.models import jlfc
from semcorr_jax.models import ncnet
from helpers import paths

CONFIG = str(paths.CONFIGS / 'jlfc.py')
B, SIZE = 2, 64  # the test variants' image size


def _config(aggregator, **overrides):
  return config_files.load(f'{CONFIG}:test,{aggregator}', overrides or None)


def _images(seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return (jax.random.uniform(k1, (B, SIZE, SIZE, 3)),
          jax.random.uniform(k2, (B, SIZE, SIZE, 3)))


def _adapted(mdl, _):
  return isinstance(mdl.name, str) and mdl.name.startswith('adapt_')


def _run(aggregator, recompute):
  """One jitted `init_with_output` on the pairs (s, t) and (t, s) stacked on
  the batch (inference BatchNorm: the pairs do not interact), and in the
  same program `recompute(config, params, out, feats)`: the aggregated cost
  rebuilt from the module's own parameters and intermediates.

  Returns:
    The config, the outputs of the 2B pairs, the adapted features of every
    tap (4B, h, w, C) [s; t; t; s] in tap order (float64), and what
    `recompute` returned.
  """
  config = _config(aggregator)
  model = jlfc.JLFC.from_config(config, train_backbone=False)
  source, target = _images()

  @jax.jit
  def run(rng, source, target):
    out, variables = model.init_with_output(
        rng, source, target, capture_intermediates=_adapted)
    inter = variables['intermediates']
    feats = [inter[f'adapt_{tap}']['__call__'][0]
             for tap in config.backbone.features]
    return out, feats, recompute(config, variables['params'], out, feats)

  out, feats, again = run(jax.random.key(1),
                          jnp.concatenate([source, target]),
                          jnp.concatenate([target, source]))
  return config, out, [np.asarray(f, np.float64) for f in feats], again


def _correlation(fs, ft, eps):
  """(B, h, w, C) x2 -> (B, h, w, h, w) cosine similarities, float64."""
  fs = fs / np.sqrt(np.sum(fs ** 2, -1, keepdims=True) + eps)
  ft = ft / np.sqrt(np.sum(ft ** 2, -1, keepdims=True) + eps)
  return np.einsum('bijc,bklc->bijkl', fs, ft)


def _ncnet_agg(config, params, out, _):
  m = config.model
  consensus = ncnet.NeighConsensus(tuple(m.kernel_sizes), tuple(m.channels),
                                   m.symmetric, m.conv4d_impl)
  return ncnet.mutual_matching(consensus.apply(
      {'params': params['consensus']}, ncnet.mutual_matching(out['raw'])))


def test_ncnet_costs_are_the_adapted_correlation_and_its_consensus():
  """raw = C of the L2-normalised adapted features; agg = mutual matching
  -> consensus (the module's own params) -> mutual matching of C; swapping
  the images transposes both (symmetric consensus)."""
  _, out, feats, agg = _run('ncnet', _ncnet_agg)
  assert len(feats) == 1
  f = feats[0]
  assert f.shape == (4 * B, 4, 4, 128)  # layer3 of the width-8 ResNet
  raw = np.asarray(out['raw'])
  assert raw.shape == (2 * B, 4, 4, 4, 4)
  assert tuple(out['feature_hw']) == (4, 4)
  want = _correlation(f[:2 * B], f[2 * B:], ncnet.FEATURE_EPS)
  np.testing.assert_allclose(raw, want, rtol=1e-5, atol=1e-5)
  assert np.abs(raw).max() <= 1 + 1e-5
  assert float(jnp.max(agg)) > 0  # not all ReLU'd away
  np.testing.assert_allclose(out['agg'], agg, rtol=1e-5, atol=1e-6)
  for key in ('raw', 'agg'):  # (t, s) = (s, t)^T
    np.testing.assert_allclose(out[key][B:],
                               geometry.transpose_4d(out[key][:B]),
                               rtol=1e-5, atol=1e-6)


def _cats_agg(config, params, _, feats):
  """The decoder on the mutually filtered stack of per-level correlations,
  with the proj_<l> embeddings, all from the adapted features."""
  m, s, n = config.model, config.model.feature_size, len(feats)
  pairs = feats[0].shape[0] // 2
  stack = jnp.stack([cats.hyperpixel_correlation(f[:pairs], f[pairs:])
                     for f in feats], axis=1)  # (pairs, N, P, P)
  emb = jnp.stack([
      nn.Dense(m.proj_dim).apply({'params': params[f'proj_{l}']},
                                 f.reshape(2 * pairs, s * s, -1))
      for l, f in enumerate(feats)], axis=1)  # (2 pairs, N, P, proj_dim)
  decoder = cats.TransformerAggregator(
      num_levels=n, feature_size=s, embed_dim=s * s + m.proj_dim,
      depth=m.depth, num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
      zero_proj=m.zero_proj)
  agg = decoder.apply({'params': params['decoder']},
                      cats.mutual_nn_filter(stack), emb[:pairs], emb[pairs:])
  return agg.reshape(pairs, s, s, s, s)


def test_cats_costs_are_the_level_mean_and_the_aggregated_stack():
  """raw = the mean over levels of the per-level correlations of the
  adapted S x S features; agg = the decoder (own params) on the mutually
  filtered stack with the proj_<l> embeddings of the adapted features."""
  config, out, feats, agg = _run('cats', _cats_agg)
  s, pairs = config.model.feature_size, 2 * B
  assert len(feats) == len(config.backbone.features) == 3
  for f in feats:
    assert f.shape[:3] == (2 * pairs, s, s)
  raw = np.asarray(out['raw'])
  assert raw.shape == (pairs, s, s, s, s) and out['agg'].shape == raw.shape
  assert tuple(out['feature_hw']) == (s, s)
  levels = [_correlation(f[:pairs], f[pairs:], 1e-6) for f in feats]
  np.testing.assert_allclose(raw, np.mean(levels, axis=0), rtol=1e-5,
                             atol=1e-5)
  # Not one level alone: the levels differ.
  assert np.abs(levels[0] - levels[-1]).max() > 1e-3
  np.testing.assert_allclose(out['agg'], agg, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(out['agg']) - raw).max() > 1e-3


def _adapt_or_bn(mdl, _):
  return isinstance(mdl.name, str) and (mdl.name.startswith('adapt_') or
                                        mdl.name == 'bn0')


def test_train_mode_normalises_each_side_with_its_own_statistics():
  """train=True: the adaptation BatchNorm normalises the source half and the
  target half of [source; target] each with its own batch statistics: each
  half of its output has zero mean per channel, and changing the targets
  (t * 0.5 + 0.2) leaves the adapted source features unchanged, while they
  differ from inference (running statistics). The call moves the
  adaptation layers' running statistics, not the frozen backbone's."""
  config = _config('ncnet')
  model = jlfc.JLFC.from_config(config, train_backbone=False)
  source, target = _images()
  name = f'adapt_{config.backbone.features[0]}'

  @jax.jit
  def run(source, target):
    variables = model.init(jax.random.key(1), source, target)

    def apply(target, train):
      mutable = ['intermediates'] + (['batch_stats'] if train else [])
      _, state = model.apply(variables, source, target, train=train,
                             capture_intermediates=_adapt_or_bn,
                             mutable=mutable)
      inter = state['intermediates'][name]
      return (inter['__call__'][0], inter['bn0']['__call__'][0],
              state.get('batch_stats'))
    feats, bn, stats = apply(target, True)
    shifted, _, _ = apply(target * 0.5 + 0.2, True)
    inference, _, _ = apply(target, False)
    return variables['batch_stats'], stats, feats, bn, shifted, inference

  before, after, feats, bn, shifted, inference = jax.device_get(
      run(source, target))
  assert feats.shape == bn.shape == (2 * B, 4, 4, 128)
  for half in (bn[:B], bn[B:]):
    np.testing.assert_allclose(half.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
  np.testing.assert_allclose(shifted[:B], feats[:B], rtol=1e-6, atol=1e-6)
  assert np.abs(shifted[B:] - feats[B:]).max() > 1e-2
  assert np.abs(inference[:B] - feats[:B]).max() > 1e-2
  for key in ('mean', 'var'):
    assert np.abs(after[name]['bn0'][key] -
                  before[name]['bn0'][key]).max() > 1e-4, key
  jax.tree.map(np.testing.assert_array_equal, after['backbone'],
               before['backbone'])


def _shapes(method, config):
  """The shapes of a method's `params`, built without running it."""
  method = methods.get(method)(config, 10)
  batch = {'source_image': jnp.zeros((1, SIZE, SIZE, 3)),
           'target_image': jnp.zeros((1, SIZE, SIZE, 3))}
  shapes = jax.eval_shape(method.init_variables, jax.random.key(0), batch)
  return jax.tree.map(lambda x: x.shape, shapes)


@pytest.mark.parametrize('aggregator, own', [
    ('ncnet', ('consensus',)),
    ('cats', ('proj_0', 'proj_1', 'proj_2', 'decoder'))])
def test_param_tree_matches_the_aggregator_methods(aggregator, own):
  """backbone, adapt_<tap> and the aggregator's subtrees under the names
  and shapes of the `ncnet` / `cats` methods' test configs (the same
  aggregator settings), so `init_from.subtrees` can copy them."""
  config = _config(aggregator)
  taps = tuple(config.backbone.features)
  shapes = _shapes('jlfc', config)
  adapt = {f'adapt_{tap}' for tap in taps}
  assert set(shapes['params']) == {'backbone', *adapt, *own}
  assert set(shapes['batch_stats']) == {'backbone', *adapt}
  for name in adapt:  # 1 unit (test): conv0 + bn0, channels preserved
    assert set(shapes['params'][name]) == {'conv0', 'bn0'}
    kernel = shapes['params'][name]['conv0']['kernel']
    assert kernel[:2] == (3, 3) and kernel[2] == kernel[3]
  other = _shapes(aggregator, config_files.load(
      str(paths.CONFIGS / f'{aggregator}.py') + ':test'))
  for name in (*own, 'backbone'):
    assert shapes['params'][name] == other['params'][name], name


@pytest.mark.parametrize('aggregator', ['ncnet', 'cats'])
def test_no_adaptation_units_build_no_adaptation_layers(aggregator):
  shapes = _shapes('jlfc', _config(aggregator, **{'model.adapt_units': 0}))
  for collection in ('params', 'batch_stats'):
    assert not [k for k in shapes[collection] if k.startswith('adapt_')]


@pytest.mark.parametrize('aggregator, overrides, match', [
    ('ncnet', {'model.aggregator': 'nope'}, 'model.aggregator'),
    ('ncnet', {'model.adapt_kernel': 2}, 'adapt_kernel=2'),
    ('cats', {'model.adapt_units': -1}, 'adapt_units=-1'),
    ('cats', {'model.num_heads': 5}, 'num_heads=5'),
])
def test_bad_model_config_is_one_line(aggregator, overrides, match):
  with pytest.raises(SemcorrError, match=match) as e:
    jlfc.JLFC.from_config(_config(aggregator, **overrides), False)
  assert '\n' not in str(e.value)


def test_ncnet_aggregator_needs_one_tap():
  config = _config('ncnet', **{'backbone.features': ('layer2', 'layer3')})
  with pytest.raises(SemcorrError) as e:
    jlfc.JLFC.from_config(config, False)
  assert '\n' not in str(e.value)
