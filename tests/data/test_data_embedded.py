"""Tests for the embedded default scenes and the in-memory scene source."""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from semcorr_jax import errors
from semcorr_jax.data import embedded
from semcorr_jax.data import pipeline
from semcorr_jax.data import sources


def _scenes(source, count):
  ds = tf.data.Dataset.range(count).map(source.scene)
  return [(image.numpy(), mask.numpy()) for image, mask in ds]


def _digest(image):
  return hashlib.sha1(image.tobytes()).hexdigest()


def test_bank_holds_only_wheel_images():
  images, is_gray = embedded.image_bank()
  assert images.dtype == np.uint8 and images.shape[1:] == (384, 384, 3)
  assert len(images) == len(is_gray) >= 10


def test_scenes_have_exact_binary_masks_and_real_content():
  source = embedded.EmbeddedSource('train', 6, (48, 64))
  for image, mask in _scenes(source, 6):
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert mask.shape == (48, 64) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    assert 0.03 < mask.mean() < 0.9
    assert image.std() > 5  # Not a flat colour.


def test_scenes_are_deterministic_eager_and_in_tf_data():
  source = embedded.EmbeddedSource('train', 4, 32)
  in_data = _scenes(source, 3)
  again = embedded.EmbeddedSource('train', 4, 32)
  for i, (image, mask) in enumerate(in_data):
    eager_image, eager_mask = again.scene(tf.constant(i, tf.int64))
    # Graph and eager may differ by float round-off before the uint8 cast.
    assert np.abs(eager_image.numpy().astype(int) - image).max() <= 1
    assert np.mean(eager_mask.numpy() != mask) < 0.01
  assert _digest(in_data[0][0]) != _digest(in_data[1][0])


def test_train_and_heldout_scenes_are_disjoint(load_config):
  config = load_config('sfnet', 'test', **{
      'data.scene_size': (32, 32), 'data.num_scenes': 24,
      'data.heldout_scenes': 12}).data
  train = pipeline.get_source(config, 'train')
  heldout = pipeline.get_source(config, 'heldout')
  assert (train.num_scenes, heldout.num_scenes) == (24, 12)
  assert train.name != heldout.name
  train_digests = {_digest(image) for image, _ in _scenes(train, 24)}
  heldout_digests = {_digest(image) for image, _ in _scenes(heldout, 12)}
  assert len(train_digests) == 24 and len(heldout_digests) == 12
  assert not train_digests & heldout_digests


def test_bad_embedded_arguments():
  with pytest.raises(errors.SemcorrError, match='split'):
    embedded.EmbeddedSource('val', 4, 32)
  with pytest.raises(errors.SemcorrError, match='num_scenes'):
    embedded.EmbeddedSource('train', 0, 32)


def test_in_memory_source_decodes_by_index():
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 255, (5 + i, 7, 3), dtype=np.uint8)
            for i in range(3)]
  masks = [(rng.random((5 + i, 7)) > 0.5).astype(np.uint8) for i in range(3)]
  source = sources.InMemorySource(
      'tiny', [sources.encode_png(x) for x in images],
      # 0/255 and 0/1 encodings both binarise to {0, 1}.
      [sources.encode_png(m * (255 if i else 1)) for i, m in enumerate(masks)])
  assert source.num_scenes == 3
  for i, (image, mask) in enumerate(_scenes(source, 3)):
    np.testing.assert_array_equal(image, images[i])
    np.testing.assert_array_equal(mask, masks[i])
  with pytest.raises(errors.SemcorrError, match='pair up'):
    sources.InMemorySource('bad', [b'x'], [])
