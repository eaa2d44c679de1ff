"""TFDS builder: SPair-71k keypoint pairs (Min et al., arXiv:1908.10543).

Reads the extracted official archive
https://cvlab.postech.ac.kr/research/SPair-71k/data/SPair-71k.tar.gz from the
manual dir: `manual_dir/SPair-71k/` or `manual_dir` itself being that folder.

  SPair-71k/JPEGImages/<category>/<image>.jpg
  SPair-71k/PairAnnotation/{trn,val,test}/<layout line>.json
  SPair-71k/Layout/{large,small}/{trn,val,test}.txt
  SPair-71k/ImageAnnotation/<category>/<image>.json   (not read)
  SPair-71k/Segmentation/<category>/<image>.png       (not read)

Layout lines read `<pair number>-<source>-<target>:<category>`, e.g.
`000009-2008_001546-2009_000327:aeroplane`; the pair JSON is
`PairAnnotation/<split>/<that line>.json` and the images are
`JPEGImages/<category>/<source>.jpg` (DHPF and CATs `data/spair.py` read them
so). Splits `train`, `validation`, `test` come from `trn.txt`, `val.txt`,
`test.txt` of the config's layout, in file order: `large` (default; 53,340 /
5,384 / 12,234 pairs) or `small` (its pair JSONs are looked up in the same
`PairAnnotation/<split>/` folders).

Records: the keypoint-pair features of `common` (`pair_id` = the layout line,
unique within a split; `flip` always False) plus

  viewpoint_variation int32  0 easy, 1 medium, 2 hard
  scale_variation     int32  0 easy, 1 medium, 2 hard
  truncation          int32  0 none, 1 source, 2 target, 3 both truncated
  occlusion           int32  0 none, 1 source, 2 target, 3 both occluded
  mirror              bool   the JSON's `mirror` flag (0/1)
  keypoint_ids        (K,) int32  `kps_ids`: the category's keypoint index of
                             each row

The label meanings are those of the official devkit's pair visualiser (it
prints e.g. 'Target Truncated' for truncation 2); the paper's rules that
assign them (azimuth and box-size thresholds) are not restated here.
Keypoints and boxes (`src_bndbox`, `[x1, y1, x2, y2]`) are copied unchanged,
in the original images' pixels.

Image sizes come from the images. The JSONs' `src_imsize`/`trg_imsize` are
read as `[width, height, depth]` (the devkit visualiser and most readers use
element 0 as the width); where they disagree with the image, the image wins
and a warning is logged.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from semcorr_jax import errors
from semcorr_jax.data.benchmarks import common

DATASET = 'SPair-71k'
ARCHIVE_NAME = 'SPair-71k.tar.gz'
HOMEPAGE = 'https://cvlab.postech.ac.kr/research/SPair-71k/'
ARCHIVE_URL = f'{HOMEPAGE}data/{ARCHIVE_NAME}'
# The 18 categories in the official (alphabetical) order.
CATEGORIES = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
    'chair', 'cow', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
    'sheep', 'train', 'tvmonitor')
# TFDS split -> the name SPair-71k uses in Layout/ and PairAnnotation/.
SPLIT_FILES = {'train': 'trn', 'validation': 'val', 'test': 'test'}
LAYOUTS = ('large', 'small')
LARGE_SPLIT_SIZES = {'train': 53340, 'validation': 5384, 'test': 12234}
VIEWPOINT_LEVELS = ('easy', 'medium', 'hard')
SCALE_LEVELS = ('easy', 'medium', 'hard')
TRUNCATION_LEVELS = ('none', 'source', 'target', 'both')
OCCLUSION_LEVELS = ('none', 'source', 'target', 'both')
LABEL_LEVELS = {
    'viewpoint_variation': VIEWPOINT_LEVELS,
    'scale_variation': SCALE_LEVELS,
    'truncation': TRUNCATION_LEVELS,
    'occlusion': OCCLUSION_LEVELS,
}
_LINE = re.compile(r'^(\d+)-([^-:]+)-([^-:]+):(\w+)$')

_CITATION = """\
@article{min2019spair,
  title={SPair-71k: A Large-scale Benchmark for Semantic Correspondence},
  author={Min, Juhong and Lee, Jongmin and Ponce, Jean and Cho, Minsu},
  journal={arXiv preprint arXiv:1908.10543},
  year={2019}
}
"""


def fetch_hint() -> str:
  return (f'download {ARCHIVE_URL} and extract it into the manual dir (it '
          'must hold SPair-71k/Layout, SPair-71k/PairAnnotation and '
          'SPair-71k/JPEGImages)')


def find_spair_root(manual_dir: epath.PathLike) -> epath.Path:
  """The SPair-71k folder in `manual_dir` (`SPair-71k/`, or itself)."""
  return common.find_root(manual_dir, 'Layout', ('SPair-71k', ''), DATASET,
                          fetch_hint())


def parse_layout_line(line: str, where: str) -> tuple[str, str, str]:
  """`'000009-2008_001546-2009_000327:aeroplane'` -> (source, target, cat).

  Raises:
    SemcorrError: the line is not `<number>-<source>-<target>:<category>`.
  """
  match = _LINE.match(line)
  if match is None:
    raise errors.SemcorrError(
        f'{DATASET}: {where}: line {line!r} is not '
        '"<number>-<source>-<target>:<category>"; is it the official '
        f'file? {fetch_hint()}.')
  return match.group(2), match.group(3), match.group(4)


def read_layout(root: epath.Path, layout: str, split: str) -> list[str]:
  """The non-empty lines of `Layout/<layout>/<trn|val|test>.txt`, checked.

  Raises:
    SemcorrError: the file is missing or a line is malformed.
  """
  path = root / 'Layout' / layout / f'{SPLIT_FILES[split]}.txt'
  text = common.require(path, DATASET, fetch_hint()).read_text()
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  for line in lines:
    parse_layout_line(line, str(path))
  return lines


def _field(annotation: dict, key: str, path: epath.Path):
  if key not in annotation:
    raise errors.SemcorrError(
        f'{DATASET}: {path} has no field {key!r}; is it the official pair '
        f'annotation? {fetch_hint()}.')
  return annotation[key]


def _points(value, key: str, path: epath.Path) -> np.ndarray:
  """(K, 2) float64 from a list of [x, y] (None or null -> NaN)."""
  try:
    rows = [[np.nan, np.nan] if p is None else
            [np.nan if c is None else float(c) for c in p] for p in value]
    points = np.asarray(rows, np.float64) if rows else np.zeros((0, 2))
  except (TypeError, ValueError):
    points = np.zeros((0, 0))
  if points.ndim != 2 or points.shape[1] != 2:
    raise errors.SemcorrError(
        f'{DATASET}: {path}: {key} is not a list of [x, y].')
  return points


def _box(value, key: str, path: epath.Path) -> np.ndarray:
  try:
    box = np.asarray(value, np.float32).reshape(-1)
  except (TypeError, ValueError):
    box = np.zeros((0,), np.float32)
  if box.shape != (4,):
    raise errors.SemcorrError(
        f'{DATASET}: {path}: {key} has {box.size} numbers, not [x1, y1, x2, '
        'y2].')
  return box


def _label(annotation: dict, key: str, path: epath.Path) -> int:
  try:
    value = int(_field(annotation, key, path))
  except (TypeError, ValueError):
    value = -1
  if not 0 <= value < len(LABEL_LEVELS[key]):
    raise errors.SemcorrError(
        f'{DATASET}: {path}: {key}={annotation[key]!r}; expected 0..'
        f'{len(LABEL_LEVELS[key]) - 1}.')
  return value


def image_size(data: bytes, path: epath.Path) -> tuple[int, int]:
  """(width, height) of an encoded image."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      return image.size
  except Exception as e:  # pylint: disable=broad-except
    raise errors.SemcorrError(
        f'{DATASET}: {path} is not a readable image ({e}); {fetch_hint()}.'
    ) from None


