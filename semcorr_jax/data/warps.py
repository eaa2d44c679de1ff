"""Synthetic warps and dense ground truth for image pairs, as TensorFlow ops.

Coordinates follow docs/architecture.md: points are `(x, y)`, x first, pixel
centres at integers, and normalised coordinates use align_corners=True
(`x_n = 2 x / (W - 1) - 1`).

A warp `T` maps OUTPUT normalised coordinates to INPUT sampling coordinates,
like PyTorch's `affine_grid`: a view is the base image sampled at `T(grid)`.
Each view's warp is `T = A o S` (TPS `S` first, then affine `A`; either may be
the identity). Source pixel `p_s` and target pixel `p_t` show the same base
point iff `T_s(p_s) = T_t(p_t)`, so the ground truth is

    mapping_st(p_s) = T_t^-1(T_s(p_s)),   mapping_ts(p_t) = T_s^-1(T_t(p_t)).

Affine inverses are exact. TPS inverses are solved by Newton's method (see
`tps.inverse`); points whose residual `|S(x) - q|` exceeds
`INVERSE_TOLERANCE_PX` are marked invalid. Measured round-trip error: < 1e-3
px at 320 x 320.

All randomness is stateless (Philox) and comes from explicit `(2,)` int64
seeds, so a pair is a pure function of its seed. Graphs are kept small (one
random draw per kind, numpy constants) because tf.data traces them per
pipeline.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow as tf

from semcorr_jax.data import occluders as occluders_lib
from semcorr_jax.data import tps

_ALG = 'philox'  # Fixed so that a seed gives the same numbers on every host.

_AFFINE_MIN_DET = 0.1
INVERSE_TOLERANCE_PX = 0.01  # Max TPS-inverse residual for a valid match.
_VIEW_UNIFORMS = 4 + 18 + 1  # Jitter factors, TPS offsets, TPS coin.


@dataclasses.dataclass(frozen=True)
class WarpConfig:
  """How random warps and appearance changes are drawn (see pipeline.py).

  Attributes:
    warp: 'affine', 'tps' or 'mixed' (affine always, then TPS composed in with
      probability `tps_prob`).
    affine_std: std of the N(0, std^2) noise added to the six entries of I.
    tps_std: TPS target control points move by U(-tps_std, tps_std).
    tps_prob: probability of a TPS per view when `warp == 'mixed'`.
    flip_prob: probability of a horizontal flip of the base image and mask.
    color_jitter: brightness/contrast/saturation/hue strength, per view.
    occluders: most occluding objects per view (occluders.py); 0 = none.
  """
  warp: str = 'affine'
  affine_std: float = 0.15
  tps_std: float = 0.4
  tps_prob: float = 0.5
  flip_prob: float = 0.5
  color_jitter: float = 0.1
  occluders: int = 0


def uniform(seed, shape=(), minval=0.0, maxval=1.0) -> tf.Tensor:
  """Stateless U(minval, maxval) float32 of `shape` from a (2,) seed."""
  return tf.random.stateless_uniform(
      shape, seed, minval=minval, maxval=maxval, alg=_ALG)


def split_seed(seed, num: int) -> list[tf.Tensor]:
  """`num` independent `(2,)` seeds from one `(2,)` seed."""
  return tf.unstack(tf.random.experimental.stateless_split(seed, num, alg=_ALG))


# ------------------------------------------------------------------ grids ---


@functools.lru_cache(maxsize=16)
def _grid_np(height: int, width: int, normalized: bool) -> np.ndarray:
  ys, xs = np.mgrid[:height, :width].astype(np.float64)
  grid = np.stack([xs, ys], -1)
  if normalized:
    grid = 2.0 * grid / [max(width - 1, 1), max(height - 1, 1)] - 1.0
  return grid.astype(np.float32)


def pixel_grid(height: int, width: int) -> tf.Tensor:
  """(H, W, 2) float32 pixel centres `(x, y)`."""
  return tf.constant(_grid_np(height, width, False))


def to_normalized(points, height: int, width: int) -> tf.Tensor:
  """Pixels -> align_corners=True normalised coords; points (..., 2)."""
  return 2.0 * points / np.float32([width - 1, height - 1]) - 1.0


def to_pixels(points, height: int, width: int) -> tf.Tensor:
  """Normalised (align_corners=True) -> pixels; points (..., 2)."""
  return (points + 1.0) * np.float32([(width - 1) / 2, (height - 1) / 2])


# ----------------------------------------------------------------- affine ---


def _affine_from_noise(noise) -> tf.Tensor:
  """theta = I + noise (2, 3); a near-singular draw keeps only translation."""
  theta = np.eye(2, 3, dtype=np.float32) + tf.reshape(noise, (2, 3))
  det = theta[0, 0] * theta[1, 1] - theta[0, 1] * theta[1, 0]
  fallback = tf.concat([np.eye(2, dtype=np.float32), theta[:, 2:]], axis=1)
  return tf.where(tf.abs(det) < _AFFINE_MIN_DET, fallback, theta)


def random_affine(seed, std: float) -> tf.Tensor:
  """SFNet's theta = I + N(0, std^2) on all six entries, (2, 3) float32.

  A near-singular draw (|det| < 0.1, astronomically rare at std 0.15) keeps
  only its translation, so that the inverse is always well conditioned.
  """
  return _affine_from_noise(
      tf.random.stateless_normal((6,), seed, stddev=std, alg=_ALG))


def affine_apply(theta, points) -> tf.Tensor:
  """theta (2, 3) applied to normalised points (N, 2) -> (N, 2)."""
  return tf.matmul(points, theta[:, :2], transpose_b=True) + theta[:, 2]


def affine_inverse(theta) -> tf.Tensor:
  """Exact inverse of a (2, 3) affine matrix, (2, 3)."""
  inv = tf.linalg.inv(theta[:, :2])
  return tf.concat([inv, -tf.matmul(inv, theta[:, 2:])], axis=1)


# --------------------------------------------------------- composed warps ---


@dataclasses.dataclass(frozen=True)
class Warp:
  """T = A o S: `theta` (2, 3) affine, `tps` (12, 2) coefficients or None.

  `tps_active` (bool scalar, optional) says whether `tps` may differ from the
  identity; when False at run time the Newton solve is skipped.
  """
  theta: tf.Tensor
  tps: tf.Tensor | None
  tps_active: tf.Tensor | None = None

  def forward(self, points, kernel=None):
    """T(points): output -> input normalised coords, (N, 2) -> (N, 2).

    Args:
      points: (N, 2) normalised output points.
      kernel: optional TPS kernel terms of `points` (see `tps.apply`).
    """
    if self.tps is not None:
      points = tps.apply(self.tps, points, kernel)
    return affine_apply(self.theta, points)

  def inverse(self, points, tolerance):
    """T^-1(points) (N, 2) and a bool (N,) 'solved' flag.

    Args:
      points: (N, 2) normalised input-side points.
      tolerance: max residual (normalised) for a TPS solve to count.
    """
    points = affine_apply(affine_inverse(self.theta), points)
    if self.tps is None:
      return points, tf.ones_like(points[:, 0], tf.bool)
    if self.tps_active is None:
      points, residual = tps.inverse(self.tps, points)
    else:
      points, residual = tf.cond(
          self.tps_active, lambda: tps.inverse(self.tps, points),
          lambda: (points, tf.zeros_like(points[:, 0])))
    return points, residual < tolerance


def _warp_from_noise(uniforms, normals, config: WarpConfig) -> Warp:
  """A view's warp from uniforms (19,) [TPS offsets, coin] and normals (6,)."""
  offsets = config.tps_std * (2.0 * tf.reshape(uniforms[:18], (9, 2)) - 1.0)
  if config.warp == 'tps':
    return Warp(tf.eye(2, 3), tps.from_offsets(offsets))
  theta = _affine_from_noise(config.affine_std * normals)
  if config.warp == 'affine':
    return Warp(theta, None)
  if config.warp == 'mixed':
    coin = uniforms[18] < config.tps_prob
    offsets *= tf.cast(coin, tf.float32)
    return Warp(theta, tps.from_offsets(offsets), coin)
  raise ValueError(f"warp must be 'affine', 'tps' or 'mixed', got "
                   f'{config.warp!r}')


