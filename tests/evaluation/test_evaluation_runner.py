"""The benchmark runner end to end: fake models over the fixture datasets.

Every expected number below is derived by hand from the fixture constants
(tests/helpers/*_fixture.py) and the fake models (`evaluation.fake`), which
act on align-corners normalised coordinates `x_n = 2 x / (W - 1) - 1`. With
pad 0 a fake's transfer is exactly its map between the ORIGINAL images'
normalised coordinates, whatever the model size.
"""

from __future__ import annotations

import csv
import json
import math
import os

import chex
import numpy as np
from PIL import Image
import pytest

from semcorr_jax import outputs
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import benchmark_reports
from semcorr_jax.evaluation import caltech
from semcorr_jax.evaluation import fake
from semcorr_jax.evaluation import reports
from semcorr_jax.evaluation import runner
from semcorr_jax.evaluation import tss
from semcorr_jax.evaluation import worst_pairs

from helpers import caltech_fixture
from helpers import pf_fixture
from helpers import spair_fixture
from helpers import tss_fixture


MODEL = (32, 32)
PANEL = 192  # worst_pairs.WORST_PANEL_INCHES (2.4) x WORST_DPI (80)
KEYPOINT_COLUMNS = ['pair_id', 'category', 'num_keypoints', 'threshold_px',
                    'pck@0.05', 'pck@0.1', 'pck@0.15', 'mean_error_px']


def _dataset(writer):
  @pytest.fixture(scope='module')
  def fixture(tmp_path_factory):
    return str(writer(tmp_path_factory.mktemp('data')))
  return fixture


pf_pascal_dir = _dataset(pf_fixture.write_pf_pascal)
pf_willow_dir = _dataset(pf_fixture.write_pf_willow)
spair_dir = _dataset(spair_fixture.write_spair)
tss_dir = _dataset(tss_fixture.write_tss)
caltech_dir = _dataset(caltech_fixture.write_caltech)


def _run(predict_fn, benchmark, data_dir, out_dir=None, **kwargs):
  kwargs.setdefault('model_size', MODEL)
  return runner.evaluate_benchmark(
      predict_fn, benchmark, data_dir=data_dir,
      out_dir=None if out_dir is None else str(out_dir), progress=False,
      **kwargs)


