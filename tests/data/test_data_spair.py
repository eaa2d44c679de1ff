"""Tests of the SPair-71k builder on the tiny fixture (tests/helpers)."""

import json
import pathlib
import shutil
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from semcorr_jax import errors
from semcorr_jax.data import benchmarks
from semcorr_jax.data.benchmarks import spair

from helpers import spair_fixture as fx

URL = 'cvlab.postech.ac.kr/research/SPair-71k/data/SPair-71k.tar.gz'


class Spair71kTest(tfds.testing.DatasetBuilderTestCase):
  """The standard TFDS builder checks, on the fixture (`large` config)."""

  DATASET_CLASS = spair.Spair71k
  BUILDER_CONFIG_NAMES_TO_TEST = ['large']
  SPLITS = {split: len(fx.expected_pairs('large', split))
            for split in ('train', 'validation', 'test')}
  SKIP_CHECKSUMS = True

  @classmethod
  def setUpClass(cls):
    cls._fixture_dir = tempfile.mkdtemp()
    cls.EXAMPLE_DIR = str(fx.write_spair(pathlib.Path(cls._fixture_dir)))
    super().setUpClass()

  @classmethod
  def tearDownClass(cls):
    super().tearDownClass()
    shutil.rmtree(cls._fixture_dir)


class Spair71kSmallTest(Spair71kTest):
  """The same checks on the `small` config."""

  BUILDER_CONFIG_NAMES_TO_TEST = ['small']
  SPLITS = {split: len(fx.expected_pairs('small', split))
            for split in ('train', 'validation', 'test')}


def build(tmp_path, config='large', manual_dir=None):
  if manual_dir is None:
    manual_dir = fx.write_spair(tmp_path / 'manual')
  builder = spair.Spair71k(config=config, data_dir=str(tmp_path / 'tfds'))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


