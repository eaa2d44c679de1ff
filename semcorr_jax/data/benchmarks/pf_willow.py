"""TFDS builder: PF-WILLOW keypoint pairs (Ham et al., CVPR'16).

Images come from the official Proposal Flow archive
http://www.di.ens.fr/willow/research/proposalflow/dataset/PF-dataset.zip
(`PF-dataset/<sub-class>/<name>.png`, 10 sub-classes, below); the pairs and
keypoints from the cnngeometric/weakalign list
http://www.di.ens.fr/willow/research/cnngeometric/other_resources/test_pairs_pf.csv
that every reference code evaluates on. Accepted layouts of the manual dir:

* official: `PF-dataset/` and `test_pairs_pf.csv` beside it (as weakalign's
  `download_datasets.py` leaves them) or inside it;
* DHPF/CATs: `PF-WILLOW/test_pairs.csv` with the sub-class folders directly
  in `PF-WILLOW/` (their `PF-WILLOW.tar.gz`); also `pf-willow/`.

CSV columns are read by position, as all reference readers do (pandas
`iloc`): image A, image B (names like `PF-dataset/car(G)/Cars_006a.png`),
then 20 numbers for A (10 x, then 10 y), then 20 for B. The first row is the
header. An image name is looked up under the CSV's folder as written, then
without its first component (DHPF layout), then under the CSV's parent.

Records (the keypoint-pair features of `common`), split `test` only:
`category` = the sub-class folder of image A (the name's second-to-last
component); 10 keypoints per pair, all valid; `source_bbox`/`target_bbox`
NaN (PF-WILLOW has no boxes: its PCK threshold is the keypoints' extent, see
docs/benchmarks.md); `flip` False; `source_file`/`target_file` the CSV's
names; `pair_id` `<row:04d>-<A>-<B>`. Points are stored as in the CSV.
"""

from __future__ import annotations

import csv
import io

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from semcorr_jax import errors
from semcorr_jax.data.benchmarks import common

DATASET = 'PF-WILLOW'
ZIP_URL = ('http://www.di.ens.fr/willow/research/proposalflow/dataset/'
           'PF-dataset.zip')
CSV_URL = ('http://www.di.ens.fr/willow/research/cnngeometric/'
           'other_resources/test_pairs_pf.csv')
CATEGORIES = (
    'car(G)', 'car(M)', 'car(S)', 'duck(S)', 'motorbike(G)', 'motorbike(M)',
    'motorbike(S)', 'winebottle(M)', 'winebottle(wC)', 'winebottle(woC)')
NUM_KEYPOINTS = 10
NUM_COLUMNS = 2 + 4 * NUM_KEYPOINTS
# Where the pair list may sit (sub-folder of the manual dir, file name).
CSV_PLACES = (('', 'test_pairs_pf.csv'), ('PF-dataset', 'test_pairs_pf.csv'),
              ('PF-WILLOW', 'test_pairs.csv'),
              ('pf-willow', 'test_pairs.csv'), ('', 'test_pairs.csv'))

_CITATION = """\
@inproceedings{ham2016proposal,
  title={Proposal Flow},
  author={Ham, Bumsub and Cho, Minsu and Schmid, Cordelia and Ponce, Jean},
  booktitle={CVPR},
  year={2016}
}
"""


def fetch_hint() -> str:
  return (f'download {ZIP_URL} and unzip it into the manual dir, and put '
          f'{CSV_URL} beside PF-dataset/ (or use the DHPF PF-WILLOW/ '
          'folder with test_pairs.csv)')


def find_pair_csv(manual_dir: epath.PathLike) -> epath.Path:
  """The pair list in `manual_dir` (module docstring).

  Raises:
    SemcorrError: naming the places searched and the download URLs.
  """
  manual_dir = epath.Path(manual_dir)
  if not manual_dir.is_dir():
    raise errors.SemcorrError(
        f'{DATASET}: manual dir {manual_dir} does not exist; {fetch_hint()}.')
  for folder, name in CSV_PLACES:
    path = (manual_dir / folder if folder else manual_dir) / name
    if path.exists():
      return path
  tried = ', '.join(f'{folder}/{name}' if folder else name
                    for folder, name in CSV_PLACES)
  raise errors.SemcorrError(
      f'{DATASET}: none of {tried} is in {manual_dir}; {fetch_hint()}.')


