"""Tests for semcorr_jax.data.pipeline: batch format, sharding, determinism."""

import re

import numpy as np
import pytest
import tensorflow as tf

from helpers import paths
from semcorr_jax import config_files
from semcorr_jax import errors
from semcorr_jax.data import pipeline
from semcorr_jax.data import sources
from semcorr_jax.data import synthetic_pairs
from semcorr_jax.data import warps

SIZE = 32


def _config(**overrides):
  """The data block of configs/sfnet.py:test, small (module fixtures use it)."""
  config = config_files.load(f'{paths.CONFIGS / "sfnet"}.py:test').data
  config.image_size = (SIZE, SIZE)
  config.scene_size = (40, 40)
  config.num_scenes = 8
  config.heldout_scenes = 4
  config.update(overrides)
  return config


def _batches(config=None, count=1, split='train', **kwargs):
  kwargs.setdefault('batch_size', 4)
  kwargs.setdefault('seed', 0)
  ds = pipeline.make_pair_dataset(config or _config(), split, **kwargs)
  return [{k: v.numpy() for k, v in b.items()} for b in ds.take(count)]


@pytest.fixture(scope='module')
def stream():
  """Three global batches of 4 from seed 0 (built once: tracing is slow)."""
  return _batches(count=3)


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_config_files_hold_every_documented_data_field(load_config):
  # The fields the pipeline docstring lists are the config files' to set:
  # no data default lives in the code.
  doc = pipeline.__doc__.split('Data config fields', 1)[1]
  fields = re.findall(r'^  (\w+):', doc, re.M)
  assert len(fields) >= 17 and 'max_keypoints' in fields
  assert not hasattr(pipeline, 'default_data_config')
  for method in ('sfnet', 'camnet'):
    for variant in ('test', 'quick', 'paper'):
      data = load_config(method, variant).data
      assert sorted(data.keys()) == sorted(fields), (method, variant)


def test_spec_and_length_of_synthetic_batches(stream):
  config = _config()
  assert pipeline.num_examples(config, 'train') == 8
  assert pipeline.num_examples(config, 'heldout') == 4
  spec = pipeline.batch_spec(config, 4)
  assert spec == {k: (v.shape, v.dtype) for k, v in stream[0].items()}
  dummy = pipeline.dummy_batch(config, 3)
  assert {k: (v.shape, v.dtype) for k, v in dummy.items()} == (
      pipeline.batch_spec(config, 3))
  assert all(not v.any() for v in dummy.values())
  with pytest.raises(errors.SemcorrError, match='splits'):
    pipeline.num_examples(config, 'test')


def test_a_registered_source_serves_batches_of_its_spec(monkeypatch):
  # A later source: two fixed images, one pair per index, its own keys.
  images = tf.constant(np.stack([np.full((SIZE, SIZE, 3), v, np.float32)
                                 for v in (0.25, 0.75)]))

  def example_fn(data_config, split, seed):
    del data_config, split, seed

    def make(index):
      return {'source_image': tf.gather(images, index % 2),
              'target_image': tf.gather(images, (index + 1) % 2),
              'index': index}
    return make

  spec = {'source_image': ((SIZE, SIZE, 3), np.dtype(np.float32)),
          'target_image': ((SIZE, SIZE, 3), np.dtype(np.float32)),
          'index': ((), np.dtype(np.int64))}
  toy = pipeline.Source(num_examples=lambda config, split: 2,
                        example_spec=lambda config: spec,
                        example_fn=example_fn)
  monkeypatch.setattr(pipeline, 'SOURCES', dict(pipeline.SOURCES))
  pipeline.register_source('toy', toy)
  with pytest.raises(errors.SemcorrError, match='already registered'):
    pipeline.register_source('toy', toy)
  config = _config(source='toy')
  batches = list(pipeline.make_pair_dataset(config, 'train', batch_size=2,
                                            seed=0, repeat=False))
  assert len(batches) == 1 and pipeline.num_examples(config, 'train') == 2
  assert pipeline.batch_spec(config, 2) == {
      k: (v.shape, v.dtype) for k, v in
      {k: v.numpy() for k, v in batches[0].items()}.items()}
  np.testing.assert_array_equal(batches[0]['source_image'][:, 0, 0, 0],
                                [0.25, 0.75])
  with pytest.raises(errors.SemcorrError, match='real pairs, not scenes'):
    pipeline.get_source(config, 'train')


def test_batch_format_matches_architecture_doc(stream):
  batch = stream[0]
  b, h, w = 4, SIZE, SIZE
  expected = {
      'source_image': ((b, h, w, 3), np.float32),
      'target_image': ((b, h, w, 3), np.float32),
      'source_mask': ((b, h, w), np.float32),
      'target_mask': ((b, h, w), np.float32),
      'mapping_st': ((b, h, w, 2), np.float32),
      'mapping_ts': ((b, h, w, 2), np.float32),
      'valid_st': ((b, h, w), np.float32),
      'valid_ts': ((b, h, w), np.float32),
      'index': ((b,), np.int64),
  }
  assert set(batch) == set(expected)
  for key, (shape, dtype) in expected.items():
    assert batch[key].shape == shape and batch[key].dtype == dtype, key
  for key in ('source_image', 'target_image'):
    assert 0.0 <= batch[key].min() and batch[key].max() <= 1.0
  for key in ('source_mask', 'target_mask', 'valid_st', 'valid_ts'):
    assert set(np.unique(batch[key])) <= {0.0, 1.0}
  assert np.all(batch['source_mask'] <= batch['valid_st'])
  assert batch['source_mask'].sum() > 0
  np.testing.assert_array_equal(batch['index'], [0, 1, 2, 3])