def read_split(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


def test_fixture_facts_hold():
  # Every keypoint and box lies inside its image; the two layouts nest.
  for pair in fx.PAIRS:
    for points, (width, height) in ((pair.src_kps, pair.source_size),
                                    (pair.trg_kps, pair.target_size)):
      for x, y in points:
        assert 0 <= x < width and 0 <= y < height, pair.line
    for box, (width, height) in ((pair.src_bndbox, pair.source_size),
                                 (pair.trg_bndbox, pair.target_size)):
      assert 0 <= box[0] < box[2] < width and 0 <= box[1] < box[3] < height
  assert [len(fx.expected_pairs('large', s)) for s in fx.SPLIT_FILES] == [
      3, 2, 4]
  assert [len(fx.expected_pairs('small', s)) for s in fx.SPLIT_FILES] == [
      2, 1, 2]


def test_category_list_and_constants():
  assert len(spair.CATEGORIES) == 18
  assert spair.CATEGORIES == tuple(sorted(spair.CATEGORIES))
  assert spair.CATEGORIES[0] == 'aeroplane'
  assert spair.CATEGORIES[-1] == 'tvmonitor'
  assert sum(spair.LARGE_SPLIT_SIZES.values()) == 70958
  assert spair.ARCHIVE_URL.endswith(URL)
  info = benchmarks.info('spair71k')
  assert benchmarks.builder_class('spair71k') is spair.Spair71k
  assert info.splits == tuple(spair.SPLIT_FILES)


def test_parse_layout_line():
  assert spair.parse_layout_line(
      '000009-2008_001546-2009_000327:aeroplane', 'x') == (
          '2008_001546', '2009_000327', 'aeroplane')
  for bad in ('2008_001546-2009_000327:aeroplane',
              '000009-2008_001546-2009_000327', '9-a-b-c:cat'):
    with pytest.raises(errors.SemcorrError, match='is not'):
      spair.parse_layout_line(bad, 'x')


def test_imsize_order():
  # [W, H, depth] agrees with a W x H image; [H, W, depth] does not.
  assert spair.imsize_agrees([32, 24, 3], (32, 24))
  assert spair.imsize_agrees([32, 24], (32, 24))
  assert not spair.imsize_agrees([24, 32, 3], (32, 24))
  assert not spair.imsize_agrees('junk', (32, 24))


def check_record(example, pair, category_names):
  assert example['pair_id'].decode() == pair.line
  assert category_names[example['category']] == pair.category
  src_w, src_h = pair.source_size
  trg_w, trg_h = pair.target_size
  # Sizes are the images' own (pair 8's swapped src_imsize is ignored).
  assert example['source_image'].shape == (src_h, src_w, 3)
  assert example['target_image'].shape == (trg_h, trg_w, 3)
  assert example['source_file'].decode() == (
      f'JPEGImages/{pair.category}/{pair.source}.jpg')
  assert example['target_file'].decode() == (
      f'JPEGImages/{pair.category}/{pair.target}.jpg')
  np.testing.assert_array_equal(example['source_keypoints'], pair.src_kps)
  np.testing.assert_array_equal(example['target_keypoints'], pair.trg_kps)
  np.testing.assert_array_equal(
      example['target_keypoints'] - example['source_keypoints'],
      np.broadcast_to(fx.SHIFT, (len(pair.src_kps), 2)))
  assert example['keypoint_valid'].tolist() == [True] * len(pair.src_kps)
  np.testing.assert_array_equal(example['source_bbox'], pair.src_bndbox)
  np.testing.assert_array_equal(example['target_bbox'], pair.trg_bndbox)
  assert example['keypoint_ids'].dtype == np.int32
  assert example['keypoint_ids'].tolist() == list(pair.kps_ids)
  assert example['viewpoint_variation'] == pair.viewpoint_variation
  assert example['scale_variation'] == pair.scale_variation
  assert example['truncation'] == pair.truncation
  assert example['occlusion'] == pair.occlusion
  assert bool(example['mirror']) == bool(pair.mirror)
  assert not example['flip']


@pytest.mark.parametrize('config', ['large', 'small'])
def test_builder_splits_records_in_file_order(tmp_path, config):
  builder = build(tmp_path, config)
  names = builder.info.features['category'].names
  assert names == list(spair.CATEGORIES)
  for split in ('train', 'validation', 'test'):
    pairs = fx.expected_pairs(config, split)
    assert builder.info.splits[split].num_examples == len(pairs)
    examples = read_split(builder, split)
    assert [e['pair_id'].decode() for e in examples] == [
        p.line for p in pairs]
    for example, pair in zip(examples, pairs):
      check_record(example, pair, names)


def test_image_bytes_unchanged_and_mirror_flag(tmp_path):
  builder = build(tmp_path)
  examples = {e['pair_id'].decode(): e for e in read_split(builder, 'test')}
  mirrored = [line for line, e in examples.items() if e['mirror']]
  assert mirrored == [fx.PAIRS[6].line]
  # The JPEG bytes are stored as given: decoding them again matches.
  root = tmp_path / 'manual' / 'SPair-71k'
  pair = fx.PAIRS[5]
  stored = tfds.as_numpy(builder.as_dataset(
      split='test', decoders={'source_image': tfds.decode.SkipDecoding()}))
  first = next(iter(stored))
  assert first['pair_id'].decode() == pair.line
  assert first['source_image'] == (
      root / 'JPEGImages' / pair.category / f'{pair.source}.jpg').read_bytes()


def test_examples_api(tmp_path):
  manual_dir = fx.write_spair(tmp_path / 'manual')
  records = list(benchmarks.examples(
      'spair71k', 'test', data_dir=str(tmp_path / 'tfds'),
      manual_dir=str(manual_dir)))
  pairs = fx.expected_pairs('large', 'test')
  assert [r['pair_id'] for r in records] == [p.line for p in pairs]
  assert [r['category'] for r in records] == [p.category for p in pairs]
  assert records[0]['source_file'] == 'JPEGImages/aeroplane/2008_002133.jpg'
  assert records[0]['source_image'].dtype == np.uint8
  small = list(benchmarks.examples(
      'spair71k', 'validation', data_dir=str(tmp_path / 'tfds'),
      manual_dir=str(manual_dir), config='small'))
  assert [r['pair_id'] for r in small] == [fx.PAIRS[3].line]


def test_manual_dir_may_be_the_spair_folder_itself(tmp_path):
  manual_dir = fx.write_spair(tmp_path / 'manual')
  builder = build(tmp_path, manual_dir=manual_dir / 'SPair-71k')
  assert builder.info.splits['test'].num_examples == 4


def test_null_keypoint_is_invalid(tmp_path):
  manual_dir = fx.write_spair(tmp_path / 'manual')
  pair = fx.PAIRS[0]
  path = (manual_dir / 'SPair-71k' / 'PairAnnotation' / 'trn' /
          f'{pair.line}.json')
  annotation = json.loads(path.read_text())
  annotation['trg_kps'][1] = None
  annotation['kps_ids'] = [str(i) for i in annotation['kps_ids']]
  path.write_text(json.dumps(annotation))
  example = read_split(build(tmp_path, manual_dir=manual_dir), 'train')[0]
  assert example['keypoint_valid'].tolist() == [True, False, True]
  np.testing.assert_array_equal(example['target_keypoints'][1], [-1, -1])
  assert example['keypoint_ids'].tolist() == [0, 4, 7]


def expect_error(tmp_path, manual_dir, match, config='large'):
  with pytest.raises(errors.SemcorrError, match=match) as info:
    build(tmp_path, config, manual_dir=manual_dir)
  assert URL in str(info.value)


def test_missing_manual_dir(tmp_path):
  expect_error(tmp_path, tmp_path / 'absent', 'absent is missing or empty')


def test_manual_dir_without_spair(tmp_path):
  (tmp_path / 'manual').mkdir()
  (tmp_path / 'manual' / 'readme.txt').write_text('x')
  expect_error(tmp_path, tmp_path / 'manual', r'no Layout under .*SPair-71k')


def test_missing_layout_file(tmp_path):
  manual_dir = fx.write_spair(tmp_path / 'manual')
  (manual_dir / 'SPair-71k' / 'Layout' / 'small' / 'val.txt').unlink()
  expect_error(tmp_path, manual_dir, r'Layout/small/val.txt is missing',
               config='small')


def test_missing_pair_json(tmp_path):
  manual_dir = fx.write_spair(tmp_path / 'manual')
  line = fx.PAIRS[4].line
  (manual_dir / 'SPair-71k' / 'PairAnnotation' / 'val' /
   f'{line}.json').unlink()
  expect_error(tmp_path, manual_dir,
               f'PairAnnotation/val/{line}.json is missing')


def test_missing_image(tmp_path):
  manual_dir = fx.write_spair(tmp_path / 'manual')
  (manual_dir / 'SPair-71k' / 'JPEGImages' / 'tvmonitor' /
   '2007_000121.jpg').unlink()
  expect_error(tmp_path, manual_dir,
               'JPEGImages/tvmonitor/2007_000121.jpg is missing')


def test_malformed_layout_line(tmp_path):
  manual_dir = fx.write_spair(tmp_path / 'manual')
  path = manual_dir / 'SPair-71k' / 'Layout' / 'large' / 'test.txt'
  path.write_text(path.read_text() + '000010-2008_000585:aeroplane\n')
  expect_error(tmp_path, manual_dir,
               r'Layout/large/test.txt: line .*000010-2008_000585:aeroplane.* '
               'is not')


def test_bad_pair_json_fields(tmp_path):
  manual_dir = fx.write_spair(tmp_path / 'manual')
  pair = fx.PAIRS[1]
  path = (manual_dir / 'SPair-71k' / 'PairAnnotation' / 'trn' /
          f'{pair.line}.json')
  annotation = json.loads(path.read_text())
  del annotation['src_bndbox']
  path.write_text(json.dumps(annotation))
  expect_error(tmp_path, manual_dir, "has no field 'src_bndbox'")
  annotation['src_bndbox'] = [1, 2, 3, 4]
  annotation['truncation'] = 4
  path.write_text(json.dumps(annotation))
  with pytest.raises(errors.SemcorrError, match=r'truncation=4; expected 0..3'):
    build(tmp_path / 'again', manual_dir=manual_dir)


def test_json_imsize_disagreeing_with_image_is_reported(tmp_path):
  root = fx.write_spair(tmp_path / 'manual') / 'SPair-71k'
  mismatches = []
  record = spair.pair_example(root, 'test', fx.SWAPPED_IMSIZE_LINE,
                              mismatches)
  assert len(mismatches) == 1
  assert 'src_imsize=[32, 24, 3]' in mismatches[0]
  assert '24x32 (W x H)' in mismatches[0]
  assert record['source_file'] == 'JPEGImages/cat/2008_000112.jpg'
  spair.pair_example(root, 'test', fx.PAIRS[5].line, mismatches)
  assert len(mismatches) == 1  # [W, H, 3] agrees.
