"""Tests of `.flo` I/O and the TSS flow-accuracy scoring (hand-computed)."""

import struct

import ml_collections
import numpy as np
import pytest

from semcorr_jax.errors import SemcorrError
from semcorr_jax.data import flow_io
from semcorr_jax.evaluation import tss

from helpers import tss_fixture


class FakePrediction:
  """Duck-typed prediction: `.dense('ts')` returns a fixed mapping."""

  def __init__(self, mapping_ts):
    self.mapping_ts = np.asarray(mapping_ts, np.float32)

  def dense(self, direction):
    assert direction == 'ts'
    return self.mapping_ts


# --------------------------------------------------------------- flow_io --


def test_flo_bytes_of_a_2x3_flow():
  flow = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
  data = flow_io.encode_flo(flow)
  # 12 header bytes + 2 * 3 pixels * 2 values * 4 bytes = 60.
  assert len(data) == 60
  assert data[:4] == b'PIEH'  # 202021.25 as a little-endian float32.
  assert struct.unpack('<f', data[:4])[0] == 202021.25
  assert struct.unpack('<ii', data[4:12]) == (3, 2)  # Width, then height.
  values = struct.unpack('<12f', data[12:])
  # Row-major, (u, v) interleaved: u[0,0], v[0,0], u[0,1], v[0,1], ...
  assert values[:4] == (0.0, 1.0, 2.0, 3.0)
  assert values[6:8] == (6.0, 7.0)  # Pixel (row 1, col 0).


def test_flo_round_trip_path_and_bytes(tmp_path):
  flow = np.array([[[1.5, -2.0], [0.25, 3.0]]], np.float32)  # H 1, W 2.
  valid = np.array([[True, False]])
  path = tmp_path / 'sub' / 'flow1.flo'
  flow_io.write_flo(path, flow, valid)
  from_path = flow_io.read_flo(path)
  from_str = flow_io.read_flo(str(path))
  from_bytes = flow_io.read_flo(path.read_bytes())
  for out in (from_path, from_str, from_bytes):
    assert out.shape == (1, 2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], [1.5, -2.0])
    np.testing.assert_array_equal(out[0, 1], [1e10, 1e10])  # Unknown.
  np.testing.assert_array_equal(flow_io.valid_flow(from_path), valid)


def test_valid_flow_rule():
  flow = np.array([[[1e9, -1e9], [1.5e9, 0.0], [0.0, -2e9],
                    [np.nan, 0.0], [np.inf, 1.0], [3.0, 4.0]]])
  # |u| and |v| <= 1e9 and finite.
  np.testing.assert_array_equal(flow_io.valid_flow(flow),
                                [[True, False, False, False, False, True]])


def test_flo_errors(tmp_path):
  good = flow_io.encode_flo(np.zeros((2, 3, 2)))
  with pytest.raises(SemcorrError, match='magic number'):
    flow_io.read_flo(b'\x00' * 4 + good[4:])
  with pytest.raises(SemcorrError, match='truncated'):
    flow_io.read_flo(good[:-4])
  with pytest.raises(SemcorrError, match='longer than its header'):
    flow_io.read_flo(good + b'\x00' * 8)
  with pytest.raises(SemcorrError, match='too short'):
    flow_io.read_flo(good[:7])
  bad_size = good[:4] + struct.pack('<ii', 0, 2)
  with pytest.raises(SemcorrError, match='invalid flow size 0 x 2'):
    flow_io.read_flo(bad_size)
  path = tmp_path / 'broken.flo'
  path.write_bytes(good[:20])
  with pytest.raises(SemcorrError, match='broken.flo.*truncated'):
    flow_io.read_flo(path)
  with pytest.raises(SemcorrError, match='does not exist'):
    flow_io.read_flo(tmp_path / 'absent.flo')
  with pytest.raises(SemcorrError, match=r'\(H, W, 2\)'):
    flow_io.encode_flo(np.zeros((2, 3)))


# --------------------------------------------------------- flow_accuracy --


def offsets_example():
  """2 x 3 ground truth and a prediction off by known integer distances."""
  gt = tss.pixel_grid(2, 3) * 10.0
  # Distances per pixel: [[0, 1, 2], [3, 5, NaN]].
  offset = np.array([[[0, 0], [1, 0], [0, 2]],
                     [[3, 0], [3, 4], [np.nan, 0]]], np.float64)
  valid = np.array([[True, True, True], [True, False, True]])
  return gt + offset, gt, valid


