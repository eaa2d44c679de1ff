"""Tests of the TSS builder on the tiny fixture (tests/helpers/tss_fixture)."""

import pathlib
import shutil
import tempfile

from etils import epath
import numpy as np
import pytest
import tensorflow_datasets as tfds

from semcorr_jax import errors
from semcorr_jax.data import benchmarks
from semcorr_jax.data.benchmarks import tss

from helpers import tss_fixture

# (pair_id, group, source file, target file, flip) in CSV order.
EXPECTED = [
    ('FG3DCar/001_005_2to1', 'FG3DCar', 'image1', 'image2', False),
    ('FG3DCar/001_005_1to2', 'FG3DCar', 'image2', 'image1', False),
    ('JODS/car_01_02_2to1', 'JODS', 'image1', 'image2', False),
    ('JODS/car_01_02_1to2', 'JODS', 'image2', 'image1', False),
    ('PASCAL/bike_01_03_2to1', 'PASCAL', 'image1', 'image2', True),
    ('PASCAL/bike_01_03_1to2', 'PASCAL', 'image2', 'image1', True),
]


class TssBuilderTest(tfds.testing.DatasetBuilderTestCase):
  """The standard TFDS builder checks on the fixture."""

  DATASET_CLASS = tss.Tss
  SPLITS = {'test': len(EXPECTED)}
  SKIP_CHECKSUMS = True

  @classmethod
  def setUpClass(cls):
    cls._fixture_dir = tempfile.mkdtemp()
    cls.EXAMPLE_DIR = str(tss_fixture.write_tss(pathlib.Path(
        cls._fixture_dir)))
    super().setUpClass()

  @classmethod
  def tearDownClass(cls):
    super().tearDownClass()
    shutil.rmtree(cls._fixture_dir)


@pytest.fixture(scope='module')
def records(tmp_path_factory):
  root = tmp_path_factory.mktemp('tss_data')
  manual_dir = tss_fixture.write_tss(root / 'manual')
  return list(benchmarks.examples('tss', 'test', data_dir=str(root / 'tfds'),
                                  manual_dir=str(manual_dir)))


def pair_of(record):
  group, folder = record['target_file'].split('/')[:2]
  index = [(p.group, p.folder) for p in tss_fixture.PAIRS].index(
      (group, folder))
  return index, tss_fixture.PAIRS[index]


def test_records_order_ids_files_and_flip(records):
  assert benchmarks.info('tss').builder == 'Tss'
  assert len(records) == len(EXPECTED)
  for record, (pair_id, group, src, tgt, flip) in zip(records, EXPECTED):
    folder = pair_id.rsplit('_', 1)[0]
    assert record['pair_id'] == pair_id
    assert record['group'] == group
    assert record['source_file'] == f'{folder}/{src}.png'
    assert record['target_file'] == f'{folder}/{tgt}.png'
    assert bool(record['flip']) is flip


def test_images_are_the_original_pixels(records):
  for record in records:
    index, _ = pair_of(record)
    for key in ('source', 'target'):
      number = int(record[f'{key}_file'][-5])
      np.testing.assert_array_equal(
          record[f'{key}_image'], tss_fixture.image_pixels(index, number))


def test_flow_is_the_target_grid_truth(records):
  for record in records:
    _, pair = pair_of(record)
    direction = int(record['target_file'][-5])  # flow<d> lies on image<d>.
    truth = tss_fixture.gt_flow(pair, direction)
    known = np.isfinite(truth[..., 0])
    assert record['flow'].dtype == np.float32
    assert record['flow'].shape == truth.shape
    np.testing.assert_array_equal(record['flow_valid'], known)
    np.testing.assert_allclose(record['flow'][known], truth[known],
                               atol=1e-5)
    assert np.all(record['flow'][~known] == 0.0)
  # Spot values: FG3DCar flow2 (target image2) = (-3, +2) back to image1;
  # JODS flow1 (target image1) = 0.5 p: pixel (x 4, y 2) -> (2, 1).
  np.testing.assert_array_equal(records[0]['flow'][10, 10], [-3.0, 2.0])
  np.testing.assert_array_equal(records[3]['flow'][2, 4], [2.0, 1.0])
  # PASCAL mirror, flow1 at (x 3, y 4): 27 - 3 - 3 = 21.
  np.testing.assert_array_equal(records[5]['flow'][4, 3], [21.0, 0.0])


