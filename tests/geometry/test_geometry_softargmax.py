"""Tests for semcorr_jax.geometry.softargmax (numpy in, jitted functions)."""

import jax
import numpy as np
from numpy import testing as npt

from semcorr_jax import geometry

_soft_argmax = jax.jit(geometry.soft_argmax)
_kernel_soft_argmax = jax.jit(geometry.kernel_soft_argmax)
_SHAPE = (2, 3, 4, 5, 6)  # (B, Ha, Wa, Hb, Wb)


def _one_hot_corr(seed):
  """corr_ab of _SHAPE, 1 at one random b cell per a cell, and those (x, y)."""
  b, ha, wa, hb, wb = _SHAPE
  rng = np.random.default_rng(seed)
  targets = np.stack(
      [rng.integers(0, wb, (b, ha, wa)), rng.integers(0, hb, (b, ha, wa))], -1
  )
  corr = np.zeros(_SHAPE, np.float32)
  n, i, j = np.meshgrid(
      np.arange(b), np.arange(ha), np.arange(wa), indexing='ij'
  )
  corr[n, i, j, targets[..., 1], targets[..., 0]] = 1.0
  return corr, targets.astype(np.float32)


def test_hard_argmax_one_hot():
  corr, targets = _one_hot_corr(0)
  npt.assert_array_equal(jax.jit(geometry.hard_argmax)(corr), targets)


def test_soft_argmax_one_hot_large_beta():
  corr, targets = _one_hot_corr(1)
  npt.assert_allclose(_soft_argmax(corr, 1000.0), targets, atol=1e-4)
  # At a small beta the expectation is pulled towards the middle, so the test
  # above is not vacuous.
  assert np.abs(np.asarray(_soft_argmax(corr, 1.0)) - targets).max() > 0.5


def test_kernel_soft_argmax_one_hot():
  corr, targets = _one_hot_corr(2)
  # The Gaussian is 1 at the peak, so the peak logit is beta vs 0 elsewhere.
  npt.assert_allclose(
      _kernel_soft_argmax(corr, 1000.0, 5.0), targets, atol=1e-4
  )
  # With the SFNet defaults (beta = 50, sigma = 5) the peak still dominates
  # (e^-50 off-peak).
  npt.assert_allclose(_kernel_soft_argmax(corr), targets, atol=1e-4)


def test_soft_argmax_hand_computed_1x1x1x2x2():
  # b cells (x, y): (0,0)=0.1, (1,0)=0.5, (0,1)=0.2, (1,1)=0.3; beta = 2.
  c = np.array([[0.1, 0.5], [0.2, 0.3]], np.float32)  # [y, x]
  beta = 2.0
  w = np.exp(beta * c.astype(np.float64))
  p = w / w.sum()
  expected = [p[0, 1] + p[1, 1], p[1, 0] + p[1, 1]]  # E[x], E[y]
  out = np.asarray(_soft_argmax(c.reshape(1, 1, 1, 2, 2), beta))
  assert out.shape == (1, 1, 1, 2)
  npt.assert_allclose(out[0, 0, 0], expected, rtol=1e-6)


def test_soft_argmax_is_shift_invariant_and_stable():
  corr = (
      np.random.default_rng(3).normal(size=(1, 2, 2, 3, 4)).astype(np.float32)
  )
  a = np.asarray(_soft_argmax(corr, 50.0))
  # exp(50000) would overflow without subtracting the max first.
  b = np.asarray(_soft_argmax(corr + 1000.0, 50.0))
  assert np.all(np.isfinite(b))
  # float32 keeps ~4 digits of corr after the +1000 shift, times beta = 50.
  npt.assert_allclose(a, b, atol=1e-2)


def test_kernel_soft_argmax_hand_computed():
  # One a-cell, b grid 1 x 3 (x = 0, 1, 2). Peak at x = 0; a far secondary mode
  # at x = 2.
  c = np.array([0.9, 0.1, 0.85], np.float32)
  beta, sigma = 3.0, 1.0
  kernel = np.exp(-((np.arange(3) - 0.0) ** 2) / (2 * sigma**2))
  logits = beta * kernel * c
  p = np.exp(logits - logits.max())
  p /= p.sum()
  expected_x = float((p * np.arange(3)).sum())
  out = np.asarray(_kernel_soft_argmax(c.reshape(1, 1, 1, 1, 3), beta, sigma))
  npt.assert_allclose(out[0, 0, 0], [expected_x, 0.0], rtol=1e-5, atol=1e-7)
  # The kernel pulls the estimate towards the peak compared with the plain
  # soft-argmax.
  plain = np.asarray(_soft_argmax(c.reshape(1, 1, 1, 1, 3), beta))
  assert out[0, 0, 0, 0] < plain[0, 0, 0, 0] - 0.1


def test_gaussian_around_argmax_uses_cell_distance_in_x_and_y():
  corr = np.zeros((1, 1, 1, 4, 5), np.float32)
  corr[0, 0, 0, 1, 3] = 1.0  # peak at (x, y) = (3, 1)
  k = np.asarray(jax.jit(geometry.gaussian_around_argmax)(corr, 2.0))[0, 0, 0]
  ys, xs = np.mgrid[0:4, 0:5]
  npt.assert_allclose(
      k, np.exp(-((xs - 3) ** 2 + (ys - 1) ** 2) / (2 * 2.0**2)), rtol=1e-6
  )


def test_softargmax_grads_vmap_and_argmax_not_differentiated():
  corr = (
      np.random.default_rng(4).normal(size=(3, 2, 2, 3, 3)).astype(np.float32)
  )

  @jax.jit
  def run(c):
    g_soft = jax.grad(lambda c: geometry.soft_argmax(c, 50.0).sum())(c)
    g_kernel = jax.grad(lambda c: geometry.kernel_soft_argmax(c).sum())(c)
    g_hard = jax.grad(lambda c: geometry.hard_argmax(c).sum())(c)
    mapped = jax.vmap(lambda x: geometry.kernel_soft_argmax(x[None])[0])(c)
    return g_soft, g_kernel, g_hard, mapped, geometry.kernel_soft_argmax(c)

  g_soft, g_kernel, g_hard, mapped, batched = (np.asarray(x) for x in run(corr))
  for g in (g_soft, g_kernel):
    assert np.all(np.isfinite(g)) and np.any(g != 0)
  npt.assert_array_equal(g_hard, 0.0)
  npt.assert_allclose(mapped, batched, rtol=1e-6)


def test_kernel_soft_argmax_beta_none_is_hard_argmax():
  corr = np.random.default_rng(5).normal(size=(1, 2, 3, 4, 5))
  corr = corr.astype(np.float32)
  npt.assert_array_equal(
      geometry.kernel_soft_argmax(corr, beta=None),
      jax.jit(geometry.hard_argmax)(corr),
  )