def imsize_agrees(imsize, size: tuple[int, int]) -> bool:
  """Whether a JSON `*_imsize` ([W, H] or [W, H, D]) matches (W, H)."""
  try:
    values = [int(v) for v in list(imsize)[:2]]
  except (TypeError, ValueError):
    return False
  return tuple(values) == tuple(size)


def pair_example(root: epath.Path, split: str, line: str,
                 imsize_mismatches: list[str] | None = None) -> dict:
  """The record of one layout line (module docstring).

  Args:
    root: the SPair-71k folder.
    split: 'train', 'validation' or 'test'.
    line: its layout line.
    imsize_mismatches: if given, a description of every JSON `*_imsize` that
      disagrees with its image is appended (the image wins).
  """
  source, target, category = parse_layout_line(line, f'split {split}')
  path = root / 'PairAnnotation' / SPLIT_FILES[split] / f'{line}.json'
  try:
    annotation = json.loads(
        common.require(path, DATASET, fetch_hint()).read_text())
  except json.JSONDecodeError as e:
    raise errors.SemcorrError(
        f'{DATASET}: {path} is not valid JSON ({e}); {fetch_hint()}.'
    ) from None
  json_category = _field(annotation, 'category', path)
  if json_category != category or category not in CATEGORIES:
    raise errors.SemcorrError(
        f'{DATASET}: {path} has category {json_category!r}, its layout line '
        f'says {category!r}; expected one of the 18 SPair-71k categories and '
        'the same in both.')
  src = _points(_field(annotation, 'src_kps', path), 'src_kps', path)
  tgt = _points(_field(annotation, 'trg_kps', path), 'trg_kps', path)
  if src.shape != tgt.shape:
    raise errors.SemcorrError(
        f'{DATASET}: {path}: {len(src)} src_kps but {len(tgt)} trg_kps.')
  try:  # Integers, or their decimal strings.
    ids = [int(i) for i in annotation.get('kps_ids', range(len(src)))]
  except (TypeError, ValueError):
    ids = None
  if ids is None or len(ids) != len(src):
    raise errors.SemcorrError(
        f'{DATASET}: {path}: kps_ids is not {len(src)} keypoint indices.')
  record = {'pair_id': line, 'category': category, 'flip': False,
            'keypoint_ids': np.asarray(ids, np.int32),
            'mirror': bool(int(annotation.get('mirror', 0)))}
  record.update(common.keypoint_arrays(src, tgt))
  for side, name in (('source', source), ('target', target)):
    prefix = 'src' if side == 'source' else 'trg'
    relpath = f'JPEGImages/{category}/{name}.jpg'
    image_path = root / relpath
    data = common.require(image_path, DATASET, fetch_hint()).read_bytes()
    size = image_size(data, image_path)
    imsize = annotation.get(f'{prefix}_imsize')
    if (imsize is not None and imsize_mismatches is not None
        and not imsize_agrees(imsize, size)):
      imsize_mismatches.append(
          f'{path} says {prefix}_imsize={imsize} but {image_path} is '
          f'{size[0]}x{size[1]} (W x H)')
    record[f'{side}_image'] = data
    record[f'{side}_file'] = relpath
    record[f'{side}_bbox'] = _box(
        _field(annotation, f'{prefix}_bndbox', path), f'{prefix}_bndbox',
        path)
  for key in LABEL_LEVELS:
    record[key] = _label(annotation, key, path)
  return record


