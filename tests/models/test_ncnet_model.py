"""NCNet's modules (semcorr_jax/models/ncnet.py): mutual matching, symmetric
neighbourhood consensus, the whole network under swapping the images, the
read-out, and which backbone blocks fine-tune."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax import config_files
from semcorr_jax import geometry
from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import backbones
from semcorr_jax.models import ncnet
from helpers import paths

CONFIG = str(paths.CONFIGS / 'ncnet.py')


# --- mutual matching ----------------------------------------------------------


def test_mutual_matching_hand_made_volume():
  """Source cells (Ha, Wa) = (2, 1), target cells (Hb, Wb) = (1, 2); as a
  matrix over (a, b): [[4, 2], [5, 1]]. Max over A per target cell (columns):
  (5, 2); max over B per source cell (rows): (4, 5). Then
  c * (c / maxA) * (c / maxB) = [[4 * 4/5 * 4/4, 2 * 2/2 * 2/4],
                                 [5 * 5/5 * 5/5, 1 * 1/2 * 1/5]]."""
  corr = jnp.asarray([[4.0, 2.0], [5.0, 1.0]]).reshape(1, 2, 1, 1, 2)
  out = np.asarray(ncnet.mutual_matching(corr)).reshape(2, 2)
  np.testing.assert_allclose(out, [[3.2, 1.0], [5.0, 0.1]], rtol=1e-4)


def test_mutual_matching_equals_the_reference_views():
  """NCNet's MutualMatching written with its (B, Ha*Wa, Hb, Wb) and
  (B, Ha, Wa, Hb*Wb) views, on a non-square random volume."""
  corr = np.asarray(jax.random.uniform(jax.random.key(0), (2, 3, 4, 2, 5)))
  b = corr.shape[0]
  view_b = corr.reshape(b, 12, 2, 5)
  view_a = corr.reshape(b, 3, 4, 10)
  ratio_b = (view_b / (view_b.max(axis=1, keepdims=True) + 1e-5)).reshape(
      corr.shape)
  ratio_a = (view_a / (view_a.max(axis=3, keepdims=True) + 1e-5)).reshape(
      corr.shape)
  np.testing.assert_allclose(ncnet.mutual_matching(jnp.asarray(corr)),
                             corr * ratio_a * ratio_b, rtol=1e-5, atol=1e-7)


# --- neighbourhood consensus --------------------------------------------------


def _nc(symmetric, shape, seed=0):
  nc = ncnet.NeighConsensus((3, 3), (4, 1), symmetric=symmetric)
  corr = jax.random.uniform(jax.random.key(seed), shape)
  variables = nc.init(jax.random.key(1), corr)
  return jax.jit(nc.apply), variables, corr


@pytest.mark.parametrize('shape', [(2, 3, 4, 3, 4), (1, 3, 4, 4, 2)])
def test_symmetric_consensus_commutes_with_the_transpose(shape):
  """NCsym(x^T) = NCsym(x)^T, on equal grids (one pass over x and x^T) and
  on different grids (two passes); the plain NC does not commute."""
  apply, variables, corr = _nc(True, shape)
  out = apply(variables, corr)
  assert out.shape == corr.shape
  assert float(jnp.max(out)) > 0  # Not all ReLU'd away.
  np.testing.assert_allclose(apply(variables, geometry.transpose_4d(corr)),
                             geometry.transpose_4d(out), rtol=1e-5,
                             atol=1e-6)
  apply, variables, corr = _nc(False, shape)
  plain = apply(variables, corr)
  swapped = apply(variables, geometry.transpose_4d(corr))
  assert not np.allclose(swapped, geometry.transpose_4d(plain), atol=1e-3)


def test_consensus_parameters_and_last_relu():
  nc = ncnet.NeighConsensus((5, 3), (16, 1))
  variables = nc.init(jax.random.key(0), jnp.ones((1, 3, 3, 3, 3)))
  shapes = jax.tree.map(jnp.shape, variables['params'])
  assert shapes == {'conv_0': {'kernel': (5, 5, 5, 5, 1, 16), 'bias': (16,)},
                    'conv_1': {'kernel': (3, 3, 3, 3, 16, 1), 'bias': (1,)}}
  # A ReLU after the last layer too: a negative bias and zero kernels give
  # exactly 0.
  params = jax.tree.map(jnp.zeros_like, variables['params'])
  params['conv_1']['bias'] = -jnp.ones((1,))
  out = nc.apply({'params': params}, jnp.ones((1, 3, 3, 3, 3)))
  np.testing.assert_array_equal(out, 0.0)
  with pytest.raises(SemcorrError, match='end with 1'):
    ncnet.NeighConsensus((3,), (4,)).init(jax.random.key(0),
                                          jnp.ones((1, 3, 3, 3, 3)))


def test_swapping_the_images_transposes_the_whole_network():
  """NCNet(b, a) = NCNet(a, b)^T (correlation, mutual matching and the
  symmetric consensus all commute with the swap), and the read-outs swap."""
  config = config_files.load(f'{CONFIG}:test')
  model = ncnet.NCNet.from_config(config, train_backbone=False)
  k1, k2 = jax.random.split(jax.random.key(0))
  a = jax.random.uniform(k1, (2, 64, 64, 3))
  b = jax.random.uniform(k2, (2, 64, 64, 3))
  variables = jax.jit(model.init)(jax.random.key(1), a, b)
  apply = jax.jit(model.apply)
  ab, ba = apply(variables, a, b), apply(variables, b, a)
  assert ab['corr'].shape == (2, 4, 4, 4, 4)
  np.testing.assert_allclose(ba['corr'], geometry.transpose_4d(ab['corr']),
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(ba['confidence_st'], ab['confidence_ts'],
                             rtol=1e-5)
  np.testing.assert_allclose(ba['soft_mapping_ts'], ab['soft_mapping_st'],
                             rtol=1e-4, atol=1e-5)


# --- read-out -----------------------------------------------------------------


def test_read_out_recovers_a_known_permutation():
  """One peak per source cell at a permuted target cell: the hard mappings
  are the permutation and its inverse, the confidence the softmax
  probability of the peak, the sharp soft read-out the same cells."""
  ha, wa = 2, 3
  n = ha * wa
  perm = np.array([4, 0, 5, 2, 1, 3])  # source cell i -> target cell perm[i]
  corr = np.full((1, n, n), 0.1, np.float32)
  corr[0, np.arange(n), perm] = 1.0
  corr = jnp.asarray(corr.reshape(1, ha, wa, ha, wa))
  out = jax.jit(ncnet.dense_matches, static_argnums=1)(corr, 50.0)
  cells = np.stack(np.meshgrid(np.arange(wa), np.arange(ha)), -1)  # (x, y)
  xy = cells.reshape(n, 2)
  np.testing.assert_array_equal(out['mapping_st'][0].reshape(n, 2), xy[perm])
  inverse = np.argsort(perm)
  np.testing.assert_array_equal(out['mapping_ts'][0].reshape(n, 2),
                                xy[inverse])
  peak = np.exp(1.0) / (np.exp(1.0) + (n - 1) * np.exp(0.1))
  for d in ('st', 'ts'):
    np.testing.assert_allclose(out[f'confidence_{d}'], peak, rtol=1e-5)
    np.testing.assert_allclose(out[f'soft_mapping_{d}'], out[f'mapping_{d}'],
                               atol=1e-6)


# --- fine-tuned blocks --------------------------------------------------------


def test_finetuned_blocks_are_the_last_before_the_tap():
  resnet = backbones.BackboneSpec(features=('layer3',))
  assert ncnet.finetuned_blocks(resnet, 1) == ('layer3_22',)
  assert ncnet.finetuned_blocks(resnet, 0) == ()
  assert ncnet.tapped_blocks(backbones.BackboneSpec(
      features=('hyper_9',))) == ('layer3_0', 'layer3_1')
  lite = backbones.BackboneSpec(name=backbones.LITE0, features=('stage5',))
  assert ncnet.finetuned_blocks(lite, 2) == ('blocks_9', 'blocks_10')
  lite_block = backbones.BackboneSpec(name=backbones.LITE0,
                                      features=('stage5_block0',))
  assert ncnet.tapped_blocks(lite_block) == ('blocks_8',)
  with pytest.raises(SemcorrError, match='0..23'):
    ncnet.finetuned_blocks(resnet, 24)
