"""Feature normalisation and 4-D correlation volumes.

Layouts are explicit: `corr_ab` has shape `(B, Ha, Wa, Hb, Wb)`; "over b" means
a reduction over the last two axes, "over a" over axes 1 and 2
(docs/architecture.md).
"""

from typing import Optional

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-6) -> jax.Array:
  """SFNet / NCNet feature normalisation `x / sqrt(sum(x^2) + eps)`.

  The eps sits inside the square root (not `max(norm, eps)`), as in the
  references.

  Args:
    x: array, e.g. (B, H, W, C) features.
    axis: axis to normalise along (channels by default).
    eps: added to the squared norm.

  Returns:
    Array of x's shape.
  """
  return x / jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True) + eps)


def correlation_4d(
    feat_a: jax.Array,
    feat_b: jax.Array,
    precision: Optional[jax.lax.PrecisionLike] = None,
) -> jax.Array:
  """Dense 4-D correlation of two feature maps (plain dot products).

  `corr_ab[n, ia, ja, ib, jb] = <feat_a[n, ia, ja], feat_b[n, ib, jb]>`, one
  einsum. The caller normalises the features (e.g. `l2_normalize`) and applies
  ReLU if the method wants it.

  Args:
    feat_a: (B, Ha, Wa, C).
    feat_b: (B, Hb, Wb, C).
    precision: einsum precision (None: JAX's default, which is TF32 on recent
      NVIDIA GPUs; pass `jax.lax.Precision.HIGHEST` for float32-exact products).

  Returns:
    (B, Ha, Wa, Hb, Wb) corr_ab.
  """
  return jnp.einsum('nijc,nklc->nijkl', feat_a, feat_b, precision=precision)


def transpose_4d(corr: jax.Array) -> jax.Array:
  """Swaps sides: (B, Ha, Wa, Hb, Wb) corr_ab -> (B, Hb, Wb, Ha, Wa) corr_ba."""
  return jnp.transpose(corr, (0, 3, 4, 1, 2))


def normalize_over_b(corr: jax.Array, eps: float = 1e-6) -> jax.Array:
  """L2-normalises each a-cell's row over b: `c / sqrt(sum_b c^2 + eps)`.

  SFNet normalises the product `corr3 * corr4` this way along its target
  ("channel") dims.

  Args:
    corr: (B, Ha, Wa, Hb, Wb).
    eps: added to the squared norm.

  Returns:
    (B, Ha, Wa, Hb, Wb).
  """
  return corr / jnp.sqrt(
      jnp.sum(jnp.square(corr), axis=(-2, -1), keepdims=True) + eps
  )


def normalize_over_a(corr: jax.Array, eps: float = 1e-6) -> jax.Array:
  """L2-normalises each b-cell's column over a: `c / sqrt(sum_a c^2 + eps)`.

  Args:
    corr: (B, Ha, Wa, Hb, Wb).
    eps: added to the squared norm.

  Returns:
    (B, Ha, Wa, Hb, Wb).
  """
  return corr / jnp.sqrt(
      jnp.sum(jnp.square(corr), axis=(1, 2), keepdims=True) + eps
  )


def mutual_nn_filter(corr: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Soft mutual nearest-neighbour filter (NCNet `MutualMatching`, CATs).

  `c * (c / (max_a c + eps)) * (c / (max_b c + eps))`: a cell keeps its score
  (times 1 * 1) only if it is the maximum of both its row (over b) and its
  column (over a). Meant for non-negative correlations (NCNet applies it to
  ReLU'd / positive scores); with negative maxima the ratios change sign.

  Args:
    corr: (B, Ha, Wa, Hb, Wb) corr_ab.
    eps: added to each maximum.

  Returns:
    (B, Ha, Wa, Hb, Wb).
  """
  # (B, 1, 1, Hb, Wb): best a for each b cell; (B, Ha, Wa, 1, 1): best b for
  # each a cell.
  max_over_a = jnp.max(corr, axis=(1, 2), keepdims=True)
  max_over_b = jnp.max(corr, axis=(3, 4), keepdims=True)
  return corr * (corr / (max_over_a + eps)) * (corr / (max_over_b + eps))