def test_process_slices_make_up_the_global_batch(stream):
  # Process p of 2 with batch 2 yields its half of every global batch of 4,
  # also when resuming at a later global batch.
  parts = [_batches(batch_size=2, process_index=p, process_count=2, count=2,
                    start_index=4) for p in range(2)]
  for j in range(2):
    for key in stream[j + 1]:
      joined = np.concatenate([parts[0][j][key], parts[1][j][key]])
      np.testing.assert_array_equal(stream[j + 1][key], joined, err_msg=key)
  np.testing.assert_array_equal(parts[1][1]['index'], [10, 11])


def test_restart_in_a_fresh_pipeline_reproduces_examples(stream):
  (resumed,) = _batches(start_index=8)
  _assert_same(stream[2], resumed)


def test_tps_pipeline_is_deterministic_across_processes():
  config = _config(warp='mixed', tps_prob=1.0)
  (whole,) = _batches(config, batch_size=2)
  (second,) = _batches(config, batch_size=1, process_index=1,
                       process_count=2)
  for key in whole:
    np.testing.assert_array_equal(whole[key][1:], second[key], err_msg=key)
  assert whole['valid_st'].mean() > 0.2


def test_examples_differ_across_indices_seeds_and_splits(stream):
  (other_seed,) = _batches(batch_size=4, seed=1)
  images = stream[0]['source_image']
  assert not np.allclose(images[0], images[1])
  assert not np.allclose(images, other_seed['source_image'])
  heldout = pipeline.make_pair_dataset(_config(), 'heldout', batch_size=4,
                                       seed=0, repeat=False)
  (heldout,) = list(heldout)  # One pair per held-out scene (4).
  assert not np.allclose(images, heldout['source_image'])


def test_finite_split_and_cycling(stream):
  finite = pipeline.make_pair_dataset(
      _config(), 'train', batch_size=2, seed=0, repeat=False, num_examples=5)
  indices = [b['index'].numpy().tolist() for b in finite]
  assert indices == [[0, 1], [2, 3]]  # Whole global batches only.
  cycled = _batches(batch_size=3, count=2, num_examples=4)
  np.testing.assert_array_equal(cycled[1]['index'], [3, 0, 1])
  np.testing.assert_array_equal(cycled[1]['source_image'][1],
                                stream[0]['source_image'][0])


def test_bad_arguments_raise_one_line_errors():
  with pytest.raises(errors.SemcorrError, match='multiple'):
    pipeline.make_pair_dataset(_config(), 'train', batch_size=4, seed=0,
                               start_index=6)
  with pytest.raises(errors.SemcorrError, match='process_index'):
    pipeline.make_pair_dataset(_config(), 'train', batch_size=4, seed=0,
                               process_index=2, process_count=2)
  with pytest.raises(errors.SemcorrError, match='warp'):
    pipeline.make_pair_dataset(_config(warp='spline'), 'train', batch_size=1,
                               seed=0)
  with pytest.raises(errors.SemcorrError,
                     match="Unknown data source 'imagenet'; use one of"):
    pipeline.get_source(_config(source='imagenet'), 'train')
  with pytest.raises(errors.SemcorrError, match='Unknown data source'):
    pipeline.batch_spec(_config(source='imagenet'), 1)


def test_pipeline_ground_truth_on_an_in_memory_source():
  # A smooth scene of another size and aspect, through the real example_fn.
  y, x = np.mgrid[:30, :50]
  image = np.stack([128 + 60 * np.sin(x / 9.0), 128 + 60 * np.cos(y / 7.0),
                    np.full_like(x, 90)], -1).astype(np.uint8)
  mask = np.zeros((30, 50), np.uint8)
  mask[5:25, 10:40] = 1
  source = sources.InMemorySource('smooth', [sources.encode_png(image)],
                                  [sources.encode_png(mask * 255)])
  config = _config(warp='affine', color_jitter=0.0, image_size=(SIZE, 48))
  make = synthetic_pairs.example_fn(config, source, 'train', seed=3)
  ds = tf.data.Dataset.range(3).map(make)
  for pair in ds:
    assert pair['source_image'].shape == (SIZE, 48, 3)
    mapping = pair['mapping_st'].numpy()
    keep = (pair['source_mask'].numpy() > 0)
    keep &= ((mapping >= 1) & (mapping <= [46, SIZE - 2])).all(-1)
    warped = warps.bilinear_sample(pair['target_image'],
                                   tf.reshape(mapping, (-1, 2)))
    warped = tf.reshape(warped, (SIZE, 48, 3)).numpy()
    err = np.abs(warped - pair['source_image'].numpy())[keep]
    assert keep.sum() > 50 and err.mean() < 0.01
