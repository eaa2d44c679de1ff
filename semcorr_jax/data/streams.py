"""Stateless example streams: split seeds, per-epoch orders, image sizes.

Every source of the pair pipeline picks the item of global example `i` the
same way: position `i % N` of a stateless permutation of its N items that is
fresh in every epoch `i // N`. The permutation's seed is a function of the
run's data seed and the split only, so example `i` is the same in every
process, in any order, after any restart.
"""

from __future__ import annotations

import zlib

import tensorflow as tf

ALG = 'philox'  # Fixed so that a seed gives the same numbers on every host.


def image_size(value) -> tuple[int, int]:
  """`(H, W)` of `data.image_size` (an int means square)."""
  if isinstance(value, int):
    return value, value
  height, width = value
  return int(height), int(width)


def split_seed(seed: int, split: str) -> tf.Tensor:
  """(2,) int64 root seed of a split: the same seed differs across splits."""
  return tf.constant([seed, zlib.crc32(split.encode()) & 0x7FFFFFFF], tf.int64)


def order_seed(root: tf.Tensor) -> tf.Tensor:
  """(2,) seed of a split's per-epoch orders, derived from its root seed."""
  return tf.random.experimental.stateless_fold_in(root, 1, alg=ALG)


def item_of(index: tf.Tensor, num_items: int, order_root: tf.Tensor
            ) -> tf.Tensor:
  """The item (int64 scalar in [0, num_items)) of global example `index`.

  Args:
    index: int scalar tensor, the global example index.
    num_items: N, the number of distinct items (scenes, pairs).
    order_root: (2,) seed from `order_seed`.

  Returns:
    Position `index % N` of the permutation of epoch `index // N`.
  """
  index = tf.cast(index, tf.int64)
  fold_in = tf.random.experimental.stateless_fold_in
  order = tf.random.experimental.stateless_shuffle(
      tf.range(num_items, dtype=tf.int64),
      fold_in(order_root, index // num_items, alg=ALG), alg=ALG)
  return order[index % num_items]
