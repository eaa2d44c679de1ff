"""Tests of the PF-PASCAL and PF-WILLOW builders (tiny fixtures, all layouts).

The fixtures (`tests/helpers/pf_fixture.py`) are written at test time in the
official layouts; every keypoint and box asserted here is known there.
"""

import pathlib
import shutil
import tempfile

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from helpers import pf_fixture as fx
from semcorr_jax import errors
from semcorr_jax.data import benchmarks
from semcorr_jax.data.benchmarks import pf_pascal
from semcorr_jax.data.benchmarks import pf_willow


class PfPascalTest(tfds.testing.DatasetBuilderTestCase):
  """The standard TFDS builder checks, on the official-layout fixture."""

  DATASET_CLASS = pf_pascal.PfPascal
  SPLITS = {'train': len(fx.PASCAL_TRAIN), 'validation': len(fx.PASCAL_VAL),
            'test': len(fx.PASCAL_TEST)}
  SKIP_CHECKSUMS = True

  @classmethod
  def setUpClass(cls):
    cls._fixture_dir = tempfile.mkdtemp()
    cls.EXAMPLE_DIR = str(fx.write_pf_pascal(pathlib.Path(cls._fixture_dir)))
    super().setUpClass()

  @classmethod
  def tearDownClass(cls):
    super().tearDownClass()
    shutil.rmtree(cls._fixture_dir)


class PfWillowTest(tfds.testing.DatasetBuilderTestCase):
  """The standard TFDS builder checks, on the official-layout fixture."""

  DATASET_CLASS = pf_willow.PfWillow
  SPLITS = {'test': len(fx.WILLOW_PAIRS)}
  SKIP_CHECKSUMS = True

  @classmethod
  def setUpClass(cls):
    cls._fixture_dir = tempfile.mkdtemp()
    cls.EXAMPLE_DIR = str(fx.write_pf_willow(pathlib.Path(cls._fixture_dir)))
    super().setUpClass()

  @classmethod
  def tearDownClass(cls):
    super().tearDownClass()
    shutil.rmtree(cls._fixture_dir)


def build(cls, manual_dir, data_dir):
  builder = cls(data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir)))
  return builder


def read_split(builder, split):
  decoders = {'source_image': tfds.decode.SkipDecoding(),
              'target_image': tfds.decode.SkipDecoding()}
  return list(tfds.as_numpy(builder.as_dataset(split=split,
                                               decoders=decoders)))


def category_name(builder, record):
  return builder.info.features['category'].int2str(int(record['category']))


def check_pascal_record(builder, record, row, source, target, flip,
                        from_mat):
  assert record['pair_id'].decode() == f'{row:04d}-{source}-{target}'
  assert category_name(builder, record) == fx.PASCAL_IMAGES[source][0]
  assert record['source_file'].decode() == f'JPEGImages/{source}.jpg'
  assert record['target_file'].decode() == f'JPEGImages/{target}.jpg'
  assert record['source_image'] == fx.pascal_image_bytes(source)
  assert record['target_image'] == fx.pascal_image_bytes(target)
  assert bool(record['flip']) == bool(flip)
  if from_mat:
    src, tgt, valid = fx.mat_points(source, target)
  else:
    src, tgt = fx.csv_points(source, target)
    valid = np.ones(len(src), bool)
  np.testing.assert_array_equal(record['source_keypoints'],
                                src.astype(np.float32))
  np.testing.assert_array_equal(record['target_keypoints'],
                                tgt.astype(np.float32))
  np.testing.assert_array_equal(record['keypoint_valid'], valid)
  np.testing.assert_array_equal(record['source_bbox'], fx.pascal_bbox(source))
  np.testing.assert_array_equal(record['target_bbox'], fx.pascal_bbox(target))


@pytest.mark.parametrize('layout', fx.PASCAL_LAYOUTS)
def test_pf_pascal_records_in_every_layout(tmp_path, layout):
  manual = fx.write_pf_pascal(tmp_path / 'manual', layout=layout)
  builder = build(pf_pascal.PfPascal, manual, tmp_path / 'tfds')
  for split, count in (('train', 6), ('validation', 3), ('test', 4)):
    assert builder.info.splits[split].num_examples == count
  train = read_split(builder, 'train')
  for row, (record, (s, t, flip)) in enumerate(zip(train, fx.PASCAL_TRAIN)):
    check_pascal_record(builder, record, row, s, t, flip, from_mat=True)
  val = read_split(builder, 'validation')
  for row, (record, (s, t)) in enumerate(zip(val, fx.PASCAL_VAL)):
    check_pascal_record(builder, record, row, s, t, 0,
                        from_mat=fx.VAL_FROM_MAT[layout])
  test = read_split(builder, 'test')
  for row, (record, (s, t)) in enumerate(zip(test, fx.PASCAL_TEST)):
    check_pascal_record(builder, record, row, s, t, 0, from_mat=False)


