"""The `pairs` benchmark: a folder of the user's own annotated pairs.

Pairs are scored by fake models whose mappings are known exactly
(`evaluation.fake`, and `helpers.toy_method`'s global translation restored
from a workdir), so every PCK below is worked out by hand in the comments.
"""

import csv
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from helpers import paths
from helpers import toy_method
from semcorr_jax import checkpointing
from semcorr_jax import config_files
from semcorr_jax import methods
from semcorr_jax import workdirs
from semcorr_jax.cli import evaluate as evaluate_cli
from semcorr_jax.data import pairs_folder
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import evaluators
from semcorr_jax.evaluation import fake
from semcorr_jax.evaluation import pairs_benchmark

HEADER = 'x_source,y_source,x_target,y_target\n'


def _image(path, w, h, value=128):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def _pair(root, name, source_wh, target_wh, points, source_box=None,
          target_box=None, target_ext='png'):
  folder = os.path.join(root, name)
  _image(os.path.join(folder, 'source.png'), *source_wh)
  _image(os.path.join(folder, f'target.{target_ext}'), *target_wh)
  with open(os.path.join(folder, 'points.csv'), 'w') as f:
    f.write(points)
  for side, box in (('source', source_box), ('target', target_box)):
    if box is not None:
      with open(os.path.join(folder, f'{side}_box.txt'), 'w') as f:
        f.write(box)
  return folder


@pytest.fixture(scope='module')
def pairs_dir(tmp_path_factory):
  """Two pairs for the identity fake (`target_n = source_n`).

  a: source 21 x 11 (W x H), target 41 x 21, so the identity maps source
     (x, y) to target (2x, 2y) exactly (align corners: x (41-1)/(21-1)).
     Points (source -> annotated target), predicted target, error:
       (5, 5) -> (10, 10)    predicted (10, 10)  error 0
       (10, 2) -> (23, 8)    predicted (20, 4)   error 5 (3-4-5)
       (15, 8) -> (30, 12)   predicted (30, 16)  error 4
       (3, 3) -> (empty)     annotated in the source only: not scored
     Target box (5, 2)-(35, 20): L_bbox = max(30, 18) = 30.
     Source box (0, 0)-(10, 5): L_bbox = 10 (used by direction 'ts').
  b: source and target 11 x 11, columns in another order, ';'-separated:
       (2, 3) -> (2, 3)      error 0
       (5, 5) -> (6, 5)      error 1
     No box.
  """
  root = str(tmp_path_factory.mktemp('my_pairs'))
  _pair(root, 'a', (21, 11), (41, 21),
        HEADER + '5,5,10,10\n10,2,23,8\n15,8,30,12\n3,3,,\n',
        source_box='0,0,10,5', target_box='5 2 35 20\n', target_ext='jpg')
  _pair(root, 'b', (11, 11), (11, 11),
        'y_target;x_target;x_source;y_source\n3;2;2;3\n5;6;5;5\n')
  os.makedirs(os.path.join(root, '.thumbnails'))  # hidden: ignored
  with open(os.path.join(root, 'README.txt'), 'w') as f:  # a file: ignored
    f.write('my pairs')
  return root


def test_hand_worked_pck_source_to_target(pairs_dir):
  scored = pairs_benchmark.score_pairs(fake.identity_predict_fn, pairs_dir,
                                       model_size=(16, 16))
  a, b = scored.records
  # a: L_img = max(41, 21) = 41, thresholds 2.05, 4.1, 6.15 for alphas
  # 0.05, 0.1, 0.15; errors 0, 5, 4 -> 1/3, 2/3 (0 and 4), 3/3.
  # L_bbox = 30: thresholds 1.5, 3, 4.5 -> 1/3, 1/3, 2/3 (0 and 4).
  assert (a['pair_id'], a['num_keypoints'], a['threshold_px'],
          a['threshold_bbox_px']) == ('a', 3, 41.0, 30.0)
  assert [a[f'pck@{k}'] for k in ('0.05', '0.1', '0.15')] == pytest.approx(
      [1 / 3, 2 / 3, 1.0])
  assert [a[f'pck_bbox@{k}'] for k in ('0.05', '0.1', '0.15')
          ] == pytest.approx([1 / 3, 1 / 3, 2 / 3])
  assert a['mean_error_px'] == pytest.approx(3.0)  # (0 + 5 + 4) / 3
  # b: L_img = 11, thresholds 0.55, 1.1, 1.65; errors 0, 1 -> 1/2, 1, 1;
  # no box: NaN.
  assert [b[f'pck@{k}'] for k in ('0.05', '0.1', '0.15')] == pytest.approx(
      [0.5, 1.0, 1.0])
  assert math.isnan(b['pck_bbox@0.1']) and math.isnan(b['threshold_bbox_px'])
  # Means over pairs: (1/3 + 1/2) / 2 = 5/12, (2/3 + 1) / 2 = 5/6, 1; the
  # box metrics over the one pair that has a box; error (3 + 0.5) / 2.
  summary = scored.results['summary']
  assert summary['pck@0.05'] == pytest.approx(5 / 12)
  assert summary['pck@0.1'] == pytest.approx(5 / 6)
  assert summary['pck@0.15'] == pytest.approx(1.0)
  assert summary['pck_bbox@0.05'] == pytest.approx(1 / 3)
  assert summary['pck_bbox@0.1'] == pytest.approx(1 / 3)
  assert summary['pck_bbox@0.15'] == pytest.approx(2 / 3)
  assert summary['mean_error_px'] == pytest.approx(1.75)
  assert (summary['num_pairs'], summary['num_keypoints'],
          summary['num_pairs_with_box']) == (2, 5, 1)
  assert 'target box (target_box.txt)' in summary['conventions']['pck_bbox']
  # The worst pair by pck@0.1 first: a (2/3) before b (1).
  assert [w[2]['pair_id'] for w in scored.worst] == ['a', 'b']


