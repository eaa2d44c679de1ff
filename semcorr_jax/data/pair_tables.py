"""Keypoint-pair benchmarks read into memory, for training on real pairs.

`load_pairs(name, data_config, split)` reads one split of a keypoint-pair
TFDS builder (`semcorr_jax.data.benchmarks`, prepared on first use from
`data_config.manual_dir` into `data_config.data_dir`) into a `PairTable`;
`real_pairs` turns table rows into examples. Datasets (`DATASETS`):

  'pf_pascal'  PF-PASCAL: 'train' = the 2,940 SCNet rows (half with the
               `flip` flag), 'heldout' / 'validation' / 'val' = its 308
               validation pairs.
  'spair71k'   SPair-71k, `Layout/large`: 'train' = trn.txt (53,340 pairs),
               'heldout' / 'validation' / 'val' = val.txt (5,384 pairs); no
               pair is flipped.

The test splits are left to the evaluators. Both builders write the
keypoint-pair records of `benchmarks.common`, so one reader serves both:
every distinct image's encoded bytes once (keyed by the record's
`*_file`), and per pair the two image ids, the keypoints valid in both
images (packed at the front, -1 after them), the boxes and the flip flag.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from semcorr_jax import errors
from semcorr_jax.data import benchmarks

# Pipeline split name -> the builders' split.
SPLITS = {'train': 'train', 'heldout': 'validation',
          'validation': 'validation', 'val': 'validation'}


@dataclasses.dataclass(frozen=True)
class PairDataset:
  """A keypoint-pair builder that `load_pairs` reads.

  Attributes:
    title: the dataset's name in messages.
    flips: whether the records' `flip` flag is honoured (False: no pair is
      mirrored, whatever the records hold).
  """

  title: str
  flips: bool


# `load_pairs` name (= the `benchmarks.DATASETS` key) -> dataset.
DATASETS = {
    'pf_pascal': PairDataset(title='PF-PASCAL', flips=True),
    'spair71k': PairDataset(title='SPair-71k', flips=False),
}


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


# (name, data_dir, manual_dir, split, max_keypoints) -> table, read once.
_CACHE: dict[tuple, PairTable] = {}


def dataset(name: str) -> PairDataset:
  """The `PairDataset` of a name, or a SemcorrError listing them."""
  if name not in DATASETS:
    raise errors.SemcorrError(
        f'no real-pair dataset {name!r}; use one of '
        f'{", ".join(DATASETS)}.')
  return DATASETS[name]


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


def canonical_split(split: str, name: str = 'pf_pascal') -> str:
  """'train' -> 'train'; 'heldout'/'validation'/'val' -> 'validation'."""
  if split not in SPLITS:
    raise errors.SemcorrError(
        f'{name} pairs have no split {split!r}; use one of '
        f'{", ".join(SPLITS)}.')
  return SPLITS[split]


def max_keypoints_of(data_config) -> int:
  """`data_config.max_keypoints`, checked to be >= 0."""
  max_keypoints = int(data_config.max_keypoints)
  if max_keypoints < 0:
    raise errors.SemcorrError(
        f'data.max_keypoints must be >= 0, got {max_keypoints}.')
  return max_keypoints


def load_pairs(name: str, data_config, split: str) -> PairTable:
  """Reads a split of a keypoint-pair dataset (building it if needed).

  Args:
    name: a key of `DATASETS`.
    data_config: reads `data_dir`, `manual_dir`, `max_keypoints`.
    split: see `canonical_split`.

  Raises:
    SemcorrError: an unknown name or split, missing files (the builder says
      which and where to get them), an empty split, or too many keypoints.
  """
  info = dataset(name)
  tfds_split = canonical_split(split, name)
  max_keypoints = max_keypoints_of(data_config)
  data_dir = data_config.data_dir or None
  manual_dir = data_config.manual_dir or None
  key = (name, data_dir, manual_dir, tfds_split, max_keypoints)
  if key in _CACHE:
    return _CACHE[key]
  builder = benchmarks.prepare(name, data_dir=data_dir, manual_dir=manual_dir)
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
      file_name = record[f'{side}_file'].decode()
      if file_name not in image_index:
        image_index[file_name] = len(images)
        images.append(record[f'{side}_image'])
      columns[f'{side}_ids'].append(image_index[file_name])
      columns[f'{side}_bbox'].append(
          np.asarray(record[f'{side}_bbox'], np.float32).reshape(4))
    packed = pack_keypoints(
        record['source_keypoints'], record['target_keypoints'],
        record['keypoint_valid'], max_keypoints,
        f'{info.title} {tfds_split} pair {pair_id}')
    for column, value in zip(('source_keypoints', 'target_keypoints',
                              'keypoint_valid'), packed):
      columns[column].append(value)
    columns['flip'].append(info.flips and bool(record['flip']))
    columns['pair_ids'].append(pair_id)
  if not columns['pair_ids']:
    raise errors.SemcorrError(
        f'{info.title} split {tfds_split} holds no pairs.')
  table = PairTable(
      name=f'{name}/{tfds_split}', images=tuple(images),
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
