"""Tests of the PF-PASCAL real-pair source of `pipeline.make_pair_dataset`.

Built on the PF-PASCAL fixture (`tests/helpers/pf_fixture.py`, official
layout): 6 train rows, 3 validation pairs; images are resized to H x W =
16 x 20 so every keypoint and box scale is checked by hand.
"""

import numpy as np
import pytest
import tensorflow as tf

from helpers import paths
from helpers import pf_fixture as fx
from semcorr_jax import config_files
from semcorr_jax import errors
from semcorr_jax.data import pipeline
from semcorr_jax.data import real_pairs
from semcorr_jax.data import streams

HEIGHT, WIDTH = 16, 20
MAX_KEYPOINTS = 6


def pf_config(data_dir, manual_dir, **overrides):
  """The data block of configs/sfnet.py:test set to the PF-PASCAL fixture."""
  data_config = config_files.load(f'{paths.CONFIGS / "sfnet"}.py:test').data
  data_config.update(dict(
      source='pf_pascal', data_dir=str(data_dir), manual_dir=str(manual_dir),
      image_size=(HEIGHT, WIDTH), max_keypoints=MAX_KEYPOINTS))
  data_config.update(overrides)
  return data_config


@pytest.fixture(scope='module')
def config(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp('pf_real_pairs')
  manual = fx.write_pf_pascal(tmp_path / 'manual')
  return pf_config(tmp_path / 'tfds', manual)


def batches(data_config, split='train', count=1, **kwargs):
  kwargs.setdefault('batch_size', 2)
  kwargs.setdefault('seed', 0)
  ds = pipeline.make_pair_dataset(data_config, split, **kwargs)
  return [{k: v.numpy() for k, v in b.items()} for b in ds.take(count)]


@pytest.fixture(scope='module')
def records(config):
  """The 6 train pairs as examples, by CSV row (no permutation)."""
  table = real_pairs.load_pf_pascal(config, 'train')
  make = real_pairs.record_fn(table, (HEIGHT, WIDTH))
  return [{k: v.numpy() for k, v in make(tf.constant(i)).items()}
          for i in range(table.num_pairs)]


def assert_same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batch_format(config):
  batch = batches(config, batch_size=3)[0]
  b, k = 3, MAX_KEYPOINTS
  expected = {
      'source_image': ((b, HEIGHT, WIDTH, 3), np.float32),
      'target_image': ((b, HEIGHT, WIDTH, 3), np.float32),
      'source_keypoints': ((b, k, 2), np.float32),
      'target_keypoints': ((b, k, 2), np.float32),
      'keypoint_valid': ((b, k), np.float32),
      'source_bbox': ((b, 4), np.float32),
      'target_bbox': ((b, 4), np.float32),
      'source_bbox_valid': ((b,), np.float32),
      'target_bbox_valid': ((b,), np.float32),
      'index': ((b,), np.int64),
  }
  assert set(batch) == set(expected)
  for key, (shape, dtype) in expected.items():
    assert batch[key].shape == shape and batch[key].dtype == dtype, key
  # The spec is the batch's, read from the config alone.
  assert pipeline.batch_spec(config, b) == {
      k: (v.shape, v.dtype) for k, v in batch.items()}
  dummy = pipeline.dummy_batch(config, b)
  assert {k: (v.shape, v.dtype) for k, v in dummy.items()} == {
      k: (v.shape, v.dtype) for k, v in batch.items()}
  for key in ('source_image', 'target_image'):
    assert 0.0 <= batch[key].min() and batch[key].max() <= 1.0
  assert set(np.unique(batch['keypoint_valid'])) <= {0.0, 1.0}
  np.testing.assert_array_equal(batch['index'], [0, 1, 2])


def test_keypoints_scaled_by_hand(records):
  # Row 0: 2007_000001 (W x H = 32 x 24) -> 2007_000002 (28 x 36), resized
  # to 20 x 16 with tf.image.resize's half-pixel map x' = (x + .5) W'/W - .5.
  # Source unit (0.25, 0.25) is (7.75, 5.75) in the original:
  # x' = 8.25 * 20 / 32 - .5 = 4.65625, y' = 6.25 * 16 / 24 - .5 = 3.6667.
  # Target (6.75, 8.75): 7.25 * 20 / 28 - .5 = 4.6786,
  # 9.25 * 16 / 36 - .5 = 3.6111. Keypoint 3 (invisible in the target) is
  # dropped; 3 valid of 6.
  first = records[0]
  # Units (0.75, 0.25) and (0.5, 0.75) likewise: source x 23.25 -> 14.34375,
  # 15.5 -> 9.5, y 17.25 -> 11.3333; target x 20.25 -> 20.75 * 20 / 28 - .5
  # = 14.3214, 13.5 -> 9.5, y 26.25 -> 26.75 * 16 / 36 - .5 = 11.3889.
  source = [[4.65625, 11 / 3], [14.34375, 11 / 3], [9.5, 34 / 3],
            [-1, -1], [-1, -1], [-1, -1]]
  target = [[7.25 * 20 / 28 - 0.5, 9.25 * 16 / 36 - 0.5],
            [20.75 * 20 / 28 - 0.5, 9.25 * 16 / 36 - 0.5],
            [9.5, 26.75 * 16 / 36 - 0.5], [-1, -1], [-1, -1], [-1, -1]]
  np.testing.assert_allclose(first['source_keypoints'], source, atol=1e-5)
  np.testing.assert_allclose(first['target_keypoints'], target, atol=1e-5)
  np.testing.assert_array_equal(first['keypoint_valid'], [1, 1, 1, 0, 0, 0])
  # The images: the JPEG decoded, /255, resized (bilinear, antialiased).
  decoded = tf.io.decode_jpeg(fx.pascal_image_bytes('2007_000001'))
  resized = tf.image.resize(tf.cast(decoded, tf.float32) / 255.0,
                            (HEIGHT, WIDTH), antialias=True).numpy()
  np.testing.assert_allclose(first['source_image'], np.clip(resized, 0, 1),
                             atol=1e-6)


def test_flip_mirrors_images_and_keypoints(records):
  # Row 2 is row 0 with flip=1: both images reversed left-right, and
  # x -> (20 - 1) - x on the resized points, y unchanged.
  plain, flipped = records[0], records[2]
  for key in ('source_image', 'target_image'):
    np.testing.assert_array_equal(flipped[key], plain[key][:, ::-1])
  for key in ('source_keypoints', 'target_keypoints'):
    valid = plain['keypoint_valid'] > 0
    expected = plain[key].copy()
    expected[valid, 0] = 19.0 - plain[key][valid, 0]
    np.testing.assert_allclose(flipped[key], expected, atol=1e-5)
  # Source keypoint 0: 4.65625 -> 14.34375 (the mirror of keypoint 1).
  np.testing.assert_allclose(flipped['source_keypoints'][0], [14.34375, 11 / 3],
                             atol=1e-5)
  np.testing.assert_array_equal(flipped['keypoint_valid'],
                                plain['keypoint_valid'])
  # Rows 1 (flip) and 4 (no flip) are the same bicycle pair; its target is
  # a grey JPEG, decoded to 3 equal channels.
  np.testing.assert_array_equal(records[1]['target_image'],
                                records[4]['target_image'][:, ::-1])
  grey = records[4]['target_image']
  np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_pair_without_annotations_has_no_keypoints(records):
  last = records[5]  # Its target has no .mat file.
  np.testing.assert_array_equal(last['keypoint_valid'], np.zeros(6))
  np.testing.assert_array_equal(last['source_keypoints'], -np.ones((6, 2)))
  # No .mat, no box: -1 and invalid; the source's box is known.
  np.testing.assert_array_equal(last['target_bbox'], -np.ones(4))
  assert last['target_bbox_valid'] == 0 and last['source_bbox_valid'] == 1


def test_boxes_scaled_and_flipped_by_hand(records):
  # Fixture boxes (1, 2, W - 3, H - 2). Row 0's source 2007_000001 (32 x 24):
  # (1, 2, 29, 22) -> x' = (x + .5) 20 / 32 - .5, y' = (y + .5) 16 / 24 - .5
  # = (0.4375, 7 / 6, 17.9375, 14.5). Its target 2007_000002 (28 x 36):
  # (1, 2, 25, 34) -> (1.5 * 20 / 28 - .5, 2.5 * 16 / 36 - .5,
  # 25.5 * 20 / 28 - .5, 34.5 * 16 / 36 - .5).
  plain, flipped = records[0], records[2]
  np.testing.assert_allclose(plain['source_bbox'],
                             [0.4375, 7 / 6, 17.9375, 14.5], atol=1e-5)
  np.testing.assert_allclose(
      plain['target_bbox'],
      [1.5 * 20 / 28 - .5, 2.5 * 16 / 36 - .5, 25.5 * 20 / 28 - .5,
       34.5 * 16 / 36 - .5], atol=1e-5)
  assert plain['source_bbox_valid'] == plain['target_bbox_valid'] == 1
  # Row 2 = row 0 flipped: x -> 19 - x, so x0' = 19 - x1 and x1' = 19 - x0.
  for side in ('source', 'target'):
    x0, y0, x1, y1 = plain[f'{side}_bbox']
    np.testing.assert_allclose(flipped[f'{side}_bbox'],
                               [19 - x1, y0, 19 - x0, y1], atol=1e-5)
  # A box corner is mapped exactly as a keypoint at the same place would be.
  np.testing.assert_allclose(flipped['source_bbox'][:2],
                             [19 - 17.9375, 7 / 6], atol=1e-5)


def test_keypoints_are_optional(config):
  no_points = pf_config(config.data_dir, config.manual_dir, max_keypoints=0)
  batch = batches(no_points, batch_size=2)[0]
  assert not {'source_keypoints', 'target_keypoints',
              'keypoint_valid'} & set(batch)
  assert pipeline.batch_spec(no_points, 2) == {
      k: (v.shape, v.dtype) for k, v in batch.items()}
  # The same pairs as with keypoints.
  with_points = batches(config, batch_size=2)[0]
  for key in batch:
    np.testing.assert_array_equal(batch[key], with_points[key], err_msg=key)


def find_record(example, records):
  matches = [i for i, r in enumerate(records)
             if all(np.array_equal(example[k], r[k]) for k in r)]
  assert len(matches) == 1
  return matches[0]


def test_each_epoch_is_a_permutation_and_deterministic(config, records):
  stream = batches(config, count=6, batch_size=2)  # 2 epochs of 6 pairs.
  again = batches(config, count=6, batch_size=2)
  for a, b in zip(stream, again):
    assert_same(a, b)
  order = []
  for batch in stream:
    for j in range(2):
      order.append(find_record({k: v[j] for k, v in batch.items()
                                if k != 'index'}, records))
  assert sorted(order[:6]) == list(range(6))
  assert sorted(order[6:]) == list(range(6))
  # The same pair i under a fresh build from the permutation helper.
  root = real_pairs.order_root(0, 'train')
  assert order == [int(streams.item_of(tf.constant(i), 6, root))
                   for i in range(12)]
  # Another seed, another order (fixed seeds: deterministic).
  other = batches(config, count=3, batch_size=2, seed=1)
  other_order = [find_record({k: v[j] for k, v in b.items() if k != 'index'},
                             records) for b in other for j in range(2)]
  assert sorted(other_order) == list(range(6)) and other_order != order[:6]


def test_sharding_and_resume(config):
  whole = batches(config, count=2, batch_size=4)
  parts = [batches(config, count=2, batch_size=2, process_index=p,
                   process_count=2) for p in range(2)]
  for j in range(2):
    joined = {k: np.concatenate([parts[0][j][k], parts[1][j][k]])
              for k in whole[j]}
    assert_same(joined, whole[j])
  resumed = batches(config, count=1, batch_size=4, start_index=4)
  assert_same(resumed[0], whole[1])


def test_index_fixes_the_pair_whatever_the_start(config):
  # 4 epochs of 6 pairs, by index; then fresh pipelines started elsewhere,
  # with other batch sizes: every index gives the same example.
  stream = batches(config, count=12, batch_size=2)
  by_index = {int(i): {k: v[j] for k, v in b.items()}
              for b in stream for j, i in enumerate(b['index'])}
  for batch_size, start in ((1, 7), (3, 3), (5, 10)):
    for b in batches(config, count=2, batch_size=batch_size,
                     start_index=start):
      for j, i in enumerate(b['index']):
        assert_same({k: v[j] for k, v in b.items()}, by_index[int(i)])
    assert int(b['index'][-1]) == start + 2 * batch_size - 1


def test_num_examples_counts_the_split(config):
  assert pipeline.num_examples(config, 'train') == 6
  assert pipeline.num_examples(config, 'heldout') == 3
  assert pipeline.num_examples(config, 'val') == 3
  with pytest.raises(errors.SemcorrError, match="no split 'test'"):
    pipeline.num_examples(config, 'test')


def test_finite_heldout_split_is_the_validation_split(config):
  heldout = batches(config, 'heldout', count=5, batch_size=1, repeat=False)
  validation = batches(config, 'validation', count=5, batch_size=1,
                       repeat=False)
  assert len(heldout) == len(validation) == 3  # One per validation pair.
  for a, b in zip(heldout, validation):
    assert_same(a, b)
  # Official layout: ncnet's val_pairs.csv has no points, so they come from
  # the .mat files; every validation pair has one invisible keypoint.
  valid_counts = sorted(int(b['keypoint_valid'].sum()) for b in heldout)
  assert valid_counts == [3, 4, 4]


def test_bad_split_and_too_few_keypoint_rows(config):
  with pytest.raises(errors.SemcorrError, match="no split 'test'"):
    batches(config, 'test')
  small = pf_config(config.data_dir, config.manual_dir, max_keypoints=3)
  with pytest.raises(errors.SemcorrError,
                     match='4 valid keypoints but data.max_keypoints is 3'):
    batches(small)


def test_missing_manual_dir_is_named(tmp_path, load_config):
  data_config = load_config('sfnet', 'test', **{
      'data.source': 'pf_pascal', 'data.data_dir': str(tmp_path / 'tfds'),
      'data.manual_dir': str(tmp_path / 'absent')}).data
  with pytest.raises(errors.SemcorrError, match='absent is missing or empty'):
    batches(data_config)