def test_flow_accuracy_hand_computed():
  pred, gt, valid = offsets_example()
  # Other image 20 x 40: L = 40, threshold 0.05 * 40 = 2.0. Valid pixels:
  # d = 0 yes, 1 yes, 2 yes (ties count), 3 no, NaN no; the d = 5 pixel is
  # not valid. 3 / 5 = 0.6.
  assert tss.flow_accuracy(pred, gt, valid, 0.05, (20, 40)) == 0.6
  # alpha 0.1: threshold 4.0; 0, 1, 2, 3 yes, NaN no: 4 / 5.
  assert tss.flow_accuracy(pred, gt, valid, 0.1, (20, 40)) == 0.8
  # L from the other image, not from the grid: (40, 20) gives the same 2.0,
  # but image_hw=None uses the grid's own max(2, 3) = 3: threshold 0.15,
  # only d = 0: 1 / 5.
  assert tss.flow_accuracy(pred, gt, valid, 0.05, (40, 20)) == 0.6
  assert tss.flow_accuracy(pred, gt, valid, 0.05) == 0.2
  # valid=None: every finite ground-truth pixel, d = 5 included:
  # 0, 1, 2 yes of 6 -> 0.5.
  assert tss.flow_accuracy(pred, gt, None, 0.05, (20, 40)) == 0.5


def test_flow_accuracy_unknown_ground_truth_and_errors():
  pred, gt, valid = offsets_example()
  gt[0, 0] = np.nan  # Unknown ground truth never counts: 2 / 4 = 0.5.
  assert tss.flow_accuracy(pred, gt, valid, 0.05, (20, 40)) == 0.5
  assert np.isnan(tss.flow_accuracy(pred, gt, np.zeros((2, 3), bool)))
  with pytest.raises(SemcorrError, match='must both be'):
    tss.flow_accuracy(pred[:1], gt, valid)
  with pytest.raises(SemcorrError, match='does not fit'):
    tss.flow_accuracy(pred, gt, valid[:1])


# ------------------------------------------------ prepare / score a pair --


def small_example(flip):
  """Source 2 x 4, target 1 x 2; target x 0 -> source x 1, x 1 -> x 3."""
  source = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3)
  return {
      'pair_id': 'PASCAL/bike_01_03_2to1',
      'group': 'PASCAL',
      'source_image': source,
      'target_image': np.zeros((1, 2, 3), np.uint8),
      'source_mask': np.array([[[1], [1], [0], [0]], [[0], [0], [0], [0]]],
                              np.uint8),
      'target_mask': np.ones((1, 2, 1), np.uint8),
      'flow': np.array([[[1.0, 0.0], [2.0, 0.0]]], np.float32),
      'flow_valid': np.array([[True, True]]),
      'flip': flip,
  }


def test_prepare_example_mirrors_source_and_ground_truth():
  example = small_example(flip=True)
  out = tss.prepare_example(example)
  assert out['flip_applied'] and 'flip_applied' not in example
  np.testing.assert_array_equal(out['source_image'],
                                example['source_image'][:, ::-1])
  np.testing.assert_array_equal(out['source_mask'][0, :, 0], [0, 0, 1, 1])
  # Mirrored source x' = W_s - 1 - x = 3 - x: x 1 -> 2 and x 3 -> 0, so
  # u' = x' - x_t: 2 - 0 = 2 and 0 - 1 = -1 (= 3 - 2 x_t - u).
  np.testing.assert_array_equal(out['flow'], [[[2.0, 0.0], [-1.0, 0.0]]])
  np.testing.assert_array_equal(example['flow'], [[[1.0, 0.0], [2.0, 0.0]]])
  again = tss.prepare_example(out)  # Idempotent.
  np.testing.assert_array_equal(again['flow'], out['flow'])
  plain = tss.prepare_example(small_example(flip=False))
  assert plain['flip_applied'] is False
  np.testing.assert_array_equal(plain['flow'], example['flow'])


