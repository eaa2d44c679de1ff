"""Keypoint-benchmark scoring (PCK per pair, over pairs, per category)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import fake
from semcorr_jax.evaluation import keypoint_benchmark as kb
from semcorr_jax.evaluation import pck as pck_lib
from semcorr_jax.evaluation import protocol as proto

NAN4 = np.full((4,), np.nan, np.float32)


# --- pck.py additions ---------------------------------------------------------
def test_keypoint_extent_threshold_and_the_padding_bug():
  # x spans 10..30, y 20..25: L = max(20, 5) = 20. The invalid far point is
  # left out (it would make L = 90).
  pts = np.array([[10., 20.], [30., 25.], [20., 22.], [100., 100.]])
  valid = np.array([True, True, True, False])
  assert pck_lib.keypoint_extent_threshold(1.0, pts, valid) == 20.0
  assert pck_lib.keypoint_extent_threshold(0.1, pts, valid) == (
      pytest.approx(2.0))
  # DHPF/CATs: -1 rows up to 40 -> min (-1, -1), max (30, 25):
  # L = max(31, 26) = 31.
  assert pck_lib.keypoint_extent_threshold(
      1.0, pts, valid, padding_bug=True) == 31.0
  # Already pad_to valid points: nothing is added.
  assert pck_lib.keypoint_extent_threshold(
      1.0, pts, valid, padding_bug=True, pad_to=3) == 20.0
  assert math.isnan(pck_lib.keypoint_extent_threshold(
      1.0, pts, np.zeros(4, bool)))


def test_square_points_plain_scaling():
  # H=20, W=40, side 100: x * 100/40 = 2.5 x, y * 100/20 = 5 y.
  got = pck_lib.square_points([[20., 10.], [40., 20.]], (20, 40), 100)
  np.testing.assert_allclose(got, [[50., 50.], [100., 100.]])


# --- score_pair ---------------------------------------------------------------
def _example(**extra):
  """Both images 20 x 40. Point 3 is invalid (and far off if counted)."""
  ex = {
      'pair_id': 'p0',
      'category': 'cat',
      'source_keypoints': np.array([[10., 5.], [20., 10.], [30., 15.]],
                                   np.float32),
      'target_keypoints': np.array([[13., 9.], [20., 12.], [0., 0.]],
                                   np.float32),
      'keypoint_valid': np.array([True, True, False]),
      'source_bbox': np.array([5., 0., 25., 16.], np.float32),
      'target_bbox': np.array([0., 0., 10., 30.], np.float32),
      'flip': np.bool_(False),
      'source_file': 'a.jpg',
  }
  ex.update(extra)
  return ex


def _identity_prediction(hw=(20, 40)):
  # Equal sizes at pad 0: transfer is the identity on pixels.
  hm, wm = 9, 13
  out = fake.identity_predict_fn(np.zeros((1, hm, wm, 3)),
                                 np.zeros((1, hm, wm, 3)))
  return proto.PairPrediction({k: v[0] for k, v in out.items()}, hw, hw,
                              (hm, wm), 0)


def _protocol(benchmark='pf_pascal', **fields):
  p = proto.default_protocol(benchmark)
  p.update(fields)
  return p


def test_score_pair_ts_original_img():
  # ts: predicted = target kps moved by the identity = (13, 9), (20, 12);
  # compared with source kps (10, 5), (20, 10): d = 5, 2. L = max(20, 40)
  # = 40. alpha .05 -> 2: [F, T (tie)] = .5; .1 -> 4: .5; .15 -> 6: 1.
  p = _protocol(frame='original', alphas=(0.05, 0.1, 0.15))
  r = kb.score_pair(_example(), _identity_prediction(), p)
  assert r['pair_id'] == 'p0' and r['category'] == 'cat'
  assert r['num_keypoints'] == 2 and r['threshold_px'] == 40.0
  assert r['pck@0.05'] == 0.5 and r['pck@0.1'] == 0.5
  assert r['pck@0.15'] == 1.0
  assert r['mean_error_px'] == pytest.approx(3.5)  # (5 + 2) / 2


def test_score_pair_square_frame():
  # Side 100 on a 20 x 40 source: (x, y) -> (2.5 x, 5 y). Predicted
  # (32.5, 45), (50, 60); GT (25, 25), (50, 50): d = sqrt(7.5^2 + 20^2)
  # = sqrt(456.25) = 21.36, and 10. L = 100: .05 -> 5: 0; .1 -> 10:
  # [F, T (tie)] = .5; .25 -> 25: 1.
  p = _protocol(square_side=100, alphas=(0.05, 0.1, 0.25))
  r = kb.score_pair(_example(), _identity_prediction(), p)
  assert r['threshold_px'] == 100.0
  assert (r['pck@0.05'], r['pck@0.1'], r['pck@0.25']) == (0.0, 0.5, 1.0)
  assert r['mean_error_px'] == pytest.approx((np.sqrt(456.25) + 10) / 2)


def test_score_pair_bbox_uses_the_compared_image():
  # ts -> source box (5, 0, 25, 16): L = max(20, 16) = 20; d = 5, 2:
  # .1 -> 2: .5; .2 -> 4: .5; .25 -> 5: 1.
  p = _protocol('spair71k', alphas=(0.1, 0.2, 0.25))
  r = kb.score_pair(_example(), _identity_prediction(), p)
  assert r['threshold_px'] == 20.0
  assert (r['pck@0.1'], r['pck@0.2'], r['pck@0.25']) == (0.5, 0.5, 1.0)
  # st -> predicted = source kps (10, 5), (20, 10) vs target kps (13, 9),
  # (20, 12): d = 5, 2 again; target box (0, 0, 10, 30): L = 30:
  # .1 -> 3: .5; .2 -> 6: 1; .25 -> 7.5: 1.
  p.direction = 'st'
  r = kb.score_pair(_example(), _identity_prediction(), p)
  assert r['threshold_px'] == 30.0
  assert (r['pck@0.1'], r['pck@0.2'], r['pck@0.25']) == (0.5, 1.0, 1.0)
  # No box: PCK NaN, the error is still measured.
  r = kb.score_pair(_example(source_bbox=NAN4), _identity_prediction(),
                    _protocol('spair71k'))
  assert math.isnan(r['pck@0.1']) and r['mean_error_px'] == 3.5


def test_score_pair_kps_extent_with_and_without_the_bug():
  # Valid source kps (10, 5), (20, 10): L = max(10, 5) = 10 (the invalid
  # (30, 15) would make it 20). d = 5, 2: .2 -> 2: .5; .5 -> 5: 1.
  p = _protocol('pf_willow', alphas=(0.2, 0.5))
  r = kb.score_pair(_example(), _identity_prediction(), p)
  assert r['threshold_px'] == 10.0
  assert (r['pck@0.2'], r['pck@0.5']) == (0.5, 1.0)
  # Bug: min becomes (-1, -1): L = max(21, 11) = 21; .2 -> 4.2: .5.
  p.kps_padding_bug = True
  r = kb.score_pair(_example(), _identity_prediction(), p)
  assert r['threshold_px'] == 21.0


def test_score_pair_copies_int_and_bool_extras_only():
  ex = _example(viewpoint_variation=np.int64(2), mirror=np.bool_(True),
                occlusion=np.array(1), note='text', vector=np.zeros(3))
  r = kb.score_pair(ex, _identity_prediction(), _protocol())
  assert r['viewpoint_variation'] == 2 and r['mirror'] is True
  assert r['occlusion'] == 1
  for key in ('note', 'vector', 'flip', 'source_file', 'source_keypoints'):
    assert key not in r


def test_score_pair_checks_sizes_and_protocol():
  ex = _example(source_image=np.zeros((21, 40, 3), np.uint8))
  with pytest.raises(SemcorrError, match='21x40'):
    kb.score_pair(ex, _identity_prediction(), _protocol())
  with pytest.raises(SemcorrError, match='frame'):
    kb.score_pair(_example(), _identity_prediction(), _protocol(frame='x'))


def test_end_to_end_with_predict_pairs_and_an_affine_fake():
  # A known affine model, real resizes (source 20 x 40, target 30 x 50,
  # model 9 x 13, pad 0): transfers follow the analytic map exactly, so a
  # target whose keypoints are the analytic images of the source's scores
  # PCK 1 with error ~0.
  a = np.array([[0.8, 0.1, 0.05], [0.0, 0.9, -0.1]])
  # Chosen so that their images lie inside the target (no clamping).
  src = np.array([[6., 5.], [20., 10.], [33., 14.]])
  src_n = 2 * src / [39, 19] - 1
  tgt_n = np.linalg.solve(a[:, :2], (src_n - a[:, 2]).T).T  # A tgt_n = src_n
  tgt = (tgt_n + 1) / 2 * [49, 29]
  # The model maps source -> target by A^-1, so mapping_ts is A.
  inv = np.linalg.inv(a[:, :2])
  fn = fake.affine_predict_fn(np.concatenate(
      [inv, -inv @ a[:, 2:]], axis=1))
  pairs = [(np.zeros((20, 40, 3), np.uint8), np.zeros((30, 50, 3), np.uint8))]
  p = _protocol('spair71k')
  pred = proto.predict_pairs(fn, pairs, p, (9, 13))[0]
  ex = _example(source_keypoints=src, target_keypoints=tgt,
                keypoint_valid=np.ones(3, bool),
                source_image=pairs[0][0], target_image=pairs[0][1])
  r = kb.score_pair(ex, pred, p)
  assert r['pck@0.05'] == 1.0 and r['mean_error_px'] < 1e-6


# --- summarize / markdown -----------------------------------------------------
def _records():
  return [
      {'pair_id': 'a', 'category': 'cat', 'num_keypoints': 2,
       'threshold_px': 40., 'pck@0.1': 0.5, 'mean_error_px': 3.5,
       'occlusion': 0},
      {'pair_id': 'b', 'category': 'cat', 'num_keypoints': 0,
       'threshold_px': 40., 'pck@0.1': float('nan'),
       'mean_error_px': float('nan'), 'occlusion': 1},
      {'pair_id': 'c', 'category': 'dog', 'num_keypoints': 3,
       'threshold_px': 40., 'pck@0.1': 1.0, 'mean_error_px': 1.0,
       'occlusion': 1},
  ]


def test_summarize_means_over_pairs_skipping_nan():
  s = kb.summarize(_records(), _protocol(alphas=(0.1,)))
  # Overall: pairs 3, keypoints 2 + 0 + 3 = 5; PCK (0.5 + 1) / 2 = 0.75
  # (pair b has no keypoints: NaN, skipped); error (3.5 + 1) / 2 = 2.25.
  assert s['num_pairs'] == 3 and s['num_keypoints'] == 5
  assert s['pck@0.1'] == pytest.approx(0.75)
  assert s['mean_error_px'] == pytest.approx(2.25)
  # Per category: cat = mean(0.5) = 0.5 over 2 pairs; dog = 1.
  assert s['per_category']['cat']['num_pairs'] == 2
  assert s['per_category']['cat']['pck@0.1'] == 0.5
  assert s['per_category']['dog']['pck@0.1'] == 1.0
  # Per factor: occlusion 0 -> 0.5; 1 -> mean(NaN, 1) = 1.
  assert s['per_factor']['occlusion']['0']['pck@0.1'] == 0.5
  assert s['per_factor']['occlusion']['1']['pck@0.1'] == 1.0
  assert s['per_factor']['occlusion']['1']['num_pairs'] == 2
  assert set(s['per_factor']) == {'occlusion'}
  assert s['primary_metric'] == kb.PRIMARY_METRIC == 'pck@0.1'
  assert 'square' in s['conventions']['frame']
  assert s['protocol']['direction'] == 'ts'


def test_markdown_tables():
  text = kb.markdown(kb.summarize(_records(), _protocol(alphas=(0.1,))))
  assert '| all | 3 | 5 | 0.750 | 2.25 |' in text
  assert '| cat | 2 | 2 | 0.500 | 3.50 |' in text
  assert '| dog | 1 | 3 | 1.000 | 1.00 |' in text
  assert '| occlusion | pairs | keypoints | PCK@0.1 | mean error (px) |' in text
  assert '**threshold**' in text


def test_prepare_example_is_identity():
  ex = _example()
  assert kb.prepare_example(ex) is ex
