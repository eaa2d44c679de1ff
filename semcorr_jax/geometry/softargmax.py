"""Correlation -> mapping read-outs: soft-argmax, kernel soft-argmax, argmax.

All take `corr_ab` of shape `(B, Ha, Wa, Hb, Wb)` and return `mapping_ab` of
shape `(B, Ha, Wa, 2)`: for every a-cell the absolute `(x, y)` in b's
cells/pixels (x first, cell centres at integers), see docs/architecture.md. To
get SFNet's normalised grid use `grids.normalize_coords(mapping, Hb, Wb)`; this
equals SFNet's expectation over `linspace(-1, 1, W)` because the expectation is
linear.
"""

from typing import Optional

import jax
import jax.numpy as jnp


def _softmax_over_b(logits: jax.Array) -> jax.Array:
  """Softmax over the last two axes (jax.nn.softmax subtracts the max first)."""
  b, ha, wa, hb, wb = logits.shape
  p = jax.nn.softmax(logits.reshape(b, ha, wa, hb * wb), axis=-1)
  return p.reshape(b, ha, wa, hb, wb)


def _expected_coords(prob: jax.Array) -> jax.Array:
  """Expected (x, y) of a distribution over b cells.

  Args:
    prob: (B, Ha, Wa, Hb, Wb), summing to 1 over the last two axes.

  Returns:
    (B, Ha, Wa, 2).
  """
  hb, wb = prob.shape[-2], prob.shape[-1]
  # Marginalise first (as SFNet does), then a weighted sum: a reduction, not a
  # matmul, so no TF32.
  px = jnp.sum(prob, axis=-2)  # (B, Ha, Wa, Wb)
  py = jnp.sum(prob, axis=-1)  # (B, Ha, Wa, Hb)
  x = jnp.sum(px * jnp.arange(wb, dtype=prob.dtype), axis=-1)
  y = jnp.sum(py * jnp.arange(hb, dtype=prob.dtype), axis=-1)
  return jnp.stack([x, y], axis=-1)


def soft_argmax(corr_ab: jax.Array, beta: float) -> jax.Array:
  """Expected b position under `softmax_b(beta * corr_ab)`.

  Temperature: `1 / beta` (beta is the inverse temperature multiplying the
  scores; CATs' temperature 0.02 is beta = 50). The max over b is subtracted
  before `exp` for stability.

  Args:
    corr_ab: (B, Ha, Wa, Hb, Wb).
    beta: inverse temperature (> 0).

  Returns:
    (B, Ha, Wa, 2) mapping_ab, absolute (x, y) in b's cells.
  """
  return _expected_coords(_softmax_over_b(beta * corr_ab))


def gaussian_around_argmax(corr_ab: jax.Array, sigma: float = 5.0) -> jax.Array:
  """SFNet's 2-D Gaussian window centred at each a-cell's hard argmax over b.

  `exp(-((x - x*)^2 + (y - y*)^2) / (2 sigma^2))` with (x, y) integer b-cell
  coordinates and (x*, y*) the argmax (first one on ties). The argmax is not
  differentiable, so it is under `stop_gradient`.

  Args:
    corr_ab: (B, Ha, Wa, Hb, Wb).
    sigma: standard deviation in b cells.

  Returns:
    (B, Ha, Wa, Hb, Wb) kernel with values in (0, 1], 1 at the argmax.
  """
  peak = jax.lax.stop_gradient(hard_argmax(corr_ab))  # (B, Ha, Wa, 2)
  hb, wb = corr_ab.shape[-2], corr_ab.shape[-1]
  xs = jnp.arange(wb, dtype=corr_ab.dtype)
  ys = jnp.arange(hb, dtype=corr_ab.dtype)
  dx2 = jnp.square(xs - peak[..., 0:1])  # (B, Ha, Wa, Wb)
  dy2 = jnp.square(ys - peak[..., 1:2])  # (B, Ha, Wa, Hb)
  d2 = dy2[..., :, None] + dx2[..., None, :]  # (B, Ha, Wa, Hb, Wb)
  return jnp.exp(-d2 / (2.0 * sigma**2))


def kernel_soft_argmax(
    corr_ab: jax.Array, beta: Optional[float] = 50.0, sigma: float = 5.0
) -> jax.Array:
  """SFNet kernel soft-argmax (`find_correspondence`, reference-facts §A.4).

  1. hard argmax over b (no gradient);
  2. multiply corr by a Gaussian of std `sigma` b-cells around it, which
     suppresses distant secondary modes;
  3. `softmax_b(beta * (kernel * corr))`: temperature `1 / beta` (SFNet
     default beta = 50), max subtracted first;
  4. expected (x, y).

  Args:
    corr_ab: (B, Ha, Wa, Hb, Wb), normally the L2-normalised-over-b correlation.
    beta: inverse temperature; None returns the discrete `hard_argmax`, as SFNet
      does for beta=None.
    sigma: Gaussian std in b cells (SFNet: 5 on a 20x20 grid).

  Returns:
    (B, Ha, Wa, 2) mapping_ab, absolute (x, y) in b's cells.
  """
  if beta is None:
    return hard_argmax(corr_ab)
  modulated = gaussian_around_argmax(corr_ab, sigma) * corr_ab
  return _expected_coords(_softmax_over_b(beta * modulated))


def hard_argmax(corr_ab: jax.Array) -> jax.Array:
  """Discrete argmax over b (first maximum on ties); zero gradient.

  Args:
    corr_ab: (B, Ha, Wa, Hb, Wb).

  Returns:
    (B, Ha, Wa, 2) mapping_ab, integer-valued (x, y) in b's cells, float dtype
    of corr_ab.
  """
  b, ha, wa, hb, wb = corr_ab.shape
  idx = jnp.argmax(corr_ab.reshape(b, ha, wa, hb * wb), axis=-1)
  x = (idx % wb).astype(corr_ab.dtype)
  y = (idx // wb).astype(corr_ab.dtype)
  return jax.lax.stop_gradient(jnp.stack([x, y], axis=-1))
