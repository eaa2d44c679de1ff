"""TFDS builder: Caltech-101 image pairs with object polygons (`caltech101`).

The test set of CNNGeometric / weakalign (Rocco et al.): the pairs listed in
`test_pairs_caltech_with_category.csv`, over the images of the official
Caltech-101 archive. Nothing is resized; one record per CSV row, in file order
(split `test`).

Manual dir layout (the first folder that holds the CSV is the root; it may be
`manual_dir` itself, `manual_dir/caltech-101/` as weakalign's
`datasets/caltech-101/`, or `manual_dir/Caltech-101/` as HPF/DHPF's bundle):

  <root>/test_pairs_caltech_with_category.csv
  <root>/101_ObjectCategories/<class>/image_XXXX.jpg   (extracted from
                                 101_ObjectCategories.tar.gz)

`Annotations/<class>/annotation_XXXX.mat` (the outlines the CSV summarises)
is not read and need not be there.

The CSV has a header row and seven columns, read by position as weakalign
and HPF do (`iloc`): source image, target image, class, XA, YA, XB, YB.
Image paths are relative to the root (`101_ObjectCategories/Faces/...`). The
class is 1-based into `CATEGORIES` (weakalign's list, i.e. the sorted class
folders without BACKGROUND_Google). XA/YA (source) and XB/YB (target) hold the
object polygon's vertex x and y coordinates, comma-separated, in the original
image's pixels, exactly as written in the file (the Matlab annotations are
probably 1-based; weakalign and HPF rasterise them as 0-based, see
`semcorr_jax.evaluation.caltech`).

Record features:

  pair_id          Text     '<row>-<class>-<source stem>-<target stem>', row
                            1-based, e.g. '0001-Faces-image_0001-image_0002'
  source_image     Image    original JPEG bytes; decoded (H, W, 3) uint8
  target_image     Image    (grey JPEGs decode to 3 equal channels)
  source_file      Text     path relative to the root, as in the CSV
  target_file      Text
  category         Text     the class folder name, e.g. 'Faces'
  category_index   int32    0-based index into `CATEGORIES` (CSV value - 1)
  source_polygon   (N, 2) float32  (x, y) vertices, N varies per image
  target_polygon   (M, 2) float32
"""

from __future__ import annotations

import csv
import io
from typing import Iterator

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from semcorr_jax import errors
from semcorr_jax.data.benchmarks import common

DATASET = 'Caltech-101'
CSV_NAME = 'test_pairs_caltech_with_category.csv'
CSV_URL = ('http://www.di.ens.fr/willow/research/weakalign/other_resources/'
           f'{CSV_NAME}')
IMAGES_URL = 'https://data.caltech.edu/records/mzrjq-6wc02'
IMAGE_DIR = '101_ObjectCategories'
ROOT_CANDIDATES = ('', 'caltech-101', 'Caltech-101', 'caltech101')
NUM_COLUMNS = 7

# weakalign `data/caltech_dataset.py` / HPF `data/caltech.py` order.
CATEGORIES = (
    'Faces', 'Faces_easy', 'Leopards', 'Motorbikes', 'accordion', 'airplanes',
    'anchor', 'ant', 'barrel', 'bass', 'beaver', 'binocular', 'bonsai',
    'brain', 'brontosaurus', 'buddha', 'butterfly', 'camera', 'cannon',
    'car_side', 'ceiling_fan', 'cellphone', 'chair', 'chandelier',
    'cougar_body', 'cougar_face', 'crab', 'crayfish', 'crocodile',
    'crocodile_head', 'cup', 'dalmatian', 'dollar_bill', 'dolphin',
    'dragonfly', 'electric_guitar', 'elephant', 'emu', 'euphonium', 'ewer',
    'ferry', 'flamingo', 'flamingo_head', 'garfield', 'gerenuk', 'gramophone',
    'grand_piano', 'hawksbill', 'headphone', 'hedgehog', 'helicopter', 'ibis',
    'inline_skate', 'joshua_tree', 'kangaroo', 'ketch', 'lamp', 'laptop',
    'llama', 'lobster', 'lotus', 'mandolin', 'mayfly', 'menorah', 'metronome',
    'minaret', 'nautilus', 'octopus', 'okapi', 'pagoda', 'panda', 'pigeon',
    'pizza', 'platypus', 'pyramid', 'revolver', 'rhino', 'rooster',
    'saxophone', 'schooner', 'scissors', 'scorpion', 'sea_horse', 'snoopy',
    'soccer_ball', 'stapler', 'starfish', 'stegosaurus', 'stop_sign',
    'strawberry', 'sunflower', 'tick', 'trilobite', 'umbrella', 'watch',
    'water_lilly', 'wheelchair', 'wild_cat', 'windsor_chair', 'wrench',
    'yin_yang')

