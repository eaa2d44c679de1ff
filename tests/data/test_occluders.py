"""Tests for semcorr_jax.data.occluders: occluded pairs, their ground truth."""

import dataclasses

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from semcorr_jax.data import occluders
from semcorr_jax.data import synthetic_pairs
from semcorr_jax.errors import SemcorrError
from semcorr_jax.data import warps
from semcorr_jax.evaluation import keypoints as kp

SIZE = 40
COUNT = 3


def _seed(*values):
  return tf.constant(values, tf.int64)


def _image():
  """Smooth colours: an occluder's fill differs from the scene under it."""
  y, x = np.mgrid[:SIZE, :SIZE] / (SIZE - 1.0)
  return tf.constant(np.stack([0.2 + 0.6 * x, 0.2 + 0.6 * y,
                               0.5 + 0.3 * np.sin(3.0 * x * y)], -1),
                     tf.float32)


def _pairs(seed, count=COUNT):
  """The same pair without and with occluders, and the two views' covers."""
  image, mask = _image(), tf.ones((SIZE, SIZE))
  config = warps.WarpConfig(warp='mixed', tps_prob=0.5, affine_std=0.1)
  clean = warps.make_pair(image, mask, seed, config)
  occluded = warps.make_pair(
      image, mask, seed, dataclasses.replace(config, occluders=count))
  seed_s, seed_t = occluders.view_seeds(seed)
  covers = {'s': occluders.paste(clean['source_image'], seed_s, count)[1],
            't': occluders.paste(clean['target_image'], seed_t, count)[1]}
  np_ = lambda d: {k: v.numpy() for k, v in d.items()}
  return np_(clean), np_(occluded), np_(covers)


@pytest.fixture(scope='module')
def pairs():
  return [_pairs(_seed(i, 5)) for i in range(3)]


def test_zero_occluders_is_the_plain_pair():
  image, mask = _image(), tf.ones((SIZE, SIZE))
  config = warps.WarpConfig(warp='mixed', tps_prob=0.5)
  a = warps.make_pair(image, mask, _seed(1, 2), config)
  b = warps.make_pair(image, mask, _seed(1, 2),
                      dataclasses.replace(config, occluders=0))
  pair = warps.render_pair(image, image, mask,
                           warps.Warp(tf.eye(2, 3), None),
                           warps.Warp(tf.eye(2, 3), None))
  assert occluders.occlude_pair(pair, _seed(1, 2), 0) is pair
  for key in a:
    np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), key)


def test_images_change_inside_the_occluders_only(pairs):
  for clean, occluded, covers in pairs:
    for view, c in (('source', 's'), ('target', 't')):
      cover = covers[c] > 0
      assert 0 < cover.mean() < 0.6
      changed = np.any(clean[f'{view}_image'] != occluded[f'{view}_image'],
                       axis=-1)
      assert not np.any(changed & ~cover)
      assert changed[cover].mean() > 0.5  # The fill is not the scene.
    # Mappings are those of the clean pair.
    for key in ('mapping_st', 'mapping_ts'):
      np.testing.assert_array_equal(clean[key], occluded[key])


def test_no_correspondence_touches_an_occluder(pairs):
  for clean, occluded, covers in pairs:
    for a, b in (('s', 't'), ('t', 's')):
      valid = occluded[f'valid_{a}{b}'] > 0
      assert np.all(valid <= (clean[f'valid_{a}{b}'] > 0))
      assert not np.any(valid & (covers[a] > 0))
      # The four pixels around every valid match are uncovered in the other
      # view; a match next to a cover is invalid.
      mapping = clean[f'mapping_{a}{b}']
      x0 = np.clip(np.floor(mapping[..., 0]).astype(int), 0, SIZE - 1)
      y0 = np.clip(np.floor(mapping[..., 1]).astype(int), 0, SIZE - 1)
      padded = np.pad(covers[b], [(0, 1), (0, 1)])
      around = np.maximum.reduce([padded[y0 + dy, x0 + dx]
                                  for dy in (0, 1) for dx in (0, 1)]) > 0
      assert not np.any(valid & around)
      expected = (clean[f'valid_{a}{b}'] > 0) & (covers[a] == 0) & ~around
      np.testing.assert_array_equal(valid, expected)
      assert expected.sum() < (clean[f'valid_{a}{b}'] > 0).sum()


def test_masks_exclude_occluded_pixels_and_keypoints_skip_them(pairs):
  for clean, occluded, covers in pairs:
    for view, a, b in (('source', 's', 't'), ('target', 't', 's')):
      mask = occluded[f'{view}_mask']
      valid = occluded[f'valid_{a}{b}']
      assert set(np.unique(mask)) <= {0.0, 1.0}
      np.testing.assert_array_equal(mask, clean[f'{view}_mask'] * valid)
      assert not np.any((mask > 0) & (covers[a] > 0))
      # The synthetic evaluation's keypoints: mask & valid, stride 2.
      points = kp.grid_points_in_mask((mask > 0.5) & (valid > 0.5), 2)
      assert len(points) > 0
      assert not covers[a][points[:, 1], points[:, 0]].any()


def test_occluders_are_deterministic_and_differ_per_seed():
  image, mask = _image(), tf.ones((SIZE, SIZE))
  config = warps.WarpConfig(warp='affine', occluders=2, color_jitter=0.0)
  make = tf.function(lambda s: warps.make_pair(image, mask, s, config))
  a = make(_seed(7, 1))  # Graph mode (as in tf.data) equals eager.
  b = warps.make_pair(image, mask, _seed(7, 1), config)
  for key in a:
    np.testing.assert_allclose(a[key].numpy(), b[key].numpy(), atol=1e-6,
                               err_msg=key)
  covers = [occluders.paste(tf.zeros((SIZE, SIZE, 3)), s, 2)[1].numpy()
            for i in range(4) for s in occluders.view_seeds(_seed(7, i))]
  for i in range(len(covers)):
    for j in range(i):
      assert not np.array_equal(covers[i], covers[j])


def test_near_reads_the_four_pixels_around_a_point():
  cover = np.zeros((5, 6), np.float32)
  cover[2, 3] = 1.0
  points = np.float32([[[3.0, 2.0], [2.5, 1.5], [2.9, 2.9], [1.9, 2.0],
                        [3.0, 3.0], [np.nan, 0.0]]])
  got = occluders.near(tf.constant(cover), tf.constant(points)).numpy()
  np.testing.assert_array_equal(got, [[1, 1, 1, 0, 0, 0]])


@pytest.mark.parametrize('bad', [-1, 1.5, True])
def test_bad_occluder_count_is_one_clear_error(bad):
  config = ml_collections.ConfigDict(dict(
      warp='affine', affine_std=0.15, tps_std=0.4, tps_prob=0.0,
      flip_prob=0.5, color_jitter=0.1, occluders=bad))
  with pytest.raises(SemcorrError, match='data.occluders must be a whole'):
    synthetic_pairs.warp_config(config)
