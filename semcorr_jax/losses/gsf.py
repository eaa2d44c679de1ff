"""Guided Semantic Flow's losses (paper 001, Sec. 4.2, Eq. 10-15).

  silhouette_loss            L_sil, Eq. 12 (fixed, see below)
  geometry_consistency_loss  L_geo, Eq. 11
  pruning_loss               L_P = L_sil + lambda L_geo, Eq. 10
  matching_loss              L_M, Eq. 13-14
  smoothness_loss            L_sm, the L1 smoothness of Sec. 4.2
  final_loss                 L_final, Eq. 15

Eq. 12 takes log(Q'/Q) with Q' = 0 wherever the pruning truncated an entry
that Q kept (Q > rho), i.e. log 0. As the paper notes, on S* the ratio is the
pruning network's sigmoid output F(Q); we use -log F(Q) =
-log_sigmoid(logit) there, which is finite at any logit.

Normalisation: the paper writes plain sums. Every term here is a mean over
the set it counts (S* for L_sil, the window-weighted cells for L_geo, the
foreground source cells for L_M, the foreground neighbour pairs for L_sm), so
the loss weights do not depend on the image or grid size. Each divides by
max(count, 1): an empty set gives exactly 0 with zero gradient. By default
the mean pools every counted element of the batch into one scalar;
`per_image=True` returns one mean per image, (B,), instead.

Gradients flow only from foreground source cells (`mask_s`, the source
foreground on the feature grid, 1 = foreground). All inputs are on the
feature grid; positions are (x, y) in cells (docs/architecture.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from semcorr_jax import geometry
from semcorr_jax.errors import SemcorrError

Array = jax.Array


def _masked_mean(values: Array, weights: Array, per_image: bool) -> Array:
  """sum(w v) / max(sum w, 1), pooled over the batch or per image.

  Args:
    values: (B, ...) finite values.
    weights: (B, ...) non-negative counts (no gradient), values' shape.
    per_image: reduce every axis but the batch (True) or all axes (False).

  Returns:
    () or (B,).
  """
  weights = jax.lax.stop_gradient(weights)
  axes = tuple(range(1, values.ndim)) if per_image else None
  total = jnp.sum(weights * values, axis=axes)
  count = jnp.sum(weights, axis=axes)
  return total / jnp.maximum(count, 1.0)


def silhouette_loss(q: Array, prune_logits: Array, rho: float, mask_s: Array,
                    per_image: bool = False) -> Array:
  """L_sil of Eq. 12 with the fix: mean of -log F(Q) over S*.

  S* = {(i, j) | Q_ij > rho, i in the source foreground}, and on S* the
  paper's Q'_ij / Q_ij equals F(Q)_ij = sigmoid(logit_ij), so

    L_sil = mean_{(i, j) in S*} -log_sigmoid(logit_ij).

  Q only selects S* and gets no gradient.

  Args:
    q: (B, hs, ws, ht, wt) mutual-consistency confidence Q (Eq. 4).
    prune_logits: (B, hs, ws, ht, wt) pre-sigmoid output of the pruning
      network.
    rho: truncation threshold (the paper: 0.9).
    mask_s: (B, hs, ws) source foreground, 1 = foreground.
    per_image: see the module docstring.

  Returns:
    () scalar (or (B,)); 0 with zero gradient when S* is empty.
  """
  q = jax.lax.stop_gradient(q)
  fg = (mask_s > 0.5)[..., None, None]
  in_s = ((q > rho) & fg).astype(jnp.float32)
  values = -jax.nn.log_sigmoid(prune_logits.astype(jnp.float32))
  return _masked_mean(values, in_s, per_image)


def _box_count(valid: Array, window: int) -> Array:
  """Number of cells with valid = 1 in the window x window square around each
  cell (zero padding): (B, h, w) -> (B, h, w)."""
  r = window // 2
  return jax.lax.reduce_window(
      valid, 0.0, jax.lax.add, (1, window, window), (1, 1, 1),
      ((0, 0), (r, r), (r, r)))


def geometry_consistency_loss(feat_s: Array, feat_t: Array, guidance: Array,
                              valid: Array, window: int, mask_s: Array,
                              per_image: bool = False) -> Array:
  """L_geo of Eq. 11: feature agreement after warping by G' around S.

  With [G' o F^t]_l = F^t read bilinearly at l + G'_l (0 outside the target,
  `geometry.warp`) and e_l = |F^s_l - [G' o F^t]_l|^2,

    L_geo = sum_{i in S} sum_{l in N_i} m_l e_l
            / max(sum_{i in S} sum_{l in N_i} m_l, 1),

  N_i the window x window square centred at i (cells off the grid not
  counted), m the source foreground. Computed as sum_l n_l m_l e_l with n_l
  the number of cells of S within the window around l. S empty gives exactly
  0 with zero gradient.

  Args:
    feat_s: (B, hs, ws, C) source features.
    feat_t: (B, ht, wt, C) target features.
    guidance: (B, hs, ws, 2) G', displacement (dx, dy) in target cells.
    valid: (B, hs, ws) S in {0, 1}; no gradient.
    window: odd side of N_i in cells (e.g. 3).
    mask_s: (B, hs, ws) source foreground, 1 = foreground.
    per_image: see the module docstring.

  Returns:
    () scalar (or (B,)).
  """
  if window < 1 or window % 2 != 1:
    raise SemcorrError(
        f'the geometry-consistency window must be an odd number of cells >= 1,'
        f' got {window}; set it to 3 (or 1, 5, ...) in the loss config')
  feat_s = feat_s.astype(jnp.float32)
  mapping = geometry.flow_to_mapping(guidance.astype(jnp.float32))
  warped = geometry.warp(feat_t.astype(jnp.float32), mapping)
  err = jnp.sum(jnp.square(feat_s - warped), axis=-1)  # (B, hs, ws)
  valid = jax.lax.stop_gradient(valid.astype(jnp.float32))
  count = _box_count(valid, window) * (mask_s > 0.5)
  return _masked_mean(err, count, per_image)


def _window_offsets(radius: int) -> Array:
  """(K, 2) integer (dx, dy) offsets of [-r, r]^2, K = (2r + 1)^2, the zero
  offset at index K // 2."""
  side = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  dx, dy = jnp.meshgrid(side, side, indexing='xy')
  return jnp.stack([dx.ravel(), dy.ravel()], axis=-1)


def matching_loss(feat_s: Array, feat_t: Array, flow: Array, radius: int,
                  beta: float, mask_s: Array, per_image: bool = False,
                  corr: Array | None = None) -> Array:
  """L_M of Eq. 13-14: softmax matching probability in a local window.

  For source cell i with matched position m_i = i + tau_i, the candidates are
  m_i + o for every integer offset o in [-radius, radius]^2 (the window M_i),
  scored s_o = beta <F^s_i, F^t(m_i + o)> (bilinear read, 0 off the target
  grid), and

    P_i = softmax_o(s)[o = 0],   L_M = mean_{i in foreground} -log P_i.

  beta is an inverse temperature; Eq. 14 has beta = 1, but with unit-norm
  features the scores lie in [-1, 1], so over 121 candidates (radius 5) the
  softmax is nearly flat: P_i stays between 1 / (1 + 120 e^2) ~ 0.001 and
  1 / (1 + 120 e^-2) ~ 0.06 whatever the features. A larger beta is offered. Reading the features bilinearly is linear, so the
  scores are read from the correlation volume <F^s_i, F^t_j> instead of
  sampling C-channel features at every candidate (same values and
  gradients, B h w K values instead of B h w K C).

  Args:
    feat_s: (B, hs, ws, C) source features.
    feat_t: (B, ht, wt, C) target features.
    flow: (B, hs, ws, 2) tau, displacement (dx, dy) in target cells.
    radius: r of the window M_i (the paper: 5), an integer >= 0.
    beta: inverse temperature on the scores.
    mask_s: (B, hs, ws) source foreground, 1 = foreground.
    per_image: see the module docstring.
    corr: optional (B, hs, ws, ht, wt) <F^s_i, F^t_j> already computed
      (the model's C), so a training step does not compute it twice.

  Returns:
    () scalar (or (B,)).
  """
  b, hs, ws, _ = feat_s.shape
  ht, wt = feat_t.shape[1], feat_t.shape[2]
  if corr is None:
    corr = geometry.correlation_4d(
        feat_s.astype(jnp.float32), feat_t.astype(jnp.float32),
        precision=jax.lax.Precision.HIGHEST)  # (B, hs, ws, ht, wt)
  offsets = _window_offsets(radius)  # (K, 2)
  mapping = geometry.flow_to_mapping(flow.astype(jnp.float32))
  candidates = mapping[..., None, :] + offsets  # (B, hs, ws, K, 2)
  k = offsets.shape[0]
  # One single-channel "image" per source cell: its row of the correlation.
  rows = corr.reshape(b * hs * ws, ht, wt, 1)
  scores = geometry.bilinear_sample(rows, candidates.reshape(-1, k, 2))
  scores = beta * scores.reshape(b, hs, ws, k)
  log_p = jax.nn.log_softmax(scores, axis=-1)[..., k // 2]
  return _masked_mean(-log_p, (mask_s > 0.5).astype(jnp.float32), per_image)


def smoothness_loss(flow: Array, mask_s: Array, per_image: bool = False
                    ) -> Array:
  """L_sm: L1 of forward differences of tau over foreground neighbour pairs.

    L_sm = mean_{x-pairs} |tau(x+1, y) - tau(x, y)|_1
           + mean_{y-pairs} |tau(x, y+1) - tau(x, y)|_1,

  |.|_1 summed over both flow components, a pair counted when both of its
  cells are foreground. A linear flow tau = A (x, y) gives
  |A_00| + |A_10| + |A_01| + |A_11| whatever the grid size.

  Args:
    flow: (B, h, w, 2) tau, displacement (dx, dy) in target cells.
    mask_s: (B, h, w) source foreground, 1 = foreground.
    per_image: see the module docstring.

  Returns:
    () scalar (or (B,)).
  """
  flow = flow.astype(jnp.float32)
  fg = (mask_s > 0.5).astype(jnp.float32)
  dx = jnp.sum(jnp.abs(flow[:, :, 1:] - flow[:, :, :-1]), axis=-1)
  dy = jnp.sum(jnp.abs(flow[:, 1:] - flow[:, :-1]), axis=-1)
  pairs_x = fg[:, :, 1:] * fg[:, :, :-1]
  pairs_y = fg[:, 1:] * fg[:, :-1]
  return (_masked_mean(dx, pairs_x, per_image)
          + _masked_mean(dy, pairs_y, per_image))


def pruning_loss(sil: Array, geo: Array, geo_weight: float) -> Array:
  """L_P = L_sil + lambda L_geo (Eq. 10).

  Args:
    sil: L_sil.
    geo: L_geo.
    geo_weight: lambda.

  Returns:
    L_P, the shape of the inputs.
  """
  return sil + geo_weight * geo


def final_loss(pruning: Array, matching: Array, smooth: Array,
               pruning_weight: float, matching_weight: float,
               smooth_weight: float) -> Array:
  """L_final = lambda_P L_P + lambda_M L_M + lambda_sm L_sm (Eq. 15).

  Args:
    pruning: L_P.
    matching: L_M.
    smooth: L_sm.
    pruning_weight: lambda_P.
    matching_weight: lambda_M.
    smooth_weight: lambda_sm.

  Returns:
    L_final, the shape of the inputs.
  """
  return (pruning_weight * pruning + matching_weight * matching
          + smooth_weight * smooth)