def _rows(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def _column(rows, name):
  return [float(r[name]) for r in rows]


# --- PF-PASCAL ----------------------------------------------------------------
def test_pf_pascal_scale_writes_exact_scores_and_files(pf_pascal_dir,
                                                       tmp_path):
  # mapping_st: t_n = 0.8 s_n, so mapping_ts: s_n = 1.25 t_n. The fixture's
  # target keypoints have the source's unit coordinates u (n = 2u - 1), so
  # the error in the source is 0.25 n, i.e. 0.25 |n| (W - 1) / 2 px in x,
  # then x 224 / W in the 224 square (default: 'ts', 'square', 'img',
  # L = 224: thresholds 11.2, 22.4, 33.6 for alpha 0.05, 0.1, 0.15).
  #   pair 0: 2007_000001 32x24, kps n (-.5,-.5) (.5,-.5) (0,.5) (row 3
  #     invisible in the target): x 0.125*31/2*7 = 13.5625, y 0.125*23/2*
  #     224/24 = 13.4167 -> 19.08, 19.08, 13.42: pck 0, 1, 1.
  #   pair 1: 2008_000003 40x30, n (-1,0) (0,0) (1,.5) (0,-1): x 0.25*39/2*
  #     5.6 = 27.3, y 0.25*29/2*224/30 = 27.07 -> 27.3, 0, 30.47, 27.07:
  #     pck 1/4, 1/4, 1.
  #   pair 2: 2009_000005 36x28, cat rows 1-4 n (-.5,.5) (.5,.5) (0,1)
  #     (-.5,-1): x 13.61, y 13.5 / 27 -> 19.17, 19.17, 27, 30.24:
  #     pck 0, 2/4, 1.
  #   pair 3: 2009_000006 30x40: x 13.53, y 13.65 / 27.3 -> 19.22, 19.22,
  #     27.3, 30.47: pck 0, 2/4, 1.
  predict = fake.affine_predict_fn([[0.8, 0, 0], [0, 0.8, 0]])
  out = tmp_path / 'eval'
  results = _run(predict, 'pf_pascal', pf_pascal_dir, out, step=7)
  summary = results['summary']
  assert summary['num_pairs'] == 4 and summary['num_keypoints'] == 15
  assert summary['pck@0.05'] == pytest.approx((0 + 1 / 4 + 0 + 0) / 4)
  assert summary['pck@0.1'] == pytest.approx((1 + 1 / 4 + 2 / 4 + 2 / 4) / 4)
  assert summary['pck@0.15'] == pytest.approx(1.0)
  assert summary['per_category']['cat']['pck@0.1'] == pytest.approx(0.5)

  paths = benchmark_reports.output_paths(str(out), 'pf_pascal', 'test')
  assert sorted(os.listdir(out)) == sorted(
      os.path.basename(p) for p in paths.values())  # no temporary files
  saved = json.load(open(paths['json']))
  assert set(saved) == {'benchmark', 'split', 'label', 'step', 'protocol',
                        'summary'}
  assert (saved['benchmark'], saved['split'], saved['step']) == (
      'pf_pascal', 'test', 7)
  assert saved['protocol']['direction'] == 'ts'
  assert saved['protocol']['frame'] == 'square'
  assert saved['protocol']['alphas'] == [0.05, 0.1, 0.15]
  assert saved['summary']['pck@0.1'] == pytest.approx(0.5625)

  rows = _rows(paths['csv'])
  assert list(rows[0]) == KEYPOINT_COLUMNS
  assert [r['pair_id'].split('-', 1)[1] for r in rows] == [
      f'{s}-{t}' for s, t in pf_fixture.PASCAL_TEST]
  assert _column(rows, 'pck@0.1') == pytest.approx([1, 0.25, 0.5, 0.5])
  assert _column(rows, 'num_keypoints') == [3, 4, 4, 4]
  assert _column(rows, 'threshold_px') == [224] * 4
  # Pair 1's errors 27.3, 0, sqrt(27.3^2 + 13.533^2), 27.067 (see above).
  assert float(rows[1]['mean_error_px']) == pytest.approx(
      (27.3 + 0 + math.hypot(27.3, 0.25 * 29 / 2 * 224 / 30 / 2)
       + 0.25 * 29 / 2 * 224 / 30) / 4)

  markdown = open(paths['md']).read()
  assert markdown.startswith('# pf_pascal (test)')
  assert '* frame: square' in markdown and '* direction: ts' in markdown
  assert '| all | 4 | 15 | 0.062 | 0.562 | 1.000 |' in markdown
  # Four pairs with a finite PCK, at most num_worst (6) rows of 4 panels.
  assert Image.open(paths['png']).size == (4 * PANEL, 4 * PANEL)
  assert worst_pairs.worst_pairs_size(4) == (4 * PANEL, 4 * PANEL)


def test_pf_pascal_sfnet_preset_and_num_pairs(pf_pascal_dir, tmp_path):
  protocol = runner.build_protocol('pf_pascal', 'sfnet')
  assert (tuple(protocol.input_size), protocol.pad) == ((288, 288), 16)
  # Identity stays exact with padding: every keypoint lands on its truth.
  results = _run(fake.identity_predict_fn, 'pf_pascal', pf_pascal_dir,
                 tmp_path, model_size=(320, 320), protocol=protocol,
                 num_pairs=3, num_worst=2, label='untrained')
  summary = results['summary']
  assert summary['num_pairs'] == 3 and summary['num_keypoints'] == 11
  assert summary['pck@0.05'] == 1.0 and summary['mean_error_px'] < 1e-9
  paths = benchmark_reports.output_paths(str(tmp_path), 'pf_pascal', 'test',
                                         'untrained')
  assert paths['json'].endswith('pf_pascal_test_untrained.json')
  saved = json.load(open(paths['json']))
  assert saved['label'] == 'untrained' and 'step' not in saved
  assert saved['protocol']['input_size'] == [288, 288]
  assert saved['protocol']['pad'] == 16
  assert len(_rows(paths['csv'])) == 3
  assert Image.open(paths['png']).size == (4 * PANEL, 2 * PANEL)
  # 288 + 2 x 16 = 320 is not the model's 32 x 32.
  with pytest.raises(SemcorrError, match='the model runs at 32x32'):
    _run(fake.identity_predict_fn, 'pf_pascal', pf_pascal_dir,
         protocol=protocol)


# --- PF-WILLOW ----------------------------------------------------------------
def test_pf_willow_translation(pf_willow_dir, tmp_path):
  # t_n = s_n + (0.15, 0) -> s_n = t_n - 0.15: every keypoint is off by
  # 0.15 (W_s - 1) / 2 = 0.075 (W_s - 1) px in x. Default: 'ts', 'kps' of
  # the source, original pixels; the unit keypoints span [0, 1] on both
  # axes, so L = max(W_s - 1, H_s - 1).
  #   Cars_006a 32x24: err 2.325, L 31 (1.55 / 3.1 / 4.65) -> 0, 1, 1
  #   060_0071 36x28: err 2.625, L 35 (1.75 / 3.5) -> 0, 1, 1
  #   bottle_001 20x40: err 1.425, L 39 (1.95) -> 1, 1, 1
  #   Cars_007a 28x30: err 2.025, L 29 (1.45 / 2.9) -> 0, 1, 1
  predict = fake.affine_predict_fn([[1, 0, 0.15], [0, 1, 0]])
  summary = _run(predict, 'pf_willow', pf_willow_dir, tmp_path)['summary']
  assert summary['num_pairs'] == 4 and summary['num_keypoints'] == 40
  assert summary['pck@0.05'] == pytest.approx(0.25)
  assert summary['pck@0.1'] == pytest.approx(1.0)
  assert summary['mean_error_px'] == pytest.approx(
      (2.325 + 2.625 + 1.425 + 2.025) / 4)
  rows = _rows(benchmark_reports.output_paths(str(tmp_path), 'pf_willow',
                                             'test')['csv'])
  assert _column(rows, 'threshold_px') == [31, 35, 39, 29]
  # DHPF/CATs -1 padding: min = -1, so L = max(W, H): 32, 36, 40, 30;
  # 0.05 L = 1.6, 1.8, 2.0, 1.5 -> still only bottle_001 correct.
  protocol = runner.build_protocol('pf_willow', kps_padding_bug=True)
  results = _run(predict, 'pf_willow', pf_willow_dir, tmp_path / 'bug',
                 protocol=protocol)
  assert results['summary']['pck@0.05'] == pytest.approx(0.25)
  rows = _rows(benchmark_reports.output_paths(str(tmp_path / 'bug'),
                                             'pf_willow', 'test')['csv'])
  assert _column(rows, 'threshold_px') == [32, 36, 40, 30]


# --- SPair-71k ----------------------------------------------------------------
def test_spair_identity_with_tables(spair_dir, tmp_path):
  # Targets are the source keypoints + (3, 2) px; identity moves a target
  # point to t (W_s - 1) / (W_t - 1) (x; y likewise). L = max side of the
  # source box (kps extent + 1 px): 20, 8, 17, 16. Errors (px):
  #   6 (30x22 <- 28x26): 3.634 3.882 4.260 4.758; 0.1/0.2/0.3 L = 2/4/6
  #   7 (32x24 <- 28x26): 4.426 5.164;            0.8/1.6/2.4
  #   8 (24x32 <- 26x30): 3.581 2.902 3.278;      1.7/3.4/5.1
  #   9 (30x24 <- 34x20): 4.745 3.977 2.694;      1.6/3.2/4.8
  # -> PCK@0.2 per pair 2/4, 0, 2/3, 1/3; PCK@0.3: 1, 0, 1, 1.
  for pair in spair_fixture.expected_pairs('large', 'test'):
    ws, hs = pair.source_size
    wt, ht = pair.target_size
    pred = np.array(pair.trg_kps) * [(ws - 1) / (wt - 1), (hs - 1) / (ht - 1)]
    errors = np.hypot(*(pred - np.array(pair.src_kps)).T)
    assert errors.min() > 2.6 and errors.max() < 5.2  # as listed above
  protocol = runner.build_protocol('spair71k', alphas=(0.1, 0.2, 0.3))
  results = _run(fake.identity_predict_fn, 'spair71k', spair_dir, tmp_path,
                 protocol=protocol)
  summary = results['summary']
  assert summary['pck@0.1'] == 0.0
  assert summary['pck@0.2'] == pytest.approx((2 / 4 + 0 + 2 / 3 + 1 / 3) / 4)
  assert summary['pck@0.3'] == pytest.approx(3 / 4)
  table = summary['spair_tables']['0.2']
  # Viewpoint labels: pairs 6, 9 easy; 7 medium; 8 hard.
  assert table['factors']['viewpoint_variation']['easy']['pck'] == (
      pytest.approx((2 / 4 + 1 / 3) / 2))
  assert table['factors']['viewpoint_variation']['hard']['pck'] == (
      pytest.approx(2 / 3))
  assert table['categories']['aeroplane']['pck'] == pytest.approx(1 / 4)
  paths = benchmark_reports.output_paths(str(tmp_path), 'spair71k', 'test')
  rows = _rows(paths['csv'])
  assert len(rows) == 4
  assert list(rows[0])[:5] == ['pair_id', 'category', 'num_keypoints',
                               'threshold_px', 'pck@0.1']
  assert {'viewpoint_variation', 'occlusion', 'mirror'} <= set(rows[0])
  assert _column(rows, 'threshold_px') == [20, 8, 17, 16]
  markdown = open(paths['md']).read()
  assert 'SPair-71k, PCK@0.2 (%)' in markdown
  saved = json.load(open(paths['json']))
  assert saved['summary']['spair_tables']['0.3']['all']['pck'] == 0.75


# --- TSS ----------------------------------------------------------------------
def test_tss_identity_and_translation(tss_dir, tmp_path):
  # Threshold 0.05 max(H_s, W_s). Identity:
  #   FG3DCar (shift (3, -2), 24x32): error sqrt(13) = 3.6 > 1.6 -> 0 (both
  #     rows);
  #   JODS (x 1.5): identity reads t (W_s - 1) / (W_t - 1), off the truth by
  #     < 0.35 px on the small foreground (< 1.2) -> 1;
  #   PASCAL (mirror, flip rows): the source is mirrored first, so the
  #     truth becomes the identity -> 1.
  # Avg. = mean of the group means = 2/3; w/o flip = (0 + 1) / 2.
  results = _run(fake.identity_predict_fn, 'tss', tss_dir, tmp_path)
  summary = results['summary']
  assert [summary['groups'][g]['flow_accuracy']
          for g in ('FG3DCar', 'JODS', 'PASCAL')] == [0.0, 1.0, 1.0]
  assert summary['flow_accuracy'] == pytest.approx(2 / 3)
  assert summary['flow_accuracy_no_flip'] == pytest.approx(0.5)
  paths = benchmark_reports.output_paths(str(tmp_path), 'tss', 'test')
  rows = _rows(paths['csv'])
  assert list(rows[0]) == ['pair_id', 'group', 'flow_accuracy',
                           'num_pixels', 'flip', 'alpha']
  assert [r['flip'] for r in rows] == ['false'] * 4 + ['true'] * 2
  assert Image.open(paths['png']).size == (4 * PANEL, 6 * PANEL)
  # Translation t_n = s_n + (6/31, -4/23): s = t - (3, -2) px on 24x32
  # images, exactly FG3DCar's row 'flow2' (image1 -> image2), the opposite
  # of its other row (error 2 sqrt(13)). JODS: off by about (2.2, 1.3) px
  # and (3.4, 2.0) px (> 1.2, 1.8); PASCAL: (2.6, 1.65) px > 1.4 -> 0.
  predict = fake.affine_predict_fn([[1, 0, 6 / 31], [0, 1, -4 / 23]])
  summary = _run(predict, 'tss', tss_dir)['summary']
  assert [summary['groups'][g]['flow_accuracy']
          for g in ('FG3DCar', 'JODS', 'PASCAL')] == [0.5, 0.0, 0.0]
  assert summary['flow_accuracy'] == pytest.approx(0.5 / 3)


def test_tss_and_caltech_score_every_flow(tss_dir, caltech_dir):
  # The numbers of the two tests around this one: identity (primary) and
  # the FG3DCar translation (flow 'guide') on TSS; identity and its own
  # copy on Caltech-101.
  flows = (outputs.Flow('final'), outputs.Flow('guide'))
  predict = fake.flows_predict_fn(flows, {
      'final': [[1, 0, 0], [0, 1, 0]],
      'guide': [[1, 0, 6 / 31], [0, 1, -4 / 23]]})
  summary = _run(predict, 'tss', tss_dir, flows=flows)['summary']
  assert summary['flow_accuracy'] == pytest.approx(2 / 3)
  assert summary['guide_flow_accuracy'] == pytest.approx(0.5 / 3)
  assert summary['groups']['FG3DCar']['guide_flow_accuracy'] == 0.5
  table = tss.markdown(summary).splitlines()
  assert table[2].startswith('| all rows (final) | 0.000 | 1.000 | 1.000 |')
  assert table[4].startswith('| all rows (guide) | 0.500 | 0.000 | 0.000 |')
  predict = fake.flows_predict_fn(flows, {'final': [[1, 0, 0], [0, 1, 0]],
                                          'guide': [[1, 0, 0], [0, 1, 0]]})
  summary = _run(predict, 'caltech101', caltech_dir, flows=flows)['summary']
  assert summary['guide_iou'] == summary['iou']
  assert summary['num_valid']['guide_iou'] == summary['num_valid']['iou']
  assert caltech.markdown(summary).splitlines()[0] == (
      '| metric | final | guide |')


# --- Caltech-101 --------------------------------------------------------------
def test_caltech_identity(caltech_dir, tmp_path):
  # Pairs 0 and 2 have equal image sizes: the fixture's IDENTITY_METRICS.
  # Pair 1 (18x30 source, 22x26 target): identity reads s = (1.16 x_t,
  # 17/21 y_t); the warped box covers x_t 2..8 (1.16 * 8 = 9.28, bilinear
  # weight 0.72 > 0.5), y_t 5..11 = 49 px, the target box x 10..17, y 8..13
  # = 48 px: no overlap -> IoU 0, LT-ACC (572 - 97) / 572. LOC-ERR
  # (weakalign): x_t 1..24, y_t 1..20 land inside; |x_t - 8 - floor(1.16
  # x_t)| is 8, 9, 10, 11 six times each -> 228 / 24 / 8 = 1.1875; |y_t -
  # 4 - floor(17 y_t / 21)| is 3 (5x), 2 (5x), 1 (5x), 0 (5x) -> 30 / 20 /
  # 6 = 0.25; total 1.4375.
  expected = [caltech_fixture.IDENTITY_METRICS[0],
              (475 / 572, 0.0, 1.4375),
              caltech_fixture.IDENTITY_METRICS[2]]
  results = _run(fake.identity_predict_fn, 'caltech101', caltech_dir,
                 tmp_path)
  paths = benchmark_reports.output_paths(str(tmp_path), 'caltech101', 'test')
  rows = _rows(paths['csv'])
  assert list(rows[0]) == ['pair_id', 'category', 'label_transfer_accuracy',
                           'iou', 'localization_error']
  for row, (acc, iou, loc) in zip(rows, expected):
    assert float(row['label_transfer_accuracy']) == pytest.approx(acc)
    assert float(row['iou']) == pytest.approx(iou)
    assert float(row['localization_error']) == pytest.approx(loc)
  summary = results['summary']
  assert summary['iou'] == pytest.approx((30 / 98 + 0 + 1) / 3)
  assert summary['localization_error'] == pytest.approx(
      (0.625 + 1.4375 + 0) / 3)
  assert Image.open(paths['png']).size == (4 * PANEL, 3 * PANEL)


# --- errors and atomic outputs ------------------------------------------------
def test_data_dir_errors(tmp_path):
  with pytest.raises(SemcorrError, match='pf_pascal needs --data_dir'):
    _run(fake.identity_predict_fn, 'pf_pascal', None)
  with pytest.raises(SemcorrError, match='does not exist'):
    _run(fake.identity_predict_fn, 'pf_pascal', str(tmp_path / 'nope'))
  incomplete = pf_fixture.write_pf_pascal(tmp_path / 'pf')
  os.remove(incomplete / 'test_pairs.csv')
  with pytest.raises(SemcorrError, match=(
      r"PF-PASCAL: no test_pairs_pf_pascal\.csv or test_pairs\.csv for "
      r"split 'test'")):
    _run(fake.identity_predict_fn, 'pf_pascal', str(incomplete))
  with pytest.raises(SemcorrError, match="no split 'train'"):
    _run(fake.identity_predict_fn, 'tss', str(tmp_path), split='train')
  with pytest.raises(SemcorrError, match='unknown benchmark dataset'):
    _run(fake.identity_predict_fn, 'pf', str(tmp_path))


def test_failing_run_keeps_earlier_results(pf_willow_dir, tmp_path,
                                           monkeypatch):
  _run(fake.identity_predict_fn, 'pf_willow', pf_willow_dir, tmp_path)
  paths = benchmark_reports.output_paths(str(tmp_path), 'pf_willow', 'test')
  before = {p: open(p, 'rb').read() for p in paths.values()}
  protocol = runner.build_protocol('pf_willow', batch_size=2)
  calls = []

  def failing(source, target):
    calls.append(1)
    if len(calls) == 2:
      raise SemcorrError('model crashed')
    return fake.identity_predict_fn(source, target)

  with pytest.raises(SemcorrError, match='model crashed'):
    _run(failing, 'pf_willow', pf_willow_dir, tmp_path, protocol=protocol)

  def no_disk(*args, **kwargs):
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(worst_pairs, 'draw_worst_pairs', no_disk)
  with pytest.raises(OSError, match='No space left'):
    _run(fake.affine_predict_fn([[1, 0, 0.15], [0, 1, 0]]), 'pf_willow',
         pf_willow_dir, tmp_path)
  assert {p: open(p, 'rb').read() for p in paths.values()} == before
  assert sorted(os.listdir(tmp_path)) == sorted(
      os.path.basename(p) for p in paths.values())


def test_worst_keeps_the_lowest_finite_scores():
  worst = runner._Worst(2)  # pylint: disable=protected-access
  for i, score in enumerate([0.5, float('nan'), 0.2, 0.9, 0.2, 0.1]):
    worst.offer(score, lambda i=i: i)
  assert worst.items() == [5, 2]  # 0.1, then the first of the two 0.2s
  assert runner._Worst(0).items() == []  # pylint: disable=protected-access


def test_build_protocol_validates():
  protocol = runner.build_protocol('pf_pascal', 'resize', direction='st',
                                   threshold='bbox', frame='original',
                                   alphas=(0.1,), batch_size=3)
  assert (protocol.direction, protocol.threshold, protocol.frame,
          tuple(protocol.alphas), protocol.batch_size) == (
              'st', 'bbox', 'original', (0.1,), 3)
  with pytest.raises(SemcorrError, match='direction must be one of ts, st'):
    runner.build_protocol('pf_pascal', direction='sideways')
  with pytest.raises(SemcorrError, match='alphas must be in'):
    runner.build_protocol('pf_pascal', alphas=(0.0,))
  with pytest.raises(SemcorrError, match="unknown protocol preset 'x'"):
    runner.build_protocol('pf_pascal', 'x')


def test_write_csv_cells(tmp_path):
  path = str(tmp_path / 'r.csv')
  reports.write_csv(path, [{'a': 1, 'b': float('nan'), 'c': True},
                           {'a': 2, 'd': 0.1}])
  assert open(path).read() == 'a,b,c,d\n1,nan,true,\n2,,,0.1\n'
  assert os.listdir(tmp_path) == ['r.csv']


class _ToyMethod:
  """`predict` = the first two colour channels times a weight."""

  def predict(self, variables, source, target):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    return {'mapping_st': source[..., :2] * variables['w'],
            'mapping_ts': target[..., :2] * variables['w'],
            'scale': jnp.float32(1.0)}


def test_method_predict_fn_fills_small_batches():
  method = _ToyMethod()
  # A second trace (a recompilation for the smaller batch) raises.
  method.predict = chex.assert_max_traces(method.predict, n=1)
  predict = runner.method_predict_fn(method, {'w': np.float32(2.0)})
  rng = np.random.default_rng(0)
  source = rng.random((3, 4, 5, 3), dtype=np.float32)
  target = rng.random((3, 4, 5, 3), dtype=np.float32)
  out = predict(source, target)
  assert set(out) == {'mapping_st', 'mapping_ts'}  # scalars are dropped
  np.testing.assert_allclose(out['mapping_st'], 2 * source[..., :2])
  out = predict(source[:2], target[:2])  # filled up to 3, cut back to 2
  assert out['mapping_ts'].shape == (2, 4, 5, 2)
  np.testing.assert_allclose(out['mapping_ts'], 2 * target[:2, ..., :2])
  with pytest.raises(AssertionError, match='traced > 1 times'):
    predict(source[:2, :2], target[:2, :2])  # another image size: traced
