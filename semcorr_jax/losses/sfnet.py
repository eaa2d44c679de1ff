"""SFNet's self-supervised losses (reference-facts §A.5), as pure functions.

Everything works at feature resolution (h x w, the layer3 grid) on binary
foreground masks. Inputs are our mappings (docs/architecture.md:
`mapping_st` (B, hs, ws, 2) = for every source cell the (x, y) in target
cells); flows are converted to SFNet's units, differences of align-corners
normalised grids in [-1, 1] (`geometry.normalized_flow`), so the paper's
weights (3, 16, 0.5) keep their meaning. Masks come at feature resolution
(`geometry.downsample_mask`).

Per-image terms return shape (B,); `sfnet_loss` averages them over the batch
(SFNet divides the batch sum by B).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from semcorr_jax import geometry

Array = jax.Array

# SFNet's foreground count `N = sum(M) + eps` uses eps = 1.
_COUNT_EPS = 1.0


def _sum_hw(x: Array) -> Array:
  """Sums every axis but the batch: (B, ...) -> (B,)."""
  return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def mask_consistency_loss(mapping_st: Array, mapping_ts: Array,
                          mask_s: Array, mask_t: Array) -> Array:
  """Mask consistency L1 (SFNet `est_src_mask` / `est_tgt_mask` terms).

  `M^_s = sample(M_t, mapping_st)`, `M^_t = sample(M_s, mapping_ts)`
  (bilinear, zeros outside, = grid_sample align_corners=True), and

    L1 = sum_p (M^_s - M_s)^2 / (hs ws) + sum_p (M^_t - M_t)^2 / (ht wt).

  Args:
    mapping_st: (B, hs, ws, 2) (x, y) in target cells.
    mapping_ts: (B, ht, wt, 2) (x, y) in source cells.
    mask_s: (B, hs, ws) binary source mask.
    mask_t: (B, ht, wt) binary target mask.

  Returns:
    (B,) per-image L1.
  """
  warped_s = geometry.bilinear_sample(mask_t[..., None], mapping_st)[..., 0]
  warped_t = geometry.bilinear_sample(mask_s[..., None], mapping_ts)[..., 0]
  hs, ws = mask_s.shape[1:]
  ht, wt = mask_t.shape[1:]
  return (_sum_hw(jnp.square(warped_s - mask_s)) / (hs * ws)
          + _sum_hw(jnp.square(warped_t - mask_t)) / (ht * wt))


def flow_consistency_loss(mapping_st: Array, mapping_ts: Array,
                          mask_s: Array, mask_t: Array) -> Array:
  """Flow consistency L2: each flow should be minus the other one, warped.

  With normalised flows F_st, F_ts (`geometry.normalized_flow`),
  `F~_st = -sample(F_ts, mapping_st) * M_s` and `N_s = sum M_s + 1`:

    L2 = sum_p (F_st M_s - F~_st)^2 / N_s + sum_p (F_ts M_t - F~_ts)^2 / N_t,

  summed over both flow components.

  Args:
    mapping_st: (B, hs, ws, 2) (x, y) in target cells.
    mapping_ts: (B, ht, wt, 2) (x, y) in source cells.
    mask_s: (B, hs, ws) binary source mask.
    mask_t: (B, ht, wt) binary target mask.

  Returns:
    (B,) per-image L2.
  """
  flow_st = geometry.normalized_flow(mapping_st, mask_t.shape[1:])
  flow_ts = geometry.normalized_flow(mapping_ts, mask_s.shape[1:])

  def one_side(flow_ab, flow_ba, mapping_ab, mask_a):
    m = mask_a[..., None]
    warped = -geometry.bilinear_sample(flow_ba, mapping_ab) * m
    return _sum_hw(jnp.square(flow_ab * m - warped)) / (
        _sum_hw(mask_a) + _COUNT_EPS)

  return (one_side(flow_st, flow_ts, mapping_st, mask_s)
          + one_side(flow_ts, flow_st, mapping_ts, mask_t))


def _central_differences(field: Array) -> tuple[Array, Array]:
  """`[-1, 0, 1] / 2` along x and y with zero padding: (B, h, w) -> 2x same."""
  px = jnp.pad(field, ((0, 0), (0, 0), (1, 1)))
  py = jnp.pad(field, ((0, 0), (1, 1), (0, 0)))
  return (px[:, :, 2:] - px[:, :, :-2]) / 2.0, (py[:, 2:] - py[:, :-2]) / 2.0


def flow_smoothness(flow: Array, mask: Array, sum_components: bool = True
                    ) -> Array:
  """Masked smoothness of one flow field, normalised by `sum(M) + 1`.

  SFNet convolves the 2-channel flow with a (1 out, 2 in) `[-1, 0, 1] / 2`
  kernel, so the x and y components are summed before `|.|`:
  `s = (|d_x (F_x + F_y)| + |d_y (F_x + F_y)|) / 2 * M` (zero padding).
  `sum_components=False` takes `|.|` of each component separately instead.

  Args:
    flow: (B, h, w, 2) flow in normalised units.
    mask: (B, h, w) binary mask.
    sum_components: SFNet's channel sum (True) or per-component (False).

  Returns:
    (B,) `sum_p s / (sum M + 1)`.
  """
  fields = ([flow[..., 0] + flow[..., 1]] if sum_components
            else [flow[..., 0], flow[..., 1]])
  total = 0.0
  for f in fields:
    dx, dy = _central_differences(f)
    total = total + _sum_hw((jnp.abs(dx) + jnp.abs(dy)) * mask)
  return total / (_sum_hw(mask) + _COUNT_EPS)


def smoothness_loss(mapping_st: Array, mapping_ts: Array, mask_s: Array,
                    mask_t: Array, sum_components: bool = True) -> Array:
  """Smoothness L3 = smooth(F_st, M_s) + smooth(F_ts, M_t) (`flow_smoothness`).

  Args:
    mapping_st: (B, hs, ws, 2) (x, y) in target cells.
    mapping_ts: (B, ht, wt, 2) (x, y) in source cells.
    mask_s: (B, hs, ws) binary source mask.
    mask_t: (B, ht, wt) binary target mask.
    sum_components: see `flow_smoothness`.

  Returns:
    (B,) per-image L3.
  """
  flow_st = geometry.normalized_flow(mapping_st, mask_t.shape[1:])
  flow_ts = geometry.normalized_flow(mapping_ts, mask_s.shape[1:])
  return (flow_smoothness(flow_st, mask_s, sum_components)
          + flow_smoothness(flow_ts, mask_t, sum_components))


def sfnet_loss(outputs: Mapping[str, Array], source_mask: Array,
               target_mask: Array, weights: Mapping[str, float]
               ) -> tuple[Array, dict[str, Array]]:
  """SFNet total loss `mean_batch(l1 L1 + l2 L2 + l3 L3)`.

  SFNet: `(lambda1 L1 + lambda2 L2 + lambda3 L3) / B` with the terms summed
  over the batch, lambda = (3, 16, 0.5).

  Args:
    outputs: model outputs with 'mapping_st' (B, hs, ws, 2) and 'mapping_ts'
      (B, ht, wt, 2) on the feature grid.
    source_mask: (B, hs, ws) binary, at feature resolution
      (`geometry.downsample_mask`).
    target_mask: (B, ht, wt) binary, at feature resolution.
    weights: {'mask', 'flow', 'smooth'} (`config.loss`; SFNet 3, 16, 0.5).

  Returns:
    (total, metrics): scalar loss and the unweighted batch-mean terms
    'mask_loss', 'flow_loss', 'smooth_loss'.
  """
  mapping_st = outputs['mapping_st'].astype(jnp.float32)
  mapping_ts = outputs['mapping_ts'].astype(jnp.float32)
  args = (mapping_st, mapping_ts, source_mask.astype(jnp.float32),
          target_mask.astype(jnp.float32))
  l1 = jnp.mean(mask_consistency_loss(*args))
  l2 = jnp.mean(flow_consistency_loss(*args))
  l3 = jnp.mean(smoothness_loss(*args))
  total = (weights['mask'] * l1 + weights['flow'] * l2
           + weights['smooth'] * l3)
  return total, {'mask_loss': l1, 'flow_loss': l2, 'smooth_loss': l3}
