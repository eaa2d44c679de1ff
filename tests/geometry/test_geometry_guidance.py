"""Tests for semcorr_jax.geometry.guidance (paper 001, Eq. 4-8).

Tiny hand-made volumes; every function is jitted as the model uses it.
"""

import jax
import jax.numpy as jnp
import numpy as np
from numpy import testing as npt

from semcorr_jax import geometry

_mutual_consistency = jax.jit(geometry.mutual_consistency)
_truncate = jax.jit(geometry.truncate)
_guidance = jax.jit(geometry.guidance_displacement)
_mls = jax.jit(geometry.mls_interpolate)
_modulate = jax.jit(geometry.gaussian_modulation)
_modulate_confident = jax.jit(geometry.gaussian_modulation_at_confident)


def _finite(x):
  return bool(np.all(np.isfinite(np.asarray(x))))


# --- Eq. 4: mutual consistency ------------------------------------------------


def test_mutual_consistency_is_one_exactly_at_mutual_nearest_neighbours():
  rng = np.random.default_rng(0)
  shape = (2, 3, 4, 5, 3)  # (B, hs, ws, ht, wt)
  corr = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
  # Make the mutual maxima clearly positive so eps / c^2 stays tiny.
  corr = np.where(corr > 0, 0.5 + 0.5 * corr, corr).astype(np.float32)
  q = np.asarray(_mutual_consistency(corr))
  flat = corr.reshape(2, 12, 15)
  best_t = flat.argmax(axis=2)  # per source cell
  best_s = flat.argmax(axis=1)  # per target cell
  mnn = np.zeros_like(flat, dtype=bool)
  for n in range(2):
    for i in range(12):
      j = best_t[n, i]
      mnn[n, i, j] = best_s[n, j] == i
  mnn = mnn.reshape(shape)
  assert mnn.sum() >= 2
  npt.assert_allclose(q[mnn], 1.0, atol=1e-5)
  assert q[~mnn].max() < 1.0 - 1e-3
  assert q.min() >= 0.0


def test_mutual_consistency_formula_and_clipping_by_hand():
  # One source row [0.8, -0.5] against a second row [0.4, 0.2]:
  # column maxima (after relu) 0.8, 0.2; row maxima 0.8, 0.4.
  corr = np.asarray([0.8, -0.5, 0.4, 0.2], np.float32).reshape(1, 2, 1, 1, 2)
  q = np.asarray(_mutual_consistency(corr, 0.0)).ravel()
  npt.assert_allclose(q, [1.0, 0.0, 0.16 / (0.8 * 0.4), 0.04 / (0.2 * 0.4)],
                      rtol=1e-6)


def test_mutual_consistency_all_negative_row_is_finite_zero():
  corr = -np.abs(np.random.default_rng(1).normal(size=(1, 2, 2, 2, 2)))
  corr = corr.astype(np.float32)
  corr[0, 0, 0, 0, 0] = 0.7  # one positive entry elsewhere
  q = np.asarray(_mutual_consistency(corr))
  assert _finite(q)
  npt.assert_array_equal(q[0, 1], 0.0)  # rows with no positive score
  grad = jax.grad(lambda c: jnp.sum(geometry.mutual_consistency(c)))(corr)
  assert _finite(grad)


# --- Eq. 5: truncation and S --------------------------------------------------


def test_truncate_is_strict_and_only_kept_entries_get_gradient():
  x = np.asarray([0.5, 0.9, 0.9001, 1.0], np.float32)
  npt.assert_array_equal(_truncate(x, 0.9), [0.0, 0.0, x[2], 1.0])
  grad = jax.grad(lambda v: jnp.sum(3.0 * geometry.truncate(v, 0.9)))(x)
  npt.assert_array_equal(grad, [0.0, 0.0, 3.0, 3.0])


def test_confident_cells_marks_rows_with_a_kept_entry():
  q = np.zeros((1, 2, 3, 2, 2), np.float32)
  q[0, 0, 1, 1, 0] = 0.95
  q[0, 1, 2, 0, 1] = 0.91
  expected = np.zeros((1, 2, 3), np.float32)
  expected[0, 0, 1] = expected[0, 1, 2] = 1.0
  npt.assert_array_equal(jax.jit(geometry.confident_cells)(q), expected)


# --- Eq. 6: guidance displacement ---------------------------------------------


def test_one_kept_entry_gives_j_minus_i_on_a_non_square_grid():
  hs, ws, ht, wt = 2, 3, 4, 5
  q = np.zeros((1, hs, ws, ht, wt), np.float32)
  q[0, 1, 2, 3, 0] = 0.93  # source (x, y) = (2, 1) -> target (x, y) = (0, 3)
  q[0, 0, 0, 1, 4] = 0.97  # source (0, 0) -> target (4, 1)
  g, valid = _guidance(q, 20.0)
  npt.assert_array_equal(g[0, 1, 2], [-2.0, 2.0])
  npt.assert_array_equal(g[0, 0, 0], [4.0, 1.0])
  expected_valid = np.zeros((1, hs, ws), np.float32)
  expected_valid[0, 1, 2] = expected_valid[0, 0, 0] = 1.0
  npt.assert_array_equal(valid, expected_valid)
  npt.assert_array_equal(np.asarray(g)[expected_valid == 0], 0.0)
  # Dropped entries get no weight at any temperature: at beta = 1 a softmax
  # over all 20 cells (the printed Eq. 6) would give the kept cell ~12%.
  g1, _ = _guidance(q, 1.0)
  npt.assert_array_equal(g1, g)