_CITATION = """\
@inproceedings{rocco2018weakalign,
  title={End-to-end weakly-supervised semantic alignment},
  author={Rocco, I. and Arandjelovi\\'c, R. and Sivic, J.},
  booktitle={CVPR}, year={2018}}
@inproceedings{feifei2004caltech101,
  title={Learning generative visual models from few training examples},
  author={Fei-Fei, L. and Fergus, R. and Perona, P.},
  booktitle={CVPR Workshop on Generative-Model Based Vision}, year={2004}}
"""


def fetch_hint() -> str:
  """How to get the files, for error messages."""
  return (f'download Caltech-101 from {IMAGES_URL} (caltech-101.zip) and '
          f'extract its 101_ObjectCategories.tar.gz, download the pair list '
          f'{CSV_URL} (also in the HPF/DHPF Caltech-101 bundle), and put '
          f'{IMAGE_DIR}/ and {CSV_NAME} in one folder: the manual dir or '
          'manual_dir/caltech-101/')


def parse_polygon(xs: str, ys: str, what: str) -> np.ndarray:
  """(N, 2) float32 (x, y) vertices from comma-separated x and y lists.

  Raises:
    SemcorrError: the lists differ in length or hold a non-number.
  """
  try:
    x = common.float_list(xs, ',')
    y = common.float_list(ys, ',')
  except ValueError:
    raise errors.SemcorrError(
        f'{DATASET}: {what} is not a comma-separated list of numbers '
        f'({xs[:40]!r}, {ys[:40]!r}); is {CSV_NAME} the official file?'
    ) from None
  if x.shape != y.shape or not np.all(np.isfinite(x)) or not np.all(
      np.isfinite(y)):
    raise errors.SemcorrError(
        f'{DATASET}: {what} has {x.size} x but {y.size} y values (or a '
        f'non-finite one); is {CSV_NAME} the official file?')
  return np.stack([x, y], axis=-1).astype(np.float32).reshape(-1, 2)


def _looks_like_data(row: list[str]) -> bool:
  return (len(row) >= NUM_COLUMNS and row[0].lower().endswith('.jpg')
          and row[2].strip().lstrip('+-').isdigit())


def read_pairs(csv_path: epath.Path) -> list[dict]:
  """The pairs of the CSV, in file order (module docstring).

  The first row is the header (pandas' `read_csv` default, as in weakalign),
  unless it already looks like a pair.

  Returns:
    Dicts with `source_file`, `target_file`, `category`, `category_index`,
    `source_polygon`, `target_polygon` and the 1-based `row`.

  Raises:
    SemcorrError: a missing file, a short row, a class index outside 1..101
      or one that disagrees with the image folders.
  """
  text = common.require(csv_path, DATASET, fetch_hint()).read_text()
  rows = [r for r in csv.reader(io.StringIO(text)) if any(f.strip() for f in r)]
  if rows and not _looks_like_data(rows[0]):
    rows = rows[1:]
  pairs = []
  for number, row in enumerate(rows, start=1):
    row = [field.strip() for field in row]
    if len(row) < NUM_COLUMNS:
      raise errors.SemcorrError(
          f'{DATASET}: pair {number} of {csv_path} has {len(row)} columns; '
          'expected source, target, class, XA, YA, XB, YB. Is it the '
          f'official {CSV_NAME}?')
    source, target, label = row[0], row[1], row[2]
    try:
      index = int(float(label)) - 1
    except ValueError:
      index = -1
    if not 0 <= index < len(CATEGORIES):
      raise errors.SemcorrError(
          f'{DATASET}: pair {number} of {csv_path} has class {label!r}; '
          f'expected 1..{len(CATEGORIES)}.')
    category = CATEGORIES[index]
    folders = {epath.Path(source).parent.name, epath.Path(target).parent.name}
    if folders != {category}:
      raise errors.SemcorrError(
          f'{DATASET}: pair {number} of {csv_path} has class {label} '
          f'({category}) but images in {", ".join(sorted(folders))}; is it '
          f'the official {CSV_NAME}?')
    pairs.append({
        'row': number,
        'source_file': source,
        'target_file': target,
        'category': category,
        'category_index': index,
        'source_polygon': parse_polygon(row[3], row[4],
                                        f'pair {number} XA/YA'),
        'target_polygon': parse_polygon(row[5], row[6],
                                        f'pair {number} XB/YB'),
    })
  return pairs


