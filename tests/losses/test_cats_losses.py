"""CATs' loss (semcorr_jax/losses/cats.py): keypoint flow, EPE, sampling."""

import jax
import jax.numpy as jnp
import numpy as np

from semcorr_jax.losses import cats as losses


def _flow(source, target, valid, image_hw=(4, 4), grid_hw=(4, 4), **kw):
  flow, covered = losses.keypoint_flow(
      jnp.asarray(source, jnp.float32)[None],
      jnp.asarray(target, jnp.float32)[None],
      jnp.asarray(valid, jnp.float32)[None], image_hw, grid_hw, **kw)
  return np.asarray(flow[0]), np.asarray(covered[0])


def test_keypoint_flow_hand_case():
  """Cells are pixels here (4x4 image, 4x4 grid). Target (1, 1) -> source
  (3, 2) covers the cells within 17/16 of it, x and y in {0, 1, 2}; target
  (2, 2) -> (2, 4) covers {1, 2, 3}; shared cells get the mean of the two
  displacements; a padded row (valid 0) counts for nothing."""
  flow, covered = _flow([[3, 2], [2, 4], [0, 0]],
                        [[1, 1], [2, 2], [3, 3]], [1, 1, 0])
  want_cov = np.zeros((4, 4))
  want_cov[0:3, 0:3] = 1
  want_cov[1:4, 1:4] = 1
  np.testing.assert_array_equal(covered, want_cov)
  np.testing.assert_allclose(flow[0, 0], [2, 1])           # (x, y) = (0, 0)
  np.testing.assert_allclose(flow[2, 0], [2, 1])           # (0, 2)
  np.testing.assert_allclose(flow[1, 2], [1.0, 1.5])       # both
  np.testing.assert_allclose(flow[3, 3], [0, 2])           # second only
  np.testing.assert_allclose(flow[3, 0], [0, 0])           # uncovered
  assert covered[3, 0] == 0 and covered[0, 3] == 0


def test_keypoint_flow_units_and_box_edges():
  """A 7x7 image on a 4x4 grid: a pixel is half a cell (align corners,
  x (4 - 1) / (7 - 1)); displacements are in cells. The box is inclusive
  at `radius` and excludes what lies beyond."""
  # Target pixel (2, 2) = cell (1, 1); source pixel (6, 4) = cell (3, 2).
  flow, covered = _flow([[6, 4]], [[2, 2]], [1], (7, 7), (4, 4), radius=1.0)
  np.testing.assert_allclose(flow[1, 1], [2, 1])
  want = np.zeros((4, 4))
  want[0:3, 0:3] = 1  # |cell - 1| <= 1 on both axes
  np.testing.assert_array_equal(covered, want)
  _, covered = _flow([[6, 4]], [[2, 2]], [1], (7, 7), (4, 4), radius=0.99)
  assert covered.sum() == 1 and covered[1, 1] == 1


def test_endpoint_error_mean_over_covered_cells():
  flow = np.zeros((2, 2, 2, 2), np.float32)
  gt = np.zeros_like(flow)
  gt[0, 0, 0] = [3, 4]      # EPE 5, covered
  gt[1, 1, 1] = [0, 1]      # EPE 1, covered
  gt[0, 1, 1] = [100, 0]    # not covered: ignored
  covered = np.zeros((2, 2, 2), np.float32)
  covered[0, 0, 0] = covered[1, 1, 1] = covered[1, 0, 0] = 1  # EPE 0 there
  epe = losses.endpoint_error(jnp.asarray(flow), jnp.asarray(gt),
                              jnp.asarray(covered))
  np.testing.assert_allclose(float(epe), (5 + 1 + 0) / 3, rtol=1e-6)


def test_endpoint_error_gradients_are_finite_at_zero_and_when_empty():
  flow = jnp.zeros((1, 2, 2, 2))
  grad = jax.grad(losses.endpoint_error)(flow, flow, jnp.ones((1, 2, 2)))
  assert np.all(np.asarray(grad) == 0)
  empty = jnp.zeros((1, 2, 2))
  assert float(losses.endpoint_error(flow + 1, flow, empty)) == 0.0
  grad = jax.grad(losses.endpoint_error)(flow + 1, flow, empty)
  assert np.all(np.asarray(grad) == 0)
  # Away from zero: d|v|/dv = v / |v| for the covered cell, / count.
  gt = jnp.zeros((1, 2, 2, 2)).at[0, 0, 0].set(jnp.array([3.0, 4.0]))
  cov = jnp.zeros((1, 2, 2)).at[0, 0, 0].set(1.0).at[0, 1, 1].set(1.0)
  grad = jax.grad(losses.endpoint_error)(flow, gt, cov)
  np.testing.assert_allclose(grad[0, 0, 0], [-0.3, -0.4], rtol=1e-6)


def test_sample_keypoints_reads_the_dense_ground_truth():
  """Only 3 pixels have weight: all 3 are drawn (distinct), marked valid,
  and their sources are mapping_ts there; the other 2 draws are invalid."""
  h, w = 5, 6
  ys, xs = np.mgrid[0:h, 0:w]
  mapping = np.stack([xs * 10.0, ys * 100.0], -1)[None].astype(np.float32)
  weight = np.zeros((1, h, w), np.float32)
  picks = {(1, 2), (4, 0), (5, 3)}  # (x, y)
  for x, y in picks:
    weight[0, y, x] = 1.0 + x
  src, tgt, valid = jax.jit(losses.sample_keypoints, static_argnums=3)(
      jax.random.PRNGKey(3), jnp.asarray(mapping), jnp.asarray(weight), 5)
  src, tgt, valid = map(np.asarray, (src, tgt, valid))
  assert valid.shape == (1, 5) and valid.sum() == 3
  drawn = {tuple(int(v) for v in p) for p in tgt[0][valid[0] > 0]}
  assert drawn == picks
  np.testing.assert_allclose(src[0][valid[0] > 0],
                             tgt[0][valid[0] > 0] * [10.0, 100.0])
  assert len({tuple(p) for p in tgt[0]}) == 5  # without replacement


def test_sample_keypoints_follows_the_weights():
  """Drawing 1 of 2 pixels with weights 1 : 3 picks the heavier ~3/4 of the
  time; a pair without weight yields no valid point."""
  weight = np.zeros((2, 1, 2), np.float32)
  weight[0, 0] = [1.0, 3.0]
  mapping = jnp.zeros((2, 1, 2, 2))
  sample = jax.jit(jax.vmap(
      lambda k: losses.sample_keypoints(k, mapping, jnp.asarray(weight), 1)))
  _, tgt, valid = sample(jax.random.split(jax.random.PRNGKey(0), 2000))
  heavy = float(np.mean(np.asarray(tgt)[:, 0, 0, 0] == 1))
  assert abs(heavy - 0.75) < 0.04
  assert np.all(np.asarray(valid)[:, 0] == 1)
  assert np.all(np.asarray(valid)[:, 1] == 0)