def test_score_pair_hand_computed():
  example = tss.prepare_example(small_example(flip=False))
  example['source_image'] = np.zeros((10, 40, 3), np.uint8)  # L = 40.
  # Ground-truth mapping_ts: (1, 0) and (3, 0). Prediction off by 2 and 3.
  prediction = FakePrediction([[[1.0, 2.0], [0.0, 0.0]]])
  record = tss.score_pair(example, prediction, None)
  # Threshold 0.05 * 40 = 2: first pixel (d 2) right, second (d 3) wrong.
  assert record == {'pair_id': 'PASCAL/bike_01_03_2to1', 'group': 'PASCAL',
                    'flow_accuracy': 0.5, 'num_pixels': 2, 'flip': False,
                    'alpha': 0.05}
  protocol = ml_collections.ConfigDict({'tss_alpha': 0.1})  # Threshold 4.
  assert tss.score_pair(example, prediction, protocol)['flow_accuracy'] == 1
  # L is the SOURCE's (10 x 40), not the target's (1 x 2: 0.05 * 2 = 0.1).
  example['source_image'] = np.zeros((1, 2, 3), np.uint8)
  assert tss.score_pair(example, prediction, None)['flow_accuracy'] == 0.0


def test_score_pair_needs_prepared_flip_rows_and_right_shapes():
  example = small_example(flip=True)
  identity = FakePrediction(tss.pixel_grid(1, 2))
  with pytest.raises(SemcorrError, match='call .*prepare_example'):
    tss.score_pair(example, identity, None)
  prepared = tss.prepare_example(example)
  # Prepared truth: target x 0 -> mirrored source x 2, x 1 -> x 0; the
  # identity is off by 2 and 1 (L = max(2, 4) = 4, threshold 0.2): 0.
  assert tss.score_pair(prepared, identity, None)['flow_accuracy'] == 0.0
  right = FakePrediction([[[2.0, 0.0], [0.0, 0.0]]])
  assert tss.score_pair(prepared, right, None)['flow_accuracy'] == 1.0
  with pytest.raises(SemcorrError, match='target grid needs'):
    tss.score_pair(prepared, FakePrediction(np.zeros((2, 2, 2))), None)


def test_kit_flow_undoes_the_mirror():
  prepared = tss.prepare_example(small_example(flip=True))
  # Prediction in the mirrored source: x' 2 and 0 -> original 1 and 3, so
  # the flow is the original ground truth (1, 0), (2, 0).
  flow = tss.kit_flow(prepared, [[[2.0, 0.0], [0.0, 0.0]]])
  np.testing.assert_array_equal(flow, [[[1.0, 0.0], [2.0, 0.0]]])
  plain = small_example(flip=False)
  np.testing.assert_array_equal(
      tss.kit_flow(plain, [[[1.0, 0.0], [3.0, 0.0]]]), plain['flow'])


# ------------------------------------------------- summarize / markdown --


def test_summarize_and_markdown_hand_computed():
  records = [
      {'group': 'FG3DCar', 'flow_accuracy': 1.0, 'flip': False,
       'alpha': 0.05},
      {'group': 'FG3DCar', 'flow_accuracy': 0.5, 'flip': False,
       'alpha': 0.05},
      {'group': 'JODS', 'flow_accuracy': 0.2, 'flip': False, 'alpha': 0.05},
      {'group': 'PASCAL', 'flow_accuracy': 0.4, 'flip': True, 'alpha': 0.05},
      {'group': 'PASCAL', 'flow_accuracy': float('nan'), 'flip': False,
       'alpha': 0.05},
  ]
  summary = tss.summarize(records)
  groups = summary['groups']
  # FG3DCar (1 + 0.5) / 2 = 0.75; JODS 0.2; PASCAL 0.4 (NaN skipped).
  assert groups['FG3DCar'] == {'flow_accuracy': 0.75,
                               'flow_accuracy_no_flip': 0.75,
                               'num_records': 2}
  assert groups['JODS']['flow_accuracy'] == pytest.approx(0.2)
  assert groups['PASCAL']['flow_accuracy'] == pytest.approx(0.4)
  assert np.isnan(groups['PASCAL']['flow_accuracy_no_flip'])
  # Avg. = mean of group means (0.75 + 0.2 + 0.4) / 3 = 0.45, not the
  # record mean (1 + 0.5 + 0.2 + 0.4) / 4 = 0.525.
  assert summary['flow_accuracy'] == pytest.approx(0.45)
  # w/o flip: (0.75 + 0.2) / 2 = 0.475 (PASCAL has none left).
  assert summary['flow_accuracy_no_flip'] == pytest.approx(0.475)
  assert summary['num_records'] == 4 and summary['num_skipped'] == 1
  assert summary['alpha'] == 0.05
  table = tss.markdown(summary)
  lines = table.splitlines()
  assert lines[0] == ('| TSS flow accuracy (PCK@0.05) | FG3DCar | JODS | '
                      'PASCAL | Avg. |')
  assert lines[2] == '| all rows | 0.750 | 0.200 | 0.400 | 0.450 |'
  assert lines[3] == '| w/o flip | 0.750 | 0.200 | n/a | 0.475 |'
  assert lines[4] == '| records | 2 | 1 | 1 | 4 |'
  assert tss.PRIMARY_METRIC == 'flow_accuracy'
  with pytest.raises(SemcorrError, match='not one of'):
    tss.summarize([{'group': 'VOC', 'flow_accuracy': 1.0}])


