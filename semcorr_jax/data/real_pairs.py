"""Real image pairs (PF-PASCAL, SPair-71k) for the pair pipeline.

`pipeline.make_pair_dataset` serves these when `data_config.source` is
`'pf_pascal'` or `'spair71k'`: the pairs of that benchmark's TFDS builder
(`semcorr_jax.data.benchmarks`, prepared on first use from
`data_config.manual_dir` into `data_config.data_dir`) instead of synthetic
warps. Splits (`pair_tables`): `'train'` -> the builder's train split
(PF-PASCAL: 2,940 SCNet rows; SPair-71k: Layout/large/trn.txt, 53,340
pairs); `'heldout'`, `'validation'` or `'val'` -> its validation split
(308 / 5,384 pairs). There is no dense ground truth; a method that trains on
these pairs uses the images (and may restrict a loss to the object boxes);
keypoints are for evaluators and keypoint losses.

The records are read once into memory (`pair_tables.PairTable`): every
distinct image's encoded bytes once, as a string constant of the graph (like
`sources.InMemorySource`), and per pair the two image ids, keypoints, boxes
and the flip flag. Determinism and sharding are the pipeline's (module
docstring of `pipeline`): example `i` of seed `s` is pair
`streams.item_of(i, N, ...)`, position `i % N` of a stateless permutation
that is fresh in every epoch `i // N`; nothing else is random.

One example (batch keys of docs/architecture.md for real pairs), with the
resize map of `tf.image.resize` (half-pixel centres),
`x' = (x + 1/2) W' / W - 1/2` and likewise y, so points stay on the same
image content:

  source_image, target_image  (H, W, 3) float32 in [0, 1]: the image squashed
                              to `image_size` (bilinear, antialiased)
  source_bbox, target_bbox    (4,) float32 object box (x0, y0, x1, y1),
                              x0 <= x1 and y0 <= y1, the two corners mapped
                              like keypoints (so a box corner is a pixel
                              centre of the resized image, as the records
                              store pixel coordinates); -1 when the records
                              hold no box (NaN)
  source_bbox_valid,          () float32 in {0, 1}: the box is known
  target_bbox_valid
  source_keypoints,           (K, 2) float32 (x, y) in the resized pixels;
  target_keypoints            rows past the pair's valid points hold -1;
                              K = `max_keypoints`
  keypoint_valid              (K,) float32 in {0, 1}
  index                       () int64, the global example index

With `max_keypoints = 0` the three keypoint keys are left out (and any
number of annotated keypoints is accepted). Only keypoints valid in both
images are kept, in file order, packed at the front. Pairs with `flip` (half
of the PF-PASCAL train rows; no SPair-71k pair) are mirrored as ncnet /
weakalign / DHPF do: both images flipped left-right, and every keypoint
`x -> W' - 1 - x` (the exact mirror for pixel centres at integer
coordinates; DHPF writes `W - x` in its pixel-edge convention); a box's x0
and x1 are mirrored the same way and swapped, so x0 <= x1 still holds.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from semcorr_jax.data import pair_tables
from semcorr_jax.data import streams

# The table layer, under the names this module has always had.
SPLITS = pair_tables.SPLITS
PairTable = pair_tables.PairTable
pack_keypoints = pair_tables.pack_keypoints
canonical_split = pair_tables.canonical_split
load_pairs = pair_tables.load_pairs
# The values of `data.source` this module serves.
DATASETS = tuple(pair_tables.DATASETS)


def load_pf_pascal(data_config, split: str) -> PairTable:
  """`load_pairs('pf_pascal', data_config, split)`."""
  return load_pairs('pf_pascal', data_config, split)


def pair_count(data_config, split: str, dataset: str = 'pf_pascal') -> int:
  """The number of pairs of a split of `dataset` (reads the table once)."""
  return load_pairs(dataset, data_config, split).num_pairs


def example_spec(data_config) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """`{key: (shape, dtype)}` of one example (module docstring).

  Reads only the config (`image_size`, `max_keypoints`), not the data.
  """
  height, width = streams.image_size(data_config.image_size)
  f32 = np.dtype(np.float32)
  spec = {
      'source_image': ((height, width, 3), f32),
      'target_image': ((height, width, 3), f32),
      'source_bbox': ((4,), f32),
      'target_bbox': ((4,), f32),
      'source_bbox_valid': ((), f32),
      'target_bbox_valid': ((), f32),
  }
  max_keypoints = pair_tables.max_keypoints_of(data_config)
  if max_keypoints:
    spec.update({
        'source_keypoints': ((max_keypoints, 2), f32),
        'target_keypoints': ((max_keypoints, 2), f32),
        'keypoint_valid': ((max_keypoints,), f32),
    })
  spec['index'] = ((), np.dtype(np.int64))
  return spec


def record_fn(table: PairTable, image_size) -> Callable[[tf.Tensor], dict]:
  """Returns `f(record) -> example` for pair `record` of the table.

  The example has the module docstring's keys except `index` (and the
  keypoint keys when the table has K = 0 keypoint rows). Traceable inside
  `tf.data.map`.
  """
  height, width = streams.image_size(image_size)
  images = tf.constant(list(table.images), tf.string)
  source_ids = tf.constant(table.source_ids, tf.int64)
  target_ids = tf.constant(table.target_ids, tf.int64)
  source_kps = tf.constant(table.source_keypoints, tf.float32)
  target_kps = tf.constant(table.target_keypoints, tf.float32)
  valid = tf.constant(table.keypoint_valid, tf.float32)
  source_boxes = tf.constant(table.source_bbox, tf.float32)
  target_boxes = tf.constant(table.target_bbox, tf.float32)
  flips = tf.constant(table.flip, tf.bool)
  num_keypoints = table.keypoint_valid.shape[1]
  new_size = tf.constant([width, height], tf.float32)

  def view(image_id, points, keep, box, flip):
    image = tf.io.decode_image(tf.gather(images, image_id), channels=3,
                               expand_animations=False)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)  # (H, W)
    old_size = tf.stack([shape[1], shape[0]])
    image = tf.cast(image, tf.float32) / 255.0
    image = tf.clip_by_value(
        tf.image.resize(image, (height, width), antialias=True), 0.0, 1.0)
    image = tf.ensure_shape(image, (height, width, 3))
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]),
                    lambda: image)

    def resize_and_flip(points):
      # tf.image.resize samples at half-pixel centres: keep points on content.
      points = (points + 0.5) * (new_size / old_size) - 0.5
      mirrored = tf.stack([(width - 1.0) - points[:, 0], points[:, 1]], axis=1)
      return tf.where(flip, mirrored, points)

    points = resize_and_flip(points)
    points = tf.where(keep[:, None] > 0, points, -1.0)
    box_known = tf.reduce_all(tf.math.is_finite(box))
    corners = resize_and_flip(tf.reshape(box, (2, 2)))
    # A mirror swaps left and right: keep x0 <= x1.
    x0 = tf.minimum(corners[0, 0], corners[1, 0])
    x1 = tf.maximum(corners[0, 0], corners[1, 0])
    box = tf.stack([x0, corners[0, 1], x1, corners[1, 1]])
    box = tf.where(box_known, box, -1.0)
    return (image, tf.ensure_shape(points, (num_keypoints, 2)),
            tf.ensure_shape(box, (4,)), tf.cast(box_known, tf.float32))

  def make(record):
    record = tf.cast(record, tf.int64)
    keep = tf.gather(valid, record)
    flip = tf.gather(flips, record)
    example = {}
    for side, ids, kps, boxes in (
        ('source', source_ids, source_kps, source_boxes),
        ('target', target_ids, target_kps, target_boxes)):
      image, points, box, box_valid = view(
          tf.gather(ids, record), tf.gather(kps, record), keep,
          tf.gather(boxes, record), flip)
      example[f'{side}_image'] = image
      example[f'{side}_bbox'] = box
      example[f'{side}_bbox_valid'] = box_valid
      if num_keypoints:
        example[f'{side}_keypoints'] = points
    if num_keypoints:
      example['keypoint_valid'] = tf.ensure_shape(keep, (num_keypoints,))
    return example

  return make


def order_root(seed: int, split: str) -> tf.Tensor:
  """The (2,) seed of a split's permutations ('heldout' = 'validation')."""
  return streams.order_seed(streams.split_seed(seed, canonical_split(split)))


def example_fn(data_config, split: str, seed: int,
               dataset: str = 'pf_pascal') -> Callable[[tf.Tensor], dict]:
  """Returns `f(index) -> example` (module docstring), for the pipeline.

  Args:
    data_config: reads `image_size` and what `load_pairs` reads.
    split: see `canonical_split`.
    seed: the run's data seed.
    dataset: a key of `pair_tables.DATASETS`.
  """
  table = load_pairs(dataset, data_config, split)
  make = record_fn(table, data_config.image_size)
  root = order_root(seed, split)
  num_pairs = table.num_pairs

  def example(index):
    index = tf.cast(index, tf.int64)
    out = make(streams.item_of(index, num_pairs, root))
    out['index'] = index
    return out

  return example
