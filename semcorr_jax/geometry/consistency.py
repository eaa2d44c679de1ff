"""Consistency of two-way matches: composition, cycle error, fw-bw masks.

Mappings follow docs/architecture.md: `mapping_ab` is (B, Ha, Wa, 2) absolute
(x, y) in b's pixels.
"""

import jax
import jax.numpy as jnp

from semcorr_jax.geometry import correlation
from semcorr_jax.geometry import grids
from semcorr_jax.geometry import sampling

# The soft mutual nearest-neighbour filter lives with the correlation ops;
# re-exported under its paper name.
soft_mutual_nn = correlation.mutual_nn_filter


def compose_mappings(mapping_ab: jax.Array, mapping_bc: jax.Array) -> jax.Array:
  """`mapping_ac(p) = mapping_bc(mapping_ab(p))`, reading mapping_bc bilinearly.

  Border handling: mapping_bc is sampled with clamped ('border') coordinates, so
  a point of a that lands slightly outside b reads the nearest edge value of
  mapping_bc instead of a meaningless 0 (a zero-padded *mapping* would be the
  pixel (0, 0), not "no value"). Callers that care should mask with
  `grids.in_bounds(mapping_ab, Hb, Wb)`.

  Args:
    mapping_ab: (B, Ha, Wa, 2) absolute (x, y) in b's pixels.
    mapping_bc: (B, Hb, Wb, 2) absolute (x, y) in c's pixels.

  Returns:
    (B, Ha, Wa, 2) absolute (x, y) in c's pixels.
  """
  return sampling.bilinear_sample(mapping_bc, mapping_ab, padding_mode='border')


def _safe_norm(v: jax.Array) -> jax.Array:
  """Euclidean norm over the last axis, with a finite gradient at 0."""
  # Double-where: exact values, and sqrt never sees 0 on the gradient path.
  sq = jnp.sum(jnp.square(v), axis=-1)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


def cycle_error(mapping_ab: jax.Array, mapping_ba: jax.Array) -> jax.Array:
  """Round-trip distance `|mapping_ba(mapping_ab(p)) - p|` for every p of a.

  Args:
    mapping_ab: (B, Ha, Wa, 2) absolute (x, y) in b's pixels.
    mapping_ba: (B, Hb, Wb, 2) absolute (x, y) in a's pixels.

  Returns:
    (B, Ha, Wa) distance in a's pixels (border-clamped sampling, see
    `compose_mappings`).
  """
  ha, wa = mapping_ab.shape[1], mapping_ab.shape[2]
  round_trip = compose_mappings(mapping_ab, mapping_ba)  # (B, Ha, Wa, 2)
  return _safe_norm(round_trip - grids.pixel_grid(ha, wa, mapping_ab.dtype))


def forward_backward_mask(
    mapping_ab: jax.Array,
    mapping_ba: jax.Array,
    alpha1: float = 0.01,
    alpha2: float = 0.5,
) -> jax.Array:
  """UnFlow forward-backward consistency mask (Meister et al. 2018; JLFC).

  With `f = flow_ab` and `f_back = flow_ba` read at `mapping_ab`
  (border-clamped, see `compose_mappings`), a pixel is consistent iff

    |f + f_back|^2 < alpha1 (|f|^2 + |f_back|^2) + alpha2.

  `f + f_back` is the round-trip error, so the tolerance grows with the motion
  magnitude. Flows are in pixels of the given mappings' grids, so alpha2
  (squared pixels) depends on the resolution: UnFlow's defaults are 0.01 / 0.5;
  JLFC states 0.1 / 0.05 [paper].

  Args:
    mapping_ab: (B, Ha, Wa, 2) absolute (x, y) in b's pixels.
    mapping_ba: (B, Hb, Wb, 2) absolute (x, y) in a's pixels.
    alpha1: relative tolerance.
    alpha2: absolute tolerance in squared pixels.

  Returns:
    (B, Ha, Wa) float32 in {0, 1}, 1 = consistent; no gradient.
  """
  flow_ab = grids.mapping_to_flow(mapping_ab)
  flow_ba = grids.mapping_to_flow(mapping_ba)
  flow_back = sampling.bilinear_sample(
      flow_ba, mapping_ab, padding_mode='border'
  )
  sq_norm = lambda v: jnp.sum(jnp.square(v), axis=-1)
  lhs = sq_norm(flow_ab + flow_back)
  rhs = alpha1 * (sq_norm(flow_ab) + sq_norm(flow_back)) + alpha2
  return jax.lax.stop_gradient((lhs < rhs).astype(mapping_ab.dtype))
