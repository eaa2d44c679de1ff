"""Tests for semcorr_jax.geometry.correlation (numpy in, jitted functions)."""

import jax
import jax.numpy as jnp
import numpy as np
from numpy import testing as npt

from semcorr_jax import geometry

_RNG = np.random.default_rng(0)


def _normal(*shape):
  return _RNG.normal(size=shape).astype(np.float32)


def _uniform(*shape):
  return _RNG.uniform(size=shape).astype(np.float32)


def test_l2_normalize_formula_with_eps():
  x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-3, 0.0]], np.float32)
  out = np.asarray(jax.jit(geometry.l2_normalize)(x))  # default eps = 1e-6
  npt.assert_allclose(
      out[0], np.array([3.0, 4.0]) / np.sqrt(25.0 + 1e-6), rtol=1e-6
  )
  npt.assert_array_equal(out[1], [0.0, 0.0])  # eps keeps the zero vector finite
  # eps sits inside the sqrt: 1e-3 / sqrt(1e-6 + 1e-6), not 1e-3 / max(1e-3,
  # eps) = 1.
  npt.assert_allclose(out[2, 0], 1e-3 / np.sqrt(2e-6), rtol=1e-5)


def test_l2_normalize_axis():
  x = _normal(2, 3, 4)
  out = np.asarray(
      jax.jit(geometry.l2_normalize, static_argnums=(1, 2))(x, 1, 0.0)
  )
  npt.assert_allclose(np.sum(out**2, axis=1), np.ones((2, 4)), rtol=1e-5)


def test_correlation_4d_layout():
  fa, fb = _normal(2, 3, 4, 5), _normal(2, 6, 7, 5)
  corr = np.asarray(
      jax.jit(geometry.correlation_4d, static_argnums=2)(
          fa, fb, jax.lax.Precision.HIGHEST
      )
  )
  assert corr.shape == (2, 3, 4, 6, 7)
  npt.assert_allclose(
      corr, np.einsum('nijc,nklc->nijkl', fa, fb), rtol=1e-5, atol=1e-5
  )
  npt.assert_allclose(
      corr[1, 2, 0, 5, 3], np.dot(fa[1, 2, 0], fb[1, 5, 3]), rtol=1e-5
  )


def test_transpose_4d():
  corr = _normal(2, 3, 4, 5, 6)
  t = np.asarray(jax.jit(geometry.transpose_4d)(corr))
  assert t.shape == (2, 5, 6, 3, 4)
  npt.assert_array_equal(t[1, 4, 5, 2, 3], corr[1, 2, 3, 4, 5])
  npt.assert_array_equal(t, corr.transpose(0, 3, 4, 1, 2))


def test_normalize_over_b_and_a():
  c = _uniform(2, 3, 4, 5, 6)
  nb = np.asarray(jax.jit(geometry.normalize_over_b)(c))
  npt.assert_allclose(
      nb,
      c / np.sqrt(np.sum(c**2, axis=(3, 4), keepdims=True) + 1e-6),
      rtol=1e-5,
  )
  na = np.asarray(jax.jit(geometry.normalize_over_a)(c))
  npt.assert_allclose(
      na,
      c / np.sqrt(np.sum(c**2, axis=(1, 2), keepdims=True) + 1e-6),
      rtol=1e-5,
  )
  npt.assert_allclose(np.sum(nb[1, 2, 3] ** 2), 1.0, rtol=1e-4)
  # Zero correlation stays finite thanks to eps.
  assert np.all(
      np.isfinite(
          jax.jit(geometry.normalize_over_b)(
              np.zeros((1, 2, 2, 2, 2), np.float32)
          )
      )
  )


def test_mutual_nn_filter_hand_case():
  # Ha = 1, Wa = 2 (a cells a0, a1); Hb = 1, Wb = 2 (b cells b0, b1).
  c = np.array(
      [
          [0.8, 0.2],  # a0's best b is b0
          [0.4, 0.6],
      ],  # a1's best b is b1; b0's best a is a0 (0.8), b1's best a is a1 (0.6)
      np.float32,
  )
  out = np.asarray(
      jax.jit(geometry.mutual_nn_filter)(c.reshape(1, 1, 2, 1, 2))
  ).reshape(2, 2)
  # Mutual maxima keep their score (up to eps = 1e-5); other cells are scaled by
  # both ratios.
  npt.assert_allclose(out[0, 0], 0.8 * (0.8 / (0.8 + 1e-5)) ** 2, rtol=1e-6)
  npt.assert_allclose(out[1, 1], 0.6 * (0.6 / (0.6 + 1e-5)) ** 2, rtol=1e-6)
  npt.assert_allclose(
      out[1, 0], 0.4 * (0.4 / (0.8 + 1e-5)) * (0.4 / (0.6 + 1e-5)), rtol=1e-6
  )
  npt.assert_allclose(
      out[0, 1], 0.2 * (0.2 / (0.6 + 1e-5)) * (0.2 / (0.8 + 1e-5)), rtol=1e-6
  )


def test_mutual_nn_filter_is_symmetric_under_transpose():
  corr = _uniform(2, 3, 3, 4, 4)

  @jax.jit
  def both(c):
    return (
        geometry.transpose_4d(geometry.mutual_nn_filter(c)),
        geometry.mutual_nn_filter(geometry.transpose_4d(c)),
    )

  lhs, rhs = both(corr)
  npt.assert_allclose(lhs, rhs, rtol=1e-6)
  assert geometry.soft_mutual_nn is geometry.mutual_nn_filter


def test_correlation_pipeline_grad_and_vmap():
  fa, fb = _normal(2, 3, 3, 4), _normal(2, 3, 3, 4)

  def loss(fa, fb):
    corr = geometry.correlation_4d(
        geometry.l2_normalize(fa), geometry.l2_normalize(fb)
    )
    return jnp.sum(
        geometry.mutual_nn_filter(jax.nn.relu(geometry.normalize_over_b(corr)))
    )

  @jax.jit
  def run(fa, fb):
    per_example = jax.vmap(lambda a, b: loss(a[None], b[None]))(fa, fb)
    return jax.grad(loss)(fa, fb), per_example.sum(), loss(fa, fb)

  g, total_vmapped, total = run(fa, fb)
  assert np.all(np.isfinite(g)) and np.any(np.asarray(g) != 0)
  npt.assert_allclose(total_vmapped, total, rtol=1e-5)
