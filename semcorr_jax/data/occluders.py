"""Occluding objects pasted on the views of a synthetic pair.

An occluder is an object in front of one view's camera, drawn in that view's
pixels after the warp: a random ellipse or star-shaped hexagon (a fan of six
triangles around its centre, nearly convex), centred uniformly in the view,
of diameter 10-30% of the view's longer side, aspect ratio 0.5-1 and any
rotation. It is filled with content that is not the scene at that place,
with equal probability:

* the view itself rolled by a random offset of 1/4 to 3/4 of its size along
  each axis (scene-like texture in the wrong place: a distractor), or
* a two-colour linear gradient of random colours and direction.

Both views get occluders (as in real pairs, either side may hide the other's
points), each between 1 and `count` of them, a later one over an earlier
one, drawn independently per view.

Ground truth: a covered pixel has no correspondence, and neither has a pixel
whose ground-truth match lands next to a covered pixel of the other view
(any of the four pixels around the match, those a bilinear read touches):

    valid_st(p) *= (1 - cover_s(p)) * (1 - near(cover_t, mapping_st(p)))

and likewise `valid_ts`. Each view's foreground mask is then cut to its new
valid region, as `warps.render_pair` cuts it to the common region, so
covered pixels are never foreground and keypoints drawn on `mask & valid`
(evaluation, losses) skip every occluded point at either end.

Randomness: one stateless Philox draw per view from the view's seed
(`view_seeds` of the pair seed), so the occluders are a pure function of the
pair seed, traceable in tf.data; they leave every other draw of the pair
unchanged.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

_ALG = 'philox'  # As in warps.py: the same numbers on every host.
_STREAM = 0x0cc1  # Folded into the pair seed: the occluders' own stream.

_MIN_RADIUS, _MAX_RADIUS = 0.05, 0.15  # Fractions of the longer side.
_MIN_ASPECT = 0.5
_VERTICES = 6
_VERTEX_JITTER = 0.6  # Vertex angles move by up to +-0.3 of a sector.
_MIN_VERTEX_RADIUS = 0.6

# Layout of one occluder's uniforms.
_CX, _CY, _SIZE, _ASPECT, _ROTATION, _IS_ELLIPSE = range(6)
_RADII = slice(6, 6 + _VERTICES)
_ANGLES = slice(6 + _VERTICES, 6 + 2 * _VERTICES)
_IS_CROP, _SHIFT_X, _SHIFT_Y, _GRADIENT = range(6 + 2 * _VERTICES,
                                                10 + 2 * _VERTICES)
_COLOURS = slice(10 + 2 * _VERTICES, 16 + 2 * _VERTICES)
_PARAMS = 16 + 2 * _VERTICES


def view_seeds(pair_seed) -> tuple[tf.Tensor, tf.Tensor]:
  """The (source, target) occluder seeds, (2,) each, of a (2,) pair seed."""
  root = tf.random.experimental.stateless_fold_in(pair_seed, _STREAM,
                                                  alg=_ALG)
  seeds = tf.random.experimental.stateless_split(root, 2, alg=_ALG)
  return seeds[0], seeds[1]


@functools.lru_cache(maxsize=16)
def _pixels_np(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  ys, xs = np.mgrid[:height, :width].astype(np.float32)
  return xs, ys


def _shape_cover(params, height: int, width: int) -> tf.Tensor:
  """Which pixels each occluder's shape covers.

  Args:
    params: (K, _PARAMS) float32 uniforms in [0, 1).
    height: view height.
    width: view width.

  Returns:
    (K, H, W) bool.
  """
  xs, ys = _pixels_np(height, width)
  p = lambda i: params[:, i][:, None, None]  # (K, 1, 1)
  radius = max(height, width) * (
      _MIN_RADIUS + (_MAX_RADIUS - _MIN_RADIUS) * p(_SIZE))
  aspect = _MIN_ASPECT + (1.0 - _MIN_ASPECT) * p(_ASPECT)
  dx = xs - p(_CX) * (width - 1)
  dy = ys - p(_CY) * (height - 1)
  rotation = 2.0 * np.pi * p(_ROTATION)
  cos, sin = tf.cos(rotation), tf.sin(rotation)
  # The shape's own frame, scaled so that the shape fits the unit disc.
  u = (cos * dx + sin * dy) / radius
  v = (cos * dy - sin * dx) / (radius * aspect)
  ellipse = u * u + v * v <= 1.0
  # Hexagon: vertices counter-clockwise at jittered sector angles.
  sector = 2.0 * np.pi / _VERTICES
  angles = sector * (np.arange(_VERTICES, dtype=np.float32)
                     + _VERTEX_JITTER * (params[:, _ANGLES] - 0.5))
  radii = _MIN_VERTEX_RADIUS + (1 - _MIN_VERTEX_RADIUS) * params[:, _RADII]
  ax = (radii * tf.cos(angles))[:, :, None, None]  # (K, V, 1, 1)
  ay = (radii * tf.sin(angles))[:, :, None, None]
  bx, by = tf.roll(ax, -1, axis=1), tf.roll(ay, -1, axis=1)
  u, v = u[:, None], v[:, None]  # (K, 1, H, W)
  # Inside triangle (0, a, b) with a -> b counter-clockwise (angle < pi).
  in_fan = ((ax * v - ay * u >= 0) & (u * by - v * bx >= 0)
            & ((bx - ax) * (v - ay) - (by - ay) * (u - ax) >= 0))
  polygon = tf.reduce_any(in_fan, axis=1)
  return tf.where(p(_IS_ELLIPSE) < 0.5, ellipse, polygon)


def _content(image, params, height: int, width: int) -> tf.Tensor:
  """One occluder's fill, (H, W, 3), from its params (_PARAMS,)."""
  shift = tf.cast(tf.round(
      (0.25 + 0.5 * tf.stack([params[_SHIFT_Y], params[_SHIFT_X]]))
      * np.float32([height, width])), tf.int32)  # (dy, dx)
  crop = tf.roll(image, shift, axis=[0, 1])
  xs, ys = _pixels_np(height, width)
  direction = 2.0 * np.pi * params[_GRADIENT]
  along = (tf.cos(direction) * (xs - params[_CX] * (width - 1))
           + tf.sin(direction) * (ys - params[_CY] * (height - 1)))
  ramp = tf.clip_by_value(0.5 + along / (_MAX_RADIUS * max(height, width)),
                          0.0, 1.0)[..., None]
  colour_a, colour_b = params[_COLOURS][:3], params[_COLOURS][3:]
  gradient = colour_a + (colour_b - colour_a) * ramp
  return tf.where(params[_IS_CROP] < 0.5, crop, gradient)


