"""TFDS builder: PF-PASCAL keypoint pairs (Ham et al., CVPR'16 / TPAMI'18).

Images and per-image annotations come from the official Proposal Flow archive
http://www.di.ens.fr/willow/research/proposalflow/dataset/PF-dataset-PASCAL.zip
(`PF-dataset-PASCAL/JPEGImages/*.jpg`,
`PF-dataset-PASCAL/Annotations/<class>/<image>.mat`); the pairs come from the
SCNet split (Han et al., ICCV'17) that every reference code uses: 2,940
train rows, 308 validation pairs, 299 test pairs. Accepted layouts of the
manual dir (the first folder holding `JPEGImages/` is the root):

* official + ncnet: `PF-dataset-PASCAL/` and, beside it or inside it (or in an
  `image_pairs/` folder there), `train_pairs.csv`, `val_pairs.csv`,
  `test_pairs.csv` from ncnet `datasets/pf-pascal/image_pairs/` (weakalign's
  `training_data/pf-pascal-flip/train_pairs.csv` is the same train list);
* official + cnngeometric/weakalign: `test_pairs_pf_pascal.csv` and
  `val_pairs_pf_pascal.csv` from
  http://www.di.ens.fr/willow/research/cnngeometric/other_resources/ (and a
  `train_pairs_pf_pascal.csv`) in the same places;
* DHPF/CATs (`PF-PASCAL.tar.gz` of their download scripts):
  `PF-PASCAL/{trn,val,test}_pairs.csv`, `PF-PASCAL/JPEGImages/`,
  `PF-PASCAL/Annotations/`.

Where several CSVs of a split exist, the `*_pf_pascal.csv` name wins, then
`<split>_pairs.csv`, then `trn_pairs.csv`. CSV columns are read by name:
`source_image,target_image,class` always, `flip` for train, and
`XA,YA,XB,YB` (`;`-separated x and y lists) where present; `class` is 1..20
in VOC order (aeroplane..tvmonitor). Image names are matched by their base
name in `JPEGImages/` (the CSVs spell them `PF-dataset-PASCAL/JPEGImages/..`).

Records (the keypoint-pair features of `common`):

* keypoints: from the CSV's `XA..YB` when it has them (the test CSV always
  does; it lists only points visible in both images, all valid). Otherwise
  (train; ncnet's `val_pairs.csv`, which has `flip` instead) from the two
  `Annotations/<class>/<image>.mat` files: their `kps` (K, 2) rows (x, y),
  NaN where a point is not visible; a row is invalid when either side is NaN.
  If either .mat file is missing, the pair has zero keypoints.
* `source_bbox`/`target_bbox`: the .mat field `bbox` (1, 4) =
  `[x1, y1, x2, y2]`, NaN when the image's .mat file is missing.
* `flip`: the train CSV's column; False for validation and test.
* `pair_id`: `<row:04d>-<source>-<target>` (rows repeat in the train CSV).

Coordinates are stored exactly as in the files (PF-PASCAL's annotation tool
wrote Matlab pixel coordinates; no origin shift is applied here).

The train flag `flip=1` (1,470 of the 2,940 rows; each such row repeats an
unflipped pair): ncnet `lib/im_pair_dataset.py` and weakalign
`data/weak_dataset.py` mirror BOTH images of the pair horizontally
(`np.flip(image, 1)`) before resizing; DHPF/CATs `data/pfpascal.py` mirror
both images and set `x -> W - x` on keypoints and boxes. The builder only
stores the flag; `semcorr_jax.data.real_pairs` applies it (with
`x -> W - 1 - x`, the mirror for pixel centres at integers).
"""

from __future__ import annotations

from typing import Iterator

from etils import epath
import numpy as np
import scipy.io
import tensorflow_datasets as tfds

from semcorr_jax import errors
from semcorr_jax.data.benchmarks import common

DATASET = 'PF-PASCAL'
ZIP_NAME = 'PF-dataset-PASCAL.zip'
ZIP_URL = ('http://www.di.ens.fr/willow/research/proposalflow/dataset/'
           f'{ZIP_NAME}')
CNNGEOMETRIC_CSV_URL = ('http://www.di.ens.fr/willow/research/cnngeometric/'
                        'other_resources/')
SPLIT_CSV_URL = ('https://github.com/ignacio-rocco/ncnet/tree/master/'
                 'datasets/pf-pascal/image_pairs')
CLASSES = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
    'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person',
    'pottedplant', 'sheep', 'sofa', 'train', 'tvmonitor')
# Sub-folders of the manual dir that may be the dataset root.
ROOT_CANDIDATES = ('PF-dataset-PASCAL', 'PF-PASCAL',
                   'pf-pascal/PF-dataset-PASCAL', '')