# ------------------------------------------- end to end on the fixture --


@pytest.fixture(scope='module')
def fixture_examples(tmp_path_factory):
  from semcorr_jax.data import benchmarks  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('tss_eval')
  manual_dir = tss_fixture.write_tss(root / 'manual')
  return list(benchmarks.examples('tss', 'test', data_dir=str(root / 'tfds'),
                                  manual_dir=str(manual_dir)))


def identity_records(examples, alpha):
  protocol = ml_collections.ConfigDict({'tss_alpha': alpha})
  records = []
  for example in examples:
    example = tss.prepare_example(example)
    h, w = example['target_image'].shape[:2]
    records.append(tss.score_pair(
        example, FakePrediction(tss.pixel_grid(h, w)), protocol))
  return records


def test_identity_model_on_the_fixture(fixture_examples):
  records = identity_records(fixture_examples, 0.05)
  got = {r['pair_id']: r['flow_accuracy'] for r in records}
  # FG3DCar: error |(3, -2)| = 3.61 > 0.05 * 32 = 1.6 everywhere.
  assert got['FG3DCar/001_005_2to1'] == 0.0
  assert got['FG3DCar/001_005_1to2'] == 0.0
  # JODS 2to1: target image2 (24 x 36), truth q / 1.5, error |q| / 3,
  # L = max(16, 24) = 24, threshold 1.2 -> |q|^2 <= 12.96 on the 8 x 5 mask
  # (x 0..7, y 0..4): y0: x 0..3 (4), y1: 0..3 (4), y2: 0..2 (3), y3: 0..1
  # (2), y4: none -> 13 / 40.
  assert got['JODS/car_01_02_2to1'] == pytest.approx(13 / 40)
  # JODS 1to2: target image1, truth 1.5 p, error |p| / 2, L = 36, threshold
  # 1.8 -> |p|^2 <= 12.96 on the 6 x 4 mask: the same 13 pixels -> 13 / 24.
  assert got['JODS/car_01_02_1to2'] == pytest.approx(13 / 24)
  # PASCAL flip rows: after prepare_example the mirrored pair is aligned
  # by the identity exactly.
  assert got['PASCAL/bike_01_03_2to1'] == 1.0
  assert got['PASCAL/bike_01_03_1to2'] == 1.0
  assert [r['num_pixels'] for r in records] == [144, 144, 40, 24, 120, 120]
  summary = tss.summarize(records)
  # Avg. = (0 + (13/40 + 13/24) / 2 + 1) / 3 = (0 + 13/30 + 1) / 3 = 43/90.
  assert summary['flow_accuracy'] == pytest.approx(43 / 90)
  # At alpha 0.15 FG3DCar's threshold is 4.8 > 3.61: all right.
  wide = identity_records(fixture_examples[:2], 0.15)
  assert [r['flow_accuracy'] for r in wide] == [1.0, 1.0]


def test_unmirrored_identity_would_fail_the_flip_pair(fixture_examples):
  example = fixture_examples[4]  # PASCAL 2to1, not prepared.
  assert example['flip']
  gt = tss.gt_mapping_ts(example)
  identity = tss.pixel_grid(*gt.shape[:2])
  # Truth x_s = 27 - x_t on the mask x 15..24: error |27 - 2x| >= 3 > 1.4.
  assert tss.flow_accuracy(identity, gt, example['flow_valid'], 0.05,
                           example['source_image'].shape[:2]) == 0.0


def test_oracle_model_scores_one(fixture_examples):
  for example in fixture_examples:
    example = tss.prepare_example(example)
    truth = np.nan_to_num(tss.gt_mapping_ts(example))
    record = tss.score_pair(example, FakePrediction(truth), None)
    assert record['flow_accuracy'] == 1.0
