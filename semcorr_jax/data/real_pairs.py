"""Real image pairs with keypoints (PF-PASCAL) for the pair pipeline.

`pipeline.make_pair_dataset` dispatches here when `data_config.source` is
`'pf_pascal'`: the pairs of the PF-PASCAL TFDS builder
(`semcorr_jax.data.benchmarks.pf_pascal`, prepared on first use from
`data_config.manual_dir` into `data_config.data_dir`) instead of synthetic
warps. Splits: `'train'` -> PF-PASCAL train (2,940 SCNet rows);
`'heldout'`, `'validation'` or `'val'` -> PF-PASCAL validation (308 pairs).

The records are read once into memory (`PairTable`): every distinct image's
encoded bytes once, as a string constant of the graph (like
`sources.InMemorySource`), and per pair the two image ids, keypoints and the
flip flag. Determinism and sharding are the pipeline's (module docstring of
`pipeline`): example `i` of seed `s` is pair `order[i % N]` of a stateless
permutation that is fresh in every epoch `i // N`; nothing else is random.

One example (batch keys of docs/architecture.md for real pairs):

  source_image, target_image  (H, W, 3) float32 in [0, 1]: the image squashed
                              to `image_size` (bilinear, antialiased)
  source_keypoints,           (K, 2) float32 (x, y) in the resized pixels,
  target_keypoints            x' = (x + 1/2) W' / W - 1/2, the map of
                              `tf.image.resize` (half-pixel centres), so the
                              points stay on the same image content; rows
                              past the pair's valid points hold -1;
                              K = `max_keypoints`
  keypoint_valid              (K,) float32 in {0, 1}
  index                       () int64, the global example index

Only keypoints valid in both images are kept, in file order, packed at the
front. Pairs with `flip` (half of the train rows) are mirrored as ncnet /
weakalign / DHPF / CATs do: both images flipped left-right, and every
keypoint `x -> W' - 1 - x` (the exact mirror for pixel centres at integer
coordinates; DHPF/CATs write `W - x` in their pixel-edge convention).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from semcorr_jax import errors
from semcorr_jax.data import pipeline

_ALG = 'philox'
# Pipeline split name -> PF-PASCAL split.
SPLITS = {'train': 'train', 'heldout': 'validation',
          'validation': 'validation', 'val': 'validation'}


@dataclasses.dataclass(frozen=True, eq=False)
class PairTable:
  """Keypoint pairs held in memory.

  Attributes:
    name: e.g. 'pf_pascal/train'.
    images: encoded bytes of every distinct image, (U,).
    source_ids: (N,) int64 index into `images` of each pair's source.
    target_ids: (N,) int64.
    source_keypoints: (N, K, 2) float32 (x, y) in original pixels, valid
      points first, -1 after them.
    target_keypoints: (N, K, 2) float32.
    keypoint_valid: (N, K) float32 in {0, 1}.
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
    max_keypoints: output rows.
    where: the pair, for the message.

  Returns:
    `(source (M, 2), target (M, 2), valid (M,))` float32, M = max_keypoints.

  Raises:
    SemcorrError: more than `max_keypoints` valid points.
  """
  valid = np.asarray(valid, bool)
  count = int(valid.sum())
  if count > max_keypoints:
    raise errors.SemcorrError(
        f'{where} has {count} valid keypoints but data.max_keypoints is '
        f'{max_keypoints}; set data.max_keypoints >= {count}.')
  out = []
  for points in (source, target):
    padded = np.full((max_keypoints, 2), -1.0, np.float32)
    padded[:count] = np.asarray(points, np.float32).reshape(-1, 2)[valid]
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


def load_pf_pascal(data_config, split: str) -> PairTable:
  """Reads a PF-PASCAL split (building the TFDS dataset if needed).

  Args:
    data_config: reads `data_dir`, `manual_dir`, `max_keypoints`.
    split: see `canonical_split`.

  Raises:
    SemcorrError: missing files (the builder says which and where to get
      them), an empty split, or too many keypoints.
  """
  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds
  from semcorr_jax.data import benchmarks
  # pylint: enable=g-import-not-at-top
  tfds_split = canonical_split(split)
  max_keypoints = int(pipeline.config_value(data_config, 'max_keypoints'))
  if max_keypoints < 1:
    raise errors.SemcorrError(
        f'data.max_keypoints must be >= 1, got {max_keypoints}.')
  data_dir = pipeline.config_value(data_config, 'data_dir')
  manual_dir = pipeline.config_value(data_config, 'manual_dir')
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
                             'target_keypoints', 'keypoint_valid', 'flip',
                             'pair_ids')}
  for record in tfds.as_numpy(ds):
    pair_id = record['pair_id'].decode()
    for side in ('source', 'target'):
      name = record[f'{side}_file'].decode()
      if name not in image_index:
        image_index[name] = len(images)
        images.append(record[f'{side}_image'])
      columns[f'{side}_ids'].append(image_index[name])
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
      flip=np.asarray(columns['flip'], bool),
      pair_ids=tuple(columns['pair_ids']))
  _CACHE[key] = table
  return table


def pair_source(data_config, split: str) -> PairTable:
  """The `PairTable` named by `data_config.source` ('pf_pascal')."""
  source = data_config.source
  if source == 'pf_pascal':
    return load_pf_pascal(data_config, split)
  raise errors.SemcorrError(
      f"Unknown real-pair source {source!r}; use 'pf_pascal'.")


def _size(value) -> tuple[int, int]:
  if isinstance(value, int):
    return value, value
  height, width = value
  return int(height), int(width)


def record_fn(table: PairTable, image_size) -> Callable[[tf.Tensor], dict]:
  """Returns `f(record) -> example` for pair `record` of the table.

  The example has the module docstring's keys except `index`. Traceable
  inside `tf.data.map`.
  """
  height, width = _size(image_size)
  images = tf.constant(list(table.images), tf.string)
  source_ids = tf.constant(table.source_ids, tf.int64)
  target_ids = tf.constant(table.target_ids, tf.int64)
  source_kps = tf.constant(table.source_keypoints, tf.float32)
  target_kps = tf.constant(table.target_keypoints, tf.float32)
  valid = tf.constant(table.keypoint_valid, tf.float32)
  flips = tf.constant(table.flip, tf.bool)
  num_keypoints = table.keypoint_valid.shape[1]
  new_size = tf.constant([width, height], tf.float32)

  def view(image_id, points, keep, flip):
    image = tf.io.decode_image(tf.gather(images, image_id), channels=3,
                               expand_animations=False)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)  # (H, W)
    old_size = tf.stack([shape[1], shape[0]])
    image = tf.cast(image, tf.float32) / 255.0
    image = tf.clip_by_value(
        tf.image.resize(image, (height, width), antialias=True), 0.0, 1.0)
    image = tf.ensure_shape(image, (height, width, 3))
    # tf.image.resize samples at half-pixel centres: keep points on content.
    points = (points + 0.5) * (new_size / old_size) - 0.5
    mirrored = tf.stack([(width - 1.0) - points[:, 0], points[:, 1]], axis=1)
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]),
                    lambda: image)
    points = tf.where(flip, mirrored, points)
    points = tf.where(keep[:, None] > 0, points, -1.0)
    return image, tf.ensure_shape(points, (num_keypoints, 2))

  def make(record):
    record = tf.cast(record, tf.int64)
    keep = tf.gather(valid, record)
    flip = tf.gather(flips, record)
    source_image, source_points = view(
        tf.gather(source_ids, record), tf.gather(source_kps, record), keep,
        flip)
    target_image, target_points = view(
        tf.gather(target_ids, record), tf.gather(target_kps, record), keep,
        flip)
    return {
        'source_image': source_image,
        'target_image': target_image,
        'source_keypoints': source_points,
        'target_keypoints': target_points,
        'keypoint_valid': tf.ensure_shape(keep, (num_keypoints,)),
    }

  return make


def record_order(index: tf.Tensor, num_pairs: int, order_root: tf.Tensor
                 ) -> tf.Tensor:
  """The pair of global example `index`: a fresh permutation per epoch."""
  index = tf.cast(index, tf.int64)
  fold_in = tf.random.experimental.stateless_fold_in
  order = tf.random.experimental.stateless_shuffle(
      tf.range(num_pairs, dtype=tf.int64),
      fold_in(order_root, index // num_pairs, alg=_ALG), alg=_ALG)
  return order[index % num_pairs]


def order_root(seed: int, split: str) -> tf.Tensor:
  """The (2,) seed of a split's permutations ('heldout' = 'validation')."""
  root = pipeline.split_seed_tensor(seed, canonical_split(split))
  return tf.random.experimental.stateless_fold_in(root, 1, alg=_ALG)


def example_fn(data_config, table: PairTable, split: str, seed: int
               ) -> Callable[[tf.Tensor], dict]:
  """Returns `f(index) -> example` (module docstring), for the pipeline."""
  make = record_fn(table, pipeline.config_value(data_config, 'image_size'))
  root = order_root(seed, split)
  num_pairs = table.num_pairs

  def example(index):
    index = tf.cast(index, tf.int64)
    out = make(record_order(index, num_pairs, root))
    out['index'] = index
    return out

  return example
