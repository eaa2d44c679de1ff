"""CATs' training loss: end-point error against keypoint flow (§C.2).

  keypoint_flow     ground-truth flow per target cell from sparse keypoints
                    (the reference's `KeypointToFlow`)
  endpoint_error    mean end-point error over the supervised cells (`EPE`
                    with `sparse=True`)
  sample_keypoints  keypoints of a synthetic pair: target pixels drawn from a
                    weight map, their sources read from the dense ground truth

Grid and units (docs/architecture.md): cell centres sit at integers and the
S x S grid spans the image corner to corner (align corners), so a pixel x
of a W-wide image is the cell coordinate x (S - 1) / (W - 1). Flows are in
source cells, for every target cell (`mapping_ts` minus the cell grid).

The reference's grid is the other corner convention (cell i centred at
pixel 16 i + 8 of a 256-pixel image, flow divided by 16); its receptive box
is 35 px around the centre, 17 px = 17/16 cells to each side, which is our
default `radius` in cells. Where several keypoints fall in one cell's box,
the reference writes `src_k - mean(covering targets)` for one of them
(a scatter with repeated indices); we take the mean over the covering
keypoints of `src_k - trg_k`, which is the same number for one keypoint
and does not depend on the write order. The reference also drops a cell
whose flow is exactly (0, 0); here only cells that no keypoint covers are
dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from semcorr_jax import geometry

Array = jax.Array

# CATs' receptive box: 35 px (17 px to each side) on a 16-px cell grid.
DEFAULT_RADIUS = 17.0 / 16.0


def keypoint_flow(source_points: Array, target_points: Array, valid: Array,
                  image_hw: Sequence[int], grid_hw: Sequence[int],
                  radius: float = DEFAULT_RADIUS) -> tuple[Array, Array]:
  """Ground-truth flow on the target grid from keypoint pairs.

  Cell c (x, y) is covered by keypoint k when the target point lies in the
  box |t_k - c| <= radius (both axes, inclusive, in cells); a covered cell
  gets the mean of (s_k - t_k) over its covering keypoints.

  Args:
    source_points: (B, K, 2) (x, y) in source pixels.
    target_points: (B, K, 2) (x, y) in target pixels.
    valid: (B, K) 1 for an annotated pair of points, 0 for padding.
    image_hw: (H, W) of both images.
    grid_hw: (h, w) of the feature grid.
    radius: half side of a cell's box, in cells.

  Returns:
    flow: (B, h, w, 2) (x, y) displacement in cells (0 where uncovered);
    covered: (B, h, w) float32 in {0, 1}.
  """
  h, w = int(grid_hw[0]), int(grid_hw[1])
  t = geometry.rescale_coords(target_points, image_hw, grid_hw)
  s = geometry.rescale_coords(source_points, image_hw, grid_hw)
  keep = valid > 0.5
  in_x = jnp.abs(t[..., 0:1] - jnp.arange(w, dtype=t.dtype)) <= radius
  in_y = jnp.abs(t[..., 1:2] - jnp.arange(h, dtype=t.dtype)) <= radius
  cover = (in_y[..., :, None] & in_x[..., None, :] &
           keep[..., None, None]).astype(jnp.float32)  # (B, K, h, w)
  count = jnp.sum(cover, axis=1)
  total = jnp.einsum('bkhw,bkc->bhwc', cover, s - t,
                     precision=jax.lax.Precision.HIGHEST)
  flow = total / jnp.maximum(count, 1.0)[..., None]
  return (jax.lax.stop_gradient(flow),
          jax.lax.stop_gradient((count > 0).astype(jnp.float32)))


def _safe_norm(v: Array) -> Array:
  """|v| over the last axis with a zero (not NaN) gradient at v = 0."""
  sq = jnp.sum(jnp.square(v), axis=-1)
  nonzero = sq > 0
  return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def endpoint_error(flow: Array, flow_gt: Array, covered: Array) -> Array:
  """Mean |flow - flow_gt| over the covered cells of the whole batch.

  Args:
    flow: (B, h, w, 2) predicted flow.
    flow_gt: (B, h, w, 2) ground-truth flow.
    covered: (B, h, w) 1 where the ground truth is defined.

  Returns:
    () the mean end-point error; 0 (with zero gradient) if nothing is
    covered.
  """
  covered = jax.lax.stop_gradient(covered)
  epe = _safe_norm(flow - flow_gt)
  return jnp.sum(epe * covered) / jnp.maximum(jnp.sum(covered), 1.0)


def sample_keypoints(rng: Array, mapping_ts: Array, weight: Array,
                     num_points: int) -> tuple[Array, Array, Array]:
  """Keypoint pairs of synthetic pairs from the dense ground truth.

  Per pair, `num_points` distinct target pixels are drawn with probability
  proportional to `weight` (e.g. foreground visible in both images); their
  source points are the ground-truth `mapping_ts` there. Pixels of weight 0
  are drawn only when fewer than `num_points` have a positive weight, and
  are then marked invalid.

  Args:
    rng: PRNG key.
    mapping_ts: (B, H, W, 2) ground truth, target pixel -> source (x, y).
    weight: (B, H, W) non-negative.
    num_points: K, at most H * W.

  Returns:
    source_points (B, K, 2), target_points (B, K, 2) in pixels, and valid
    (B, K) float32 in {0, 1}.
  """
  b, h, w = weight.shape
  k = min(int(num_points), h * w)
  flat_w = weight.reshape(b, h * w).astype(jnp.float32)
  total = jnp.sum(flat_w, axis=-1, keepdims=True)
  prob = jnp.where(total > 0, flat_w / jnp.maximum(total, 1e-30),
                   1.0 / (h * w))

  def one(key, p):
    return jax.random.choice(key, h * w, (k,), replace=False, p=p)

  idx = jax.vmap(one)(jax.random.split(rng, b), prob)  # (B, K)
  target = jnp.stack([idx % w, idx // w], axis=-1).astype(mapping_ts.dtype)
  source = jnp.take_along_axis(mapping_ts.reshape(b, h * w, 2),
                               idx[..., None], axis=1)
  valid = (jnp.take_along_axis(flat_w, idx, axis=1) > 0).astype(jnp.float32)
  return (jax.lax.stop_gradient(source), target, valid)