def test_two_kept_entries_softmax_weighted_mean_with_beta():
  q = np.zeros((1, 1, 1, 3, 4), np.float32)
  q[0, 0, 0, 0, 1] = 0.92  # (x, y) = (1, 0)
  q[0, 0, 0, 2, 3] = 0.98  # (x, y) = (3, 2)
  beta = 50.0
  w2 = 1.0 / (1.0 + np.exp(-beta * (0.98 - 0.92)))  # weight of the 2nd entry
  expected = (1.0 - w2) * np.array([1.0, 0.0]) + w2 * np.array([3.0, 2.0])
  g, _ = _guidance(q, beta)
  npt.assert_allclose(g[0, 0, 0], expected, rtol=1e-5)
  # The paper's softmax over all 12 cells without a temperature would sit
  # near the grid centre instead: the fix matters.
  assert np.abs(expected - np.array([1.5, 1.0])).max() > 0.5


def test_empty_rows_give_zero_guidance_and_finite_zero_gradient():
  q = np.zeros((1, 2, 2, 3, 3), np.float32)
  q[0, 0, 0, 1, 1] = 0.95
  g, valid = _guidance(q, 10.0)
  npt.assert_array_equal(np.asarray(g)[0, 1], 0.0)
  npt.assert_array_equal(valid[0], [[1.0, 0.0], [0.0, 0.0]])

  def total(v):
    return jnp.sum(geometry.guidance_displacement(v, 10.0)[0] ** 2)

  grad = jax.grad(total)(q)
  assert _finite(grad)
  npt.assert_array_equal(np.asarray(grad)[0, 1], 0.0)
  grad_empty = jax.grad(total)(np.zeros_like(q))
  assert _finite(grad_empty)
  npt.assert_array_equal(grad_empty, 0.0)


# --- Eq. 7: moving least squares ----------------------------------------------


def test_mls_reproduces_a_constant_field_exactly():
  rng = np.random.default_rng(2)
  valid = (rng.uniform(size=(2, 6, 7)) < 0.3).astype(np.float32)
  valid[:, 0, 0] = 1.0
  field = np.broadcast_to(np.asarray([1.5, -2.25], np.float32), (2, 6, 7, 2))
  noise = rng.normal(size=field.shape).astype(np.float32)
  disp = np.where(valid[..., None] > 0, field, noise)  # junk off S
  weights = rng.uniform(0.5, 1.0, (2, 6, 7)).astype(np.float32)
  npt.assert_allclose(_mls(disp, valid, 3.0), field, rtol=1e-6)
  npt.assert_allclose(_mls(disp, valid, 3.0, weights), field, rtol=1e-6)


def test_mls_returns_g_at_isolated_confident_cells_for_small_c_p():
  rng = np.random.default_rng(3)
  valid = np.zeros((1, 5, 6), np.float32)
  valid[0, 1, 1] = valid[0, 3, 4] = valid[0, 4, 0] = 1.0
  disp = rng.normal(size=(1, 5, 6, 2)).astype(np.float32)
  out = np.asarray(_mls(disp, valid, 0.3))
  on_s = valid > 0
  npt.assert_allclose(out[on_s], disp[on_s], atol=1e-6)
  # Off S the nearest confident cell wins: (x, y) = (2, 1) is 1 cell from
  # (1, 1) and sqrt(8) from (4, 3).
  npt.assert_allclose(out[0, 1, 2], disp[0, 1, 1], atol=1e-5)


def test_mls_weighted_two_cell_case_by_hand():
  valid = np.zeros((1, 1, 4), np.float32)
  valid[0, 0, 0] = valid[0, 0, 3] = 1.0
  disp = np.zeros((1, 1, 4, 2), np.float32)
  disp[0, 0, 0] = [2.0, 0.0]
  disp[0, 0, 3] = [0.0, 4.0]
  weights = np.asarray([[[0.5, 9.0, 9.0, 2.0]]], np.float32)
  c_p = 1.5
  out = np.asarray(_mls(disp, valid, c_p, weights))
  for x in range(4):
    a0 = 0.5 * np.exp(-x**2 / (2 * c_p**2))
    a3 = 2.0 * np.exp(-(3 - x)**2 / (2 * c_p**2))
    expected = (a0 * disp[0, 0, 0] + a3 * disp[0, 0, 3]) / (a0 + a3)
    npt.assert_allclose(out[0, 0, x], expected, rtol=1e-5, atol=1e-6)


