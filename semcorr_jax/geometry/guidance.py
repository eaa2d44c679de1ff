"""Confident-match guidance: mutual consistency, pruning, soft-argmax, MLS.

Pure functions of Guided Semantic Flow's pruning, propagation and matching
modules (paper 001, Sec. 4.1, Eq. 4-8), also usable on their own:

  Q   = mutual_consistency(C)                       Eq. 4
  Q'  = truncate(Q * F(Q), rho), S = confident_cells(Q')   Eq. 5
  G   = guidance_displacement(Q', beta)             Eq. 6 (fixed, see below)
  G'  = mls_interpolate(G, S, c_p)                  Eq. 7
  C'  = gaussian_modulation(C, i + G', c_m)         Eq. 8 (fixed, see below)

The equations as printed have two defects here, which these functions fix:

- Eq. 6 has no temperature. Q' is 0 or in (rho, 1], so a softmax over all
  target cells is almost flat (one kept entry of 0.95 among 400 cells gets
  under 1% of the weight) and G collapses towards "grid centre - i". We take
  the softmax over the kept entries only (Q'_ij > 0), with an inverse
  temperature beta on Q'.
- Eq. 8 centres the Gaussian at G'_i, a displacement. The centre must be the
  matched position i + G'_i; `gaussian_modulation` takes absolute centres and
  the caller adds i.

Conventions (docs/architecture.md): points are (x, y), x first, in cells with
cell centres at integers; `corr` is (B, hs, ws, ht, wt) (source cells first);
displacements are (B, h, w, 2) in target cells, `mapping = displacement + i`
(`grids.flow_to_mapping`). Masks and confident sets are float {0, 1} arrays and
carry no gradient. Every function is jittable and keeps values and gradients
finite when S is empty or a row has no kept entry.
"""

import jax
import jax.numpy as jnp

from semcorr_jax.geometry import grids

# Stands in for -inf in masked log-weights: exp() of it minus any real value
# underflows to exactly 0 without producing inf or NaN.
_NEG = -1e30


