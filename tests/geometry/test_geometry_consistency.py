"""Tests for semcorr_jax.geometry.consistency (numpy in, jitted functions)."""

import jax
import numpy as np
from numpy import testing as npt

from semcorr_jax import geometry

_H, _W = 12, 16
_compose = jax.jit(geometry.compose_mappings)
_cycle_error = jax.jit(geometry.cycle_error)
_fb_mask = jax.jit(geometry.forward_backward_mask)


def _grid(h=_H, w=_W):
  xs, ys = np.meshgrid(np.arange(w), np.arange(h))
  return np.stack([xs, ys], -1).astype(np.float64)


def _inside(mapping):
  x, y = mapping[..., 0], mapping[..., 1]
  return (x >= 0) & (x <= _W - 1) & (y >= 0) & (y <= _H - 1)


def _contracting_pair():
  """mapping_ab contracts a about its centre; mapping_ba is its inverse."""
  m = np.array([[0.8, 0.1], [-0.05, 0.75]])
  centre = np.array([(_W - 1) / 2, (_H - 1) / 2])
  t = centre - m @ centre + np.array([0.4, -0.3])
  m_inv = np.linalg.inv(m)
  mapping_ab = _grid() @ m.T + t
  mapping_ba = _grid() @ m_inv.T - m_inv @ t
  return (
      mapping_ab[None].astype(np.float32),
      mapping_ba[None].astype(np.float32),
  )


def _shifted(dx, dy):
  return (_grid() + np.array([dx, dy]))[None].astype(np.float32)


def test_compose_affine_with_inverse_is_identity():
  mapping_ab, mapping_ba = _contracting_pair()
  assert _inside(mapping_ab).all()  # all of a lands inside b: no border effects
  # Bilinear interpolation of an affine field is exact, so the round trip is
  # the identity.
  npt.assert_allclose(_compose(mapping_ab, mapping_ba)[0], _grid(), atol=1e-4)


def test_compose_two_shifts_adds_them():
  a_to_b = _shifted(1.0, 2.0)
  a_to_c = np.asarray(_compose(a_to_b, _shifted(-3.0, 0.5)))[0]
  interior = _inside(a_to_b)[0]
  npt.assert_allclose(
      a_to_c[interior], (_grid() + np.array([-2.0, 2.5]))[interior], atol=1e-5
  )


def test_compose_clamps_at_the_border():
  # A point just outside b reads the edge value of mapping_bc, not 0 (zero
  # padding would give (0, 0)).
  mapping_bc = _shifted(100.0, 100.0)
  mapping_ab = np.array([[[[_W - 1 + 0.3, 2.0]]]], np.float32)  # (1, 1, 1, 2)
  npt.assert_allclose(
      _compose(mapping_ab, mapping_bc)[0, 0, 0],
      [_W - 1 + 100.0, 102.0],
      atol=1e-5,
  )


def test_cycle_error_values():
  mapping_ab = _shifted(2.0, -1.0)
  interior = _inside(mapping_ab)[0]
  err_ok = np.asarray(_cycle_error(mapping_ab, _shifted(-2.0, 1.0)))[0]
  err_bad = np.asarray(
      _cycle_error(mapping_ab, _shifted(-2.0 + 3.0, 1.0 + 4.0))
  )[0]
  assert err_ok.shape == (_H, _W)
  npt.assert_allclose(err_ok[interior], 0.0, atol=1e-5)
  npt.assert_allclose(err_bad[interior], 5.0, atol=1e-5)  # |(3, 4)| = 5


def test_cycle_error_gradient_finite_at_zero_error():
  mapping_ab, _ = _contracting_pair()
  identity = _shifted(0.0, 0.0)
  grad = jax.jit(jax.grad(lambda m, back: geometry.cycle_error(m, back).sum()))
  # Zero error everywhere: the norm's derivative at 0 must not give NaN.
  g0 = np.asarray(grad(identity, identity))
  assert np.all(np.isfinite(g0))
  g1 = np.asarray(grad(mapping_ab, identity))
  assert np.all(np.isfinite(g1)) and np.any(g1 != 0)


def test_forward_backward_mask_invertible_pair_and_corruption():
  mapping_ab, mapping_ba = _contracting_pair()
  mask = np.asarray(_fb_mask(mapping_ab, mapping_ba))
  assert mask.shape == (1, _H, _W) and mask.dtype == np.float32
  npt.assert_array_equal(mask, 1.0)
  # Corrupt mapping_ba by 4 px in the left half of b: pixels of a that land
  # there become inconsistent.
  corrupted = mapping_ba.copy()
  corrupted[:, :, : _W // 2, 0] += 4.0
  mask_bad = np.asarray(_fb_mask(mapping_ab, corrupted))[0]
  x_in_b = mapping_ab[0, ..., 0]
  clearly_left = x_in_b < _W // 2 - 1 - 1e-3  # all 4 neighbours corrupted
  clearly_right = x_in_b > _W // 2 + 1e-3  # no neighbour corrupted
  assert clearly_left.any() and clearly_right.any()
  npt.assert_array_equal(mask_bad[clearly_left], 0.0)
  npt.assert_array_equal(mask_bad[clearly_right], 1.0)


def test_forward_backward_mask_threshold_formula():
  # Uniform flows: f = (d, 0), backward flow (-d + e, 0) -> |f + f_back|^2 = e^2
  # against the threshold alpha1 (d^2 + (d - e)^2) + alpha2 = 1.761 for e = 0.9
  # (consistent) and 1.529 for e = 1.3 (not).
  d, alpha1, alpha2 = 3.0, 0.1, 0.5
  fb = jax.jit(geometry.forward_backward_mask, static_argnums=(2, 3))
  inside_cols = slice(0, _W - 4)  # columns whose match lies inside b
  for e, consistent in ((0.9, 1.0), (1.3, 0.0)):
    assert (e**2 < alpha1 * (d**2 + (d - e) ** 2) + alpha2) == bool(consistent)
    mask = np.asarray(
        fb(_shifted(d, 0.0), _shifted(-d + e, 0.0), alpha1, alpha2)
    )[0]
    npt.assert_array_equal(mask[:, inside_cols], consistent)
  # The default alphas (UnFlow 0.01 / 0.5) reject e = 0.9 at d = 3:
  # 0.81 > 0.01 * (9 + 4.41) + 0.5.
  mask = np.asarray(_fb_mask(_shifted(d, 0.0), _shifted(-d + 0.9, 0.0)))[0]
  npt.assert_array_equal(mask[:, inside_cols], 0.0)