# Split -> CSV names, in order of preference.
CSV_NAMES = {
    'train': ('train_pairs_pf_pascal.csv', 'train_pairs.csv',
              'trn_pairs.csv'),
    'validation': ('val_pairs_pf_pascal.csv', 'val_pairs.csv'),
    'test': ('test_pairs_pf_pascal.csv', 'test_pairs.csv'),
}
SPLIT_SIZES = {'train': 2940, 'validation': 308, 'test': 299}
PAIR_COLUMNS = ('source_image', 'target_image', 'class')
POINT_COLUMNS = ('XA', 'YA', 'XB', 'YB')

_CITATION = """\
@article{ham2018proposal,
  title={Proposal Flow: Semantic Correspondences from Object Proposals},
  author={Ham, Bumsub and Cho, Minsu and Schmid, Cordelia and Ponce, Jean},
  journal={IEEE Transactions on Pattern Analysis and Machine Intelligence},
  year={2018}
}
"""


def fetch_hint() -> str:
  return (f'download {ZIP_URL} and unzip it into the manual dir, and put the '
          'SCNet split CSVs (train_pairs.csv, val_pairs.csv, test_pairs.csv '
          f'from {SPLIT_CSV_URL}, or test_pairs_pf_pascal.csv and '
          f'val_pairs_pf_pascal.csv from {CNNGEOMETRIC_CSV_URL}) beside or '
          'inside PF-dataset-PASCAL/; the DHPF PF-PASCAL/ folder '
          '({trn,val,test}_pairs.csv, JPEGImages/, Annotations/) works too')


def find_pf_pascal_root(manual_dir: epath.PathLike) -> epath.Path:
  """The folder holding `JPEGImages/` (module docstring lists the layouts)."""
  return common.find_root(manual_dir, 'JPEGImages', ROOT_CANDIDATES, DATASET,
                          fetch_hint())


def find_split_csv(root: epath.Path, split: str) -> epath.Path:
  """The CSV of `split` beside or inside `root` (module docstring).

  Raises:
    SemcorrError: naming the files looked for and where.
  """
  folders = (root, root.parent, root / 'image_pairs',
             root.parent / 'image_pairs')
  for name in CSV_NAMES[split]:
    for folder in folders:
      if (folder / name).exists():
        return folder / name
  raise errors.SemcorrError(
      f'{DATASET}: no {" or ".join(CSV_NAMES[split])} for split {split!r} in '
      f'{", ".join(str(f) for f in folders[:2])} (or their image_pairs/); '
      f'{fetch_hint()}.')


def read_pairs(root: epath.Path, split: str) -> tuple[epath.Path,
                                                      list[dict[str, str]]]:
  """`(csv path, rows)` of a split, with the columns the split needs.

  Raises:
    SemcorrError: missing CSV or column; the test CSV must have keypoints.
  """
  path = find_split_csv(root, split)
  required = PAIR_COLUMNS + (('flip',) if split == 'train' else ())
  if split == 'test':
    required += POINT_COLUMNS
  try:
    rows = common.read_csv(path, DATASET, fetch_hint(), required)
  except errors.SemcorrError as e:
    if split != 'test':
      raise
    raise errors.SemcorrError(
        f'{e} (weakalign training_data/pf-pascal-flip/test_pairs.csv is the '
        f'308-pair validation list, not the test split; use the '
        f'test_pairs.csv of {SPLIT_CSV_URL} or '
        f'{CNNGEOMETRIC_CSV_URL}test_pairs_pf_pascal.csv)') from None
  return path, rows


def _file_name(name: str) -> str:
  return name.replace('\\', '/').rsplit('/', 1)[-1]


def _stem(name: str) -> str:
  base = _file_name(name)
  return base.rsplit('.', 1)[0] if '.' in base else base


def read_annotation(path: epath.Path) -> tuple[np.ndarray | None,
                                               np.ndarray]:
  """`(kps (K, 2) float64 or None, bbox (4,) float32)` of one .mat file.

  A missing file gives `(None, NaN box)`.

  Raises:
    SemcorrError: a file without a (K, 2) `kps` or a 4-number `bbox`.
  """
  if not path.exists():
    return None, np.array(common.NAN_BOX, np.float32)
  try:
    with path.open('rb') as f:
      content = scipy.io.loadmat(f)
  except Exception as e:  # pylint: disable=broad-except
    raise errors.SemcorrError(
        f'{DATASET}: {path} is not a readable .mat file ({e}); '
        f'{fetch_hint()}.') from None
  for field in ('kps', 'bbox'):
    if field not in content:
      raise errors.SemcorrError(
          f'{DATASET}: {path} has no field {field!r}; is it an official '
          f'annotation? {fetch_hint()}.')
  kps = np.asarray(content['kps'], np.float64)
  if kps.size == 0:
    kps = np.zeros((0, 2))
  box = np.asarray(content['bbox'], np.float32).reshape(-1)
  if kps.ndim != 2 or kps.shape[1] != 2 or box.shape != (4,):
    raise errors.SemcorrError(
        f'{DATASET}: {path}: kps has shape {kps.shape} (want (K, 2)) and '
        f'bbox {box.size} numbers (want 4).')
  return kps, box