def random_warp(seed, config: WarpConfig) -> Warp:
  """One view's random warp as drawn by `config.warp`."""
  u_seed, n_seed = split_seed(seed, 2)
  return _warp_from_noise(uniform(u_seed, (19,)),
                          tf.random.stateless_normal((6,), n_seed, alg=_ALG),
                          config)


# -------------------------------------------------------------- sampling ---


def bilinear_sample(image, coords) -> tf.Tensor:
  """Samples image (H, W, C) at pixel coords (N, 2) -> (N, C).

  Bilinear, align_corners=True pixel convention, zeros outside (each of the
  four taps outside the image contributes 0, as in `grid_sample` with zero
  padding).
  """
  height, width, channels = image.shape
  # One zero row/column before and two after: clamping coords to [-1, size]
  # then keeps all four taps in the padded array, and far-away points land on
  # zeros, so no per-tap bounds checks are needed.
  flat = tf.reshape(tf.pad(image, [[1, 2], [1, 2], [0, 0]]), (-1, channels))
  xy = tf.clip_by_value(coords, -1.0, np.float32([width, height])) + 1.0
  corner = tf.floor(xy)
  wx, wy = tf.unstack(xy - corner, axis=1)
  stride = width + 3
  base = tf.reduce_sum(tf.cast(corner, tf.int32) * [1, stride], axis=1)
  index = base[:, None] + np.int32([0, 1, stride, stride + 1])
  weight = tf.stack([(1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy,
                     wx * wy], axis=-1)
  return tf.reduce_sum(weight[:, :, None] * tf.gather(flat, index), axis=1)


_GRAY = np.float32([[0.2989], [0.587], [0.114]])  # tf.image's luma weights.


def _jitter(image, factors) -> tf.Tensor:
  """Brightness, contrast, saturation, hue with factors (4,) in [-s, s]."""
  b, c, s, h = tf.unstack(factors)
  image = tf.clip_by_value(image * (1.0 + b), 0.0, 1.0)
  mean = tf.reduce_mean(tf.matmul(tf.reshape(image, (-1, 3)), _GRAY))
  image = tf.clip_by_value((image - mean) * (1.0 + c) + mean, 0.0, 1.0)
  gray = tf.tensordot(image, _GRAY, 1)
  image = tf.clip_by_value(gray + (image - gray) * (1.0 + s), 0.0, 1.0)
  return tf.image.adjust_hue(image, h)  # Hue shift as a fraction of a turn.


def color_jitter(image, seed, strength: float) -> tf.Tensor:
  """torchvision-style ColorJitter(b=c=s=h=strength), fixed order b, c, s, h.

  Args:
    image: (H, W, 3) float32 in [0, 1].
    seed: (2,) seed.
    strength: 0 disables it.

  Returns:
    (H, W, 3) float32 in [0, 1].
  """
  if strength <= 0:
    return image
  return _jitter(image, uniform(seed, (4,), -strength, strength))


def make_pair(image, mask, seed, config: WarpConfig) -> dict[str, tf.Tensor]:
  """Builds one random synthetic pair with dense ground truth.

  Args:
    image: (H, W, 3) float32 in [0, 1], the base image at the output size.
    mask: (H, W) float32 in {0, 1}, the base foreground.
    seed: (2,) int seed; the pair is a pure function of it.
    config: a `WarpConfig`.

  Returns:
    The dict of `render_pair`, with `config.occluders` occluders pasted on
    each view and the ground truth updated (`occluders.occlude_pair`, its own
    seed stream: the warps and jitters are those of `occluders=0`).
  """
  u_seed, n_seed = split_seed(seed, 2)
  flip_u, u_s, u_t = tf.split(uniform(u_seed, (1 + 2 * _VIEW_UNIFORMS,)),
                              [1, _VIEW_UNIFORMS, _VIEW_UNIFORMS])
  n_s, n_t = tf.split(tf.random.stateless_normal((12,), n_seed, alg=_ALG), 2)
  flip = flip_u[0] < config.flip_prob
  image = tf.where(flip, tf.reverse(image, axis=[1]), image)
  mask = tf.where(flip, tf.reverse(mask, axis=[1]), mask)
  views = []
  for u in (u_s, u_t):
    # Two independent jitters of the base (SFNet jitters before warping, so
    # the area outside the base stays black).
    strength = config.color_jitter
    views.append(_jitter(image, strength * (2.0 * u[:4] - 1.0))
                 if strength > 0 else image)
  pair = render_pair(views[0], views[1], mask,
                     _warp_from_noise(u_s[4:], n_s, config),
                     _warp_from_noise(u_t[4:], n_t, config))
  return occluders_lib.occlude_pair(pair, seed, config.occluders)


def render_pair(image_s, image_t, mask, warp_s: Warp,
                warp_t: Warp) -> dict[str, tf.Tensor]:
  """Warps the base into two views and derives the dense ground truth.

  Args:
    image_s: (H, W, 3) float32 base image seen by the source view.
    image_t: (H, W, 3) float32 base image seen by the target view (the same
      scene, possibly with other colours).
    mask: (H, W) float32 in {0, 1}, the base foreground.
    warp_s: the source view's warp T_s (output -> base normalised coords).
    warp_t: the target view's warp T_t.

  Returns:
    A dict in the batch format of docs/architecture.md without the batch axis
    and without 'index': source/target_image (H, W, 3), source/target_mask,
    valid_st/ts (H, W) float32 in {0, 1}, mapping_st/ts (H, W, 2) pixels.
  """
  height, width = image_s.shape[0], image_s.shape[1]
  grid = _grid_np(height, width, True).reshape(-1, 2)
  # The output grid is fixed, so its TPS kernel terms are a numpy constant.
  kernel = (tps.grid_kernel(height, width)
            if warp_s.tps is not None or warp_t.tps is not None else None)
  tolerance = INVERSE_TOLERANCE_PX * 2.0 / (max(height, width) - 1.0)
  out = {}
  for a, b, image, warp_a, warp_b in (('s', 't', image_s, warp_s, warp_t),
                                      ('t', 's', image_t, warp_t, warp_s)):
    on_base = warp_a.forward(grid, kernel)  # T_a(p_a), base normalised.
    mapping, solved = warp_b.inverse(on_base, tolerance)
    valid = solved & tf.reduce_all(tf.abs(mapping) <= 1.0 + 1e-6, axis=-1)
    valid = tf.reshape(tf.cast(valid, tf.float32), (height, width))
    # Image and mask warped together: one gather for four channels.
    rgbm = tf.concat([image, mask[..., None]], axis=-1)
    view = tf.reshape(
        bilinear_sample(rgbm, to_pixels(on_base, height, width)),
        (height, width, 4))
    name = 'source' if a == 's' else 'target'
    out[f'{name}_image'] = view[..., :3]
    # Cut the mask to the common region: a foreground pixel is kept only if
    # its base point also lands inside the other view (SFNet, §A.6).
    out[f'{name}_mask'] = tf.cast(view[..., 3] > 0.5, tf.float32) * valid
    out[f'mapping_{a}{b}'] = tf.reshape(to_pixels(mapping, height, width),
                                        (height, width, 2))
    out[f'valid_{a}{b}'] = valid
  return out
