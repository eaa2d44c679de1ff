"""Evaluation: PCK, keypoint transfer, synthetic evaluation, pictures."""

import json
import math
import os

import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from semcorr_jax import config_files
from semcorr_jax.evaluation import keypoints as kp
from semcorr_jax.evaluation import pck as pck_lib
from semcorr_jax.evaluation import reports
from semcorr_jax.evaluation import synthetic
from semcorr_jax.evaluation import synthetic_scores
from semcorr_jax.evaluation import visualize
from helpers import paths

REPO = str(paths.REPO)


# --- PCK ----------------------------------------------------------------------
def test_pck_hand_computed_with_tie_and_invalid_point():
  pred = np.array([[0., 0.], [3., 4.], [10., 0.], [1., 1.]])
  gt = np.array([[0., 0.], [0., 0.], [0., 0.], [100., 100.]])
  valid = np.array([True, True, True, False])
  # Distances 0, 5 (== threshold: correct, weakalign's d <= t), 10 (wrong);
  # the invalid point (far off) is ignored: 2 of 3.
  assert pck_lib.pck(pred, gt, 5.0, valid) == pytest.approx(2 / 3)
  assert pck_lib.pck(pred, gt, 4.999, valid) == pytest.approx(1 / 3)
  # Without the mask the far point counts and is wrong: 2 of 4.
  assert pck_lib.pck(pred, gt, 5.0) == pytest.approx(0.5)
  assert math.isnan(pck_lib.pck(pred, gt, 5.0, np.zeros(4, bool)))
  assert pck_lib.end_point_error(pred, gt, valid) == pytest.approx(5.0)


def test_pck_per_pair_and_mean_over_pairs_skip_empty_pairs():
  preds = [np.array([[0., 0.], [3., 4.], [10., 0.]]), np.zeros((0, 2)),
           np.array([[1., 0.]])]
  gts = [np.zeros((3, 2)), np.zeros((0, 2)), np.zeros((1, 2))]
  per_pair = pck_lib.pck_per_pair(preds, gts, [5.0, 5.0, 0.5])
  np.testing.assert_allclose(per_pair[[0, 2]], [2 / 3, 0.0])
  assert math.isnan(per_pair[1])
  assert pck_lib.mean_over_pairs(per_pair) == pytest.approx(1 / 3)
  assert math.isnan(pck_lib.mean_over_pairs([float('nan')]))


def test_thresholds():
  assert pck_lib.alpha_img_threshold(0.1, (240, 320)) == pytest.approx(32.0)
  assert pck_lib.alpha_bbox_threshold(
      0.1, np.array([10., 20., 50., 100.])) == pytest.approx(8.0)
  mask = np.zeros((10, 10))
  mask[3:5, 2:6] = 1  # x 2..5 (4 px wide), y 3..4 (2 px high)
  np.testing.assert_allclose(kp.mask_bbox(mask), [1.5, 2.5, 5.5, 4.5])
  assert pck_lib.alpha_mask_threshold(0.5, mask) == pytest.approx(2.0)
  assert kp.mask_bbox(np.zeros((4, 4))) is None
  assert math.isnan(pck_lib.alpha_mask_threshold(0.1, np.zeros((4, 4))))
  np.testing.assert_allclose(
      kp.points_bbox(np.array([[1., 5.], [4., 2.]])), [1., 2., 4., 5.])


# --- keypoints ----------------------------------------------------------------
def test_transfer_keypoints_bilinear_hand_case():
  mapping = np.array([[[0., 0.], [10., 0.]],
                      [[0., 20.], [30., 40.]]])  # (H=2, W=2, 2)
  points = np.array([[0.5, 0.5], [1.0, 0.25], [-3.0, 5.0], [1.0, 1.0]])
  out = kp.transfer_keypoints(mapping, points)
  np.testing.assert_allclose(out, [[10., 15.],   # mean of the four
                                   [15., 10.],   # 0.75 (10,0) + 0.25 (30,40)
                                   [0., 20.],    # clamped to (0, 1)
                                   [30., 40.]])  # the corner itself
  batched = kp.transfer_keypoints(np.stack([mapping, mapping + 1]),
                                  np.stack([points, points]))
  np.testing.assert_allclose(batched[1], out + 1)


def test_grid_points_in_mask():
  np.testing.assert_array_equal(
      kp.grid_points(10, 12, 4),
      [[2, 2], [6, 2], [10, 2], [2, 6], [6, 6], [10, 6]])
  mask = np.zeros((10, 12))
  mask[5:, 5:] = 1
  np.testing.assert_array_equal(kp.grid_points_in_mask(mask, 4),
                                [[6, 6], [10, 6]])


