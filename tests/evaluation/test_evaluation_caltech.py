"""Tests of the Caltech-101 metrics (LT-ACC, IoU, LOC-ERR), numbers by hand."""

import pathlib

import ml_collections
import numpy as np
import pytest
from skimage import draw

from semcorr_jax import errors
from semcorr_jax.data import benchmarks
from semcorr_jax.evaluation import caltech

from helpers import caltech_fixture

NAN = float('nan')


class FakePrediction:
  """Duck-typed prediction: a dense `mapping_ts` only."""

  def __init__(self, mapping_ts):
    self.mapping_ts = np.asarray(mapping_ts, np.float64)

  def dense(self, direction):
    if direction != 'ts':
      raise AssertionError(f'Caltech scoring asked for {direction!r}')
    return self.mapping_ts


def grid(height, width):
  """(H, W, 2) pixel centres (x, y): the identity mapping."""
  xs, ys = np.meshgrid(np.arange(width, dtype=np.float64),
                       np.arange(height, dtype=np.float64))
  return np.stack([xs, ys], axis=-1)


def protocol(**fields):
  return ml_collections.ConfigDict(fields)


# ---------------------------------------------------------------- polygons


def test_polygon_square_with_integer_corners_includes_its_outline():
  mask = caltech.polygon_to_mask([(1, 1), (3, 1), (3, 3), (1, 3)], 6, 6)
  expected = np.zeros((6, 6), bool)
  expected[1:4, 1:4] = True  # Centres 1, 2, 3 on both axes: 9 pixels.
  np.testing.assert_array_equal(mask, expected)


def test_polygon_half_pixel_corners_and_clipping():
  # Corners at .5: centres 1 and 2 inside, 3 outside -> 2 x 2 pixels.
  mask = caltech.polygon_to_mask(
      [(0.5, 0.5), (2.5, 0.5), (2.5, 2.5), (0.5, 2.5)], 5, 5)
  assert mask.sum() == 4 and mask[1:3, 1:3].all()
  # Partly outside the 4 x 4 image: x, y in -2..1 -> pixels 0..1 only.
  mask = caltech.polygon_to_mask([(-2, -2), (1, -2), (1, 1), (-2, 1)], 4, 4)
  assert mask.sum() == 4 and mask[:2, :2].all()
  assert not caltech.polygon_to_mask([(9, 9), (12, 9), (12, 12)], 4, 4).any()
  assert not caltech.polygon_to_mask(np.zeros((0, 2)), 4, 4).any()


def test_polygon_triangle():
  # x, y >= 0 and x + y <= 4: 5 + 4 + 3 + 2 + 1 = 15 centres.
  mask = caltech.polygon_to_mask([(0, 0), (4, 0), (0, 4)], 6, 6)
  assert mask.sum() == 15
  assert mask[2, 2] and mask[0, 4] and mask[4, 0]  # On the hypotenuse.
  assert not mask[2, 3] and not mask[3, 2]
  # (x, y) order: a wide triangle is wide in the mask's columns.
  wide = caltech.polygon_to_mask([(0, 0), (4, 0), (0, 1)], 3, 6)
  assert wide[0, :5].all() and wide.sum() == 6  # Row 0: 5, row 1: (0, 1).


def test_polygon_matches_scikit_image_pixel_for_pixel():
  rng = np.random.default_rng(0)
  for trial in range(150):
    n = rng.integers(3, 9)
    if trial % 3 == 0:  # Integer corners: many centres on edges.
      poly = rng.integers(-3, 20, (n, 2)).astype(float)
    elif trial % 3 == 1:
      poly = rng.integers(-6, 40, (n, 2)) / 2
    else:
      poly = rng.uniform(-3, 20, (n, 2))
    rows, cols = draw.polygon(poly[:, 1], poly[:, 0], (15, 17))
    expected = np.zeros((15, 17), bool)
    expected[rows, cols] = True
    np.testing.assert_array_equal(
        caltech.polygon_to_mask(poly, 15, 17), expected, err_msg=str(poly))


# ---------------------------------------------------------------- metrics