def test_pf_pascal_concrete_values(tmp_path):
  """A few records spelled out, so the fixture helpers are checked too."""
  manual = fx.write_pf_pascal(tmp_path / 'manual')
  builder = build(pf_pascal.PfPascal, manual, tmp_path / 'tfds')
  train = read_split(builder, 'train')
  # Row 0: aeroplane 2007_000001 (32 x 24) -> 2007_000002 (28 x 36), whose
  # keypoint 3 is invisible. Unit (0.25, 0.25) -> (0.25*31, 0.25*23) =
  # (7.75, 5.75) in the source and (0.25*27, 0.25*35) = (6.75, 8.75) in the
  # target; unit (1, 0.5) -> (31, 11.5) is dropped (invalid, stored -1).
  first = train[0]
  np.testing.assert_array_equal(
      first['source_keypoints'],
      [[7.75, 5.75], [23.25, 5.75], [15.5, 17.25], [-1, -1]])
  np.testing.assert_array_equal(
      first['target_keypoints'],
      [[6.75, 8.75], [20.25, 8.75], [13.5, 26.25], [-1, -1]])
  np.testing.assert_array_equal(first['keypoint_valid'],
                                [True, True, True, False])
  np.testing.assert_array_equal(first['source_bbox'], [1, 2, 29, 22])
  assert not first['flip'] and train[2]['flip'] and train[1]['flip']
  # Row 5: the target has no .mat -> zero keypoints and a NaN target box.
  last = train[5]
  assert last['source_keypoints'].shape == (0, 2)
  assert last['keypoint_valid'].shape == (0,)
  np.testing.assert_array_equal(last['source_bbox'], [1, 2, 27, 38])
  assert np.isnan(last['target_bbox']).all()
  # Test row 3: cat 2009_000006 -> 2009_000005; source keypoint 0 is
  # invisible, so the CSV lists the other 4 only.
  test = read_split(builder, 'test')
  assert test[3]['source_keypoints'].shape == (4, 2)
  np.testing.assert_array_equal(test[3]['source_keypoints'][0],
                                [0.25 * 29, 0.75 * 39])


def test_examples_gives_category_names(tmp_path):
  manual = fx.write_pf_pascal(tmp_path / 'manual')
  records = list(benchmarks.examples('pf_pascal', 'test',
                                     data_dir=str(tmp_path / 'tfds'),
                                     manual_dir=str(manual)))
  assert [r['category'] for r in records] == ['aeroplane', 'bicycle', 'cat',
                                              'cat']
  assert all(isinstance(r['category'], str) for r in records)
  assert records[0]['pair_id'] == '0000-2007_000001-2007_000002'
  # Images decoded, (H, W, 3) uint8; the grey JPEG comes as 3 channels.
  assert records[0]['source_image'].shape == (24, 32, 3)
  assert records[1]['target_image'].shape == (32, 24, 3)
  assert records[1]['target_image'].dtype == np.uint8


def prepare_error(cls, manual, data_dir):
  with pytest.raises(errors.SemcorrError) as info:
    build(cls, manual, data_dir)
  return str(info.value)


def test_pf_pascal_missing_files_are_named(tmp_path):
  message = prepare_error(pf_pascal.PfPascal, tmp_path / 'absent',
                          tmp_path / 'tfds0')
  assert 'absent is missing or empty' in message
  assert pf_pascal.ZIP_URL in message
  manual = fx.write_pf_pascal(tmp_path / 'manual')
  (manual / 'test_pairs.csv').unlink()
  message = prepare_error(pf_pascal.PfPascal, manual, tmp_path / 'tfds1')
  assert 'test_pairs_pf_pascal.csv or test_pairs.csv' in message
  assert pf_pascal.ZIP_URL in message and pf_pascal.SPLIT_CSV_URL in message
  manual = fx.write_pf_pascal(tmp_path / 'manual2')
  (manual / 'PF-dataset-PASCAL/JPEGImages/2007_000002.jpg').unlink()
  message = prepare_error(pf_pascal.PfPascal, manual, tmp_path / 'tfds2')
  assert 'JPEGImages/2007_000002.jpg is missing' in message
  assert pf_pascal.ZIP_URL in message
  shutil.rmtree(manual / 'PF-dataset-PASCAL/JPEGImages')
  message = prepare_error(pf_pascal.PfPascal, manual, tmp_path / 'tfds3')
  assert 'no JPEGImages under' in message and pf_pascal.ZIP_URL in message