def csv_points(row: dict[str, str], where: str
               ) -> tuple[np.ndarray, np.ndarray]:
  """(K, 2) source and target points from a row's `XA, YA, XB, YB`."""
  xa, ya, xb, yb = (common.float_list(row[c]) for c in POINT_COLUMNS)
  if not len(xa) == len(ya) == len(xb) == len(yb):
    raise errors.SemcorrError(
        f'{DATASET}: {where}: XA, YA, XB, YB hold {len(xa)}, {len(ya)}, '
        f'{len(xb)}, {len(yb)} numbers; they must be equally long.')
  return np.stack([xa, ya], axis=1), np.stack([xb, yb], axis=1)


def _category(row: dict[str, str], where: str) -> str:
  try:
    number = int(float(row['class']))
  except ValueError:
    number = 0
  if not 1 <= number <= len(CLASSES):
    raise errors.SemcorrError(
        f'{DATASET}: {where}: class {row["class"]!r} is not 1..20.')
  return CLASSES[number - 1]


def _flip(row: dict[str, str], where: str) -> bool:
  if row['flip'] not in ('0', '1'):
    raise errors.SemcorrError(
        f'{DATASET}: {where}: flip {row["flip"]!r} is not 0 or 1.')
  return row['flip'] == '1'


def pair_records(root: epath.Path, split: str, csv_path: epath.Path,
                 rows: list[dict[str, str]]) -> Iterator[tuple[str, dict]]:
  """Yields `(pair_id, record)` for the CSV rows, in file order."""
  annotations = {}  # .mat path -> (kps, bbox): images recur across rows.

  def annotation(category, stem):
    path = root / 'Annotations' / category / f'{stem}.mat'
    if path not in annotations:
      annotations[path] = read_annotation(path)
    return annotations[path]

  has_points = all(c in rows[0] for c in POINT_COLUMNS) if rows else False
  for number, row in enumerate(rows):
    where = f'{csv_path} row {number + 2}'
    category = _category(row, where)
    files = {side: _file_name(row[f'{side}_image'])
             for side in ('source', 'target')}
    names = {side: _stem(name) for side, name in files.items()}
    record = {
        'pair_id': f'{number:04d}-{names["source"]}-{names["target"]}',
        'category': category,
        'flip': _flip(row, where) if split == 'train' else False,
    }
    kps = {}
    for side, stem in names.items():
      relpath = f'JPEGImages/{files[side]}'
      record[f'{side}_image'] = common.require(
          root / relpath, DATASET, fetch_hint()).read_bytes()
      record[f'{side}_file'] = relpath
      kps[side], record[f'{side}_bbox'] = annotation(category, stem)
    if has_points:
      source, target = csv_points(row, where)
    elif kps['source'] is None or kps['target'] is None:
      source, target = np.zeros((0, 2)), np.zeros((0, 2))
    else:
      source, target = kps['source'], kps['target']
      if source.shape != target.shape:
        raise errors.SemcorrError(
            f'{DATASET}: {where}: the .mat files of {names["source"]} and '
            f'{names["target"]} hold {len(source)} and {len(target)} '
            f'keypoints; class {category} has one keypoint list.')
    record.update(common.keypoint_arrays(source, target))
    yield record['pair_id'], record


class PfPascal(tfds.core.GeneratorBasedBuilder):
  """PF-PASCAL image pairs (SCNet split) with keypoints and object boxes."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Download {ZIP_URL} and unzip it into the manual dir
  (`manual_dir`, default <data_dir>/downloads/manual/), then put the SCNet
  split CSVs beside or inside PF-dataset-PASCAL/: train_pairs.csv,
  val_pairs.csv and test_pairs.csv from {SPLIT_CSV_URL}
  (or test_pairs_pf_pascal.csv and val_pairs_pf_pascal.csv from
  {CNNGEOMETRIC_CSV_URL}). The DHPF PF-PASCAL/ folder
  ({{trn,val,test}}_pairs.csv, JPEGImages/, Annotations/) works as well.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            'PF-PASCAL semantic correspondence pairs (20 VOC classes, SCNet '
            'split) with keypoints, object boxes and the train flip flag.'),
        features=common.keypoint_pair_features(CLASSES),
        homepage='https://www.di.ens.fr/willow/research/proposalflow/',
        citation=_CITATION,
        # Records keep the order of the CSV files.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    manual_dir = common.manual_dir_of(dl_manager, DATASET, fetch_hint())
    root = find_pf_pascal_root(manual_dir)
    # Read every CSV first, so that a missing one fails before any work.
    tables = {split: read_pairs(root, split) for split in CSV_NAMES}
    return {split: self._generate_examples(root, split, *tables[split])
            for split in CSV_NAMES}

  def _generate_examples(self, root: epath.Path, split: str,
                         csv_path: epath.Path, rows: list[dict[str, str]]):
    """Yields `(pair_id, record)` in CSV order."""
    yield from pair_records(root, split, csv_path, rows)