def paste(image, seed, count: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Pastes between 1 and `count` random occluders on one view.

  Args:
    image: (H, W, 3) float32 view.
    seed: (2,) seed of the view (`view_seeds`).
    count: most occluders; >= 1.

  Returns:
    The occluded image (H, W, 3) and the cover (H, W) float32 in {0, 1}.
  """
  height, width = image.shape[0], image.shape[1]
  draws = tf.random.stateless_uniform((1 + count * _PARAMS,), seed, alg=_ALG)
  number = 1.0 + tf.floor(draws[0] * count)  # Uniform in 1..count.
  params = tf.reshape(draws[1:], (count, _PARAMS))
  shapes = _shape_cover(params, height, width)
  shapes &= (tf.range(count, dtype=tf.float32) < number)[:, None, None]
  out = image
  for k in range(count):
    out = tf.where(shapes[k][..., None],
                   _content(image, params[k], height, width), out)
  return out, tf.cast(tf.reduce_any(shapes, axis=0), tf.float32)


def near(cover, mapping) -> tf.Tensor:
  """Whether any of the four pixels around each point is covered.

  Args:
    cover: (H, W) float32 in {0, 1}.
    mapping: (H', W', 2) pixel points (x, y) in the covered image; points
      outside it, or not finite, read only its border pixels.

  Returns:
    (H', W') float32 in {0, 1}.
  """
  height, width = cover.shape[0], cover.shape[1]
  padded = tf.pad(cover, [[0, 1], [0, 1]])
  # dilated[y, x] = max of cover over [y, y + 1] x [x, x + 1].
  dilated = tf.reduce_max(tf.stack([
      padded[:-1, :-1], padded[1:, :-1], padded[:-1, 1:], padded[1:, 1:]]),
                          axis=0)
  mapping = tf.where(tf.math.is_finite(mapping), mapping, 0.0)
  corner = tf.cast(tf.floor(mapping), tf.int32)
  x = tf.clip_by_value(corner[..., 0], 0, width - 1)
  y = tf.clip_by_value(corner[..., 1], 0, height - 1)
  return tf.gather_nd(dilated, tf.stack([y, x], axis=-1))


def occlude_pair(pair: dict[str, tf.Tensor], pair_seed,
                 count: int) -> dict[str, tf.Tensor]:
  """Occludes both views of a pair and updates its ground truth.

  Args:
    pair: the dict of `warps.render_pair`.
    pair_seed: the pair's (2,) seed.
    count: most occluders per view; 0 returns `pair` unchanged.

  Returns:
    A new dict with the same keys (module docstring).
  """
  if count <= 0:
    return pair
  seed_s, seed_t = view_seeds(pair_seed)
  source, cover_s = paste(pair['source_image'], seed_s, count)
  target, cover_t = paste(pair['target_image'], seed_t, count)
  valid_st = (pair['valid_st'] * (1.0 - cover_s)
              * (1.0 - near(cover_t, pair['mapping_st'])))
  valid_ts = (pair['valid_ts'] * (1.0 - cover_t)
              * (1.0 - near(cover_s, pair['mapping_ts'])))
  return dict(pair, source_image=source, target_image=target,
              valid_st=valid_st, valid_ts=valid_ts,
              source_mask=pair['source_mask'] * valid_st,
              target_mask=pair['target_mask'] * valid_ts)