def read_rows(path: epath.Path) -> list[list[str]]:
  """The data rows (header dropped) of the pair list, 42 fields each."""
  rows = [r for r in csv.reader(io.StringIO(path.read_text())) if r]
  for number, row in enumerate(rows[1:], start=2):
    if len(row) != NUM_COLUMNS:
      raise errors.SemcorrError(
          f'{DATASET}: {path} row {number} has {len(row)} columns, not '
          f'{NUM_COLUMNS} (image A, image B, 10 x and 10 y of A, then of B); '
          f'is it the official {CSV_URL}?')
  return [[field.strip() for field in row] for row in rows[1:]]


def find_image(csv_dir: epath.Path, name: str) -> epath.Path:
  """The file of a CSV image name (module docstring), or a SemcorrError."""
  parts = [p for p in name.replace('\\', '/').split('/') if p]
  candidates = [csv_dir.joinpath(*parts)]
  if len(parts) > 1:
    candidates.append(csv_dir.joinpath(*parts[1:]))
  candidates.append(csv_dir.parent.joinpath(*parts))
  for path in candidates:
    if path.exists():
      return path
  raise errors.SemcorrError(
      f'{DATASET}: image {name} is missing (looked for {candidates[0]}); '
      f'{fetch_hint()}.')


def row_points(row: list[str], where: str) -> tuple[np.ndarray, np.ndarray]:
  """(10, 2) points of A and of B from one row's 40 numbers."""
  try:
    values = np.array([float(v) for v in row[2:]], np.float64)
  except ValueError:
    raise errors.SemcorrError(
        f'{DATASET}: {where}: the keypoint columns are not all numbers.'
    ) from None
  n = NUM_KEYPOINTS
  source = np.stack([values[:n], values[n:2 * n]], axis=1)
  target = np.stack([values[2 * n:3 * n], values[3 * n:]], axis=1)
  return source, target


def _category(name: str, where: str) -> str:
  parts = name.replace('\\', '/').split('/')
  category = parts[-2] if len(parts) > 1 else ''
  if category not in CATEGORIES:
    raise errors.SemcorrError(
        f'{DATASET}: {where}: image {name} is not in one of the sub-class '
        f'folders {", ".join(CATEGORIES)}.')
  return category


def _stem(name: str) -> str:
  base = name.replace('\\', '/').rsplit('/', 1)[-1]
  return base.rsplit('.', 1)[0] if '.' in base else base


class PfWillow(tfds.core.GeneratorBasedBuilder):
  """PF-WILLOW image pairs with 10 keypoints each (test only)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Download {ZIP_URL} and unzip it into the manual dir
  (`manual_dir`, default <data_dir>/downloads/manual/), and put
  {CSV_URL} beside the PF-dataset/ folder. The DHPF PF-WILLOW/ folder
  (with test_pairs.csv) works as well.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            'PF-WILLOW semantic correspondence pairs (10 sub-classes of 4 '
            'object classes), 10 keypoints per pair, no boxes.'),
        features=common.keypoint_pair_features(CATEGORIES),
        homepage='https://www.di.ens.fr/willow/research/proposalflow/',
        citation=_CITATION,
        # Records keep the order of the CSV.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    manual_dir = common.manual_dir_of(dl_manager, DATASET, fetch_hint())
    path = find_pair_csv(manual_dir)
    return {'test': self._generate_examples(path, read_rows(path))}

  def _generate_examples(self, path: epath.Path, rows: list[list[str]]):
    """Yields `(pair_id, record)` in CSV order."""
    for number, row in enumerate(rows):
      where = f'{path} row {number + 2}'
      name_a, name_b = row[0], row[1]
      source, target = row_points(row, where)
      record = {
          'pair_id': f'{number:04d}-{_stem(name_a)}-{_stem(name_b)}',
          'category': _category(name_a, where),
          'source_file': name_a,
          'target_file': name_b,
          'source_image': find_image(path.parent, name_a).read_bytes(),
          'target_image': find_image(path.parent, name_b).read_bytes(),
          'source_bbox': np.array(common.NAN_BOX, np.float32),
          'target_bbox': np.array(common.NAN_BOX, np.float32),
          'flip': False,
      }
      record.update(common.keypoint_arrays(source, target))
      yield record['pair_id'], record
