"""Tests for semcorr_jax.geometry.grids: grids, normalisation, resizing.

Inputs are built with numpy and the functions under test are jitted: on CPU one
compile per function is far cheaper than eager op-by-op dispatch.
"""

import functools

import jax
import numpy as np
from numpy import testing as npt

from semcorr_jax import geometry

_normalize = jax.jit(geometry.normalize_coords, static_argnums=(1, 2))
_denormalize = jax.jit(geometry.denormalize_coords, static_argnums=(1, 2))
_rescale = jax.jit(geometry.rescale_coords, static_argnums=(1, 2))
_resize_images = jax.jit(geometry.resize_images, static_argnums=1)
_resize_mapping = jax.jit(geometry.resize_mapping, static_argnums=(1, 2, 3))


def np_grid(h, w):
  xs, ys = np.meshgrid(np.arange(w), np.arange(h))
  return np.stack([xs, ys], -1).astype(np.float32)


def test_pixel_grid_is_x_first():
  grid = np.asarray(geometry.pixel_grid(3, 4))
  assert grid.shape == (3, 4, 2)
  assert grid.dtype == np.float32
  # Row 2, column 1 -> (x, y) = (1, 2).
  npt.assert_array_equal(grid[2, 1], [1.0, 2.0])
  npt.assert_array_equal(grid, np_grid(3, 4))


def test_normalize_corners_and_centre():
  h, w = 5, 9
  pts = np.array(
      [[0.0, 0.0], [w - 1, h - 1], [(w - 1) / 2, (h - 1) / 2], [2.0, 1.0]],
      np.float32,
  )
  pts_n = np.asarray(_normalize(pts, h, w))
  npt.assert_allclose(pts_n[0], [-1.0, -1.0], atol=1e-6)
  npt.assert_allclose(pts_n[1], [1.0, 1.0], atol=1e-6)
  npt.assert_allclose(pts_n[2], [0.0, 0.0], atol=1e-6)
  # x uses W, y uses H: 2 * 2 / 8 - 1 = -0.5, 2 * 1 / 4 - 1 = -0.5.
  npt.assert_allclose(pts_n[3], [-0.5, -0.5], atol=1e-6)


def test_denormalize_corners_and_round_trip():
  h, w = 6, 11
  corners = _denormalize(
      np.array([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0]], np.float32), h, w
  )
  npt.assert_allclose(
      corners, [[0.0, 0.0], [w - 1, h - 1], [w - 1, 0.0]], atol=1e-6
  )
  pts = (
      np.random.default_rng(0).uniform(-3.0, 12.0, (4, 7, 2)).astype(np.float32)
  )
  npt.assert_allclose(_denormalize(_normalize(pts, h, w), h, w), pts, atol=1e-5)


def test_normalize_single_pixel_axis_is_finite():
  pts_n = np.asarray(_normalize(np.zeros((3, 2), np.float32), 1, 1))
  npt.assert_allclose(pts_n, -np.ones((3, 2)), atol=1e-6)
  npt.assert_allclose(_denormalize(pts_n, 1, 1), np.zeros((3, 2)), atol=1e-5)


def test_flow_mapping_round_trip():
  mapping = (
      np.random.default_rng(1).normal(size=(2, 3, 4, 2)).astype(np.float32)
  )
  flow = np.asarray(jax.jit(geometry.mapping_to_flow)(mapping))
  npt.assert_allclose(flow, mapping - np_grid(3, 4), atol=1e-6)
  npt.assert_allclose(
      flow[0, 2, 1], mapping[0, 2, 1] - np.array([1.0, 2.0]), atol=1e-6
  )
  npt.assert_allclose(
      jax.jit(geometry.flow_to_mapping)(flow), mapping, atol=1e-6
  )


def test_rescale_coords_keeps_normalised_location():
  pts = np.array(
      [[0.0, 0.0], [19.0, 19.0], [9.5, 4.75], [-1.0, 21.0]], np.float32
  )
  out = np.asarray(_rescale(pts, (20, 20), (320, 160)))
  # x scales by (160 - 1) / 19, y by (320 - 1) / 19.
  npt.assert_allclose(
      out, pts * np.array([159.0 / 19.0, 319.0 / 19.0]), rtol=1e-6
  )
  npt.assert_allclose(
      _normalize(out, 320, 160), _normalize(pts, 20, 20), atol=1e-6
  )


def test_in_bounds():
  pts = np.array(
      [[0.0, 0.0], [6.0, 4.0], [6.01, 0.0], [-0.01, 2.0], [3.0, 4.5]],
      np.float32,
  )
  npt.assert_array_equal(
      jax.jit(geometry.in_bounds, static_argnums=(1, 2))(pts, 5, 7),
      [1.0, 1.0, 0.0, 0.0, 0.0],
  )


def test_resize_mapping_identity_20_to_320():
  out = np.asarray(
      _resize_mapping(np_grid(20, 20)[None], (320, 320), (20, 20), (320, 320))
  )
  assert out.shape == (1, 320, 320, 2)
  npt.assert_allclose(out[0], np_grid(320, 320), atol=1e-4)  # 1 ulp at 319


