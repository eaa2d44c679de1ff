"""The pair tf.data pipeline: synthetic pairs, or real PF-PASCAL pairs.

`make_pair_dataset` turns a scene source (`sources.get_source`) into batches of
synthetic pairs in the batch format of docs/architecture.md, or, for
`data.source='pf_pascal'`, serves real PF-PASCAL pairs with keypoints
(`semcorr_jax.data.real_pairs`) under the same contracts.

Determinism contract: the example with global index `i` under seed `s` is the
same array in every process, in any order, after any restart. Everything
random about it (which scene, flip, jitters, warps) is a stateless function of
`(s, split, i)`; no state is carried between examples.

Host sharding: global batch `j` holds indices `[j G, (j + 1) G)` with
`G = batch_size * process_count`; process `p` yields the slice
`[j G + p b, j G + (p + 1) b)` (b = batch_size), so concatenating the
processes' batches in process order gives the global batch.
"""

from __future__ import annotations

import zlib

import ml_collections
import tensorflow as tf

from semcorr_jax import errors
from semcorr_jax.data import sources
from semcorr_jax.data import warps

_ALG = 'philox'
_INDEX_STOP = 2**62  # "Forever" for repeat=True.


def default_data_config() -> ml_collections.ConfigDict:
  """Every data field the pipeline and the sources read, with defaults.

  Fields:
    source: 'embedded' (generated, no download), 'voc2012' (PASCAL VOC 2012
      segmentation, `semcorr_jax.data.voc`) or 'pf_pascal' (real PF-PASCAL
      pairs with keypoints, `semcorr_jax.data.real_pairs`; splits 'train'
      and 'heldout' = PF-PASCAL validation).
    image_size: (H, W) of the pair images (SFNet: 320 x 320); an int means
      square. Scenes are resized (bilinear, antialiased) to it.
    num_scenes: embedded: number of distinct 'train' scenes.
    heldout_scenes: embedded: number of distinct 'heldout' scenes.
    scene_size: embedded: (H, W) of a generated scene, or an int.
    scene_seed: embedded: seed of the scene bank (splits use disjoint streams).
    warp: 'affine' (SFNet), 'tps' (weakalign 3x3 TPS) or 'mixed' (affine,
      then a TPS composed in with probability `tps_prob`, per view).
    affine_std: theta = I + N(0, affine_std^2) on all six entries.
    tps_std: TPS control targets move by U(-tps_std, tps_std) (normalised).
    tps_prob: probability of a TPS per view for 'mixed'.
    flip_prob: probability of a horizontal flip of the scene.
    color_jitter: brightness/contrast/saturation/hue strength (two
      independent draws, one per view); 0 disables it.
    data_dir: TFDS data directory (voc2012, pf_pascal); None = TFDS default.
    manual_dir: folder holding the downloaded files: the VOC tar / extracted
      files (voc2012), or PF-dataset-PASCAL/ and the split CSVs (pf_pascal,
      see `semcorr_jax.data.benchmarks.pf_pascal`).
    exclude_list: file of image ids to leave out of VOC (e.g. the PF-PASCAL
      test images); None = the builder's default.
    max_keypoints: pf_pascal: keypoint rows per pair in a batch (padded with
      -1); a pair with more valid keypoints is an error.
  """
  return ml_collections.ConfigDict({
      'source': 'embedded',
      'image_size': (320, 320),
      'num_scenes': 512,
      'heldout_scenes': 64,
      'scene_size': (256, 256),
      'scene_seed': 0,
      'warp': 'affine',
      'affine_std': 0.15,
      'tps_std': 0.4,
      'tps_prob': 0.5,
      'flip_prob': 0.5,
      'color_jitter': 0.1,
      'data_dir': None,
      'manual_dir': None,
      'exclude_list': None,
      'max_keypoints': 20,
  })


def config_value(data_config, name: str):
  """`data_config.name`, or its default when the config lacks the field."""
  if name in data_config:
    return data_config[name]
  return default_data_config()[name]


def _size(value) -> tuple[int, int]:
  if isinstance(value, int):
    return value, value
  height, width = value
  return int(height), int(width)


def warp_config(data_config) -> warps.WarpConfig:
  """The `WarpConfig` described by a data config."""
  get = lambda name: config_value(data_config, name)
  if get('warp') not in ('affine', 'tps', 'mixed'):
    raise errors.SemcorrError(
        f"data.warp must be 'affine', 'tps' or 'mixed', got {get('warp')!r}.")
  return warps.WarpConfig(
      warp=get('warp'), affine_std=float(get('affine_std')),
      tps_std=float(get('tps_std')), tps_prob=float(get('tps_prob')),
      flip_prob=float(get('flip_prob')),
      color_jitter=float(get('color_jitter')))


def split_seed_tensor(seed: int, split: str) -> tf.Tensor:
  """(2,) int64 root seed of a split: the same seed differs across splits."""
  return tf.constant([seed, zlib.crc32(split.encode()) & 0x7FFFFFFF], tf.int64)


