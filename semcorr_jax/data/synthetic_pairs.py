"""Synthetic pairs: one scene of a scene source, warped twice.

Example `i` of seed `s` takes scene `streams.item_of(i, N, ...)` of the split
(a fresh permutation of the N scenes per epoch), resizes it to `image_size`
and warps it twice (`warps.make_pair`, occluders included) with the
stateless seed `fold_in(fold_in(split_seed(s, split), 0), i)`; nothing else
is random.

One example (the batch format of docs/architecture.md, no batch axis):

  source_image, target_image  (H, W, 3) float32 in [0, 1]
  source_mask, target_mask    (H, W) float32 in {0, 1}
  mapping_st, mapping_ts      (H, W, 2) float32 pixels (x, y)
  valid_st, valid_ts          (H, W) float32 in {0, 1}
  index                       () int64, the global example index
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from semcorr_jax import errors
from semcorr_jax.data import sources
from semcorr_jax.data import streams
from semcorr_jax.data import warps


def example_spec(data_config) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """`{key: (shape, dtype)}` of one example (module docstring)."""
  height, width = streams.image_size(data_config.image_size)
  f32 = np.dtype(np.float32)
  return {
      'source_image': ((height, width, 3), f32),
      'target_image': ((height, width, 3), f32),
      'source_mask': ((height, width), f32),
      'target_mask': ((height, width), f32),
      'mapping_st': ((height, width, 2), f32),
      'mapping_ts': ((height, width, 2), f32),
      'valid_st': ((height, width), f32),
      'valid_ts': ((height, width), f32),
      'index': ((), np.dtype(np.int64)),
  }


def warp_config(data_config) -> warps.WarpConfig:
  """The `WarpConfig` described by a data config."""
  if data_config.warp not in ('affine', 'tps', 'mixed'):
    raise errors.SemcorrError(
        "data.warp must be 'affine', 'tps' or 'mixed', got "
        f'{data_config.warp!r}.')
  occluders = data_config.occluders
  if isinstance(occluders, bool) or int(occluders) != occluders or occluders < 0:
    raise errors.SemcorrError(
        f'data.occluders must be a whole number >= 0, got {occluders!r}.')
  return warps.WarpConfig(
      warp=data_config.warp, affine_std=float(data_config.affine_std),
      tps_std=float(data_config.tps_std),
      tps_prob=float(data_config.tps_prob),
      flip_prob=float(data_config.flip_prob),
      color_jitter=float(data_config.color_jitter),
      occluders=int(data_config.occluders))


def example_fn(data_config, source: sources.SceneSource, split: str,
               seed: int) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
  """Returns `f(index) -> example dict` (one pair, no batch axis).

  Args:
    data_config: reads `image_size` and the warp fields (`warp_config`).
    source: the scene source.
    split: split name (mixed into all seeds).
    seed: the run's data seed.

  Returns:
    A function of an int64 scalar index, traceable inside `tf.data.map`.
  """
  height, width = streams.image_size(data_config.image_size)
  config = warp_config(data_config)
  root = streams.split_seed(seed, split)
  pair_root = tf.random.experimental.stateless_fold_in(root, 0,
                                                       alg=streams.ALG)
  order_root = streams.order_seed(root)
  num_scenes = int(source.num_scenes)

  def make(index):
    index = tf.cast(index, tf.int64)
    image, mask = source.scene(streams.item_of(index, num_scenes, order_root))
    image = tf.cast(image, tf.float32) / 255.0
    mask = tf.cast(mask, tf.float32)
    if tuple(image.shape[:2]) != (height, width):  # Static: skip when equal.
      image = tf.clip_by_value(
          tf.image.resize(image, (height, width), antialias=True), 0.0, 1.0)
      mask = tf.image.resize(mask[..., None], (height, width))[..., 0]
      mask = tf.cast(mask >= 0.5, tf.float32)
    image = tf.ensure_shape(image, (height, width, 3))
    mask = tf.ensure_shape(mask, (height, width))
    pair_seed = tf.random.experimental.stateless_fold_in(pair_root, index,
                                                         alg=streams.ALG)
    pair = warps.make_pair(image, mask, pair_seed, config)
    pair['index'] = index
    return pair

  return make