def test_hand_worked_pck_target_to_source(pairs_dir):
  protocol = pairs_benchmark.build_protocol(direction='ts')
  scored = pairs_benchmark.score_pairs(
      fake.identity_predict_fn, pairs_dir, model_size=(16, 16),
      protocol=protocol)
  # a: target points halve into the source: (10, 10) -> (5, 5) error 0,
  # (23, 8) -> (11.5, 4) vs (10, 2) error 2.5, (30, 12) -> (15, 6) vs
  # (15, 8) error 2. L_img = 21: thresholds 1.05, 2.1, 3.15 -> 1/3, 2/3, 1.
  # Source box L = 10: thresholds 0.5, 1, 1.5 -> 1/3 each.
  # b: (6, 5) -> (6, 5) vs (5, 5) error 1, L = 11 -> 1/2, 1, 1.
  summary = scored.results['summary']
  assert [summary[f'pck@{k}'] for k in ('0.05', '0.1', '0.15')
          ] == pytest.approx([5 / 12, 5 / 6, 1.0])
  assert [summary[f'pck_bbox@{k}'] for k in ('0.05', '0.1', '0.15')
          ] == pytest.approx([1 / 3, 1 / 3, 1 / 3])
  # ((0 + 2.5 + 2) / 3 + (0 + 1) / 2) / 2 = (1.5 + 0.5) / 2.
  assert summary['mean_error_px'] == pytest.approx(1.0)
  assert 'source box' in summary['conventions']['pck_bbox']


def test_no_box_anywhere_gives_nan_and_says_so(tmp_path):
  _pair(str(tmp_path), 'only', (11, 11), (11, 11), HEADER + '1,1,1,1\n')
  scored = pairs_benchmark.score_pairs(fake.identity_predict_fn,
                                       str(tmp_path), model_size=(8, 8))
  summary = scored.results['summary']
  assert summary['pck@0.05'] == 1.0
  assert math.isnan(summary['pck_bbox@0.1'])
  assert summary['num_pairs_with_box'] == 0
  text = pairs_benchmark.markdown(summary)
  assert '0 of 1 pairs have one' in text and '| final | n/a | n/a | n/a |' in (
      text)


def _sfnet_config():
  return config_files.load(f'{paths.CONFIGS / "sfnet"}.py:test')


def test_evaluator_writes_the_benchmark_files(pairs_dir, tmp_path):
  ev = evaluators.from_settings(
      'pairs', {'type': 'pairs', 'data_dir': pairs_dir, 'alphas': (0.1,),
                'select': 'pck_bbox@0.1', 'every': 5},
      _sfnet_config(), methods.get('sfnet').flows)
  ev.check()
  assert ev.model_size == (64, 64)
  results = ev.run(lambda variables, s, t: fake.identity_predict_fn(s, t),
                   None)
  assert results['pck@0.1'] == pytest.approx(5 / 6)  # as above
  assert ev.select_value(results) == pytest.approx(1 / 3)
  written = ev.write(str(tmp_path), results, step=7)
  names = sorted(os.path.basename(p) for p in written)
  assert names == ['pairs.json', 'pairs.md', 'pairs_pairs.csv',
                   'pairs_worst.png']
  saved = json.load(open(tmp_path / 'eval' / 'pairs.json'))
  assert saved['step'] == 7 and saved['type'] == 'pairs'
  assert saved['trained']['pck_bbox@0.1'] == pytest.approx(1 / 3)
  assert saved['trained']['protocol'] == {
      'benchmark': 'pairs', 'thresholds': ['img', 'bbox'], 'input_size': None,
      'pad': 0, 'alphas': [0.1], 'direction': 'st', 'frame': 'original',
      'batch_size': 8}
  rows = list(csv.DictReader(open(tmp_path / 'eval' / 'pairs_pairs.csv')))
  assert [r['pair_id'] for r in rows] == ['a', 'b']
  assert float(rows[0]['pck_bbox@0.1']) == pytest.approx(1 / 3)
  assert rows[1]['pck_bbox@0.1'] in ('', 'nan', 'NaN')
  assert '| final | 0.333 |' in open(tmp_path / 'eval' / 'pairs.md').read()


