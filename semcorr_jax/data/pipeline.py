"""The pair tf.data pipeline: sources, their lengths and batch specs.

`make_pair_dataset(data_config, split, ...)` serves the examples of the
source that `data_config.source` names (`SOURCES`), batched and host-sharded;
`num_examples(data_config, split)` says how many distinct examples a split
has (one epoch), `batch_spec(data_config, batch_size)` the shape and dtype
of every key of a batch, and `dummy_batch` a zero batch of that spec (model
init, shape evaluation). Each source declares these itself (`Source`), so
the trainer never asks which source it runs on; a later source is one
`register_source` call.

Sources:
  'embedded'   synthetic pairs of generated scenes (`embedded`, no download)
  'voc2012'    synthetic pairs of PASCAL VOC 2012 scenes (`voc`)
  'folder'     synthetic pairs of the user's own images, masks optional
               (`folder_source`; 'heldout' = `heldout_folder`, else the
               same images under held-out warps)
  'pf_pascal'  real PF-PASCAL pairs with boxes and keypoints, no dense ground
               truth (`real_pairs`; splits 'train' and 'heldout' = PF-PASCAL
               validation)
  'spair71k'   real SPair-71k pairs, likewise (`real_pairs`; 'train' =
               Layout/large/trn.txt, 'heldout' = val.txt)
Synthetic pairs (`synthetic_pairs`) hold the batch format of
docs/architecture.md; real pairs hold images, boxes and keypoints.

Determinism contract: the example with global index `i` under seed `s` is the
same array in every process, in any order, after any restart. Everything
random about it (which scene or pair, flip, jitters, warps) is a stateless
function of `(s, split, i)` (`streams`); no state is carried between
examples.

Host sharding: global batch `j` holds indices `[j G, (j + 1) G)` with
`G = batch_size * process_count`; process `p` yields the slice
`[j G + p b, j G + (p + 1) b)` (b = batch_size), so concatenating the
processes' batches in process order gives the global batch.

Data config fields (`config.data`; the config files, e.g. configs/sfnet.py,
hold every value; nothing here supplies a default):
  source: a key of `SOURCES`.
  folder: folder: the training images (and `<stem>_mask.png` masks) in it
    and its subfolders (`folder_source`); None for other sources.
  heldout_folder: folder: the held-out images, same layout; None = the
    training images under the held-out split's warps.
  image_size: (H, W) of the pair images (SFNet: 320 x 320); an int means
    square. Scenes and real images are resized (bilinear, antialiased) to it.
  num_scenes: embedded: number of distinct 'train' scenes.
  heldout_scenes: embedded and voc2012: number of distinct 'heldout' scenes.
  scene_size: embedded: (H, W) of a generated scene, or an int; folder:
    the size every image is resized to when loaded.
  scene_seed: embedded: seed of the scene bank (splits use disjoint streams).
  warp: 'affine' (SFNet), 'tps' (weakalign 3x3 TPS) or 'mixed' (affine,
    then a TPS composed in with probability `tps_prob`, per view).
  affine_std: theta = I + N(0, affine_std^2) on all six entries.
  tps_std: TPS control targets move by U(-tps_std, tps_std) (normalised).
  tps_prob: probability of a TPS per view for 'mixed'.
  flip_prob: probability of a horizontal flip of the scene.
  color_jitter: brightness/contrast/saturation/hue strength (two
    independent draws, one per view); 0 disables it.
  occluders: most occluding objects pasted on each view (1 to this many per
    view; their pixels lose their correspondence, see data/occluders.py);
    0 = none.
  data_dir: TFDS data directory (voc2012, pf_pascal, spair71k); None = TFDS
    default.
  manual_dir: folder holding the downloaded files: the VOC tar / extracted
    files (voc2012), PF-dataset-PASCAL/ and the split CSVs (pf_pascal, see
    `semcorr_jax.data.benchmarks.pf_pascal`), or the extracted SPair-71k/
    (spair71k, see `semcorr_jax.data.benchmarks.spair`).
  exclude_list: voc2012: file of image ids to leave out (None = the PF-PASCAL
    test images, '' = none).
  void_as: voc2012: whether the void label counts as 'foreground' or
    'background'.
  max_keypoints: real pairs: keypoint rows per pair in a batch (padded with
    -1; a pair with more valid keypoints is an error); 0 = no keypoints.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from semcorr_jax import errors
from semcorr_jax.data import embedded
from semcorr_jax.data import folder_source
from semcorr_jax.data import real_pairs
from semcorr_jax.data import sources
from semcorr_jax.data import synthetic_pairs
from semcorr_jax.data import voc

_INDEX_STOP = 2**62  # "Forever" for repeat=True.

# {key: (shape, numpy dtype)}, of one example or of a batch.
Spec = dict[str, tuple[tuple[int, ...], np.dtype]]


@dataclasses.dataclass(frozen=True)
class Source:
  """What the pipeline needs of one value of `data.source`.

  Attributes:
    num_examples: `(data_config, split) -> int`, the distinct examples of a
      split (scenes or pairs): one epoch.
    example_spec: `(data_config) -> Spec` of one example (no batch axis);
      reads the config only, never the data.
    example_fn: `(data_config, split, seed) -> f(index) -> example dict`,
      traceable inside `tf.data.map`, a pure function of `(seed, split,
      index)` (module docstring).
    scene_source: synthetic-pair sources: `(data_config, split) ->
      sources.SceneSource`; None for real pairs.
  """

  num_examples: Callable[[Any, str], int]
  example_spec: Callable[[Any], Spec]
  example_fn: Callable[[Any, str, int], Callable[[tf.Tensor], dict]]
  scene_source: Callable[[Any, str], sources.SceneSource] | None = None


def synthetic_source(
    scene_source: Callable[[Any, str], sources.SceneSource],
    scene_count: Callable[[Any, str], int]) -> Source:
  """The `Source` of synthetic pairs (`synthetic_pairs`) of a scene source.

  Args:
    scene_source: `(data_config, split) -> SceneSource`.
    scene_count: `(data_config, split) -> int`, its `num_scenes`.
  """

  def example_fn(data_config, split: str, seed: int):
    return synthetic_pairs.example_fn(
        data_config, scene_source(data_config, split), split, seed)

  return Source(num_examples=scene_count,
                example_spec=synthetic_pairs.example_spec,
                example_fn=example_fn, scene_source=scene_source)


def real_pair_source(dataset: str) -> Source:
  """The `Source` of the real pairs (`real_pairs`) of a keypoint dataset."""
  return Source(
      num_examples=functools.partial(real_pairs.pair_count, dataset=dataset),
      example_spec=real_pairs.example_spec,
      example_fn=functools.partial(real_pairs.example_fn, dataset=dataset))


SOURCES: dict[str, Source] = {
    'embedded': synthetic_source(embedded.scene_source, embedded.scene_count),
    'voc2012': synthetic_source(voc.scene_source, voc.scene_count),
    'folder': synthetic_source(folder_source.scene_source,
                               folder_source.scene_count),
    'pf_pascal': real_pair_source('pf_pascal'),
    'spair71k': real_pair_source('spair71k'),
}


def register_source(name: str, source: Source) -> None:
  """Adds a value of `data.source`; a name may be registered once."""
  if name in SOURCES:
    raise errors.SemcorrError(f'data source {name!r} is already registered.')
  SOURCES[name] = source


def source_of(data_config) -> Source:
  """The `Source` that `data_config.source` names."""
  name = data_config.source
  if name not in SOURCES:
    raise errors.SemcorrError(
        f'Unknown data source {name!r}; use one of '
        f'{", ".join(repr(n) for n in SOURCES)}.')
  return SOURCES[name]


def get_source(data_config, split: str) -> sources.SceneSource:
  """The scene source behind a synthetic-pair `data.source`, for `split`.

  Raises:
    SemcorrError: an unknown source, or one of real pairs (no scenes).
  """
  source = source_of(data_config)
  if source.scene_source is None:
    raise errors.SemcorrError(
        f'data source {data_config.source!r} serves real pairs, not scenes.')
  return source.scene_source(data_config, split)


def num_examples(data_config, split: str) -> int:
  """The number of distinct examples (one epoch) of `split` of the source.

  Embedded: `num_scenes` / `heldout_scenes` (no work); voc2012 and real
  pairs prepare the TFDS dataset if needed and count its records; folder
  reads (and checks) its images once (cached).
  """
  return int(source_of(data_config).num_examples(data_config, split))


def batch_spec(data_config, batch_size: int) -> Spec:
  """`{key: ((batch_size, ...), numpy dtype)}` of a `make_pair_dataset` batch.

  Exactly the keys, shapes and dtypes the pipeline yields for
  `data_config.source` with this per-process batch size; reads the config
  only (no data needed).
  """
  spec = source_of(data_config).example_spec(data_config)
  return {key: ((batch_size, *shape), np.dtype(dtype))
          for key, (shape, dtype) in spec.items()}


def dummy_batch(data_config, batch_size: int = 1) -> dict[str, np.ndarray]:
  """A batch of zeros of `batch_spec(data_config, batch_size)`.

  For shapes only (model init, `jax.eval_shape`); needs no data.
  """
  return {key: np.zeros(shape, dtype)
          for key, (shape, dtype) in batch_spec(data_config,
                                                batch_size).items()}


def make_pair_dataset(data_config, split: str, *, batch_size: int, seed: int,
                      start_index: int = 0, process_index: int = 0,
                      process_count: int = 1, repeat: bool = True,
                      num_examples: int | None = None) -> tf.data.Dataset:
  """Batches of the examples of `data_config.source`.

  Args:
    data_config: the data config (module docstring).
    split: 'train' or 'heldout' (or any split the source knows).
    batch_size: per-process batch size b.
    seed: data seed; (seed, split, index) fixes an example.
    start_index: first global index, a multiple of b * process_count (resume
      from a checkpoint by passing step * global batch size).
    process_index: this process, in [0, process_count).
    process_count: number of processes sharing the global batch.
    repeat: True: an endless stream of fresh pairs (every index differs).
      False: a finite split of `num_examples` pairs (for held-out evaluation).
    num_examples: repeat=False: global number of pairs (default: the
      split's `num_examples(data_config, split)`), rounded down to whole
      global batches. repeat=True: if given, the stream cycles over the fixed
      pairs [0, num_examples).

  Returns:
    A dataset of dicts of `batch_spec(data_config, batch_size)`, leading
    dimension b (drop_remainder), host-sharded as in the module docstring.
    Synthetic pairs (`synthetic_pairs`): the batch format of
    docs/architecture.md, source/target_image (b, H, W, 3) float32 in
    [0, 1], source/target_mask and valid_st/ts (b, H, W) float32 in {0, 1},
    mapping_st/ts (b, H, W, 2) float32 pixels (x, y), index (b,) int64. Real
    pairs (`real_pairs`): source/target_image, source/target_bbox (b, 4)
    and source/target_bbox_valid (b,), source/target_keypoints
    (b, max_keypoints, 2) and keypoint_valid (b, max_keypoints) unless
    max_keypoints is 0, index.

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

  source = source_of(data_config)
  make = source.example_fn(data_config, split, seed)
  if repeat:
    num_batches = _INDEX_STOP // global_batch
  else:
    total = num_examples
    if total is None:
      total = source.num_examples(data_config, split)
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
