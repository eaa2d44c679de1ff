"""PASCAL VOC 2012 segmentation as a scene source for synthetic-pair training.

`scene_source(data_config, split)` prepares the `voc2012_segmentation` TFDS
dataset (`semcorr_jax.data.voc_builder`) if needed, reads its `trainval` split
once as encoded JPEG/PNG bytes, drops excluded images and returns an in-memory
`sources.InMemorySource`:

* `'train'`: trainval minus the exclusions, minus the held-out slice;
* `'heldout'`: the last `heldout_scenes` images of trainval minus the
  exclusions, in image-id order (ids sort by year, so these are the most
  recent 2011 images).

Exclusions: SFNet trains on VOC 2012 segmentation "excluding images that
overlap with the test split in the PF-PASCAL". The default list
(`pf_pascal_test_images.txt`, next to this file) holds the 506 PF-PASCAL test
images; 122 of them are in trainval, leaving 2,791 scenes. An exclusion list
has one VOC image id per line (`2008_000123`, or a file name/path ending in
it) and `#` comments.

Data config fields read (values: the config files, e.g. configs/sfnet.py):
  data_dir: TFDS data dir (None or '': TFDS's default, `~/tensorflow_datasets`).
  manual_dir: `VOCtrainval_11-May-2012.tar` itself, or a folder holding it or
    the extracted `VOCdevkit/` (None or '': `<data_dir>/downloads/manual`).
  exclude_list: None for the shipped PF-PASCAL test list, '' for none, or a
    path (or a sequence of paths) of exclusion lists.
  heldout_scenes: size of the held-out slice.
  void_as: how the void label 255 counts, 'foreground' or 'background'
    (`voc_builder`).

With several processes, prepare the dataset once beforehand so that they do
not all build it: `python -m semcorr_jax.data.voc --data_dir=D --manual_dir=M`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import sys

from etils import epath
import tensorflow_datasets as tfds

from semcorr_jax import errors
from semcorr_jax.data import sources
from semcorr_jax.data import voc_builder

DEFAULT_EXCLUDE_LIST = epath.Path(__file__).parent / 'pf_pascal_test_images.txt'
SPLITS = ('train', 'heldout')


def read_exclude_list(path: epath.PathLike) -> set[str]:
  """VOC image ids listed in an exclusion file (format: module docstring)."""
  path = epath.Path(path)
  if not path.exists():
    raise errors.SemcorrError(
        f'Exclusion list {path} does not exist; give a text file with one VOC '
        "image id per line, or exclude_list='' to exclude nothing.")
  ids = set()
  for line in path.read_text().splitlines():
    entry = line.split('#', 1)[0].strip()
    if entry:
      ids.add(epath.Path(entry).stem)
  return ids


def excluded_ids(data_config) -> set[str]:
  """The union of the exclusion lists that `data_config.exclude_list` names."""
  exclude_list = data_config.exclude_list
  if exclude_list is None:
    return read_exclude_list(DEFAULT_EXCLUDE_LIST)
  if isinstance(exclude_list, str):
    exclude_list = [exclude_list] if exclude_list else []
  ids = set()
  for path in exclude_list:
    ids |= read_exclude_list(path)
  return ids


def make_builder(data_config) -> voc_builder.Voc2012Segmentation:
  """The builder for `data_config.void_as` in `data_config.data_dir`."""
  void_as = data_config.void_as
  if void_as not in ('foreground', 'background'):
    raise errors.SemcorrError(
        f"void_as={void_as!r}; use 'foreground' or 'background'.")
  return voc_builder.Voc2012Segmentation(
      config=f'void_{void_as}', data_dir=data_config.data_dir or None)


def prepare(data_config) -> voc_builder.Voc2012Segmentation:
  """Builds the TFDS dataset unless it is there; returns the builder.

  Raises:
    SemcorrError: if it must be built and the VOC files are missing.
  """
  builder = make_builder(data_config)
  if not builder.is_prepared():
    manual_dir = voc_builder.manual_folder(
        data_config.manual_dir
        or builder.data_dir_root / 'downloads' / 'manual')
    voc_builder.find_voc(manual_dir)  # Fails early with a clear message.
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def load_encoded(builder: tfds.core.DatasetBuilder, split: str = 'trainval'
                 ) -> tuple[list[str], list[bytes], list[bytes]]:
  """`(image ids, JPEG bytes, mask PNG bytes)` of a prepared split, by id."""
  dataset = builder.as_dataset(
      split=split, shuffle_files=False,
      decoders={'image': tfds.decode.SkipDecoding(),
                'mask': tfds.decode.SkipDecoding()})
  rows = sorted(
      (epath.Path(example['file_name'].decode()).stem, example['image'],
       example['mask'])
      for example in tfds.as_numpy(dataset))
  return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def load_ids(builder: tfds.core.DatasetBuilder, split: str = 'trainval'
             ) -> list[str]:
  """The sorted image ids of a prepared split (images are not decoded)."""
  dataset = builder.as_dataset(
      split=split, shuffle_files=False,
      decoders={'image': tfds.decode.SkipDecoding(),
                'mask': tfds.decode.SkipDecoding()})
  names = dataset.map(lambda example: example['file_name'])
  return sorted(epath.Path(name.decode()).stem
                for name in tfds.as_numpy(names))


def split_ids(ids: Sequence[str], exclude: set[str], heldout_scenes: int,
              split: str) -> list[int]:
  """Positions in sorted `ids` that make up `split` (module docstring)."""
  if split not in SPLITS:
    raise errors.SemcorrError(
        f'VOC 2012 scene source: unknown split {split!r}; use one of {SPLITS}.')
  keep = [i for i, image_id in enumerate(ids) if image_id not in exclude]
  if not 0 < heldout_scenes < len(keep):
    raise errors.SemcorrError(
        f'VOC 2012: heldout_scenes={heldout_scenes} must be in [1, '
        f'{len(keep) - 1}]: {len(keep)} images remain after exclusions.')
  return keep[:-heldout_scenes] if split == 'train' else keep[-heldout_scenes:]


def scene_source(data_config, split: str) -> sources.InMemorySource:
  """The VOC 2012 scenes of `split` ('train' or 'heldout') held in memory.

  Args:
    data_config: the data config; the fields read are listed in the module
      docstring.
    split: `'train'` or `'heldout'`.

  Returns:
    An `InMemorySource` named `'voc2012/<split>'`; `scene(i)` gives the uint8
    `(H, W, 3)` image and `(H, W)` {0, 1} mask of its i-th image in id order.

  Raises:
    SemcorrError: for a bad split or config value, or missing VOC files.
  """
  heldout_scenes = int(data_config.heldout_scenes)
  exclude = excluded_ids(data_config)
  if split not in SPLITS:  # Before any (slow) preparation.
    split_ids([], exclude, heldout_scenes, split)
  ids, images, masks = load_encoded(prepare(data_config))
  chosen = split_ids(ids, exclude, heldout_scenes, split)
  source = sources.InMemorySource(
      f'voc2012/{split}', [images[i] for i in chosen],
      [masks[i] for i in chosen])
  source.image_ids = [ids[i] for i in chosen]  # For logs and debugging.
  return source


def scene_count(data_config, split: str) -> int:
  """The number of scenes `scene_source(data_config, split)` holds.

  Prepares the dataset if needed and reads only the image ids.
  """
  heldout_scenes = int(data_config.heldout_scenes)
  exclude = excluded_ids(data_config)
  if split not in SPLITS:  # Before any (slow) preparation.
    split_ids([], exclude, heldout_scenes, split)
  ids = load_ids(prepare(data_config))
  return len(split_ids(ids, exclude, heldout_scenes, split))


def main(argv: Sequence[str] | None = None) -> None:
  """Prepares the dataset and prints its split sizes (flags: `--help`)."""
  # argparse, not absl flags: importing this module defines no global flags.
  parser = argparse.ArgumentParser(
      prog='python -m semcorr_jax.data.voc', description=main.__doc__)
  parser.add_argument('--data_dir', help='TFDS data dir.')
  parser.add_argument(
      '--manual_dir',
      help=f'{voc_builder.TAR_NAME}, or a folder with it or VOCdevkit/.')
  parser.add_argument('--void_as', default='foreground',
                      choices=('foreground', 'background'))
  config = parser.parse_args(argv)
  try:
    builder = prepare(config)
  except errors.SemcorrError as e:
    sys.exit(f'Error: {e}')
  ids = load_encoded(builder)[0]
  remaining = len(set(ids) - read_exclude_list(DEFAULT_EXCLUDE_LIST))
  splits = builder.info.splits
  print(f'{builder.data_dir}: train {splits["train"].num_examples}, val '
        f'{splits["val"].num_examples}, trainval {len(ids)} images; '
        f'{remaining} remain after excluding the PF-PASCAL test images.')


if __name__ == '__main__':
  main()
