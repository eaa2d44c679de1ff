"""Tests for semcorr_jax.data.warps and .tps: warps, inverses, ground truth."""

import numpy as np
import pytest
import tensorflow as tf

from semcorr_jax.data import tps
from semcorr_jax.data import warps

SIZE = 48


def _seed(*values):
  return tf.constant(values, tf.int64)


def _grid(height=SIZE, width=SIZE):
  return tf.reshape(warps.to_normalized(warps.pixel_grid(height, width),
                                        height, width), (-1, 2))


def _smooth_image(height=SIZE, width=SIZE):
  """Low-frequency colours: bilinear resampling of it is nearly exact."""
  y, x = np.mgrid[:height, :width] / (max(height, width) - 1.0)
  image = np.stack([0.5 + 0.3 * np.sin(2.0 * x + 1.0 * y),
                    0.5 + 0.3 * np.cos(1.5 * y - 0.5 * x),
                    0.3 + 0.4 * x * y], axis=-1)
  return tf.constant(image, tf.float32)


def _inner_mask(height=SIZE, width=SIZE, border=3):
  mask = np.zeros((height, width), np.float32)
  mask[border:-border, border:-border] = 1.0
  return tf.constant(mask)


def _sample(image, coords):
  """Samples (H, W, C) at (H, W, 2) pixel coords with `bilinear_sample`."""
  h, w = coords.shape[:2]
  flat = warps.bilinear_sample(tf.convert_to_tensor(image, tf.float32),
                               tf.reshape(coords, (-1, 2)))
  return tf.reshape(flat, (h, w, -1)).numpy()


def test_grid_conventions_are_x_first_align_corners():
  grid = warps.pixel_grid(3, 5).numpy()
  np.testing.assert_array_equal(grid[2, 4], [4.0, 2.0])
  corners = warps.to_normalized(tf.constant([[0.0, 0.0], [4.0, 2.0]]), 3, 5)
  np.testing.assert_allclose(corners, [[-1, -1], [1, 1]])
  np.testing.assert_allclose(warps.to_pixels(corners, 3, 5),
                             [[0, 0], [4, 2]], atol=1e-6)


def test_bilinear_sample_matches_zero_padded_reference():
  rng = np.random.default_rng(0)
  image = rng.random((5, 7, 2)).astype(np.float32)
  coords = np.concatenate([rng.uniform(-2, 9, (200, 2)),
                           [[0, 0], [6, 4], [-1, 2], [7, 2], [3.5, 2.5]]])
  coords = coords.astype(np.float32)
  expected = []
  for x, y in coords:
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    total = np.zeros(2)
    for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
      w = (1 - abs(x - xi)) * (1 - abs(y - yi))
      if 0 <= xi < 7 and 0 <= yi < 5:
        total += w * image[yi, xi]
    expected.append(total)
  got = warps.bilinear_sample(tf.constant(image), tf.constant(coords))
  np.testing.assert_allclose(got, np.array(expected), atol=1e-5)


def test_affine_inverse_is_exact():
  theta = warps.random_affine(_seed(1, 2), 0.15)
  pts = tf.random.stateless_uniform((100, 2), _seed(3, 4), -1.5, 1.5)
  back = warps.affine_apply(warps.affine_inverse(theta),
                            warps.affine_apply(theta, pts))
  np.testing.assert_allclose(back, pts, atol=1e-5)


def test_tps_interpolates_control_points():
  targets = tps.CONTROL_POINTS + np.random.default_rng(0).uniform(
      -0.4, 0.4, (9, 2))
  coefficients = tps.coefficients_for(targets)
  got = tps.apply(coefficients, tf.constant(tps.CONTROL_POINTS, tf.float32))
  np.testing.assert_allclose(got, targets, atol=1e-5)
  # The identity TPS is the identity everywhere.
  identity = tps.coefficients_for(tps.CONTROL_POINTS)
  pts = tf.random.stateless_uniform((50, 2), _seed(0, 1), -1.5, 1.5)
  np.testing.assert_allclose(tps.apply(identity, pts), pts, atol=1e-5)
  # The precomputed kernel of the pixel grid gives the same S.
  grid = _grid(5, 7)
  np.testing.assert_allclose(
      tps.apply(coefficients, grid, tps.grid_kernel(5, 7)),
      tps.apply(coefficients, grid), atol=1e-5)