def example_fn(data_config, source: sources.SceneSource, split: str,
               seed: int):
  """Returns `f(index) -> example dict` (one pair, no batch axis).

  Args:
    data_config: see `default_data_config`.
    source: the scene source.
    split: split name (mixed into all seeds).
    seed: the run's data seed.

  Returns:
    A function of an int64 scalar index, traceable inside `tf.data.map`.
  """
  height, width = _size(config_value(data_config, 'image_size'))
  config = warp_config(data_config)
  root = split_seed_tensor(seed, split)
  fold_in = tf.random.experimental.stateless_fold_in
  pair_root = fold_in(root, 0, alg=_ALG)
  order_root = fold_in(root, 1, alg=_ALG)
  num_scenes = int(source.num_scenes)

  def make(index):
    index = tf.cast(index, tf.int64)
    # Scene: position index % N of a stateless permutation of the scenes that
    # is fresh in every epoch (index // N).
    order = tf.random.experimental.stateless_shuffle(
        tf.range(num_scenes, dtype=tf.int64),
        fold_in(order_root, index // num_scenes, alg=_ALG), alg=_ALG)
    image, mask = source.scene(order[index % num_scenes])
    image = tf.cast(image, tf.float32) / 255.0
    mask = tf.cast(mask, tf.float32)
    if tuple(image.shape[:2]) != (height, width):  # Static: skip when equal.
      image = tf.clip_by_value(
          tf.image.resize(image, (height, width), antialias=True), 0.0, 1.0)
      mask = tf.image.resize(mask[..., None], (height, width))[..., 0]
      mask = tf.cast(mask >= 0.5, tf.float32)
    image = tf.ensure_shape(image, (height, width, 3))
    mask = tf.ensure_shape(mask, (height, width))
    pair = warps.make_pair(image, mask, fold_in(pair_root, index, alg=_ALG),
                           config)
    pair['index'] = index
    return pair

  return make


def make_pair_dataset(data_config, split: str, *, batch_size: int, seed: int,
                      start_index: int = 0, process_index: int = 0,
                      process_count: int = 1, repeat: bool = True,
                      num_examples: int | None = None) -> tf.data.Dataset:
  """Batches of synthetic (or, for source 'pf_pascal', real) pairs.

  Args:
    data_config: see `default_data_config`.
    split: 'train' or 'heldout' (or any split the source knows).
    batch_size: per-process batch size b.
    seed: data seed; (seed, split, index) fixes an example.
    start_index: first global index, a multiple of b * process_count (resume
      from a checkpoint by passing step * global batch size).
    process_index: this process, in [0, process_count).
    process_count: number of processes sharing the global batch.
    repeat: True: an endless stream of fresh pairs (every index differs).
      False: a finite split of `num_examples` pairs (for held-out evaluation).
    num_examples: repeat=False: global number of pairs (default: one per
      scene), rounded down to whole global batches. repeat=True: if given, the
      stream cycles over the fixed pairs [0, num_examples).

  Returns:
    A dataset of dicts in the batch format of docs/architecture.md, leading
    dimension b (drop_remainder), host-sharded as in the module docstring:
    source/target_image (b, H, W, 3) float32 in [0, 1], source/target_mask and
    valid_st/ts (b, H, W) float32 in {0, 1}, mapping_st/ts (b, H, W, 2)
    float32 pixels (x, y), index (b,) int64. Source 'pf_pascal' instead
    yields source/target_image, source/target_keypoints
    (b, max_keypoints, 2) float32 resized pixels (x, y), -1 padded,
    keypoint_valid (b, max_keypoints) float32 and index
    (`semcorr_jax.data.real_pairs`); num_examples defaults to one per pair.

  Raises:
    SemcorrError: for inconsistent arguments.
  """
  if batch_size < 1 or process_count < 1:
    raise errors.SemcorrError('batch_size and process_count must be >= 1.')
  if not 0 <= process_index < process_count:
    raise errors.SemcorrError(
        f'process_index {process_index} is outside [0, {process_count}).')
  global_batch = batch_size * process_count
  if start_index < 0 or start_index % global_batch:
    raise errors.SemcorrError(
        f'start_index {start_index} must be a non-negative multiple of the '
        f'global batch size {global_batch}.')
  if num_examples is not None and num_examples < 1:
    raise errors.SemcorrError(f'num_examples must be >= 1, got {num_examples}.')

  if data_config.source == 'pf_pascal':
    # Lazy: real pairs need tensorflow_datasets and a prepared dataset.
    # pylint: disable-next=g-import-not-at-top
    from semcorr_jax.data import real_pairs
    pairs = real_pairs.pair_source(data_config, split)
    make = real_pairs.example_fn(data_config, pairs, split, seed)
    num_items = pairs.num_pairs
  else:
    source = sources.get_source(data_config, split)
    make = example_fn(data_config, source, split, seed)
    num_items = source.num_scenes
  if repeat:
    num_batches = _INDEX_STOP // global_batch
  else:
    total = num_items if num_examples is None else num_examples
    num_batches = total // global_batch
  first_batch = start_index // global_batch

  def global_index(local):
    # Local position k of this process -> global index (see module docstring).
    batch, offset = local // batch_size, local % batch_size
    index = batch * global_batch + process_index * batch_size + offset
    if repeat and num_examples is not None:
      index %= num_examples
    return index

  ds = tf.data.Dataset.range(first_batch * batch_size,
                             max(num_batches, first_batch) * batch_size)
  ds = ds.map(global_index)
  # Plain TF code (Python loops are meant to unroll): skip autograph.
  make = tf.autograph.experimental.do_not_convert(make)
  ds = ds.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