@dataclasses.dataclass(eq=False)
class Spair71kConfig(tfds.core.BuilderConfig):
  """Config: `layout` is the `Layout/` sub-folder, 'large' or 'small'."""

  layout: str = 'large'


class Spair71k(tfds.core.GeneratorBasedBuilder):
  """SPair-71k image pairs with keypoints and variation labels."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      Spair71kConfig(
          name='large', layout='large',
          description='Layout/large: 53,340 / 5,384 / 12,234 pairs.'),
      Spair71kConfig(name='small', layout='small',
                     description='Layout/small.'),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'large'
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Download {ARCHIVE_URL} and extract it into the manual dir
  (`manual_dir`, default <data_dir>/downloads/manual/), so that it holds
  SPair-71k/Layout, SPair-71k/PairAnnotation and SPair-71k/JPEGImages.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    extra = {key: np.int32 for key in LABEL_LEVELS}
    extra['mirror'] = np.bool_
    extra['keypoint_ids'] = tfds.features.Tensor(shape=(None,),
                                                 dtype=np.int32)
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            'SPair-71k semantic correspondence pairs (18 categories) with '
            'keypoints, object boxes and viewpoint/scale/truncation/'
            f'occlusion labels; layout {self.builder_config.layout!r}.'),
        features=common.keypoint_pair_features(CATEGORIES, extra),
        homepage=HOMEPAGE,
        citation=_CITATION,
        # Records keep the order of the layout files.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    manual_dir = common.manual_dir_of(dl_manager, DATASET, fetch_hint())
    root = find_spair_root(manual_dir)
    layout = self.builder_config.layout
    if layout not in LAYOUTS:
      raise errors.SemcorrError(
          f'{DATASET}: unknown layout {layout!r}; use one of {LAYOUTS}.')
    # Read every list first, so that a missing one fails before any work.
    lines = {split: read_layout(root, layout, split) for split in SPLIT_FILES}
    return {split: self._generate_examples(root, split, lines[split])
            for split in SPLIT_FILES}

  def _generate_examples(self, root: epath.Path, split: str,
                         lines: list[str]):
    """Yields `(layout line, record)` in layout-file order."""
    mismatches = []
    for line in lines:
      yield line, pair_example(root, split, line, mismatches)
    if mismatches:
      logging.warning(
          '%s %s: %d image size(s) in the pair JSONs disagree with the '
          'images, e.g. %s; the images\' sizes are used.', DATASET, split,
          len(mismatches), mismatches[0])