def test_masks(records):
  for record in records:
    _, pair = pair_of(record)
    masks = {1: tss_fixture.mask1(pair), 2: tss_fixture.mask2(pair)}
    for key in ('source', 'target'):
      mask = record[f'{key}_mask']
      number = int(record[f'{key}_file'][-5])
      assert mask.dtype == np.uint8 and mask.shape[-1] == 1
      np.testing.assert_array_equal(mask[..., 0], masks[number])
    # In TSS the known ground truth is exactly the target's foreground.
    np.testing.assert_array_equal(record['flow_valid'],
                                  record['target_mask'][..., 0] == 1)
  # JODS palette masks: indices {0, 1} read as indices.
  assert records[2]['source_mask'].sum() == 24  # 6 x 4 box.
  assert records[2]['target_mask'].sum() == 40  # 8 x 5 preimage.


def test_csv_paths_without_the_archive_folder(tmp_path):
  manual_dir = tss_fixture.write_tss(tmp_path, prefix='')
  root, csv_path = tss.find_tss(manual_dir)
  assert root == epath.Path(tmp_path / 'TSS_CVPR2016')
  rows = tss.read_rows(csv_path)
  assert rows[0] == ('FG3DCar/001_005/image1.png',
                     'FG3DCar/001_005/image2.png', 2, False)
  pair_id, record = tss.make_example(root, csv_path, *rows[4])
  assert pair_id == 'PASCAL/bike_01_03_2to1' and record['flip']
  assert record['source_file'] == 'PASCAL/bike_01_03/image1.png'
  assert record['flow'].shape == (20, 28, 2)
  # A Windows-style path with another prefix resolves the same way.
  assert tss.relative_path(r'datasets\tss\JODS\car_01_02\image2.png',
                           csv_path) == 'JODS/car_01_02/image2.png'


def prepare(manual_dir, data_dir):
  builder = tss.Tss(data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir)))


def test_missing_manual_dir(tmp_path):
  with pytest.raises(errors.SemcorrError,
                     match='absent is missing or empty.*TSS_CVPR2016.zip'):
    prepare(tmp_path / 'absent', tmp_path / 'tfds')
  with pytest.raises(errors.SemcorrError, match='does not exist.*taniai'):
    tss.find_tss(tmp_path / 'absent')


def test_missing_csv_names_it_and_its_url(tmp_path):
  manual_dir = tss_fixture.write_tss(tmp_path / 'manual')
  (manual_dir / 'test_pairs_tss.csv').unlink()
  with pytest.raises(errors.SemcorrError,
                     match=r'test_pairs_tss.csv is missing.*'
                     r'cnngeometric/other_resources/test_pairs_tss.csv'):
    prepare(manual_dir, tmp_path / 'tfds')


def test_missing_dataset_folder_and_unextracted_zip(tmp_path):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  tss_fixture.write_csv(manual_dir)
  with pytest.raises(errors.SemcorrError,
                     match='no FG3DCar/JODS/PASCAL folder.*TSS_CVPR2016.zip'):
    prepare(manual_dir, tmp_path / 'tfds')
  (manual_dir / 'TSS_CVPR2016.zip').write_bytes(b'PK')
  with pytest.raises(errors.SemcorrError, match='not extracted: unzip it'):
    tss.find_tss(manual_dir)


def test_missing_flow_file_is_named(tmp_path):
  manual_dir = tss_fixture.write_tss(tmp_path / 'manual')
  (manual_dir / 'TSS_CVPR2016/JODS/car_01_02/flow1.flo').unlink()
  with pytest.raises(errors.SemcorrError,
                     match=r'car_01_02/flow1.flo is missing.*'
                     r'JointCorrCoseg/TSS_CVPR2016.zip'):
    prepare(manual_dir, tmp_path / 'tfds')


def test_bad_csv_rows(tmp_path):
  manual_dir = tss_fixture.write_tss(tmp_path)
  root, csv_path = tss.find_tss(manual_dir)
  csv_path.write_text('a,b,c,d\nx,y,1,0\n')
  with pytest.raises(errors.SemcorrError, match='line 2 has 4 columns'):
    tss.read_rows(csv_path)
  csv_path.write_text('h1,h2,h3,h4,h5\nx,y,3,0,1\n')
  with pytest.raises(errors.SemcorrError, match='is not 1 or 2'):
    tss.read_rows(csv_path)
  base = 'TSS_CVPR2016/FG3DCar/001_005/'
  with pytest.raises(errors.SemcorrError, match='target must be that image'):
    tss.make_example(root, csv_path, base + 'image1.png', base + 'image2.png',
                     1, False)
  with pytest.raises(errors.SemcorrError, match='pairs image1.png with'):
    tss.make_example(root, csv_path, base + 'image2.png', base + 'image2.png',
                     2, False)
  with pytest.raises(errors.SemcorrError, match='is not a path like'):
    tss.make_example(root, csv_path, 'image1.png', base + 'image2.png', 2,
                     False)