def test_resize_mapping_rescales_values_independently_of_the_field():
  # A constant field: resampling the field changes nothing, only the values are
  # rescaled.
  const = np.broadcast_to(np.array([3.0, 7.0], np.float32), (1, 4, 5, 2))
  out = _resize_mapping(const, (9, 13), (10, 20), (19, 39))
  npt.assert_allclose(
      out, np.broadcast_to([6.0, 14.0], (1, 9, 13, 2)), rtol=1e-6
  )


def test_resize_images_matches_hand_values():
  # 1 x 2 -> 1 x 3 with align_corners: ends kept, middle is the average.
  x = np.array([1.0, 5.0], np.float32).reshape(1, 1, 2, 1)
  npt.assert_allclose(
      np.asarray(_resize_images(x, (1, 3)))[0, 0, :, 0],
      [1.0, 3.0, 5.0],
      atol=1e-6,
  )
  # 2 x 2 -> 4 x 4: output (i, j) sits at input (i / 3, j / 3).
  img = np.random.default_rng(2).uniform(size=(2, 2, 2, 3)).astype(np.float32)
  t = np.arange(4) / 3.0
  ty, tx = t[:, None, None], t[None, :, None]
  expected = (
      (1 - ty) * (1 - tx) * img[:, 0:1, 0:1]
      + (1 - ty) * tx * img[:, 0:1, 1:2]
      + ty * (1 - tx) * img[:, 1:2, 0:1]
      + ty * tx * img[:, 1:2, 1:2]
  )
  npt.assert_allclose(_resize_images(img, (4, 4)), expected, atol=1e-6)


def test_resize_images_equals_bilinear_sample_at_scaled_grid():
  img = np.random.default_rng(3).uniform(size=(2, 10, 7, 4)).astype(np.float32)
  up = np.asarray(_resize_images(img, (20, 14)))
  coords = np_grid(20, 14) * np.array([6.0 / 13.0, 9.0 / 19.0], np.float32)
  ref = jax.jit(geometry.bilinear_sample)(
      img, np.broadcast_to(coords, (2, 20, 14, 2))
  )
  npt.assert_allclose(up, ref, atol=1e-5)
  # Corners stay corners.
  npt.assert_allclose(up[:, 0, 0], img[:, 0, 0], atol=1e-6)
  npt.assert_allclose(up[:, -1, -1], img[:, -1, -1], atol=1e-6)


def test_resize_images_grad():
  img = np.random.default_rng(4).uniform(size=(1, 3, 4, 2)).astype(np.float32)
  resize = functools.partial(geometry.resize_images, out_hw=(5, 7))
  g = np.asarray(jax.jit(jax.grad(lambda x: resize(x).sum()))(img))
  assert np.all(np.isfinite(g))
  # Every output is a convex combination of inputs, so the input gradients of
  # sum(out) add up to the number of output values (5 * 7 pixels x 2 channels).
  npt.assert_allclose(g.sum(), 5 * 7 * 2, rtol=1e-5)


# --- SFNet's normalised flow ----------------------------------------------------


def test_normalized_flow_units():
  # One cell right and down on a 4x5 grid: 2 / (w - 1) = 0.5 in x, 2/3 in y.
  mapping = np_grid(4, 5)[None] + np.float32(1.0)
  flow = np.asarray(geometry.normalized_flow(mapping, (4, 5)))
  npt.assert_allclose(flow[..., 0], 0.5, rtol=1e-6)
  npt.assert_allclose(flow[..., 1], 2.0 / 3.0, rtol=1e-6)


def test_normalized_to_mapping_inverts_normalized_flow():
  # Mapping from a 3x5 grid into a 4x7 grid (different sizes per axis).
  m = np.random.default_rng(1).random((2, 3, 5, 2)).astype(np.float32) * (
      np.asarray([6.0, 3.0], np.float32))
  flow = geometry.normalized_flow(m, (4, 7))
  npt.assert_allclose(geometry.normalized_to_mapping(flow, (4, 7)), m,
                      rtol=1e-5, atol=1e-5)
  # Zero flow is the align-corners "same place": cell (j, i) of 3x5 ->
  # (6 j / 4, 3 i / 2) in 4x7 cells; on equal grids, the identity.
  zero = np.zeros((1, 3, 5, 2), np.float32)
  got = np.asarray(geometry.normalized_to_mapping(zero, (4, 7)))
  npt.assert_allclose(got[0, 2, 4], [6.0, 3.0], rtol=1e-6)
  npt.assert_allclose(got[0, 1, 2], [3.0, 1.5], rtol=1e-6)
  npt.assert_allclose(geometry.normalized_to_mapping(zero, (3, 5))[0],
                      np_grid(3, 5), atol=1e-6)
  # One normalised unit in x is (w_b - 1) / 2 cells: 3 cells of 7.
  one = zero.copy()
  one[..., 0] = 1.0
  npt.assert_allclose(geometry.normalized_to_mapping(one, (4, 7)) - got,
                      np.broadcast_to([3.0, 0.0], got.shape), rtol=1e-6)
