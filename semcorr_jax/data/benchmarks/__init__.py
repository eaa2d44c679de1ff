"""TFDS builders of the evaluation benchmarks, and one way to read them.

  from semcorr_jax.data import benchmarks
  for example in benchmarks.examples('pf_pascal', 'test', data_dir=D,
                                     manual_dir=M):
    example['source_image']  # (H, W, 3) uint8, the original image

| name        | builder module | splits                  | record kind |
|-------------|----------------|-------------------------|-------------|
| pf_pascal   | pf_pascal      | train, validation, test | keypoints   |
| pf_willow   | pf_willow      | test                    | keypoints   |
| spair71k    | spair          | train, validation, test | keypoints   |
| tss         | tss            | test                    | flow        |
| caltech101  | caltech        | test                    | masks       |

Record formats: `common` (keypoint pairs) and the builder modules (flow and
mask pairs). Each builder reads the official layout from a manual dir and
says in its error what is missing and where to download it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from semcorr_jax import errors
from semcorr_jax.data.benchmarks import caltech
from semcorr_jax.data.benchmarks import pf_pascal
from semcorr_jax.data.benchmarks import pf_willow
from semcorr_jax.data.benchmarks import spair
from semcorr_jax.data.benchmarks import tss


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Where a benchmark's builder lives and what it holds.

  Attributes:
    module: module under `semcorr_jax.data.benchmarks`.
    builder: the builder class name in that module.
    splits: the splits it generates.
    kind: 'keypoints', 'flow' or 'masks' (the record format).
    locate: the module's function that finds the downloaded files in a
      manual dir, raising a SemcorrError that says what is missing.
  """

  module: str
  builder: str
  splits: tuple[str, ...]
  kind: str
  locate: str


DATASETS = {
    'pf_pascal': DatasetInfo('pf_pascal', 'PfPascal',
                             ('train', 'validation', 'test'), 'keypoints',
                             'find_pf_pascal_root'),
    'pf_willow': DatasetInfo('pf_willow', 'PfWillow', ('test',), 'keypoints',
                             'find_pair_csv'),
    'spair71k': DatasetInfo('spair', 'Spair71k',
                            ('train', 'validation', 'test'), 'keypoints',
                            'find_spair_root'),
    'tss': DatasetInfo('tss', 'Tss', ('test',), 'flow', 'find_tss'),
    'caltech101': DatasetInfo('caltech', 'Caltech101Pairs', ('test',),
                              'masks', 'find_caltech'),
}

_MODULES = {module.__name__.rsplit('.', 1)[-1]: module
            for module in (caltech, pf_pascal, pf_willow, spair, tss)}


def info(name: str) -> DatasetInfo:
  """The `DatasetInfo` of a benchmark, or a SemcorrError listing them."""
  if name not in DATASETS:
    raise errors.SemcorrError(
        f'unknown benchmark dataset {name!r}; available: '
        f'{", ".join(DATASETS)}')
  return DATASETS[name]


def builder_class(name: str):
  """The TFDS builder class of a benchmark."""
  entry = info(name)
  return getattr(_MODULES[entry.module], entry.builder)


def prepare(name: str, *, data_dir: str | None = None,
            manual_dir: str | None = None, config: str | None = None):
  """Builds the benchmark's TFDS dataset if needed; returns the builder.

  Args:
    name: a key of `DATASETS`.
    data_dir: TFDS data dir (None: TFDS's default).
    manual_dir: the folder with the downloaded files (None: TFDS's
      `<data_dir>/downloads/manual`).
    config: builder config name (None: the builder's default).

  Raises:
    SemcorrError: unknown name; missing or incomplete files (the message says
      what is missing and how to get it).
  """
  cls = builder_class(name)
  kwargs = {'data_dir': data_dir}
  if config is not None:
    kwargs['config'] = config
  builder = cls(**kwargs)
  if not builder.is_prepared():
    if manual_dir is not None:  # before TFDS creates its folders
      check_files(name, manual_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=download_config)
  return builder


def check_files(name: str, manual_dir: str) -> None:
  """Checks that `manual_dir` holds the benchmark's downloaded files (their
  root folder or list); creates nothing.

  Raises:
    SemcorrError: what is missing, where it was looked for and how to get
      it (the builder's own message).
  """
  entry = info(name)
  module = _MODULES[entry.module]
  if not os.path.isdir(manual_dir) or not os.listdir(manual_dir):
    title = getattr(module, 'DATASET', entry.module.upper())
    raise errors.SemcorrError(
        f'{title}: the manual dir {manual_dir} is missing or empty; '
        f'{module.fetch_hint()}.')
  getattr(module, entry.locate)(manual_dir)


def examples(name: str, split: str, *, data_dir: str | None = None,
             manual_dir: str | None = None, config: str | None = None,
             ) -> Iterator[dict[str, Any]]:
  """Yields the records of one split as numpy dicts, in file order.

  Images come decoded, `(H, W, 3)` uint8 (grey images as 3 equal
  channels); text fields as `str`; class labels (`tfds.features.ClassLabel`
  at the top level, e.g. 'category') as their names, `str`.
  """
  entry = info(name)
  if split not in entry.splits:
    raise errors.SemcorrError(
        f'{name} has no split {split!r}; it has {", ".join(entry.splits)}')
  builder = prepare(name, data_dir=data_dir, manual_dir=manual_dir,
                    config=config)
  ds = builder.as_dataset(split=split, shuffle_files=False)
  features = builder.info.features
  labels = {k: f for k, f in features.items()
            if isinstance(f, tfds.features.ClassLabel)}
  for record in tfds.as_numpy(ds):
    out = {}
    for key, value in record.items():
      if key in labels:
        value = labels[key].int2str(int(value))
      elif isinstance(value, bytes):
        value = value.decode()
      elif (key.endswith('_image') and value.ndim == 3
            and value.shape[-1] == 1):
        value = np.repeat(value, 3, axis=-1)
      out[key] = value
    yield out