def find_caltech(manual_dir: epath.PathLike) -> epath.Path:
  """The root (the folder with the CSV and `101_ObjectCategories/`).

  Raises:
    SemcorrError: naming what is missing and how to get it.
  """
  root = common.find_root(manual_dir, CSV_NAME, ROOT_CANDIDATES, DATASET,
                          fetch_hint())
  common.require(root / IMAGE_DIR, DATASET, fetch_hint())
  return root


class Caltech101Pairs(tfds.core.GeneratorBasedBuilder):
  """Caltech-101 pairs with object polygons (weakalign's 1-split test set)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
  Download Caltech-101 from {IMAGES_URL} (caltech-101.zip),
  extract 101_ObjectCategories.tar.gz from it, and download the pair list
  {CSV_URL}.
  Put 101_ObjectCategories/ and {CSV_NAME} in one folder: the manual
  dir (`manual_dir`, default <data_dir>/downloads/manual/) or
  manual_dir/caltech-101/.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=(
            'Caltech-101 image pairs of the CNNGeometric/weakalign test set '
            'with the object polygon of each image (original pixels).'),
        features=tfds.features.FeaturesDict({
            'pair_id': tfds.features.Text(),
            'source_image': tfds.features.Image(),
            'target_image': tfds.features.Image(),
            'source_file': tfds.features.Text(),
            'target_file': tfds.features.Text(),
            'category': tfds.features.Text(),
            'category_index': np.int32,
            'source_polygon': tfds.features.Tensor(shape=(None, 2),
                                                   dtype=np.float32),
            'target_polygon': tfds.features.Tensor(shape=(None, 2),
                                                   dtype=np.float32),
        }),
        homepage='https://github.com/ignacio-rocco/weakalign',
        citation=_CITATION,
        disable_shuffling=True,  # CSV order.
    )

  def _split_generators(self, dl_manager):
    manual_dir = common.manual_dir_of(dl_manager, DATASET, fetch_hint())
    root = find_caltech(manual_dir)
    pairs = read_pairs(root / CSV_NAME)
    # Every image checked before anything is written: one clear error.
    for pair in pairs:
      for key in ('source_file', 'target_file'):
        common.require(root / pair[key], DATASET, fetch_hint())
    return {'test': self._generate_examples(root, pairs)}

  def _generate_examples(self, root: epath.Path, pairs: list[dict]
                         ) -> Iterator[tuple[str, dict]]:
    for pair in pairs:
      stems = [epath.Path(pair[k]).stem for k in ('source_file',
                                                  'target_file')]
      pair_id = f'{pair["row"]:04d}-{pair["category"]}-{stems[0]}-{stems[1]}'
      yield pair_id, {
          'pair_id': pair_id,
          # Original bytes: TFDS decodes with channels=3, so grey JPEGs come
          # back as 3 equal channels without a lossy re-encoding.
          'source_image': (root / pair['source_file']).read_bytes(),
          'target_image': (root / pair['target_file']).read_bytes(),
          'source_file': pair['source_file'],
          'target_file': pair['target_file'],
          'category': pair['category'],
          'category_index': pair['category_index'],
          'source_polygon': pair['source_polygon'],
          'target_polygon': pair['target_polygon'],
      }