def test_label_transfer_accuracy_and_iou_by_hand():
  pred = np.array([[1, 1, 0], [0, 0, 0]], bool)
  gt = np.array([[1, 0, 0], [0, 0, 1]], bool)
  # Agree at (0,0), (0,2), (1,0), (1,1): 4 of 6.
  assert caltech.label_transfer_accuracy(pred, gt) == pytest.approx(4 / 6)
  # Intersection {(0,0)} = 1, union {(0,0), (0,1), (1,2)} = 3.
  assert caltech.intersection_over_union(pred, gt) == pytest.approx(1 / 3)
  empty = np.zeros((2, 3), bool)
  assert caltech.label_transfer_accuracy(empty, empty) == 1.0
  assert np.isnan(caltech.intersection_over_union(empty, empty))
  assert caltech.intersection_over_union(pred, empty) == 0.0
  with pytest.raises(errors.SemcorrError, match='differ in shape'):
    caltech.intersection_over_union(pred, np.zeros((3, 2), bool))


def test_warp_mask_bilinear_and_nearest():
  source = np.array([[1, 1, 0, 0], [1, 1, 0, 0]], bool)  # (H_s, W_s) = 2x4.
  mapping = np.array([[(-0.4, 0), (-0.6, 0), (1.5, 0), (1.4, 0), (0, 1.6),
                       (NAN, 0)]])  # Target 1 x 6.
  # Bilinear, zeros outside, > 0.5: 0.6*1 + 0.4*0 = 0.6; 0.4; 0.5*1 +
  # 0.5*0 = 0.5 (not > 0.5); 0.6; rows 1 and 2 (outside): 0.4*1 = 0.4; NaN.
  np.testing.assert_array_equal(
      caltech.warp_mask(source, mapping, 'weakalign'),
      [[True, False, False, True, False, False]])
  # Nearest through the rounded flow (target x = 0..5): -0.4 -> 0 (x 0);
  # -1.6 -> -2 (x -1, out); -0.5 -> -1 (away from 0: x 1); -1.6 -> -2
  # (x 1); y flow 1.6 -> 2 (y 2, out); NaN.
  np.testing.assert_array_equal(
      caltech.warp_mask(source, mapping, 'dsp'),
      [[True, False, True, True, False, False]])
  with pytest.raises(errors.SemcorrError, match='caltech_reference'):
    caltech.warp_mask(source, mapping, 'nearest')


def test_box_relative_coordinates():
  mask = np.zeros((3, 5), bool)
  mask[1, 1:3] = True  # left 1, w 2, top 1, h 1.
  rel_x, rel_y = caltech.box_relative_coordinates(mask)
  np.testing.assert_allclose(rel_x[0], [-0.5, 0, 0.5, 1, 1.5])
  np.testing.assert_allclose(rel_y[:, 0], [-1, 0, 1])
  rel_x, _ = caltech.box_relative_coordinates(mask, offset=1)
  np.testing.assert_allclose(rel_x[0], [0, 0.5, 1, 1.5, 2])
  assert caltech.box_relative_coordinates(np.zeros((2, 2))) is None


def loc_err_masks():
  source = np.zeros((6, 6), bool)
  source[1:3, 1:5] = True  # left 1, w 4, top 1, h 2.
  target = np.zeros((4, 5), bool)
  target[:, 0:2] = True  # left 0, w 2, top 0, h 4.
  return source, target


def test_localization_error_constant_mapping():
  source, target = loc_err_masks()
  mapping = np.broadcast_to([2.6, 3.2], (4, 5, 2))
  # weakalign: source pixel floor -> (2, 3): ((2+1-1)/4, (3+1-1)/2) =
  # (0.5, 1.5). Target ((x+1)/2, (y+1)/4): mean over x = 0..4 of
  # |(x+1)/2 - 0.5| = (0 + .5 + 1 + 1.5 + 2)/5 = 1.0; mean over y = 0..3 of
  # |(y+1)/4 - 1.5| = (1.25 + 1 + .75 + .5)/4 = 0.875. Sum 1.875.
  assert caltech.localization_error(
      source, target, mapping, 'weakalign') == pytest.approx(1.875)
  # dsp: the rounded flow lands on (3, 3) from every pixel: ((3-1)/4,
  # (3-1)/2) = (0.5, 1). Target (x/2, y/4): mean |x/2 - .5| = (.5 + 0 + .5
  # + 1 + 1.5)/5 = 0.7; mean |y/4 - 1| = (1 + .75 + .5 + .25)/4 = 0.625.
  assert caltech.localization_error(
      source, target, mapping, 'dsp') == pytest.approx(1.325)