def test_tps_jacobian_matches_finite_differences():
  coefficients = tps.random_tps(_seed(3, 7), 0.4)
  pts = tf.random.stateless_uniform((64, 2), _seed(5, 5), -1.2, 1.2)
  _, jac = tps.value_and_jacobian(coefficients, pts)
  h = 1e-3
  for k, step in enumerate(([h, 0.0], [0.0, h])):
    diff = (tps.apply(coefficients, pts + step) -
            tps.apply(coefficients, pts - step)) / (2 * h)
    for c in range(2):
      np.testing.assert_allclose(jac[:, c, k], diff[:, c], atol=2e-3)


def test_random_tps_is_fold_free():
  for i in range(20):
    coefficients = tps.random_tps(_seed(i, 1), 0.4)
    assert tps.min_jacobian_det(coefficients) > 0.2


@tf.function
def _tps_round_trip(seed):
  coefficients = tps.random_tps(seed, 0.4)
  return tps.inverse(coefficients, tps.apply(coefficients, _grid(64, 64)))


def test_tps_inverse_round_trip_error_below_0_05_px():
  grid = _grid(64, 64).numpy()
  tolerance = warps.INVERSE_TOLERANCE_PX * 2 / 63
  for i in range(10):
    x, residual = _tps_round_trip(_seed(i, 9))
    assert np.all(residual.numpy() < tolerance)  # All interior points solved.
    error_px = np.abs(x.numpy() - grid).max() * 63 / 2
    assert error_px < 0.05


def test_color_jitter_range_independence_and_off_switch():
  image = _smooth_image()
  a = warps.color_jitter(image, _seed(1, 1), 0.1).numpy()
  b = warps.color_jitter(image, _seed(1, 2), 0.1).numpy()
  assert a.min() >= 0 and a.max() <= 1
  assert not np.allclose(a, b)
  assert np.abs(a - image.numpy()).max() < 0.35
  assert warps.color_jitter(image, _seed(1, 1), 0.0) is image


def _check_ground_truth(pair, height=SIZE, width=SIZE):
  """Target sampled at mapping_st reproduces the source (and vice versa)."""
  for a, b in (('source', 'target'), ('target', 'source')):
    mapping = pair[f'mapping_{a[0]}{b[0]}'].numpy()
    keep = pair[f'{a}_mask'].numpy() > 0
    keep &= pair[f'valid_{a[0]}{b[0]}'].numpy() > 0
    # Stay a pixel away from the other image's border (zero padding blends in).
    keep &= ((mapping[..., 0] >= 1) & (mapping[..., 0] <= width - 2) &
             (mapping[..., 1] >= 1) & (mapping[..., 1] <= height - 2))
    assert keep.mean() > 0.1
    warped = _sample(pair[f'{b}_image'], mapping)
    err = np.abs(warped - pair[f'{a}_image'].numpy())[keep]
    assert err.max() < 0.03 and err.mean() < 0.005


@pytest.mark.parametrize('kind', ['affine', 'tps', 'mixed'])
def test_ground_truth_mapping_reproduces_views(kind):
  config = warps.WarpConfig(warp=kind, color_jitter=0.0, tps_prob=1.0)
  image, mask = _smooth_image(), _inner_mask()
  make = tf.function(lambda s: warps.make_pair(image, mask, s, config))
  for i in range(3):
    pair = make(_seed(i, 11))
    _check_ground_truth(pair)
    # Round trip: mapping_ts read at mapping_st comes back to the pixel.
    mapping_st = pair['mapping_st'].numpy()
    back = _sample(pair['mapping_ts'], mapping_st)
    keep = pair['valid_st'].numpy() > 0
    keep &= ((mapping_st >= 1) & (mapping_st <= SIZE - 2)).all(-1)
    grid = warps.pixel_grid(SIZE, SIZE).numpy()
    # Exact for affine maps. For TPS, reading mapping_ts bilinearly between
    # pixels adds interpolation error, large where a view is strongly
    # magnified; the exact round trip is tested below.
    err = np.abs(back - grid)[keep]
    assert err.max() < {'affine': 1e-3, 'tps': 0.25, 'mixed': 0.5}[kind]
    assert err.mean() < {'affine': 1e-4, 'tps': 0.02, 'mixed': 0.05}[kind]