def mutual_consistency(corr: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Mutual-consistency confidence Q of Eq. 4.

  `c = relu(C)`, then

    Q_ij = c_ij^2 / (max_{i'} c_{i'j} * max_{j'} c_{ij'} + eps).

  Cosine scores C <= 0 are clipped to 0 first, so they get Q = 0 (Eq. 4 on a
  negative C would give a positive ratio of two negative maxima, or divide by
  zero). `eps` keeps rows and columns that are all <= 0 finite (Q = 0 there,
  with finite gradients) and makes Q < 1 strictly: Q = c^2 / (c^2 + eps), i.e.
  1 up to eps / c^2, exactly at mutual nearest neighbours, and smaller
  wherever c_ij is below the maximum of its row or of its column.

  Args:
    corr: (B, hs, ws, ht, wt) cosine similarities in [-1, 1].
    eps: added to the product of the two maxima.

  Returns:
    (B, hs, ws, ht, wt) Q in [0, 1).
  """
  c = jax.nn.relu(corr)
  max_over_source = jnp.max(c, axis=(1, 2), keepdims=True)  # (B,1,1,ht,wt)
  max_over_target = jnp.max(c, axis=(3, 4), keepdims=True)  # (B,hs,ws,1,1)
  return jnp.square(c) / (max_over_source * max_over_target + eps)


def truncate(x: jax.Array, rho: float) -> jax.Array:
  """T(x, rho) of Eq. 5: x where x > rho (strictly), else 0.

  The gradient is 1 on kept entries and 0 on dropped ones (x == rho is
  dropped).

  Args:
    x: any shape, e.g. (B, hs, ws, ht, wt) pruned confidences Q * F(Q).
    rho: threshold (the paper: 0.9).

  Returns:
    Array of x's shape and dtype.
  """
  return jnp.where(x > rho, x, jnp.zeros_like(x))


def confident_cells(q_pruned: jax.Array) -> jax.Array:
  """The confident set S = {i | sum_j Q'_ij != 0} of Sec. 4.1.

  Args:
    q_pruned: (B, hs, ws, ht, wt) truncated confidences Q' >= 0.

  Returns:
    (B, hs, ws) float32, 1 where the row has an entry > 0, else 0; no gradient.
  """
  kept = jnp.any(q_pruned > 0, axis=(-2, -1))
  return jax.lax.stop_gradient(kept.astype(jnp.float32))


def guidance_displacement(
    q_pruned: jax.Array, beta: float
) -> tuple[jax.Array, jax.Array]:
  """Sparse guidance displacements G of Eq. 6, softmax over kept entries.

  For a confident source cell i (a row with some Q'_ij > 0):

    p_ij = exp(beta Q'_ij) / sum_{l: Q'_il > 0} exp(beta Q'_il)   (Q'_ij > 0)
    G_i = sum_j p_ij j - i,

  with p_ij = 0 on dropped entries. This replaces Eq. 6's softmax over all
  cells without a temperature, which is almost flat on values in (rho, 1]
  (see the module docstring). One kept entry gives G_i = j - i exactly. Rows
  with no kept entry (i not in S) get G_i = 0, with zero gradient.

  Args:
    q_pruned: (B, hs, ws, ht, wt) truncated confidences Q' >= 0.
    beta: inverse temperature on Q' (> 0).

  Returns:
    (G, valid): G (B, hs, ws, 2) displacement (dx, dy) in target cells;
    valid (B, hs, ws) float32 = `confident_cells(q_pruned)`.
  """
  b, hs, ws, ht, wt = q_pruned.shape
  kept = (q_pruned > 0).reshape(b, hs, ws, ht * wt)
  logits = (beta * q_pruned).reshape(b, hs, ws, ht * wt)
  row_max = jnp.max(jnp.where(kept, logits, _NEG), axis=-1, keepdims=True)
  row_max = jax.lax.stop_gradient(row_max)
  # The inner where keeps exp's argument at 0 on dropped entries, so neither
  # the value nor the gradient sees exp(_NEG - _NEG) of an empty row.
  shifted = jnp.where(kept, logits - row_max, 0.0)
  weights = jnp.where(kept, jnp.exp(shifted), 0.0)
  total = jnp.sum(weights, axis=-1, keepdims=True)  # >= 1 on non-empty rows
  prob = weights / jnp.where(total > 0, total, 1.0)
  prob = prob.reshape(b, hs, ws, ht, wt)
  x = jnp.sum(jnp.sum(prob, axis=-2) * jnp.arange(wt, dtype=prob.dtype), -1)
  y = jnp.sum(jnp.sum(prob, axis=-1) * jnp.arange(ht, dtype=prob.dtype), -1)
  valid = confident_cells(q_pruned)
  expected = jnp.stack([x, y], axis=-1)  # (B, hs, ws, 2); 0 on empty rows
  displacement = expected - grids.pixel_grid(hs, ws, expected.dtype)
  return jnp.where(valid[..., None] > 0.5, displacement, 0.0), valid


def mls_interpolate(
    displacement: jax.Array,
    valid: jax.Array,
    c_p: float,
    weights: jax.Array | None = None,
) -> jax.Array:
  """Moving-least-squares propagation G' of Eq. 7 (dense, O((hw)^2)).

    G'_i = sum_{s in S} a_s w(s - i) G_s / sum_{s in S} a_s w(s - i),
    w(z) = exp(-|z|^2 / (2 c_p^2)),

  distances in cells, a_s the optional per-cell weights (all 1 in the paper).
  The weights are normalised in log space: the largest log-weight over S is
  subtracted per i, so a confident cell far from i (say 30 cells with c_p = 2,
  where w underflows float32) still gives its value instead of 0 / 0. With S
  empty G' = 0 everywhere, with zero gradient. Cells with valid = 1 but
  weight 0 are treated as outside S.

  Args:
    displacement: (B, h, w, 2) G, read on S only.
    valid: (B, h, w) S in {0, 1}; no gradient.
    c_p: Gaussian width in cells (the paper: 7).
    weights: optional (B, h, w) a_s >= 0, a confidence per cell of S; None
      gives the paper's Eq. 7.

  Returns:
    (B, h, w, 2) dense displacement G'.
  """
  b, h, w, _ = displacement.shape
  dtype = jnp.promote_types(displacement.dtype, jnp.float32)
  mask = jax.lax.stop_gradient(valid).reshape(b, 1, h * w) > 0.5
  points = grids.pixel_grid(h, w, dtype).reshape(h * w, 2)
  dist2 = jnp.sum(jnp.square(points[:, None] - points[None]), axis=-1)
  log_w = (-dist2 / (2.0 * c_p**2))[None]  # (1, i, s)
  if weights is not None:
    a = weights.astype(dtype).reshape(b, 1, h * w)
    mask = mask & (a > 0)
    log_w = log_w + jnp.log(jnp.where(mask, a, 1.0))
  log_w = jnp.where(mask, log_w, _NEG)  # (B, i, s)
  row_max = jax.lax.stop_gradient(jnp.max(log_w, axis=-1, keepdims=True))
  # On an empty S, log_w - row_max is 0 and the mask zeroes it; elsewhere the
  # largest kept term is exp(0) = 1, so the denominator is >= 1.
  kernel = jnp.where(mask, jnp.exp(log_w - row_max), 0.0)
  total = jnp.sum(kernel, axis=-1)[..., None]  # (B, i, 1)
  values = displacement.astype(dtype).reshape(b, h * w, 2)
  numer = jnp.einsum('bis,bsc->bic', kernel, values,
                     precision=jax.lax.Precision.HIGHEST)
  out = numer / jnp.where(total > 0, total, 1.0)
  return out.reshape(b, h, w, 2)


def gaussian_modulation(
    corr: jax.Array, centers: jax.Array, c_m: float
) -> jax.Array:
  """C' of Eq. 8, centred at the matched position: exp(-|j - m_i|^2/2c_m^2) C.

  Eq. 8 as printed centres the Gaussian at G'_i, a displacement; the centre
  must be the absolute position m_i = i + G'_i (`grids.flow_to_mapping(G')`),
  which the caller passes. The centre may be fractional; gradients flow into
  both `corr` and `centers`.

  Args:
    corr: (B, hs, ws, ht, wt) correlation C.
    centers: (B, hs, ws, 2) absolute (x, y) in target cells.
    c_m: Gaussian width in target cells (the paper: 5).

  Returns:
    (B, hs, ws, ht, wt) modulated correlation C'.
  """
  ht, wt = corr.shape[-2], corr.shape[-1]
  xs = jnp.arange(wt, dtype=centers.dtype)
  ys = jnp.arange(ht, dtype=centers.dtype)
  dx2 = jnp.square(xs - centers[..., 0:1])  # (B, hs, ws, wt)
  dy2 = jnp.square(ys - centers[..., 1:2])  # (B, hs, ws, ht)
  dist2 = dy2[..., :, None] + dx2[..., None, :]  # (B, hs, ws, ht, wt)
  return jnp.exp(-dist2 / (2.0 * c_m**2)) * corr


def gaussian_modulation_at_confident(
    corr: jax.Array, centers: jax.Array, valid: jax.Array, c_m: float
) -> jax.Array:
  """Eq. 8 on confident rows only, C elsewhere (the paper's footnote 1).

  The variant of Table 3(a) without MLS propagation: rows i in S are
  modulated around their own guidance centre, the others keep C unchanged.

  Args:
    corr: (B, hs, ws, ht, wt) correlation C.
    centers: (B, hs, ws, 2) absolute (x, y) in target cells (read on S only).
    valid: (B, hs, ws) S in {0, 1}.
    c_m: Gaussian width in target cells.

  Returns:
    (B, hs, ws, ht, wt).
  """
  rows = jax.lax.stop_gradient(valid)[..., None, None] > 0.5
  return jnp.where(rows, gaussian_modulation(corr, centers, c_m), corr)