# --- end to end: a workdir restored and scored by semcorr-eval's code ---------
# Toy model (helpers/toy_method.py) at 24 x 32 (H x W) with translation
# t = (1.5, -2) model pixels: flow 'final' maps p -> p + t, flow 'identity'
# p -> p. Images 63 x 47 (W x H) are 2x the model grid (62 / 31 = 46 / 23 =
# 2), so 'final' moves a source point by exactly 2t = (3, -4) target pixels.
TRANSLATION = (1.5, -2.0)
# Source points and annotated targets = source + (3, -4) + d for d = (0, 0),
# (3, 4), (6, 8).
E2E_POINTS = HEADER + '10,20,13,16\n30,30,36,30\n50,40,59,44\n'
# 'final' errors |d| = 0, 5, 10; 'identity' errors |(3, -4) + d| = 5, 6,
# sqrt(81 + 16) = 9.85. L_img = 63: thresholds 3.15, 6.3, 9.45.
# L_bbox = max(52 - 10, 40 - 10) = 42: thresholds 2.1, 4.2, 6.3.
E2E_BOX = '10,10,52,40'
E2E_FINAL = {'pck@0.05': 1 / 3, 'pck@0.1': 2 / 3, 'pck@0.15': 2 / 3,
             'pck_bbox@0.05': 1 / 3, 'pck_bbox@0.1': 1 / 3,
             'pck_bbox@0.15': 2 / 3, 'mean_error_px': 5.0}
E2E_IDENTITY = {'pck@0.05': 0.0, 'pck@0.1': 2 / 3, 'pck@0.15': 2 / 3,
                'pck_bbox@0.05': 0.0, 'pck_bbox@0.1': 0.0,
                'pck_bbox@0.15': 2 / 3,
                'mean_error_px': (5 + 6 + math.sqrt(97)) / 3}


@pytest.fixture(scope='module')
def toy_workdir(tmp_path_factory):
  root = tmp_path_factory.mktemp('toy')
  config = toy_method.get_config('test')
  method = methods.get(config.method)(config, total_steps=1)
  state = jax.jit(method.init_state)(jax.random.key(0),
                                     workdirs.image_batch(config))
  params = dict(state.params)
  params['translation'] = jnp.asarray(TRANSLATION)
  state = state.replace(params=params)
  checkpointing.save_config(str(root), config)
  ckpt = checkpointing.Checkpointer(str(root))
  ckpt.save(3, state, {'step': 3, 'data_index': 0, 'seed': 0}, force=True)
  ckpt.wait()
  ckpt.close()
  pairs = root / 'my_pairs'
  _pair(str(pairs), 'p1', (63, 47), (63, 47), E2E_POINTS,
        target_box=E2E_BOX)
  return str(root), str(pairs)


def _assert_metrics(results, expected, prefix=''):
  for key, value in expected.items():
    assert results[prefix + key] == pytest.approx(value), prefix + key


def test_semcorr_eval_scores_a_pairs_folder(toy_workdir):
  workdir, pairs = toy_workdir
  settings = pairs_benchmark.settings_from_flags(
      {'type': 'benchmark', 'benchmark': 'pairs', 'data_dir': pairs,
       'split': None, 'tfds_dir': None, 'threshold': None, 'alphas': None,
       'untrained_baseline': True})
  doc = evaluate_cli.evaluate_workdir(workdir, 'pairs', settings=settings)
  assert (doc['evaluator'], doc['type'], doc['step']) == ('pairs', 'pairs', 3)
  _assert_metrics(doc['trained'], E2E_FINAL)
  _assert_metrics(doc['trained'], E2E_IDENTITY, 'identity_')
  # Untrained: translation 0, so 'final' is the identity too.
  _assert_metrics(doc['untrained'], E2E_IDENTITY)
  out = os.path.join(workdir, 'eval')
  for name in ('pairs.json', 'pairs.md', 'pairs_pairs.csv', 'pairs_worst.png',
               'pairs_untrained.json', 'pairs_untrained_pairs.csv'):
    assert os.path.isfile(os.path.join(out, name)), name


