"""Evaluation protocols: model inputs, point frames, PairPrediction."""

from __future__ import annotations

import numpy as np
import pytest

from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import fake
from semcorr_jax.evaluation import protocol as proto

_FIELDS = ('input_size', 'pad', 'alphas', 'direction', 'threshold', 'frame',
           'square_side', 'kps_padding_bug', 'tss_alpha', 'batch_size')


# --- protocols and presets ---------------------------------------------------
def test_default_protocols_have_every_field_and_the_documented_defaults():
  for name in proto.BENCHMARKS:
    p = proto.default_protocol(name)
    for field in _FIELDS:
      assert field in p, (name, field)
    assert p.pad == 0 and p.input_size is None and p.tss_alpha == 0.05
  pascal = proto.default_protocol('pf_pascal')
  assert (pascal.direction, pascal.threshold, pascal.frame) == (
      'ts', 'img', 'square')
  willow = proto.default_protocol('pf_willow')
  assert (willow.direction, willow.threshold, willow.frame,
          willow.kps_padding_bug) == ('ts', 'kps', 'original', False)
  spair = proto.default_protocol('spair71k')
  assert (spair.direction, spair.threshold, spair.frame) == (
      'ts', 'bbox', 'original')
  with pytest.raises(SemcorrError, match='pf_pascal'):
    proto.default_protocol('nope')


def test_presets_return_a_modified_copy():
  base = proto.default_protocol('pf_pascal')
  padded = proto.apply_preset(base, 'padded')
  assert tuple(padded.input_size) == (288, 288) and padded.pad == 16
  assert base.input_size is None and base.pad == 0  # untouched
  # The published name is an alias of the same preset.
  assert proto.apply_preset(base, 'sfnet').to_dict() == padded.to_dict()
  back = proto.apply_preset(padded, 'resize')
  assert back.input_size is None and back.pad == 0
  assert back.frame == 'square'  # other fields kept
  with pytest.raises(SemcorrError, match='known: resize, padded'):
    proto.apply_preset(base, 'nope')


def test_resolve_input_size():
  p = proto.apply_preset(proto.default_protocol('pf_pascal'), 'sfnet')
  assert proto.resolve_input_size(p, (320, 320)) == (288, 288)
  p.input_size = None
  # 320 - 2 * 16 = 288; 256 - 32 = 224.
  assert proto.resolve_input_size(p, (320, 256)) == (288, 224)
  p.pad = 160
  with pytest.raises(SemcorrError, match='too small'):
    proto.resolve_input_size(p, (320, 320))


# --- points ------------------------------------------------------------------
def test_to_and_from_model_points_by_hand():
  # Image H=11, W=21 -> input h=5, w=11, pad 2:
  # x ratio (11-1)/(21-1) = 0.5, y ratio (5-1)/(11-1) = 0.4.
  pts = np.array([[10., 4.], [0., 0.], [20., 10.]])
  want = np.array([[10 * 0.5 + 2, 4 * 0.4 + 2],   # (7, 3.6)
                   [2., 2.],                       # corner -> pad
                   [20 * 0.5 + 2, 10 * 0.4 + 2]])  # (12, 6): last pixel
  got = proto.to_model_points(pts, (11, 21), (5, 11), 2)
  np.testing.assert_allclose(got, want, atol=1e-12)
  assert got.dtype == np.float64
  back = proto.from_model_points(want, (11, 21), (5, 11), 2)
  np.testing.assert_allclose(back, pts, atol=1e-12)


def test_sfnet_padding_round_trip():
  # A 375 x 500 image under SFNet's 288 + 16: its corner pixels land on
  # 16 and 16 + 287 = 303 of the 320 x 320 input.
  pts = np.array([[0., 0.], [499., 374.], [123.4, 56.7]])
  m = proto.to_model_points(pts, (375, 500), (288, 288), 16)
  np.testing.assert_allclose(m[:2], [[16., 16.], [303., 303.]], atol=1e-9)
  np.testing.assert_allclose(m[2], [123.4 * 287 / 499 + 16,
                                    56.7 * 287 / 374 + 16], atol=1e-9)
  back = proto.from_model_points(m, (375, 500), (288, 288), 16)
  np.testing.assert_allclose(back, pts, atol=1e-9)


