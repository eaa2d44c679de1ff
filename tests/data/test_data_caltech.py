"""Tests of the Caltech-101 pair builder (`caltech101`) on a tiny fixture.

The fixture (tests/helpers/caltech_fixture.py) is written at test time in the
official layout: `test_pairs_caltech_with_category.csv` beside
`101_ObjectCategories/<class>/image_XXXX.jpg`.
"""

import pathlib
import shutil
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from semcorr_jax import errors
from semcorr_jax.data import benchmarks
from semcorr_jax.data.benchmarks import caltech

from helpers import caltech_fixture

PAIRS = caltech_fixture.PAIRS


class Caltech101PairsTest(tfds.testing.DatasetBuilderTestCase):
  """The standard TFDS builder checks, on the fixture."""

  DATASET_CLASS = caltech.Caltech101Pairs
  SPLITS = {'test': len(PAIRS)}
  SKIP_CHECKSUMS = True

  @classmethod
  def setUpClass(cls):
    cls._fixture_dir = tempfile.mkdtemp()
    cls.EXAMPLE_DIR = str(
        caltech_fixture.write_caltech(pathlib.Path(cls._fixture_dir)))
    super().setUpClass()

  @classmethod
  def tearDownClass(cls):
    super().tearDownClass()
    shutil.rmtree(cls._fixture_dir)


def records(tmp_path, subdir='caltech-101'):
  manual_dir = caltech_fixture.write_caltech(tmp_path / 'manual', subdir)
  return list(benchmarks.examples(
      'caltech101', 'test', data_dir=str(tmp_path / 'tfds'),
      manual_dir=str(manual_dir)))


def test_registry_points_here():
  assert benchmarks.builder_class('caltech101') is caltech.Caltech101Pairs
  assert len(caltech.CATEGORIES) == 101
  assert caltech.CATEGORIES.index('airplanes') == 5  # CSV class 6.
  assert 'BACKGROUND_Google' not in caltech.CATEGORIES


@pytest.mark.parametrize('subdir', ['caltech-101', ''],
                         ids=['weakalign_layout', 'flat'])
def test_records_follow_the_csv(tmp_path, subdir):
  got = records(tmp_path, subdir)
  assert len(got) == len(PAIRS)
  for number, (record, pair) in enumerate(zip(got, PAIRS), start=1):
    stems = [pathlib.Path(p).stem for p in (pair.source_file,
                                            pair.target_file)]
    assert record['pair_id'] == (
        f'{number:04d}-{pair.category}-{stems[0]}-{stems[1]}')
    assert record['source_file'] == pair.source_file
    assert record['target_file'] == pair.target_file
    assert record['category'] == pair.category
    assert record['category_index'] == pair.category_number - 1
    assert caltech.CATEGORIES[record['category_index']] == pair.category
    for side in ('source', 'target'):
      polygon = record[f'{side}_polygon']
      assert polygon.dtype == np.float32
      np.testing.assert_array_equal(
          polygon, np.array(getattr(pair, f'{side}_polygon'), np.float32))
      image = record[f'{side}_image']
      assert image.dtype == np.uint8
      assert image.shape == getattr(pair, f'{side}_size') + (3,)
  assert got[0]['pair_id'] == '0001-Faces-image_0001-image_0002'
  # Polygons keep their own vertex count (5 for the second source).
  assert got[1]['source_polygon'].shape == (5, 2)


def test_grey_jpeg_becomes_three_equal_channels(tmp_path):
  got = records(tmp_path)
  grey = got[0]['source_image']
  assert got[0]['source_file'] == caltech_fixture.GREY_IMAGE
  assert grey.shape == (20, 24, 3)
  np.testing.assert_array_equal(grey[..., 0], grey[..., 1])
  np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
  # The stored bytes are the original file's (no re-encoding).
  original = (tmp_path / 'manual' / 'caltech-101' /
              caltech_fixture.GREY_IMAGE).read_bytes()
  np.testing.assert_array_equal(
      grey, tf.io.decode_jpeg(original, channels=3).numpy())
  assert tf.io.decode_jpeg(original).shape[-1] == 1
  colour = got[1]['source_image']
  assert not np.array_equal(colour[..., 0], colour[..., 1])