@pytest.mark.slow  # a semcorr-eval process
def test_semcorr_eval_command_line(toy_workdir):
  workdir, pairs = toy_workdir
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             PYTHONPATH=os.pathsep.join([str(paths.REPO / 'tests'),
                                         os.environ.get('PYTHONPATH', '')]))

  def run(*args):
    return subprocess.run(
        [sys.executable, '-m', 'semcorr_jax.cli.evaluate',
         f'--workdir={workdir}', '--benchmark=pairs', *args],
        capture_output=True, text=True, env=env, timeout=300)

  proc = run(f'--data_dir={pairs}', '--alphas=0.1')
  assert proc.returncode == 0, proc.stderr
  assert f'wrote {os.path.join(workdir, "eval", "pairs.json")}' in proc.stdout
  saved = json.load(open(os.path.join(workdir, 'eval', 'pairs.json')))
  assert saved['trained']['pck@0.1'] == pytest.approx(2 / 3)
  assert saved['trained']['pck_bbox@0.1'] == pytest.approx(1 / 3)
  for args, match in (((), 'pairs needs --data_dir'),
                      ((f'--data_dir={pairs}', '--threshold=bbox'),
                       '--benchmark=pairs takes no --threshold')):
    proc = run(*args)
    assert proc.returncode == 1, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
    assert len(errors) == 1 and match in errors[0], proc.stderr


# --- one line per bad input ---------------------------------------------------
def _one_line(fn, *args):
  with pytest.raises(SemcorrError) as raised:
    fn(*args)
  message = str(raised.value)
  assert '\n' not in message
  return message


def _load_all(root):
  for pair in pairs_folder.list_pairs(root):
    pairs_folder.load_pair(pair)


def test_one_line_errors(tmp_path):
  root = str(tmp_path)
  assert 'pairs needs --data_dir' in _one_line(pairs_folder.list_pairs, None)
  assert 'does not exist' in _one_line(pairs_folder.list_pairs,
                                       os.path.join(root, 'nowhere'))
  empty = os.path.join(root, 'empty')
  os.makedirs(empty)
  assert 'holds no pair folders' in _one_line(pairs_folder.list_pairs, empty)

  def case(name, points=HEADER + '1,1,1,1\n', **kwargs):
    base = os.path.join(root, name)
    folder = _pair(base, 'p', (11, 11), (11, 11), points, **kwargs)
    return base, folder

  base, folder = case('no_target')
  os.remove(os.path.join(folder, 'target.png'))
  assert 'has no target image' in _one_line(pairs_folder.list_pairs, base)
  base, folder = case('two_sources')
  _image(os.path.join(folder, 'source.jpg'), 11, 11)
  assert '2 (source.jpg, source.png), not one source image' in _one_line(
      pairs_folder.list_pairs, base)
  base, folder = case('no_points')
  os.remove(os.path.join(folder, 'points.csv'))
  assert 'has no points.csv' in _one_line(pairs_folder.list_pairs, base)
  base, _ = case('bad_header', 'x,y\n1,1\n')
  assert 'must be the header x_source,y_source,x_target,y_target' in (
      _one_line(_load_all, base))
  base, _ = case('not_a_number', HEADER + '1,1,one,1\n')
  assert "line 2: 'one' is not a number" in _one_line(_load_all, base)
  base, _ = case('short_row', HEADER + '1,1,1\n')
  assert 'line 2: expected the four values' in _one_line(_load_all, base)
  base, _ = case('swapped', HEADER + '1,1,1,1\n2,2,3,20\n')
  message = _one_line(_load_all, base)
  assert 'line 3: the target point (3, 20) lies off the 11x11 target' in (
      message) and 'swapped' in message
  base, _ = case('bad_box', target_box='1,2,3')
  assert 'expected four numbers' in _one_line(_load_all, base)
  base, _ = case('empty_box', target_box='5,5,5,9')
  assert 'x_min < x_max' in _one_line(_load_all, base)
  base, folder = case('corrupt')
  with open(os.path.join(folder, 'source.png'), 'wb') as f:
    f.write(b'not a png')
  message = _one_line(_load_all, base)
  assert 'source image' in message and 'source.png' in message
  with pytest.raises(SemcorrError, match='takes no --split'):
    pairs_benchmark.settings_from_flags({'split': 'test'})
  with pytest.raises(SemcorrError, match="no protocol field 'threshold'"):
    pairs_benchmark.build_protocol(threshold='kps')