# --- model input --------------------------------------------------------------
def test_model_input_align_corners_and_black_padding():
  image = np.zeros((3, 3, 3), np.float32)
  image[1, 1] = 1.0
  out = proto.model_input(image, (5, 5), 1)
  assert out.shape == (7, 7, 3) and out.dtype == np.float32
  # The 1-px border is black.
  assert np.all(out[0] == 0) and np.all(out[-1] == 0)
  assert np.all(out[:, 0] == 0) and np.all(out[:, -1] == 0)
  inner = out[1:-1, 1:-1, 0]
  # Align corners 3 -> 5: output j samples input j / 2. (2, 2) is the bright
  # pixel itself; (1, 1) sits at (0.5, 0.5): 1/4 of it; (1, 2) at
  # (0.5, 1): 1/2; the corner (0, 0) is the corner pixel: 0.
  assert inner[2, 2] == pytest.approx(1.0)
  assert inner[1, 1] == pytest.approx(0.25)
  assert inner[1, 2] == pytest.approx(0.5)
  assert inner[0, 0] == pytest.approx(0.0)


def test_model_input_uint8_and_sfnet_size():
  image = np.full((30, 40, 3), 255, np.uint8)
  out = proto.model_input(image, (288, 288), 16)
  assert out.shape == (320, 320, 3)
  np.testing.assert_allclose(out[16:304, 16:304], 1.0, atol=1e-6)
  assert out[:16].max() == 0 and out[304:].max() == 0
  assert out[:, :16].max() == 0 and out[:, 304:].max() == 0


def test_resize_anti_aliases_when_shrinking():
  # A 41 x 41 checkerboard: the 5 x 5 align-corners samples fall on
  # x, y in {0, 10, ..., 40}, all with x + y even, i.e. all 1 without
  # anti-aliasing. With the Gaussian (sigma (10 - 1) / 2 = 4.5) inner
  # samples are the local mean, ~0.5; the border replication ('nearest')
  # biases the corners (0.625), still far from 1.
  yy, xx = np.mgrid[:41, :41]
  board = ((xx + yy) % 2 == 0).astype(np.float32)
  image = np.repeat(board[..., None], 3, axis=-1)
  out = proto.resize_image(image, (5, 5))
  assert np.all(np.abs(out[1:-1, 1:-1] - 0.5) < 0.01)
  assert out.max() < 0.7


# --- PairPrediction -----------------------------------------------------------
def _prediction(predict_fn, source_hw, target_hw, input_size, pad):
  hm, wm = input_size[0] + 2 * pad, input_size[1] + 2 * pad
  out = predict_fn(np.zeros((1, hm, wm, 3)), np.zeros((1, hm, wm, 3)))
  return proto.PairPrediction({k: v[0] for k, v in out.items()}, source_hw,
                              target_hw, input_size, pad)


def test_transfer_identity_by_hand_with_padding():
  # Source H=11, W=21; target H=6, W=11; input 6 x 11, pad 2.
  # Source (10, 5) -> model (10 * 10/20 + 2, 5 * 5/10 + 2) = (7, 4.5);
  # identity in the model frame; target: ((7 - 2) * 10/10,
  # (4.5 - 2) * 5/5) = (5, 2.5).
  pred = _prediction(fake.identity_predict_fn, (11, 21), (6, 11), (6, 11), 2)
  got = pred.transfer(np.array([[10., 5.]]), 'st')
  np.testing.assert_allclose(got, [[5., 2.5]], atol=1e-12)
  got = pred.transfer(np.array([[5., 2.5]]), 'ts')
  np.testing.assert_allclose(got, [[10., 5.]], atol=1e-12)


@pytest.mark.parametrize('pad', [0, 16])
def test_transfer_identity_is_normalised_identity(pad):
  src_hw, tgt_hw = (21, 31), (17, 41)
  pred = _prediction(fake.identity_predict_fn, src_hw, tgt_hw, (9, 13), pad)
  pts = np.array([[0., 0.], [30., 20.], [7.3, 11.9], [15., 10.]])
  want = pts * [(41 - 1) / (31 - 1), (17 - 1) / (21 - 1)]
  np.testing.assert_allclose(pred.transfer(pts, 'st'), want, atol=1e-6)
  np.testing.assert_allclose(pred.transfer(want, 'ts'), pts, atol=1e-6)


def _normalise(points, hw):
  return 2 * points / [hw[1] - 1, hw[0] - 1] - 1


def _pixels(points_n, hw):
  return (points_n + 1) / 2 * [hw[1] - 1, hw[0] - 1]


