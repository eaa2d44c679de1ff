"""Fake models with known mappings."""

from __future__ import annotations

import numpy as np
import pytest

from semcorr_jax import outputs
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import fake


def test_identity_scales_to_the_other_size():
  source = np.zeros((2, 3, 5, 3))   # Hs = 3, Ws = 5
  target = np.zeros((2, 5, 9, 3))   # Ht = 5, Wt = 9
  out = fake.identity_predict_fn(source, target)
  assert out['mapping_st'].shape == (2, 3, 5, 2)
  assert out['mapping_ts'].shape == (2, 5, 9, 2)
  assert out['mapping_st'].dtype == np.float64
  # Source (x=2, y=1) -> (2 * 8/4, 1 * 4/2) = (4, 2).
  np.testing.assert_allclose(out['mapping_st'][1, 1, 2], [4., 2.])
  # Target (x=4, y=2) -> (4 * 4/8, 2 * 2/4) = (2, 1).
  np.testing.assert_allclose(out['mapping_ts'][0, 2, 4], [2., 1.])


def test_identity_on_equal_sizes_is_the_pixel_grid():
  out = fake.identity_predict_fn(np.zeros((1, 4, 6, 3)), np.zeros((1, 4, 6, 3)))
  ys, xs = np.mgrid[:4, :6]
  np.testing.assert_allclose(out['mapping_st'][0, ..., 0], xs, atol=1e-12)
  np.testing.assert_allclose(out['mapping_st'][0, ..., 1], ys, atol=1e-12)


def test_affine_rotation_by_hand():
  # target_n = (-y_n, x_n) on 3 x 3 images: source pixel (2, 0) has
  # normalised (1, -1) -> (1, 1) -> target pixel (2, 2); mapping_ts is the
  # inverse: target (2, 2) -> source (2, 0).
  fn = fake.affine_predict_fn([[0., -1., 0.], [1., 0., 0.]])
  out = fn(np.zeros((3, 3, 3, 3)), np.zeros((3, 3, 3, 3)))
  assert out['mapping_st'].shape == (3, 3, 3, 2)
  np.testing.assert_allclose(out['mapping_st'][2, 0, 2], [2., 2.],
                             atol=1e-12)
  np.testing.assert_allclose(out['mapping_ts'][0, 2, 2], [2., 0.],
                             atol=1e-12)


def test_affine_scale_and_translation_by_hand():
  # A = [[0.5, 0, 0.5], [0, 2, 0]] on 5 x 5: source (0, 2) -> n (-1, 0) ->
  # (0.5 * -1 + 0.5, 0) = (0, 0) -> target pixel (2, 2). Inverse:
  # target n (0, 0) -> ((0 - 0.5) / 0.5, 0 / 2) = (-1, 0) -> source (0, 2).
  # Source (4, 3) -> n (1, 0.5) -> (1, 1) -> target (4, 4).
  fn = fake.affine_predict_fn([[0.5, 0., 0.5], [0., 2., 0.]])
  out = fn(np.zeros((1, 5, 5, 3)), np.zeros((1, 5, 5, 3)))
  np.testing.assert_allclose(out['mapping_st'][0, 2, 0], [2., 2.],
                             atol=1e-12)
  np.testing.assert_allclose(out['mapping_st'][0, 3, 4], [4., 4.],
                             atol=1e-12)
  np.testing.assert_allclose(out['mapping_ts'][0, 2, 2], [0., 2.],
                             atol=1e-12)


def test_affine_errors():
  with pytest.raises(SemcorrError, match='singular'):
    fake.affine_predict_fn([[1., 2., 0.], [2., 4., 0.]])
  with pytest.raises(SemcorrError, match=r'\(2, 3\)'):
    fake.affine_predict_fn(np.eye(3))
  with pytest.raises(SemcorrError, match='batches'):
    fake.identity_predict_fn(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)))


def test_flows_predict_fn_keys_and_confidence_where_declared():
  flows = (outputs.Flow('final', ('confidence',)), outputs.Flow('guide'))
  predict = fake.flows_predict_fn(
      flows, {'final': [[1, 0, 0], [0, 1, 0]],
              'guide': [[0.5, 0, 0], [0, 0.5, 0]]}, {'final': 0.25})
  out = predict(np.zeros((2, 5, 7, 3)), np.zeros((2, 3, 9, 3)))
  assert sorted(out) == ['confidence_st', 'confidence_ts', 'guide_mapping_st',
                         'guide_mapping_ts', 'mapping_st', 'mapping_ts']
  assert out['confidence_st'].shape == (2, 5, 7)
  assert out['confidence_ts'].shape == (2, 3, 9)
  np.testing.assert_array_equal(out['confidence_ts'], 0.25)
  np.testing.assert_allclose(
      out['guide_mapping_st'],
      fake.affine_predict_fn([[0.5, 0, 0], [0, 0.5, 0]])(
          np.zeros((2, 5, 7, 3)), np.zeros((2, 3, 9, 3)))['mapping_st'])