def test_mls_empty_s_is_zero_with_zero_gradient():
  disp = np.random.default_rng(4).normal(size=(1, 3, 4, 2)).astype(np.float32)
  valid = np.zeros((1, 3, 4), np.float32)
  out = _mls(disp, valid, 7.0)
  npt.assert_array_equal(out, 0.0)
  for weights in (None, np.ones((1, 3, 4), np.float32)):
    grad = jax.grad(
        lambda d, w=weights: jnp.sum(geometry.mls_interpolate(d, valid, 7.0,
                                                               w)))(disp)
    assert _finite(grad)
    npt.assert_array_equal(grad, 0.0)


def test_mls_far_confident_cell_still_gives_its_value():
  valid = np.zeros((1, 1, 31), np.float32)
  valid[0, 0, 30] = 1.0
  disp = np.zeros((1, 1, 31, 2), np.float32)
  disp[0, 0, 30] = [-3.0, 0.5]
  out = np.asarray(_mls(disp, valid, 2.0))  # exp(-900 / 8) underflows
  npt.assert_allclose(out[0, 0, 0], [-3.0, 0.5], rtol=1e-6)
  grad = jax.grad(lambda d: jnp.sum(geometry.mls_interpolate(
      d, valid, 2.0)[0, 0, 0]))(disp)
  assert _finite(grad)
  npt.assert_allclose(grad[0, 0, 30], [1.0, 1.0], rtol=1e-6)


# --- Eq. 8: Gaussian modulation -----------------------------------------------


def test_gaussian_peaks_at_the_absolute_centre():
  hs, ws, ht, wt = 2, 2, 5, 7
  corr = np.full((1, hs, ws, ht, wt), 0.6, np.float32)
  centers = np.asarray([[[[1.2, 3.0], [5.0, 0.4]],
                         [[6.0, 4.0], [2.6, 1.9]]]], np.float32)
  out = np.asarray(_modulate(corr, centers, 1.0))
  for r in range(hs):
    for c in range(ws):
      idx = np.unravel_index(out[0, r, c].argmax(), (ht, wt))
      cx, cy = centers[0, r, c]
      assert (idx[1], idx[0]) == (round(cx), round(cy))
  # Integer centre (x, y) = (6, 4): the value there is C itself.
  npt.assert_allclose(out[0, 1, 0, 4, 6], 0.6, rtol=1e-6)
  # One cell away in x: C exp(-1 / 2).
  npt.assert_allclose(out[0, 1, 0, 4, 5], 0.6 * np.exp(-0.5), rtol=1e-6)


def test_gaussian_modulation_is_centred_at_i_plus_guidance():
  # Guidance G' = (1, 0) for every source cell: the peak of row i must be at
  # i + (1, 0), not at (1, 0) (the printed Eq. 8).
  corr = np.ones((1, 3, 3, 3, 4), np.float32)
  guidance = np.zeros((1, 3, 3, 2), np.float32)
  guidance[..., 0] = 1.0
  out = np.asarray(_modulate(corr, geometry.flow_to_mapping(guidance), 0.5))
  for y in range(3):
    for x in range(3):
      idx = np.unravel_index(out[0, y, x].argmax(), (3, 4))
      assert (idx[1], idx[0]) == (x + 1, y)


def test_gaussian_modulation_at_confident_leaves_other_rows_unchanged():
  rng = np.random.default_rng(5)
  corr = rng.uniform(-1, 1, (1, 2, 3, 3, 3)).astype(np.float32)
  centers = rng.uniform(0, 2, (1, 2, 3, 2)).astype(np.float32)
  valid = np.asarray([[[1, 0, 0], [0, 1, 0]]], np.float32)
  out = np.asarray(_modulate_confident(corr, centers, valid, 1.0))
  full = np.asarray(_modulate(corr, centers, 1.0))
  npt.assert_array_equal(out[valid == 0], corr[valid == 0])
  npt.assert_array_equal(out[valid == 1], full[valid == 1])
  assert np.abs(full[valid == 0] - corr[valid == 0]).max() > 1e-3


# --- the chain Eq. 4-8 ----------------------------------------------------------


def test_chain_is_finite_under_grad_with_full_partial_and_empty_s():
  rng = np.random.default_rng(6)
  corr = rng.uniform(-1, 1, (1, 3, 4, 3, 4)).astype(np.float32)

  def chain(c, rho):
    q = geometry.mutual_consistency(c)
    q_pruned = geometry.truncate(q * jax.nn.sigmoid(3.0 * c), rho)
    g, valid = geometry.guidance_displacement(q_pruned, 20.0)
    dense = geometry.mls_interpolate(g, valid, 2.0, jnp.max(q_pruned, (3, 4)))
    out = geometry.gaussian_modulation(c, geometry.flow_to_mapping(dense), 1.5)
    return jnp.sum(out**2) + jnp.sum(dense**2), jnp.sum(valid)

  value_and_grad = jax.jit(jax.value_and_grad(chain, has_aux=True))
  for rho, expect_empty in ((-1.0, False), (0.3, False), (2.0, True)):
    (value, n_valid), grad = value_and_grad(corr, rho)
    assert (float(n_valid) == 0.0) == expect_empty
    assert _finite(value) and _finite(grad)