def test_stored_mappings_invert_the_warps_exactly():
  config = warps.WarpConfig(warp='mixed', tps_prob=1.0)
  image = _smooth_image()
  grid = warps.pixel_grid(SIZE, SIZE).numpy().reshape(-1, 2)
  for i in range(3):
    warp_s = warps.random_warp(_seed(i, 21), config)
    warp_t = warps.random_warp(_seed(i, 22), config)
    pair = warps.render_pair(image, image, _inner_mask(), warp_s, warp_t)
    for a, b, (wa, wb) in (('s', 't', (warp_s, warp_t)),
                           ('t', 's', (warp_t, warp_s))):
      mapping = tf.reshape(pair[f'mapping_{a}{b}'], (-1, 2))
      # T_a^-1(T_b(mapping_ab(p))) must be p: both views see the same point.
      back, solved = wa.inverse(
          wb.forward(warps.to_normalized(mapping, SIZE, SIZE)), 1e-4)
      back = warps.to_pixels(back, SIZE, SIZE).numpy()
      keep = pair[f'valid_{a}{b}'].numpy().reshape(-1) > 0
      assert keep.mean() > 0.1 and solved.numpy()[keep].all()
      assert np.abs(back - grid)[keep].max() < 0.05


def test_masks_are_binary_and_cut_to_the_common_region():
  config = warps.WarpConfig(warp='mixed', affine_std=0.25)
  mask = tf.ones((SIZE, SIZE))
  for i in range(4):
    pair = warps.make_pair(_smooth_image(), mask, _seed(i, 3), config)
    for a, b in (('source', 'target'), ('target', 'source')):
      m = pair[f'{a}_mask'].numpy()
      valid = pair[f'valid_{a[0]}{b[0]}'].numpy()
      assert set(np.unique(m)) <= {0.0, 1.0}
      assert set(np.unique(valid)) <= {0.0, 1.0}
      assert np.all(m <= valid)  # Foreground only where visible in the other.
      # Foreground lands on (or next to) the other view's foreground.
      hits = _sample(pair[f'{b}_mask'][..., None],
                     pair[f'mapping_{a[0]}{b[0]}'])[..., 0][m > 0]
      assert np.mean(hits > 0) > 0.99


def test_mapping_is_stored_x_first():
  # Source view = base shifted by +0.25 (normalised) along x; target = base.
  shift = tf.constant([[1.0, 0.0, 0.25], [0.0, 1.0, 0.0]])
  pair = warps.render_pair(_smooth_image(), _smooth_image(), _inner_mask(),
                           warps.Warp(shift, None),
                           warps.Warp(tf.eye(2, 3), None))
  grid = warps.pixel_grid(SIZE, SIZE).numpy()
  flow = pair['mapping_st'].numpy() - grid
  np.testing.assert_allclose(flow[..., 0], 0.25 * (SIZE - 1) / 2, atol=1e-4)
  np.testing.assert_allclose(flow[..., 1], 0.0, atol=1e-4)
  # Pixels whose match would leave the target are invalid: the right part.
  valid = pair['valid_st'].numpy()
  assert valid[:, :SIZE - 6].all() and not valid[:, -5:].any()
  _check_ground_truth(pair)


def test_make_pair_is_a_pure_function_of_the_seed():
  config = warps.WarpConfig(warp='mixed')
  image, mask = _smooth_image(), _inner_mask()
  eager = warps.make_pair(image, mask, _seed(4, 2), config)
  ds = tf.data.Dataset.from_tensors(_seed(4, 2)).map(
      lambda s: warps.make_pair(image, mask, s, config))
  graph = next(iter(ds))
  other = warps.make_pair(image, mask, _seed(4, 3), config)
  for key in eager:
    # Graph optimisations may reorder float ops: equal up to round-off.
    np.testing.assert_allclose(eager[key], graph[key], atol=1e-4)
  assert not np.allclose(eager['source_image'], other['source_image'])