def test_read_pairs_parses_polygons_and_header(tmp_path):
  manual_dir = caltech_fixture.write_caltech(tmp_path)
  csv_path = manual_dir / 'caltech-101' / caltech.CSV_NAME
  pairs = caltech.read_pairs(csv_path)
  assert [p['row'] for p in pairs] == [1, 2, 3]
  np.testing.assert_array_equal(
      pairs[2]['target_polygon'],
      [[3.5, 2.5], [11.5, 2.5], [11.5, 12.5], [3.5, 12.5]])
  # Without a header row, the first pair is kept.
  lines = csv_path.read_text().splitlines()
  csv_path.write_text('\n'.join(lines[1:]) + '\n')
  assert len(caltech.read_pairs(csv_path)) == len(PAIRS)


def build(manual_dir, tmp_path):
  builder = caltech.Caltech101Pairs(data_dir=str(tmp_path / 'tfds'))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir)))
  return builder


def test_missing_manual_dir_names_the_urls(tmp_path):
  with pytest.raises(errors.SemcorrError,
                     match='absent is missing or empty.*data.caltech.edu'):
    build(tmp_path / 'absent', tmp_path)


def test_missing_csv_names_it_and_its_url(tmp_path):
  manual_dir = caltech_fixture.write_caltech(tmp_path / 'manual')
  (manual_dir / 'caltech-101' / caltech.CSV_NAME).unlink()
  with pytest.raises(
      errors.SemcorrError,
      match=(r'no test_pairs_caltech_with_category\.csv under .*'
             r'www\.di\.ens\.fr/willow/research/weakalign')):
    build(manual_dir, tmp_path)


def test_missing_image_folder_and_image_are_named(tmp_path):
  manual_dir = caltech_fixture.write_caltech(tmp_path / 'manual')
  image = manual_dir / 'caltech-101' / PAIRS[1].target_file
  image.unlink()
  with pytest.raises(errors.SemcorrError,
                     match=r'airplanes/image_0002\.jpg is missing.*zip'):
    build(manual_dir, tmp_path)
  shutil.rmtree(manual_dir / 'caltech-101' / '101_ObjectCategories')
  with pytest.raises(errors.SemcorrError,
                     match=r'101_ObjectCategories is missing.*tar\.gz'):
    build(manual_dir, tmp_path)


def write_rows(path, *rows):
  path.write_text('source_image,target_image,class,XA,YA,XB,YB\n'
                  + ''.join(row + '\n' for row in rows))


def test_bad_rows_are_clear_errors(tmp_path):
  path = tmp_path / caltech.CSV_NAME
  src, tgt = PAIRS[0].source_file, PAIRS[0].target_file
  write_rows(path, f'{src},{tgt},1,"1,2"')
  with pytest.raises(errors.SemcorrError, match='has 4 columns'):
    caltech.read_pairs(path)
  write_rows(path, f'{src},{tgt},0,"1,2,3","1,2,3","1,2,3","1,2,3"')
  with pytest.raises(errors.SemcorrError, match='expected 1..101'):
    caltech.read_pairs(path)
  write_rows(path, f'{src},{tgt},2,"1,2,3","1,2,3","1,2,3","1,2,3"')
  with pytest.raises(errors.SemcorrError,
                     match=r'class 2 \(Faces_easy\) but images in Faces'):
    caltech.read_pairs(path)
  write_rows(path, f'{src},{tgt},1,"1,2,3","1,2","1,2,3","1,2,3"')
  with pytest.raises(errors.SemcorrError, match='XA/YA has 3 x but 2 y'):
    caltech.read_pairs(path)
  write_rows(path, f'{src},{tgt},1,"1,2,3","1,2,3","1,a,3","1,2,3"')
  with pytest.raises(errors.SemcorrError,
                     match='XB/YB is not a comma-separated list'):
    caltech.read_pairs(path)