def test_localization_error_in_bound_rules():
  source = np.ones((3, 3), bool)  # Box 3 x 3 at 0.
  target = np.ones((1, 3), bool)  # Box w 3, h 1 at 0.
  mapping = np.array([[(0.0, 1.0), (1.5, 1.0), (2.0, 1.5)]])
  # weakalign keeps 0 < x < 2 only: the middle pixel, source (1, 1):
  # ((1+1)/3, (1+1)/3) vs target ((1+1)/3, (0+1)/1): 0 + 1/3.
  assert caltech.localization_error(
      source, target, mapping, 'weakalign') == pytest.approx(1 / 3)
  # dsp keeps all three; rounded flows land on (0, 1), (2, 1), (2, 2).
  # Errors vs target (x/3, 0): 1/3; 1/3 + 1/3; 0 + 2/3. Mean 5/9.
  assert caltech.localization_error(
      source, target, mapping, 'dsp') == pytest.approx(5 / 9)
  outside = np.full((1, 3, 2), -5.0)
  assert np.isnan(caltech.localization_error(source, target, outside))
  assert np.isnan(caltech.localization_error(
      np.zeros((3, 3)), target, mapping))
  mapping[0, 1] = NAN  # The only weakalign pixel left: none remain.
  assert np.isnan(caltech.localization_error(source, target, mapping))


# ---------------------------------------------------------------- pairs


def example_of(pair, pair_id='0001-x'):
  return {
      'pair_id': pair_id,
      'category': pair.category,
      'source_image': np.zeros(pair.source_size + (3,), np.uint8),
      'target_image': np.zeros(pair.target_size + (3,), np.uint8),
      'source_polygon': np.array(pair.source_polygon, np.float32),
      'target_polygon': np.array(pair.target_polygon, np.float32),
  }


def shifted(pair):
  return FakePrediction(grid(*pair.target_size) - np.array(pair.shift))


@pytest.mark.parametrize('reference', ['weakalign', 'dsp'])
def test_score_pair_identity_and_exact_shift(reference):
  proto = protocol(caltech_reference=reference)
  for pair, (lt_acc, iou, loc_err) in zip(caltech_fixture.PAIRS,
                                          caltech_fixture.IDENTITY_METRICS):
    example = example_of(pair)
    record = caltech.score_pair(
        example, FakePrediction(grid(*pair.target_size)), proto)
    assert record['pair_id'] == '0001-x'
    assert record['category'] == pair.category
    assert record['label_transfer_accuracy'] == pytest.approx(lt_acc)
    assert record['iou'] == pytest.approx(iou)
    assert record['localization_error'] == pytest.approx(loc_err)
    perfect = caltech.score_pair(example, shifted(pair), proto)
    assert perfect['label_transfer_accuracy'] == 1.0
    assert perfect['iou'] == 1.0
    assert perfect['localization_error'] == 0.0


def test_score_pair_half_pixel_shift_differs_between_references():
  pair = caltech_fixture.PAIRS[2]._replace(
      source_size=(20, 24), target_size=(20, 24),
      source_polygon=((4, 3), (11, 3), (11, 10), (4, 10)))  # 8 x 8 box.
  example = example_of(pair)
  prediction = FakePrediction(grid(20, 24) + [0.5, 0])
  # weakalign: 0.5 m(x) + 0.5 m(x+1) > 0.5 only for x = 4..10: 7 x 8 = 56
  # of the 64 target pixels; 8 disagree of 480. floor(x + .5) = x: LOC 0.
  record = caltech.score_pair(example, prediction, None)
  assert record['iou'] == pytest.approx(56 / 64)
  assert record['label_transfer_accuracy'] == pytest.approx(472 / 480)
  assert record['localization_error'] == 0.0
  # dsp: flow 0.5 rounds to 1, the mask moves a whole pixel: x = 3..10;
  # IoU 7*8 / (9*8) = 7/9, 16 disagree; LOC 1/8 everywhere.
  record = caltech.score_pair(
      example, prediction, protocol(caltech_reference='dsp'))
  assert record['iou'] == pytest.approx(7 / 9)
  assert record['label_transfer_accuracy'] == pytest.approx(464 / 480)
  assert record['localization_error'] == pytest.approx(0.125)


