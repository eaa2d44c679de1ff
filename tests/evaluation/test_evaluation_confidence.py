"""Confidence metrics and the scores of several flows.

The two-flow predictions imitate CAMNet: a primary (refined) flow 'final'
and a flow 'base', both declaring a confidence (`FLOWS`).

Their display and `Matcher` lifting: tests/evaluation/test_visualize.py and
tests/cli/test_api_cli.py.

Every expected number is derived by hand in the comments: ROC AUC as the
Mann-Whitney pair count (P(pos > neg) + P(pos = neg) / 2), PCK as
`d <= alpha L` (ties correct).
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax import config_files
from semcorr_jax import geometry
from semcorr_jax import outputs
from semcorr_jax.evaluation import confidence as conf_lib
from semcorr_jax.evaluation import benchmark_reports
from semcorr_jax.evaluation import fake
from semcorr_jax.evaluation import keypoints as kp
from semcorr_jax.evaluation import per_flow
from semcorr_jax.evaluation import protocol as protocol_lib
from semcorr_jax.evaluation import reports
from semcorr_jax.evaluation import runner
from semcorr_jax.evaluation import synthetic
from semcorr_jax.evaluation import synthetic_scores

from helpers import pf_fixture
from helpers import paths

REPO = str(paths.REPO)
NAN = float('nan')
FLOWS = (outputs.Flow('final', ('confidence',)),
         outputs.Flow('base', ('confidence',)))


# --- roc_auc ------------------------------------------------------------------
def _brute_force_auc(scores, labels):
  """O(n^2): mean over (positive, negative) pairs of [s+ > s-] + [=] / 2."""
  scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
  pos, neg = scores[labels][:, None], scores[~labels][None, :]
  return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def test_roc_auc_hand_values_ties_and_one_class():
  # sklearn's docstring example: pairs (0.35 > 0.1), (0.35 < 0.4),
  # (0.8 > 0.1), (0.8 > 0.4): 3 of 4.
  assert conf_lib.roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
  # Ties: positives {2, 3}, negatives {1, 2}: 2>1 (1), 2=2 (1/2), 3>1, 3>2
  # -> 3.5 / 4.
  assert conf_lib.roc_auc([1, 2, 2, 3], [0, 1, 0, 1]) == 0.875
  assert conf_lib.roc_auc([0.5] * 4, [1, 0, 1, 0]) == 0.5  # all tied
  assert conf_lib.roc_auc([3, 2, 1], [False, True, True]) == 0.0
  assert conf_lib.roc_auc(np.array([1.0, 2.0]), np.array([0, 1])) == 1.0
  # One class (or nothing): undefined.
  assert math.isnan(conf_lib.roc_auc([0.1, 0.9], [1, 1]))
  assert math.isnan(conf_lib.roc_auc([0.1, 0.9], [0, 0]))
  assert math.isnan(conf_lib.roc_auc([], []))
  # A NaN score is left out: {0.9+} vs {0.2-} only.
  assert conf_lib.roc_auc([0.9, NAN, 0.2], [1, 0, 0]) == 1.0
  with pytest.raises(ValueError, match='differ'):
    conf_lib.roc_auc([0.1, 0.2], [1])


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_roc_auc_equals_brute_force_pair_count(seed):
  rng = np.random.default_rng(seed)
  n = 300
  scores = np.round(rng.random(n), 1)  # 11 values: many ties
  labels = rng.random(n) < 0.3 + 0.4 * scores
  assert conf_lib.roc_auc(scores, labels) == pytest.approx(
      _brute_force_auc(scores, labels), abs=1e-12)
  continuous = rng.normal(size=n)
  assert conf_lib.roc_auc(continuous, labels) == pytest.approx(
      _brute_force_auc(continuous, labels), abs=1e-12)


def test_roc_auc_is_rank_based_on_large_inputs():
  # 10^6 scores 0..n-1 (2.5e11 pairs: beyond an O(n^2) count). Positives =
  # the upper half: AUC 1. Then swap n/2 + 1 (now negative) with n/2 - 1
  # (now positive): the only misordered pairs are that negative above the
  # positives n/2 - 1 and n/2, so AUC = 1 - 2 / (n/2)^2.
  n = 1_000_000
  scores = np.arange(n, dtype=np.float64)
  labels = scores >= n // 2
  assert conf_lib.roc_auc(scores, labels) == 1.0
  labels[n // 2 + 1], labels[n // 2 - 1] = False, True
  assert conf_lib.roc_auc(scores, labels) == pytest.approx(
      1.0 - 2.0 / (n // 2) ** 2, abs=1e-15)


# --- read_map and confidence_metrics ------------------------------------------
def test_read_map_bilinear_like_transfer_keypoints():
  field = np.array([[0., 1.], [2., 5.]])
  points = np.array([[0.5, 0.5], [1.0, 0.25], [-3.0, 5.0]])
  # Centre: mean 2; (1, 0.25): 0.75 * 1 + 0.25 * 5 = 2; clamped to (0, 1): 2.
  np.testing.assert_allclose(conf_lib.read_map(field, points), [2, 2, 2])
  mapping = np.stack([field, -field], -1)
  np.testing.assert_allclose(
      conf_lib.read_map(field, points),
      kp.transfer_keypoints(mapping, points)[:, 0])
  with pytest.raises(ValueError, match=r'\(H, W\)'):
    conf_lib.read_map(np.zeros((2, 2, 1)), points)


def test_confidence_metrics_high_low_split_by_hand():
  # 8 keypoints, L = 8; alpha 0.125 -> threshold 1, alpha 0.25 -> 2.
  conf = [0.9, 0.8, 0.3, 0.1, 0.7, 0.2, 0.6, 0.4]
  dist = [0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 1.5, 4.0]
  m = conf_lib.confidence_metrics(conf, dist, 8.0, (0.125, 0.25))
  # alpha 0.125: correct 1 1 0 0 1 1 0 0 (d = 1 is a tie: correct).
  # Positives .9 .8 .7 .2, negatives .3 .1 .6 .4: .9, .8, .7 beat all four,
  # .2 beats only .1 -> 13 / 16.
  assert m['auc@0.125'] == 0.8125
  # High (>= 0.5): .9 .8 .7 .6 -> 3 of 4 correct; low: .3 .1 .2 .4 -> 1.
  assert (m['pck_high@0.125'], m['pck_low@0.125']) == (0.75, 0.25)
  # alpha 0.25: correct 1 1 1 0 1 1 1 0; negatives .1 .4: .9 .8 .7 .6 beat
  # both (8), .3 and .2 beat .1 only (2) -> 10 / 12.
  assert m['auc@0.25'] == pytest.approx(10 / 12)
  assert (m['pck_high@0.25'], m['pck_low@0.25']) == (1.0, 0.5)
  assert (m['num_keypoints'], m['num_high'], m['num_low']) == (8, 4, 4)
  assert (m['frac_high'], m['frac_low'], m['mean']) == (0.5, 0.5, 0.5)

  # Per-keypoint L; a NaN L (a pair without a box) drops its keypoint; the
  # split is a parameter: at 0.65 only .9 .8 .7 are high.
  lengths = [8, 8, 8, 8, 8, 8, 8, NAN]
  m = conf_lib.confidence_metrics(conf, dist, lengths, (0.125,), split=0.65)
  assert (m['num_keypoints'], m['num_high'], m['num_low']) == (7, 3, 4)
  # Low .3 .1 .2 .6 -> correct 0 0 1 0.
  assert (m['pck_high@0.125'], m['pck_low@0.125']) == (1.0, 0.25)
  # Everything correct: AUC undefined, an empty group's PCK too.
  m = conf_lib.confidence_metrics([0.9, 0.8], [0.0, 0.0], 1.0, (0.1,))
  assert math.isnan(m['auc@0.1']) and math.isnan(m['pck_low@0.1'])
  assert m['pck_high@0.1'] == 1.0 and m['frac_low'] == 0.0


# --- synthetic evaluation -----------------------------------------------------
def _grid(h, w):
  gx, gy = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float),
                       indexing='xy')
  return np.stack([gx, gy], -1)


KPS = ((2, 2), (6, 2), (2, 6), (6, 6))  # stride-4 grid points of an 8 x 8


def _at_keypoints(values, fill=0.5):
  """(1, 8, 8) map with `values` at KPS (keypoints sit on pixel centres)."""
  out = np.full((1, 8, 8), fill)
  for (x, y), v in zip(KPS, values):
    out[0, y, x] = v
  return out


def _hand_batch_and_prediction():
  """One 8 x 8 pair, identity ground truth, everything foreground.

  Refined x errors at KPS: st 0 1 2 3, ts 0 0 1.5 4; confidences st .9 .8 .3
  .1, ts .7 .2 .6 .4 (the `test_confidence_metrics_high_low_split_by_hand`
  keypoints). Base: st + (1, 0) everywhere, ts + (3, 0) where x >= 4;
  base confidence st .5, ts .75 where x < 4 else .25.
  """
  grid = _grid(8, 8)[None]
  ones = np.ones((1, 8, 8))
  batch = {'source_image': np.zeros((1, 8, 8, 3)),
           'target_image': np.zeros((1, 8, 8, 3)),
           'mapping_st': grid, 'mapping_ts': grid, 'source_mask': ones,
           'target_mask': ones, 'valid_st': ones, 'valid_ts': ones}
  shift = lambda dx: np.stack([dx, np.zeros_like(dx)], -1)
  base_ts = np.where(grid[..., 0] >= 4, 3.0, 0.0)
  pred = {
      'mapping_st': grid + shift(_at_keypoints([0, 1, 2, 3], 0.0)),
      'mapping_ts': grid + shift(_at_keypoints([0, 0, 1.5, 4], 0.0)),
      'confidence_st': _at_keypoints([0.9, 0.8, 0.3, 0.1]),
      'confidence_ts': _at_keypoints([0.7, 0.2, 0.6, 0.4]),
      'base_mapping_st': grid + shift(np.ones((1, 8, 8))),
      'base_mapping_ts': grid + shift(base_ts),
      'base_confidence_st': np.full((1, 8, 8), 0.5),
      'base_confidence_ts': np.where(grid[..., 0] < 4, 0.75, 0.25),
      'feature_mapping_st': grid[:, ::4, ::4],  # ignored
  }
  return batch, pred


SFNET_KEYS = {'num_pairs', 'num_keypoints', 'num_keypoints_st',
              'num_keypoints_ts', 'epe', 'epe_st', 'epe_ts'} | {
                  f'{m}@{a}' for a in ('0.125', '0.25') for m in (
                      'pck', 'pck_bbox', 'pck_st', 'pck_ts', 'pck_bbox_st',
                      'pck_bbox_ts')}


def test_synthetic_base_and_confidence_scores_by_hand():
  batch, pred = _hand_batch_and_prediction()
  alphas = (0.125, 0.25)  # L = max(8, 8): thresholds 1 and 2 px
  pairs = synthetic_scores.score_batch(batch, pred, 4, alphas, FLOWS)
  res = synthetic_scores.summarize(pairs, alphas, image_hw=(8, 8),
                                   flows=FLOWS)
  # Refined: st errors 0 1 2 3 -> 2/4 <= 1, 3/4 <= 2; ts 0 0 1.5 4 -> 2/4,
  # 3/4. EPE st 1.5, ts 1.375.
  assert (res['pck@0.125'], res['pck@0.25']) == (0.5, 0.75)
  assert res['pck_bbox@0.25'] == 0.75  # the full mask's box is 8 px too
  assert (res['epe_st'], res['epe_ts'], res['epe']) == (1.5, 1.375, 1.4375)
  # Base: st errors all 1 (ties: correct), ts 0 3 0 3 -> st 1, ts 1/2.
  assert (res['base_pck_st@0.125'], res['base_pck_ts@0.125']) == (1.0, 0.5)
  assert (res['base_pck@0.125'], res['base_pck@0.25']) == (0.75, 0.75)
  assert (res['base_epe_st'], res['base_epe_ts'], res['base_epe']) == (
      1.0, 1.5, 1.25)
  # Refined confidence: the hand example of confidence_metrics.
  assert res['confidence_auc@0.125'] == 0.8125
  assert res['confidence_auc@0.25'] == pytest.approx(10 / 12)
  assert (res['confidence_pck_high@0.125'],
          res['confidence_pck_low@0.125']) == (0.75, 0.25)
  assert res['confidence_num_keypoints'] == 8
  assert res['confidence_split'] == 0.5
  # Base confidence .5 .5 .5 .5 (st, correct) .75 .25 .75 .25 (ts, correct
  # where .75): every correct one above every wrong one; high = 6 of 8, all
  # correct; low = the two wrong ones.
  assert res['base_confidence_auc@0.125'] == 1.0
  assert res['base_confidence_pck_high@0.25'] == 1.0
  assert res['base_confidence_pck_low@0.25'] == 0.0
  assert (res['base_confidence_frac_high'],
          res['base_confidence_num_high']) == (0.75, 6)
  assert res['base_confidence_mean'] == 0.5
  # Counts are not repeated for the base mapping; the trainer logs scalars.
  assert 'base_num_keypoints' not in res and 'base_confidence_split' not in res
  assert all(isinstance(v, (int, float)) for v in res.values())
  assert SFNET_KEYS < set(res)
  assert set(res) == synthetic_scores.metric_names(alphas, FLOWS)

  # One flow without a confidence: exactly the keys and values of the
  # primary flow, whatever else the prediction holds.
  res_plain = synthetic_scores.summarize(
      synthetic_scores.score_batch(batch, pred, 4, alphas), alphas,
      image_hw=(8, 8))
  assert set(res_plain) == SFNET_KEYS == synthetic_scores.metric_names(alphas)
  assert res_plain == {k: res[k] for k in SFNET_KEYS}
  # A confidence is scored only where the flow declares it.
  only_base = (outputs.Flow('final'), outputs.Flow('base', ('confidence',)))
  res_base = synthetic_scores.summarize(
      synthetic_scores.score_batch(batch, pred, 4, alphas, only_base),
      alphas, image_hw=(8, 8), flows=only_base)
  assert 'confidence_auc@0.125' not in res_base
  assert res_base['base_confidence_auc@0.125'] == 1.0
  assert res_base['confidence_split'] == 0.5
  with pytest.raises(Exception, match="guide_mapping_st"):
    synthetic_scores.score_batch(batch, pred, 4, alphas,
                                 (outputs.Flow('final'),
                                  outputs.Flow('guide')))


class _ConfFake:
  """A fake method: refined = identity + shift, base = identity, constant
  confidences (1 refined, 0 base)."""

  def predict(self, variables, source, target):
    b, h, w, _ = source.shape
    grid = jnp.broadcast_to(geometry.pixel_grid(h, w), (b, h, w, 2))
    ones = jnp.ones((b, h, w))
    return {'mapping_st': grid + variables['shift'],
            'mapping_ts': grid - variables['shift'],
            'base_mapping_st': grid, 'base_mapping_ts': grid,
            'confidence_st': ones, 'confidence_ts': ones,
            'base_confidence_st': 0 * ones, 'base_confidence_ts': 0 * ones}


def test_evaluate_synthetic_end_to_end_with_extras():
  config = config_files.load(os.path.join(REPO, 'configs', 'sfnet.py:test'))
  predict_fn = jax.jit(_ConfFake().predict)

  def evaluate(shift):
    return synthetic.evaluate_synthetic(
        predict_fn, {'shift': jnp.asarray(shift)}, config.data, flows=FLOWS,
        num_pairs=3, batch_size=2, alphas=(0.05, 2.0))

  res = evaluate([3.0, 0.0])
  # The base mapping is the identity: exactly an untrained shift-0 model.
  plain = evaluate([0.0, 0.0])
  assert res['base_pck@0.05'] == plain['pck@0.05']
  assert res['base_epe'] == plain['epe'] and res['epe'] > 0
  assert res['pck@0.05'] != res['base_pck@0.05']
  # Confidence 1: every keypoint high; pooled over pairs and directions.
  n = res['num_keypoints']
  assert res['confidence_num_keypoints'] == res['confidence_num_high'] == n
  assert res['base_confidence_num_low'] == n  # base confidence 0: all low
  assert math.isnan(res['confidence_auc@2'])  # alpha 2: all correct
  assert res['confidence_pck_high@2'] == 1.0
  assert {'base_*', 'confidence_*'} <= set(res['conventions'])


def test_comparison_tables_show_every_flow_and_confidence(tmp_path):
  batch, pred = _hand_batch_and_prediction()
  alphas = (0.125, 0.25)
  res = synthetic_scores.summarize(
      synthetic_scores.score_batch(batch, pred, 4, alphas, FLOWS), alphas,
      image_hw=(8, 8), flows=FLOWS)
  res['alphas'] = list(alphas)
  res['flows'] = per_flow.describe(FLOWS)
  untrained = dict(res, **{'base_pck@0.125': 0.25})
  table = reports.format_comparison(res, untrained)
  assert ('| metric | trained: final | trained: base | untrained: final '
          '| untrained: base |') in table
  assert '| PCK@0.125 (alpha_img) | 0.500 | 0.750 | 0.500 | 0.250 |' in table
  assert '| end-point error (px) | 1.44 | 1.25 | 1.44 | 1.25 |' in table
  # 13/16 = 0.8125 -> '0.812'; high 4 of 8, mean .5.
  assert ('| trained, final | 0.125 | 0.812 | 0.750 | 0.250 | 0.500 (4 of '
          '8) | 0.500 |') in table
  assert ('| untrained, base | 0.25 | 1.000 | 1.000 | 0.000 | 0.750 (6 of '
          '8) | 0.500 |') in table
  _, md_path = reports.write_eval(str(tmp_path), 'synthetic',
                                  {'step': 1, 'trained': res,
                                   'untrained': untrained})
  markdown = open(md_path).read()
  assert 'Every flow' in markdown and 'ROC AUC' in markdown
  saved = json.load(open(tmp_path / 'eval' / 'synthetic.json'))
  assert saved['trained']['base_confidence_auc@0.25'] == 1.0

  # Results of one flow without a confidence: the first table, alone.
  plain = {k: v for k, v in res.items()
           if not k.startswith(('base_', 'confidence_', 'flows'))}
  table = reports.format_comparison(plain, None)
  assert 'Every flow' not in table and 'ROC AUC' not in table
  assert table.splitlines()[-1] == '| pairs / keypoints | 1 / 8 |'


# --- keypoint benchmarks ------------------------------------------------------
@pytest.fixture(scope='module')
def pf_pascal_dir(tmp_path_factory):
  return str(pf_fixture.write_pf_pascal(tmp_path_factory.mktemp('data')))


def test_pair_prediction_reads_the_map_of_the_direction():
  # Source 5 x 9 (H x W) squashed to a 3 x 5 model frame: x_m = x / 2.
  ramp = np.tile(np.arange(5.0), (3, 1)) / 4  # (3, 5): x_m / 4
  grid = _grid(3, 5)
  pred = protocol_lib.PairPrediction(
      {'mapping_st': grid, 'mapping_ts': grid, 'base_mapping_st': grid + 1,
       'confidence_st': ramp, 'confidence_ts': 1 - ramp},
      (5, 9), (5, 9), (3, 5), 0)
  points = np.array([[0., 0.], [3., 2.], [8., 4.]])  # x_m 0, 1.5, 4
  np.testing.assert_allclose(pred.read_map(points, 'st'), [0, 0.375, 1])
  np.testing.assert_allclose(pred.read_map(points, 'ts'), [1, 0.625, 0])
  # The base mapping is one model pixel further in x and y: 2 original
  # pixels (x = 2 x_m, y = 2 y_m), not clamped.
  np.testing.assert_allclose(pred.transfer(points, 'st', 'base_'), points + 2)
  np.testing.assert_allclose(pred.transfer(points, 'st'), points)
  with pytest.raises(Exception, match='base_mapping_ts'):
    pred.transfer(points, 'ts', 'base_')
  with pytest.raises(Exception, match='base_confidence_st'):
    pred.read_map(points, 'st', 'base_confidence')


def test_runner_reports_base_flow_and_confidence(pf_pascal_dir, tmp_path):
  # Refined = identity: exact on the fixture (PCK 1). Base = scale 0.8: the
  # per-keypoint errors of test_evaluation_runner's first test (t -> s,
  # 224 square, thresholds 11.2, 22.4, 33.6): pair 0 19.08 19.08 13.42,
  # pair 1 27.3 0 30.47 27.07, pairs 2/3 ~19.2 ~19.2 27(.3) 30.2(4). The
  # target keypoints' normalised n: pair 0 (-.5,-.5) (.5,-.5) (0,.5);
  # pair 1 (-1,0) (0,0) (1,.5) (0,-1); pairs 2, 3 (-.5,.5) (.5,.5) (0,1)
  # (-.5,-1), all on pixel centres of the 33 x 33 model grid (exact read).
  # tent = (1-|x|)(1-|y|): .25 .25 .5 | 0 1 0 0 | .25 .25 0 0 (x2).
  # Base confidence .2 + .8 tent: .4 .4 .6 | .2 1 .2 .2 | .4 .4 .2 .2 (x2);
  # refined confidence .8 - .8 tent: .6 .6 .4 | .8 0 .8 .8 | .6 .6 .8 .8.
  tent = fake.tent_confidence
  predict = fake.flows_predict_fn(
      FLOWS, {'final': [[1, 0, 0], [0, 1, 0]],
              'base': [[0.8, 0, 0], [0, 0.8, 0]]},
      {'final': lambda x, y: 0.8 - 0.8 * tent(x, y),
       'base': lambda x, y: 0.2 + 0.8 * tent(x, y)})
  results = runner.evaluate_benchmark(
      predict, 'pf_pascal', model_size=(33, 33), data_dir=pf_pascal_dir,
      out_dir=str(tmp_path), progress=False, flows=FLOWS)
  s = results['summary']
  assert s['pck@0.05'] == s['pck@0.1'] == s['pck@0.15'] == 1.0
  assert s['base_pck@0.05'] == pytest.approx(1 / 16)
  assert s['base_pck@0.1'] == pytest.approx(9 / 16)
  assert s['base_pck@0.15'] == 1.0
  assert s['per_category']['cat']['base_pck@0.1'] == pytest.approx(0.5)
  assert s['per_factor'] == {}  # the flows' record fields are not factors
  assert [f['name'] for f in s['flows']] == ['final', 'base']
  assert 'base_*' in s['conventions']
  # Refined: all correct -> AUC undefined; 13 of 15 high (.6 .8).
  assert math.isnan(s['confidence_auc@0.1'])
  assert (s['confidence_num_high'], s['confidence_num_low']) == (13, 2)
  assert s['confidence_pck_high@0.1'] == s['confidence_pck_low@0.1'] == 1.0
  # Base at 0.1: correct = pair 0 all, pair 1 (0,0), pairs 2/3 the first
  # two; their confidences (.4 .4 .6 1 .4 .4 .4 .4) beat every wrong one
  # (.2) -> AUC 1; high = {.6 (pair 0), 1 (pair 1)} both correct; low: 6
  # of 13. At 0.05 only (0,0) (error 0) is correct: AUC 1, high 1 of 2.
  # At 0.15 all correct: AUC undefined.
  assert s['base_confidence_auc@0.1'] == 1.0
  assert s['base_confidence_auc@0.05'] == 1.0
  assert math.isnan(s['base_confidence_auc@0.15'])
  assert s['base_confidence_num_high'] == 2
  assert s['base_confidence_pck_high@0.1'] == 1.0
  assert s['base_confidence_pck_low@0.1'] == pytest.approx(6 / 13)
  assert s['base_confidence_pck_high@0.05'] == 0.5
  assert s['base_confidence_pck_low@0.05'] == 0.0
  assert s['base_confidence_mean'] == pytest.approx(5.4 / 15)

  paths = benchmark_reports.output_paths(str(tmp_path), 'pf_pascal', 'test')
  saved = json.load(open(paths['json']))['summary']
  assert saved['confidence_auc@0.1'] is None  # NaN -> null
  assert saved['base_confidence_pck_low@0.1'] == pytest.approx(6 / 13)
  markdown = open(paths['md']).read()
  assert '| base | 4 | 15 | 0.062 | 0.562 | 1.000 |' in markdown
  assert ('| base | 0.1 | 1.000 | 1.000 | 0.462 | 0.133 (2 of 15) | 0.360 |'
          in markdown)
  assert '| final | 0.1 | n/a | 1.000 | 1.000 |' in markdown
  with open(paths['csv']) as f:
    header, first = f.readline().strip().split(','), f.readline()
  # The primary flow's fields, then the other flow's, prefixed.
  assert header[8:] == ['keypoint_confidence', 'keypoint_error_px',
                        'base_pck@0.05', 'base_pck@0.1', 'base_pck@0.15',
                        'base_mean_error_px', 'base_keypoint_confidence',
                        'base_keypoint_error_px']
  assert ',0.6;0.6;0.4,' in first.replace('0.6000000000000001', '0.6')


def test_runner_scores_only_declared_maps(pf_pascal_dir):
  # The prediction holds two flows with confidences; one flow without a
  # confidence is declared (the default): only its keys are reported.
  predict = fake.flows_predict_fn(
      FLOWS, {'final': [[1, 0, 0], [0, 1, 0]],
              'base': [[0.8, 0, 0], [0, 0.8, 0]]})
  s = runner.evaluate_benchmark(
      predict, 'pf_pascal', model_size=(32, 32),
      data_dir=pf_pascal_dir, progress=False)['summary']
  assert not [k for k in s if k.startswith(('base_', 'confidence'))]
  assert s['pck@0.05'] == 1.0
  assert set(s['per_category']['cat']) == {
      'num_pairs', 'num_keypoints', 'pck@0.05', 'pck@0.1', 'pck@0.15',
      'mean_error_px'}
  assert 'base_*' not in s['conventions']
