"""Real image pairs (PF-PASCAL) for the pair pipeline: keypoints and boxes.

`pipeline.make_pair_dataset` serves these when `data_config.source` is
`'pf_pascal'`: the pairs of the PF-PASCAL TFDS builder
(`semcorr_jax.data.benchmarks.pf_pascal`, prepared on first use from
`data_config.manual_dir` into `data_config.data_dir`) instead of synthetic
warps. Splits: `'train'` -> PF-PASCAL train (2,940 SCNet rows);
`'heldout'`, `'validation'` or `'val'` -> PF-PASCAL validation (308 pairs).
There is no dense ground truth; a method that trains on these pairs uses the
images (and may restrict a loss to the object boxes); keypoints are for
evaluators.

The records are read once into memory (`PairTable`): every distinct image's
encoded bytes once, as a string constant of the graph (like
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
of the train rows) are mirrored as ncnet / weakalign / DHPF do: both images
flipped left-right, and every keypoint `x -> W' - 1 - x` (the exact mirror
for pixel centres at integer coordinates; DHPF writes `W - x` in its
pixel-edge convention); a box's x0 and x1 are mirrored the same way and
swapped, so x0 <= x1 still holds.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from semcorr_jax import errors
from semcorr_jax.data import benchmarks
from semcorr_jax.data import streams

# Pipeline split name -> PF-PASCAL split.
SPLITS = {'train': 'train', 'heldout': 'validation',
          'validation': 'validation', 'val': 'validation'}


@dataclasses.dataclass(frozen=True, eq=False)
class PairTable:
  """Image pairs with keypoints and boxes, held in memory.

  Attributes:
    name: e.g. 'pf_pascal/train'.
    images: encoded bytes of every distinct image, (U,).
    source_ids: (N,) int64 index into `images` of each pair's source.
    target_ids: (N,) int64.
    source_keypoints: (N, K, 2) float32 (x, y) in original pixels, valid
      points first, -1 after them (K may be 0: no keypoints).
    target_keypoints: (N, K, 2) float32.
    keypoint_valid: (N, K) float32 in {0, 1}.
    source_bbox: (N, 4) float32 (x0, y0, x1, y1) in original pixels, NaN
      where unknown.
    target_bbox: (N, 4) float32.
    flip: (N,) bool, mirror the pair.
    pair_ids: (N,) the records' `pair_id`.
  """

  name: str
  images: tuple[bytes, ...]
  source_ids: np.ndarray
  target_ids: np.ndarray
  source_keypoints: np.ndarray
  target_keypoints: np.ndarray
  keypoint_valid: np.ndarray
  source_bbox: np.ndarray
  target_bbox: np.ndarray
  flip: np.ndarray
  pair_ids: tuple[str, ...]

  @property
  def num_pairs(self) -> int:
    return len(self.pair_ids)


# (source, data_dir, manual_dir, split, max_keypoints) -> table, read once.
_CACHE: dict[tuple, PairTable] = {}


def pack_keypoints(source: np.ndarray, target: np.ndarray, valid: np.ndarray,
                   max_keypoints: int, where: str):
  """Valid rows first, padded with -1 to `max_keypoints`.

  Args:
    source: (K, 2) points.
    target: (K, 2).
    valid: (K,) bool.
    max_keypoints: output rows; 0 keeps none (and accepts any count).
    where: the pair, for the message.

  Returns:
    `(source (M, 2), target (M, 2), valid (M,))` float32, M = max_keypoints.

  Raises:
    SemcorrError: more than `max_keypoints` (> 0) valid points.
  """
  valid = np.asarray(valid, bool)
  count = int(valid.sum())
  if max_keypoints == 0:
    count = 0
  elif count > max_keypoints:
    raise errors.SemcorrError(
        f'{where} has {count} valid keypoints but data.max_keypoints is '
        f'{max_keypoints}; set data.max_keypoints >= {count} (or 0 for no '
        'keypoints).')
  out = []
  for points in (source, target):
    padded = np.full((max_keypoints, 2), -1.0, np.float32)
    padded[:count] = np.asarray(points, np.float32).reshape(-1, 2)[valid][
        :count]
    out.append(padded)
  flags = np.zeros(max_keypoints, np.float32)
  flags[:count] = 1.0
  return out[0], out[1], flags


def canonical_split(split: str) -> str:
  """'train' -> 'train'; 'heldout'/'validation'/'val' -> 'validation'."""
  if split not in SPLITS:
    raise errors.SemcorrError(
        f'pf_pascal pairs have no split {split!r}; use one of '
        f'{", ".join(SPLITS)}.')
  return SPLITS[split]


def _max_keypoints(data_config) -> int:
  max_keypoints = int(data_config.max_keypoints)
  if max_keypoints < 0:
    raise errors.SemcorrError(
        f'data.max_keypoints must be >= 0, got {max_keypoints}.')
  return max_keypoints


def load_pf_pascal(data_config, split: str) -> PairTable:
  """Reads a PF-PASCAL split (building the TFDS dataset if needed).

  Args:
    data_config: reads `data_dir`, `manual_dir`, `max_keypoints`.
    split: see `canonical_split`.

  Raises:
    SemcorrError: missing files (the builder says which and where to get
      them), an empty split, or too many keypoints.
  """
  tfds_split = canonical_split(split)
  max_keypoints = _max_keypoints(data_config)
  data_dir = data_config.data_dir or None
  manual_dir = data_config.manual_dir or None
  key = ('pf_pascal', data_dir, manual_dir, tfds_split, max_keypoints)
  if key in _CACHE:
    return _CACHE[key]
  builder = benchmarks.prepare('pf_pascal', data_dir=data_dir,
                               manual_dir=manual_dir)
  decoders = {'source_image': tfds.decode.SkipDecoding(),
              'target_image': tfds.decode.SkipDecoding()}
  ds = builder.as_dataset(split=tfds_split, shuffle_files=False,
                          decoders=decoders)
  image_index: dict[str, int] = {}
  images: list[bytes] = []
  columns = {k: [] for k in ('source_ids', 'target_ids', 'source_keypoints',
                             'target_keypoints', 'keypoint_valid',
                             'source_bbox', 'target_bbox', 'flip',
                             'pair_ids')}
  for record in tfds.as_numpy(ds):
    pair_id = record['pair_id'].decode()
    for side in ('source', 'target'):
      name = record[f'{side}_file'].decode()
      if name not in image_index:
        image_index[name] = len(images)
        images.append(record[f'{side}_image'])
      columns[f'{side}_ids'].append(image_index[name])
      columns[f'{side}_bbox'].append(
          np.asarray(record[f'{side}_bbox'], np.float32).reshape(4))
    packed = pack_keypoints(
        record['source_keypoints'], record['target_keypoints'],
        record['keypoint_valid'], max_keypoints,
        f'PF-PASCAL {tfds_split} pair {pair_id}')
    for name, value in zip(('source_keypoints', 'target_keypoints',
                            'keypoint_valid'), packed):
      columns[name].append(value)
    columns['flip'].append(bool(record['flip']))
    columns['pair_ids'].append(pair_id)
  if not columns['pair_ids']:
    raise errors.SemcorrError(f'PF-PASCAL split {tfds_split} holds no pairs.')
  table = PairTable(
      name=f'pf_pascal/{tfds_split}', images=tuple(images),
      source_ids=np.asarray(columns['source_ids'], np.int64),
      target_ids=np.asarray(columns['target_ids'], np.int64),
      source_keypoints=np.stack(columns['source_keypoints']),
      target_keypoints=np.stack(columns['target_keypoints']),
      keypoint_valid=np.stack(columns['keypoint_valid']),
      source_bbox=np.stack(columns['source_bbox']),
      target_bbox=np.stack(columns['target_bbox']),
      flip=np.asarray(columns['flip'], bool),
      pair_ids=tuple(columns['pair_ids']))
  _CACHE[key] = table
  return table


def pair_count(data_config, split: str) -> int:
  """The number of pairs of a PF-PASCAL split (reads the table once)."""
  return load_pf_pascal(data_config, split).num_pairs


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
  max_keypoints = _max_keypoints(data_config)
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


def example_fn(data_config, split: str, seed: int
               ) -> Callable[[tf.Tensor], dict]:
  """Returns `f(index) -> example` (module docstring), for the pipeline.

  Args:
    data_config: reads `image_size` and what `load_pf_pascal` reads.
    split: see `canonical_split`.
    seed: the run's data seed.
  """
  table = load_pf_pascal(data_config, split)
  make = record_fn(table, data_config.image_size)
  root = order_root(seed, split)
  num_pairs = table.num_pairs

  def example(index):
    index = tf.cast(index, tf.int64)
    out = make(streams.item_of(index, num_pairs, root))
    out['index'] = index
    return out

  return example