def test_polygon_offset_moves_both_masks():
  example = example_of(caltech_fixture.PAIRS[0])
  source, target = caltech.pair_masks(example, None)
  assert source[3, 4] and source[10, 11] and not source[2, 3]
  source, target = caltech.pair_masks(example,
                                      protocol(polygon_offset=-1.0))
  # 1-based reading: x 3..10, y 2..9 (and the target likewise).
  assert source[2, 3] and source[9, 10] and not source[10, 11]
  assert target[4, 6] and not target[12, 14]


def test_score_pair_rejects_a_wrong_mapping_shape():
  example = example_of(caltech_fixture.PAIRS[0])
  with pytest.raises(
      errors.SemcorrError,
      match=r'mapping_ts has shape \(10, 12, 2\).*\(20, 24, 2\)'):
    caltech.score_pair(example, FakePrediction(grid(10, 12)), None)
  with pytest.raises(errors.SemcorrError, match='caltech_reference'):
    caltech.score_pair(example, FakePrediction(grid(20, 24)),
                       protocol(caltech_reference='matlab'))


def test_summarize_and_markdown():
  records = [
      {'pair_id': 'a', 'category': 'A', 'label_transfer_accuracy': 0.8,
       'iou': 0.5, 'localization_error': 0.2},
      {'pair_id': 'b', 'category': 'A', 'label_transfer_accuracy': 0.6,
       'iou': NAN, 'localization_error': 0.4},
      {'pair_id': 'c', 'category': 'B', 'label_transfer_accuracy': 1.0,
       'iou': 1.0, 'localization_error': NAN},
  ]
  summary = caltech.summarize(records)
  # LT-ACC (.8 + .6 + 1)/3 = .8; IoU (.5 + 1)/2 = .75; LOC (.2 + .4)/2 = .3.
  assert summary['label_transfer_accuracy'] == pytest.approx(0.8)
  assert summary['iou'] == pytest.approx(0.75)
  assert summary['localization_error'] == pytest.approx(0.3)
  assert summary[caltech.PRIMARY_METRIC] == summary['iou']
  assert summary['num_pairs'] == 3
  assert summary['num_valid'] == {'label_transfer_accuracy': 3, 'iou': 2,
                                  'localization_error': 2}
  assert summary['per_category']['A']['label_transfer_accuracy'] == (
      pytest.approx(0.7))
  assert np.isnan(summary['per_category']['B']['localization_error'])
  table = caltech.markdown(summary)
  assert '| LT-ACC | 0.800 |' in table
  assert '| IoU | 0.750 |' in table
  assert '| LOC-ERR (lower is better) | 0.300 |' in table
  assert '| pairs | 3 |' in table
  assert 'n/a' in caltech.markdown(caltech.summarize([]))


def test_end_to_end_from_the_builder(tmp_path):
  manual_dir = caltech_fixture.write_caltech(tmp_path / 'manual')
  examples = list(benchmarks.examples(
      'caltech101', 'test', data_dir=str(tmp_path / 'tfds'),
      manual_dir=str(manual_dir)))
  identity, perfect = [], []
  for example, pair in zip(examples, caltech_fixture.PAIRS):
    identity.append(caltech.score_pair(
        example, FakePrediction(grid(*example['target_image'].shape[:2])),
        protocol()))
    perfect.append(caltech.score_pair(example, shifted(pair), protocol()))
  expected = np.array(caltech_fixture.IDENTITY_METRICS)
  summary = caltech.summarize(identity)
  assert summary['label_transfer_accuracy'] == pytest.approx(
      expected[:, 0].mean())
  assert summary['iou'] == pytest.approx(expected[:, 1].mean())
  assert summary['localization_error'] == pytest.approx(
      expected[:, 2].mean())
  summary = caltech.summarize(perfect)
  assert (summary['label_transfer_accuracy'], summary['iou'],
          summary['localization_error']) == (1.0, 1.0, 0.0)
  assert [r['category'] for r in perfect] == ['Faces', 'airplanes',
                                              'Leopards']
  assert pathlib.Path(examples[0]['source_file']).parent.name == 'Faces'