def test_pf_pascal_rejects_the_flip_list_as_test(tmp_path):
  # weakalign's pf-pascal-flip/test_pairs.csv is the 308-pair val list.
  manual = fx.write_pf_pascal(tmp_path / 'manual')
  shutil.copy(manual / 'val_pairs.csv', manual / 'test_pairs.csv')
  message = prepare_error(pf_pascal.PfPascal, manual, tmp_path / 'tfds')
  assert 'lacks the column(s) XA, YA, XB, YB' in message
  assert 'validation list' in message


def test_pf_pascal_bad_annotation(tmp_path):
  manual = fx.write_pf_pascal(tmp_path / 'manual')
  path = manual / 'PF-dataset-PASCAL/Annotations/cat/2009_000005.mat'
  scipy.io.savemat(path, {'bbox': np.ones((1, 4))})
  message = prepare_error(pf_pascal.PfPascal, manual, tmp_path / 'tfds')
  assert "2009_000005.mat has no field 'kps'" in message


@pytest.mark.parametrize('layout', ['official', 'dhpf'])
def test_pf_willow_records(tmp_path, layout):
  manual = fx.write_pf_willow(tmp_path / 'manual', layout=layout)
  builder = build(pf_willow.PfWillow, manual, tmp_path / 'tfds')
  assert list(builder.info.splits) == ['test']
  records = read_split(builder, 'test')
  assert len(records) == len(fx.WILLOW_PAIRS)
  for row, (record, (a, b)) in enumerate(zip(records, fx.WILLOW_PAIRS)):
    stem = lambda name: name.split('/')[1][:-4]
    assert record['pair_id'].decode() == f'{row:04d}-{stem(a)}-{stem(b)}'
    assert category_name(builder, record) == a.split('/')[0]
    assert record['source_file'].decode() == f'PF-dataset/{a}'
    assert record['source_image'] == fx.willow_image_bytes(a)
    assert record['target_image'] == fx.willow_image_bytes(b)
    np.testing.assert_array_equal(record['source_keypoints'],
                                  fx.willow_keypoints(a))
    np.testing.assert_array_equal(record['target_keypoints'],
                                  fx.willow_keypoints(b))
    assert record['keypoint_valid'].tolist() == [True] * 10
    assert np.isnan(record['source_bbox']).all()
    assert np.isnan(record['target_bbox']).all()
    assert not record['flip']
  # Pair 0, car(G) 32 x 24 -> 28 x 30: keypoint 3 is unit (0.75, 0.5) ->
  # (0.75*31, 0.5*23) = (23.25, 11.5) and (0.75*27, 0.5*29) = (20.25, 14.5).
  np.testing.assert_array_equal(records[0]['source_keypoints'][3],
                                [23.25, 11.5])
  np.testing.assert_array_equal(records[0]['target_keypoints'][3],
                                [20.25, 14.5])


def test_pf_willow_missing_files_are_named(tmp_path):
  message = prepare_error(pf_willow.PfWillow, tmp_path / 'absent',
                          tmp_path / 'tfds0')
  assert 'absent is missing or empty' in message
  assert pf_willow.ZIP_URL in message
  manual = fx.write_pf_willow(tmp_path / 'manual')
  (manual / 'test_pairs_pf.csv').unlink()
  message = prepare_error(pf_willow.PfWillow, manual, tmp_path / 'tfds1')
  assert 'test_pairs_pf.csv' in message and pf_willow.CSV_URL in message
  manual = fx.write_pf_willow(tmp_path / 'manual2')
  (manual / 'PF-dataset/duck(S)/060_0072.png').unlink()
  message = prepare_error(pf_willow.PfWillow, manual, tmp_path / 'tfds2')
  assert 'image PF-dataset/duck(S)/060_0072.png is missing' in message
  assert pf_willow.ZIP_URL in message


def test_pf_willow_wrong_column_count(tmp_path):
  manual = fx.write_pf_willow(tmp_path / 'manual')
  path = manual / 'test_pairs_pf.csv'
  lines = path.read_text().splitlines()
  lines[2] = lines[2].rsplit(',', 1)[0]  # Drop the last number of row 3.
  path.write_text('\n'.join(lines) + '\n')
  message = prepare_error(pf_willow.PfWillow, manual, tmp_path / 'tfds')
  assert 'row 3 has 41 columns, not 42' in message
