"""Tests of the SPair-71k real-pair source of `pipeline.make_pair_dataset`.

Built on the tiny SPair-71k fixture (`tests/helpers/spair_fixture.py`,
official layout, Layout/large: 3 train pairs, 2 validation pairs); images are
resized to H x W = 16 x 20 and every keypoint and box is checked against the
fixture's annotation under tf.image.resize's half-pixel map
`x' = (x + 1/2) W' / W - 1/2`.
"""

import pathlib

import numpy as np
import pytest
import tensorflow as tf

from helpers import paths
from helpers import spair_fixture as fx
from semcorr_jax import config_files
from semcorr_jax import errors
from semcorr_jax.data import pipeline
from semcorr_jax.data import real_pairs

HEIGHT, WIDTH = 16, 20
MAX_KEYPOINTS = 5  # The fixture's pairs have 2 to 4 keypoints.


@pytest.fixture(scope='module')
def dirs(tmp_path_factory):
  tmp_path = tmp_path_factory.mktemp('spair_real_pairs')
  return str(tmp_path / 'tfds'), str(fx.write_spair(tmp_path / 'manual'))


@pytest.fixture(scope='module')
def config(dirs):
  """The data block of configs/sfnet.py:test set to the SPair fixture."""
  data_config = config_files.load(f'{paths.CONFIGS / "sfnet"}.py:test').data
  data_config.update(dict(
      source='spair71k', data_dir=dirs[0], manual_dir=dirs[1],
      image_size=(HEIGHT, WIDTH), max_keypoints=MAX_KEYPOINTS))
  return data_config


def batches(data_config, split='train', count=1, **kwargs):
  kwargs.setdefault('seed', 0)
  ds = pipeline.make_pair_dataset(data_config, split, **kwargs)
  return [{k: v.numpy() for k, v in b.items()} for b in ds.take(count)]


def resized(manual_dir, category, name):
  """The fixture JPEG as the pipeline must give it: /255, resized, clipped."""
  data = (pathlib.Path(manual_dir) / fx.ROOT_NAME / 'JPEGImages' / category /
          f'{name}.jpg').read_bytes()
  image = tf.cast(tf.io.decode_jpeg(data), tf.float32) / 255.0
  return np.clip(tf.image.resize(image, (HEIGHT, WIDTH),
                                 antialias=True).numpy(), 0.0, 1.0)


def scaled(points, size):
  """(x, y) of the original image (W, H = size) in the resized image."""
  points = np.asarray(points, np.float64).reshape(-1, 2)
  scale = np.array([WIDTH / size[0], HEIGHT / size[1]])
  return (points + 0.5) * scale - 0.5


def check_example(example, pairs, manual_dir):
  """Finds the example's pair by its images; checks the annotation on it."""
  matches = [p for p in pairs
             if np.allclose(example['source_image'],
                            resized(manual_dir, p.category, p.source),
                            atol=1e-6)]
  assert len(matches) == 1
  pair = matches[0]
  np.testing.assert_allclose(
      example['target_image'], resized(manual_dir, pair.category, pair.target),
      atol=1e-6)
  count = len(pair.src_kps)
  valid = np.zeros(MAX_KEYPOINTS, np.float32)
  valid[:count] = 1
  np.testing.assert_array_equal(example['keypoint_valid'], valid)
  for side, points, box, size in (
      ('source', pair.src_kps, pair.src_bndbox, pair.source_size),
      ('target', pair.trg_kps, pair.trg_bndbox, pair.target_size)):
    expected = -np.ones((MAX_KEYPOINTS, 2))
    expected[:count] = scaled(points, size)  # Never mirrored: no flips.
    np.testing.assert_allclose(example[f'{side}_keypoints'], expected,
                               atol=1e-5, err_msg=side)
    np.testing.assert_allclose(example[f'{side}_bbox'],
                               scaled(box, size).reshape(4), atol=1e-5)
    assert example[f'{side}_bbox_valid'] == 1
  return pair


def test_spair_train_batches_through_the_pipeline(config, dirs):
  assert pipeline.num_examples(config, 'train') == 3
  assert pipeline.num_examples(config, 'heldout') == 2
  stream = batches(config, count=2, batch_size=3)  # Two epochs of 3 pairs.
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
  pairs = fx.expected_pairs('large', 'train')
  for batch in stream:
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
    assert pipeline.batch_spec(config, b) == expected
    # Each epoch holds every train pair once.
    seen = [check_example({k: v[j] for k, v in batch.items()}, pairs,
                          dirs[1]).line for j in range(b)]
    assert sorted(seen) == sorted(p.line for p in pairs)
  np.testing.assert_array_equal(stream[1]['index'], [3, 4, 5])


def test_spair_table_and_heldout_split(config, dirs):
  table = real_pairs.load_pairs('spair71k', config, 'train')
  assert table.name == 'spair71k/train'
  assert table.pair_ids == tuple(p.line for p in fx.expected_pairs(
      'large', 'train'))
  assert not table.flip.any()
  assert len(table.images) == 5  # Pairs 1 and 2 share 2008_000585.
  heldout = batches(config, 'heldout', count=5, batch_size=1, repeat=False)
  assert len(heldout) == 2
  pairs = fx.expected_pairs('large', 'validation')
  lines = [check_example({k: v[0] for k, v in b.items()}, pairs,
                         dirs[1]).line for b in heldout]
  assert sorted(lines) == sorted(p.line for p in pairs)


def test_spair_errors_name_the_dataset(config):
  with pytest.raises(errors.SemcorrError,
                     match="spair71k pairs have no split 'test'"):
    pipeline.num_examples(config, 'test')
  few = config.copy_and_resolve_references()
  few.max_keypoints = 3
  with pytest.raises(errors.SemcorrError,
                     match=r'SPair-71k train pair 000003-.* has 4 valid '
                     'keypoints but data.max_keypoints is 3'):
    batches(few, batch_size=1)
  with pytest.raises(errors.SemcorrError, match="no real-pair dataset 'x'"):
    real_pairs.load_pairs('x', config, 'train')


def test_cats_paper_spair_data_resolves_to_spair_pairs(load_config, dirs):
  data = load_config('cats', 'paper,spair', **{
      'data.data_dir': dirs[0], 'data.manual_dir': dirs[1]}).data
  assert data.source == 'spair71k'
  assert pipeline.source_of(data) is pipeline.SOURCES['spair71k']
  spec = pipeline.batch_spec(data, 2)
  height, width = data.image_size
  assert spec['source_image'] == ((2, height, width, 3), np.float32)
  assert spec['source_keypoints'] == ((2, data.max_keypoints, 2), np.float32)
  assert 'mapping_st' not in spec
  assert pipeline.num_examples(data, 'train') == 3
