"""The embedded default scene source: textured shapes on real photos.

Runs on a fresh machine with no downloads. Each scene is a crop of a photo or
texture bundled with scikit-image (CC0 / public domain, see
docs/offline-assets.md) with one or two foreground objects pasted on it. An
object's shape is a random ellipse, smooth blob or regular polygon (exact
binary mask, defined analytically in polar coordinates), filled with a crop of
another bundled image and shaded. The second object, when present, may occlude
the first; the mask is their union.

Scenes are generated on the fly by TensorFlow ops inside `tf.data` (10-25 ms
per 256x256 scene on one CPU core): scene `j` of a split is a pure function of
`fold_in([scene_seed, split_code], j)`, so nothing is stored, every process
agrees, and the 'train' and 'heldout' splits use disjoint seed streams.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from skimage import data as skdata
from skimage import transform
import tensorflow as tf

from semcorr_jax import errors
from semcorr_jax.data import warps

# Images inside the scikit-image wheel (no pooch download). Colour photos, then
# grey images and textures, which get a random colour tint.
_COLOR_IMAGES = ('astronaut', 'chelsea', 'coffee', 'rocket',
                 'immunohistochemistry', 'hubble_deep_field')
_GRAY_IMAGES = ('camera', 'brick', 'grass', 'gravel', 'moon', 'coins')
_BANK_SIZE = 384  # Bank images are centre-cropped and resized to this square.
_SPLIT_CODES = {'train': 0, 'heldout': 1}
_MAX_OBJECTS = 2


@functools.lru_cache(maxsize=None)
def image_bank() -> tuple[np.ndarray, np.ndarray]:
  """The bundled images as one array.

  Returns:
    images (N, 384, 384, 3) uint8 and is_gray (N,) bool.
  """
  images, is_gray = [], []
  for name in _COLOR_IMAGES + _GRAY_IMAGES:
    image = np.asarray(getattr(skdata, name)())
    if image.ndim == 2:
      image = np.repeat(image[..., None], 3, axis=-1)
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[top:top + side, left:left + side, :3]
    image = transform.resize(image, (_BANK_SIZE, _BANK_SIZE), order=1,
                             anti_aliasing=True, preserve_range=True)
    images.append(np.clip(np.round(image), 0, 255).astype(np.uint8))
    is_gray.append(name in _GRAY_IMAGES)
  return np.stack(images), np.asarray(is_gray)


def _check_split(split: str) -> None:
  if split not in _SPLIT_CODES:
    raise errors.SemcorrError(
        f"Embedded data has splits 'train' and 'heldout', not {split!r}.")


class EmbeddedSource:
  """`SceneSource` of procedurally composed scenes (see module docstring)."""

  def __init__(self, split: str, num_scenes: int, scene_size, seed: int = 0):
    """Prepares the image bank.

    Args:
      split: 'train' or 'heldout' (disjoint seed streams).
      num_scenes: number of distinct scenes.
      scene_size: (H, W) or an int for square scenes.
      seed: base seed of the scene bank.
    """
    _check_split(split)
    if num_scenes < 1:
      raise errors.SemcorrError(f'num_scenes must be >= 1, got {num_scenes}.')
    self.name = f'embedded/{split}'
    self.num_scenes = int(num_scenes)
    if isinstance(scene_size, int):
      scene_size = (scene_size, scene_size)
    self.height, self.width = (int(s) for s in scene_size)
    images, is_gray = image_bank()
    # float32 (21 MB): crop_and_resize on a uint8 bank converts it whole.
    self._bank = tf.constant(images.astype(np.float32) / 255.0)
    self._is_gray = tf.constant(is_gray)
    self._num_bank = len(images)
    self._seed = tf.constant([seed, _SPLIT_CODES[split]], tf.int64)

  def _layers(self, u):
    """Background + one fill per object: (1 + _MAX_OBJECTS, H, W, 3) in [0, 1].

    Args:
      u: (1 + _MAX_OBJECTS, 8) uniforms: bank pick, crop side, y, x, flip, tint.
    """
    num = self._num_bank
    background = tf.floor(u[0, 0] * num)
    # Fills come from any bank image but the background's.
    fills = tf.math.floormod(background + 1.0 + tf.floor(u[1:, 0] * (num - 1)),
                             num)
    picks = tf.cast(tf.concat([background[None], fills], 0), tf.int32)
    # Crops of 25-100% of the bank side with the scene's aspect ratio.
    side = 0.25 + 0.75 * u[:, 1]
    size_x = tf.minimum(side * (self.width / self.height), 1.0)
    y0, x0 = u[:, 2] * (1.0 - side), u[:, 3] * (1.0 - size_x)
    # Half of the crops are mirrored: crop_and_resize flips when x1 > x2.
    flip = u[:, 4] < 0.5
    left = tf.where(flip, x0 + size_x, x0)
    right = tf.where(flip, x0, x0 + size_x)
    boxes = tf.stack([y0, left, y0 + side, right], axis=1)
    crops = tf.image.crop_and_resize(self._bank, boxes, picks,
                                     (self.height, self.width))
    # Grey images get a strong random colour tint, colour photos a mild one.
    gray = tf.gather(self._is_gray, picks)[:, None]
    tint = tf.where(gray, 0.85 + 0.4 * (2.0 * u[:, 5:8] - 1.0),
                    1.0 + 0.1 * (2.0 * u[:, 5:8] - 1.0))
    return tf.clip_by_value(crops * tint[:, None, None, :], 0.0, 1.0)

  def _shapes(self, u):
    """Random objects: masks (K, H, W) bool and shading (K, H, W) float32.

    Args:
      u: (K, 16) uniforms: centre x, y, radius, aspect, angle, kind, sides,
        light x, y, present, 3 harmonic amplitudes, 3 phases.
    """
    col = lambda i: u[:, i, None, None]  # (K, 1, 1) for broadcasting.
    n = float(min(self.height, self.width))
    radius = (0.16 + 0.16 * col(2)) * n
    angle = 2.0 * math.pi * col(4)
    grid = _pixel_grid(self.height, self.width)
    dx = grid[..., 0] - (0.25 + 0.5 * col(0)) * self.width
    dy = grid[..., 1] - (0.25 + 0.5 * col(1)) * self.height
    xr = tf.cos(angle) * dx + tf.sin(angle) * dy
    yr = (-tf.sin(angle) * dx + tf.cos(angle) * dy) / (0.55 + 0.45 * col(3))
    rho = tf.sqrt(xr * xr + yr * yr) / radius
    phi = tf.atan2(yr, xr)
    kind = tf.floor(3.0 * col(5))  # 0 ellipse, 1 blob, 2 polygon.
    # Blob: radius 1 + sum_k a_k cos(k phi + phase_k), k = 2..4, |a_k| < 0.2/k.
    blob = 1.0
    for j, order in enumerate((2.0, 3.0, 4.0)):
      amp = 0.2 / order * (2.0 * col(10 + j) - 1.0)
      blob += amp * tf.cos(order * phi + 2.0 * math.pi * col(13 + j))
    # Regular polygon with 3..7 sides: r(phi) = cos(pi/k) / cos(phi' - pi/k).
    wedge = 2.0 * math.pi / (3.0 + tf.floor(5.0 * col(6)))
    poly = tf.cos(wedge / 2.0) / tf.cos(
        tf.math.floormod(phi, wedge) - wedge / 2.0)
    boundary = tf.where(kind == 0.0, 1.0, tf.where(kind == 1.0, blob, poly))
    mask = rho <= boundary
    # Objects after the first appear half of the time.
    mask &= (col(9) < 0.5) | (tf.range(u.shape[0])[:, None, None] == 0)
    # Shading: a linear light gradient plus darkening towards the rim.
    light = (2.0 * col(7) - 1.0) * dx + (2.0 * col(8) - 1.0) * dy
    rel = tf.clip_by_value(rho / boundary, 0.0, 1.0)
    shade = (1.0 + 0.25 * light / radius) * (1.0 - 0.35 * rel**4)
    return mask, tf.clip_by_value(shade, 0.3, 1.4)

  def scene(self, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """See `SceneSource.scene`: uint8 (H, W, 3) image and (H, W) {0,1} mask."""
    seed = tf.random.experimental.stateless_fold_in(
        self._seed, tf.cast(index, tf.int64), alg='philox')
    # One draw for the whole scene keeps the graph small.
    u = warps.uniform(seed, ((1 + _MAX_OBJECTS) * 8 + _MAX_OBJECTS * 16,))
    split = (1 + _MAX_OBJECTS) * 8
    layers = self._layers(tf.reshape(u[:split], (1 + _MAX_OBJECTS, 8)))
    masks, shades = self._shapes(tf.reshape(u[split:], (_MAX_OBJECTS, 16)))
    image = layers[0]
    for k in range(_MAX_OBJECTS):  # Later objects occlude earlier ones.
      fill = layers[k + 1] * shades[k, ..., None]
      image = tf.where(masks[k, ..., None], fill, image)
    image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0),
                    tf.uint8)
    return image, tf.cast(tf.reduce_any(masks, axis=0), tf.uint8)


@functools.lru_cache(maxsize=8)
def _pixel_grid(height: int, width: int) -> np.ndarray:
  """(H, W, 2) float32 pixel centres (x, y), as a numpy constant."""
  ys, xs = np.mgrid[:height, :width].astype(np.float32)
  return np.stack([xs, ys], axis=-1)


def scene_count(data_config, split: str) -> int:
  """`data.num_scenes` for 'train', `data.heldout_scenes` for 'heldout'."""
  _check_split(split)
  if split == 'heldout':
    return int(data_config.heldout_scenes)
  return int(data_config.num_scenes)


def scene_source(data_config, split: str) -> EmbeddedSource:
  """The embedded source for `split` ('train' or 'heldout').

  Reads `num_scenes` (train) or `heldout_scenes` (heldout), `scene_size` and
  `scene_seed` from `data_config`.
  """
  return EmbeddedSource(split, scene_count(data_config, split),
                        data_config.scene_size, data_config.scene_seed)