# --- synthetic evaluation -----------------------------------------------------
def _sfnet_test_config():
  return config_files.load(os.path.join(REPO, 'configs', 'sfnet.py:test'))


class ShiftFake:
  """A fake method: `mapping = identity + variables['shift']` both ways."""

  def predict(self, variables, source, target):
    b, h, w, _ = source.shape
    gx, gy = jnp.meshgrid(jnp.arange(w, dtype=jnp.float32),
                          jnp.arange(h, dtype=jnp.float32), indexing='xy')
    grid = jnp.broadcast_to(jnp.stack([gx, gy], -1), (b, h, w, 2))
    return {'mapping_st': grid + variables['shift'],
            'mapping_ts': grid - variables['shift']}


def _expected_pck(batches, shift, stride, alpha):
  """PCK of `ShiftFake` recomputed from the batches with plain numpy."""
  per_dir = {'st': [], 'ts': []}
  for batch in batches:
    h, w = batch['source_image'].shape[1:3]
    for i in range(len(batch['source_image'])):
      for d, mask, sign in (('st', 'source_mask', 1),
                            ('ts', 'target_mask', -1)):
        region = (batch[mask][i] > 0.5) & (batch[f'valid_{d}'][i] > 0.5)
        ys, xs = np.mgrid[stride // 2:h:stride, stride // 2:w:stride]
        keep = region[ys, xs]
        xs, ys = xs[keep], ys[keep]
        if not xs.size:
          continue
        gt = batch[f'mapping_{d}'][i][ys, xs]
        pred = np.stack([xs, ys], -1) + sign * np.asarray(shift)
        dist = np.linalg.norm(pred - gt, axis=-1)
        per_dir[d].append(np.mean(dist <= alpha * max(h, w)))
  return {d: float(np.mean(v)) for d, v in per_dir.items()}


def test_evaluate_synthetic_matches_numpy_recomputation():
  config = _sfnet_test_config()
  settings = config.evals.synthetic
  shift = np.array([1.5, -2.0], np.float32)
  results = synthetic.evaluate_synthetic(
      ShiftFake().predict, {'shift': shift}, config.data, num_pairs=6,
      batch_size=4,  # 4 + a padded batch of 2
      seed=settings.seed, keypoint_stride=settings.keypoint_stride,
      alphas=(0.05, 0.1, 2.0))
  assert results['num_pairs'] == 6
  assert results['num_keypoints'] == (results['num_keypoints_st'] +
                                      results['num_keypoints_ts']) > 0
  batches = list(synthetic.heldout_batches(config.data, 6, 4, settings.seed))
  for alpha in (0.05, 0.1):
    want = _expected_pck(batches, shift, settings.keypoint_stride, alpha)
    key = pck_lib.alpha_key(alpha)
    assert results[f'pck_st@{key}'] == pytest.approx(want['st'])
    assert results[f'pck_ts@{key}'] == pytest.approx(want['ts'])
    assert results[f'pck@{key}'] == pytest.approx(
        (want['st'] + want['ts']) / 2)
    assert 0 <= results[f'pck_bbox@{key}'] <= 1
  # The threshold exceeds the image diagonal: every point is correct.
  assert results['pck@2'] == 1.0 and results['pck_bbox@2'] == 1.0
  assert set(results['conventions']) >= {'pck', 'st', 'ts', 'keypoints'}
  assert [f['name'] for f in results['flows']] == ['final']
  json.dumps(reports.json_ready(results))  # JSON-ready


def test_score_batch_perfect_prediction():
  config = _sfnet_test_config()
  batch = next(synthetic.heldout_batches(config.data, 2, 2, seed=0))
  pairs = synthetic_scores.score_batch(batch, batch, stride=4, alphas=(0.01,))
  summary = synthetic_scores.summarize(pairs, (0.01,))
  assert summary['pck@0.01'] == 1.0 and summary['epe'] == pytest.approx(0.0)


def test_write_and_read_eval(tmp_path):
  trained = {'pck@0.05': 0.5, 'pck@0.1': 0.75, 'pck@0.15': float('nan'),
             'epe': 3.25, 'num_pairs': 4, 'num_keypoints': 100,
             'alphas': [0.05, 0.1, 0.15], 'conventions': {'pck': 'd <= t'}}
  untrained = dict(trained, **{'pck@0.1': 0.25})
  results = {'step': 7, 'trained': trained, 'untrained': untrained}
  json_path, md_path = reports.write_eval(str(tmp_path), 'synthetic',
                                          results)
  assert json_path == str(tmp_path / 'eval' / 'synthetic.json')
  raw = json.loads(open(json_path).read())  # strict JSON: NaN -> null
  assert raw['trained']['pck@0.15'] is None and raw['step'] == 7
  back = reports.read_eval(str(tmp_path), 'synthetic')
  assert math.isnan(back['trained']['pck@0.15'])
  table = reports.format_comparison(trained, untrained)
  assert '| PCK@0.1 (alpha_img) | 0.750 | 0.250 |' in table
  assert 'untrained' in open(md_path).read()
  assert sorted(os.listdir(tmp_path / 'eval')) == ['synthetic.json',
                                                   'synthetic.md']


# --- pictures -----------------------------------------------------------------
def test_flow_to_color_encoding():
  flow = np.zeros((2, 3, 2))
  flow[0, 1] = (1, 0)     # right, at full saturation
  flow[0, 2] = (-1, 0)    # left
  flow[1, 1] = (0, 1)     # down
  flow[1, 2] = (2, 0)     # beyond max_flow: darkened
  color = visualize.flow_to_color(flow, max_flow=1.0)
  assert color.dtype == np.uint8 and color.shape == (2, 3, 3)
  np.testing.assert_array_equal(color[0, 0], [255, 255, 255])  # zero: white
  np.testing.assert_array_equal(color[0, 1], [255, 0, 0])      # right: red
  assert color[0, 2, 0] < 50 and color[0, 2, 2] > 200           # left: cyan
  assert not np.array_equal(color[0, 1], color[1, 1])
  np.testing.assert_array_equal(color[1, 2], [191, 0, 0])      # 0.75 red
  nan = visualize.flow_to_color(np.full((1, 1, 2), np.nan))
  np.testing.assert_array_equal(nan[0, 0], [0, 0, 0])


def test_warp_image_values_worked_out_by_hand():
  # b: (2, 3), value = (3 y + x) / 10; (x, y) pixel centres at integers.
  image = (np.arange(6, dtype=np.float32).reshape(2, 3, 1) / 10)
  mapping = np.array([[[1, 0], [0.5, 0.5], [2, 0.25], [1.25, 1]],
                      [[2.5, 1], [-1, 0], [np.nan, 0], [0, np.inf]]])
  want = [[0.1, (0 + 1 + 3 + 4) / 40, 0.75 * 0.2 + 0.25 * 0.5,
           0.75 * 0.4 + 0.25 * 0.5],
          # Half of (2, 1) (its right neighbour is outside b); (-1, 0) is
          # outside (its right neighbour has weight 0); no match reads 0.
          [0.5 * 0.5, 0.0, 0.0, 0.0]]
  warped = visualize.warp_image(image, mapping)
  assert warped.shape == (2, 4, 1) and warped.dtype == np.float32
  np.testing.assert_allclose(warped[..., 0], want, atol=1e-6)
  # uint8 images are read as value / 255.
  uint8 = np.full((2, 3, 3), 255, np.uint8)
  np.testing.assert_allclose(visualize.warp_image(uint8, mapping[:1, :2]),
                             np.ones((1, 2, 3)), atol=1e-6)


def test_draw_match_and_eval_pairs(tmp_path):
  rng = np.random.default_rng(0)
  source = rng.random((20, 30, 3)).astype(np.float32)
  target = (rng.random((16, 24, 3)) * 255).astype(np.uint8)
  gx, gy = np.meshgrid(np.arange(30.), np.arange(20.), indexing='xy')
  mapping_st = np.stack([gx * 23 / 29, gy * 15 / 19], -1)
  gx, gy = np.meshgrid(np.arange(24.), np.arange(16.), indexing='xy')
  mapping_ts = np.stack([gx * 29 / 23, gy * 19 / 15], -1)
  path = visualize.draw_match(
      str(tmp_path / 'match.png'), source, target, mapping_st, mapping_ts,
      points_s=np.array([[3., 4.], [20., 10.]]),
      extra_maps={'confidence_st': rng.random((20, 30))}, title='t')
  assert Image.open(path).size[0] > 100
  warped = visualize.warp_image(source, mapping_ts)
  assert warped.shape == (16, 24, 3)

  config = _sfnet_test_config()
  batch = next(synthetic.heldout_batches(config.data, 2, 2, seed=0))
  path = visualize.draw_eval_pairs(str(tmp_path / 'pairs.png'), batch, batch,
                                   num_pairs=2)
  assert Image.open(path).size[1] > 100
  written = visualize.write_pair_images(str(tmp_path / 'pairs'), batch, 2)
  assert [os.path.basename(p) for p in written] == [
      'pair_000_source.png', 'pair_000_target.png', 'pair_001_source.png',
      'pair_001_target.png']
  assert Image.open(written[0]).size == tuple(config.data.image_size[::-1])