def test_transfer_affine_equals_the_analytic_map_at_pad_0():
  a = np.array([[0.5, 0.1, 0.2], [-0.1, 0.8, -0.1]])
  src_hw, tgt_hw = (21, 31), (17, 41)
  pred = _prediction(fake.affine_predict_fn(a), src_hw, tgt_hw, (9, 13), 0)
  pts = np.array([[0., 0.], [30., 20.], [7.3, 11.9], [22.2, 3.5]])
  want = _pixels(_normalise(pts, src_hw) @ a[:, :2].T + a[:, 2], tgt_hw)
  got = pred.transfer(pts, 'st')
  np.testing.assert_allclose(got, want, atol=1e-6)
  np.testing.assert_allclose(pred.transfer(got, 'ts'), pts, atol=1e-6)
  dense = pred.dense('st')
  assert dense.shape == (21, 31, 2) and dense.dtype == np.float32
  # dense[y, x] is the transfer of (x, y).
  np.testing.assert_allclose(dense[20, 30], want[1], atol=1e-4)
  assert pred.dense('ts').shape == (17, 41, 2)


def test_transfer_reads_the_model_mapping_bilinearly():
  # Model 3 x 3 (no pad), both originals 5 x 5: original (1, 1) -> model
  # (0.5, 0.5). mapping_st is 0 except (2, 2) at pixel [1, 1]: the read is
  # 1/4 of it, (0.5, 0.5), i.e. target (0.5 * 4/2, 0.5 * 4/2) = (1, 1).
  mapping = np.zeros((3, 3, 2))
  mapping[1, 1] = (2., 2.)
  pred = proto.PairPrediction({'mapping_st': mapping, 'mapping_ts': mapping},
                              (5, 5), (5, 5), (3, 3), 0)
  np.testing.assert_allclose(pred.transfer([[1., 1.]], 'st'), [[1., 1.]])
  with pytest.raises(SemcorrError, match='direction'):
    pred.transfer([[1., 1.]], 'xy')
  with pytest.raises(SemcorrError, match='mapping_ts'):
    proto.PairPrediction({'mapping_st': mapping}, (5, 5), (5, 5), (3, 3), 0)


# --- predict_pairs ------------------------------------------------------------
def test_predict_pairs_pads_batches_and_cuts_back():
  calls = []

  def predict_fn(source, target):
    calls.append(source.shape)
    out = fake.identity_predict_fn(source, target)
    # Tag every item with its source's value, to check order and cut.
    out['tag'] = source[:, 0, 0, 0].copy()
    return out

  p = proto.default_protocol('pf_pascal')
  p.batch_size = 3
  pairs = [(np.full((10 + i, 12, 3), 10 * (i + 1), np.uint8),
            np.full((8, 9, 3), 0, np.uint8)) for i in range(4)]
  preds = proto.predict_pairs(predict_fn, pairs, p, (7, 5))
  # 4 pairs in batches of 3: two calls, both of size 3.
  assert calls == [(3, 7, 5, 3), (3, 7, 5, 3)]
  assert len(preds) == 4
  np.testing.assert_allclose([q.outputs['tag'] for q in preds],
                             [10 / 255, 20 / 255, 30 / 255, 40 / 255],
                             rtol=1e-6)
  assert preds[3].source_hw == (13, 12) and preds[3].target_hw == (8, 9)
  assert preds[0].outputs['mapping_st'].shape == (7, 5, 2)
  assert preds[0].input_size == (7, 5) and preds[0].pad == 0


def test_predict_pairs_sfnet_preset_and_size_mismatch():
  p = proto.apply_preset(proto.default_protocol('pf_pascal'), 'sfnet')
  p.input_size = (6, 8)  # a tiny "288" for speed: model = (10, 12) at pad 2
  p.pad = 2
  pairs = [(np.zeros((20, 30, 3), np.uint8), np.zeros((15, 25, 3), np.uint8))]
  preds = proto.predict_pairs(fake.identity_predict_fn, pairs, p, (10, 12))
  # Identity through the padding: source (29, 19) -> target (24, 14).
  np.testing.assert_allclose(preds[0].transfer([[29., 19.]], 'st'),
                             [[24., 14.]], atol=1e-9)
  with pytest.raises(SemcorrError, match='model runs at 12x12'):
    proto.predict_pairs(fake.identity_predict_fn, pairs, p, (12, 12))
