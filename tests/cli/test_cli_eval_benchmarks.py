"""`semcorr-eval` in a subprocess: the run's evaluators, and a benchmark
(the PF-PASCAL fixture) built from the flags.

The workdir holds test_api_cli's `ShiftMethod` (a one-parameter model whose
mapping is a known shift of the 64 x 64 model grid), so the CLI's numbers
are known exactly and nothing heavy compiles.
"""

from __future__ import annotations

import json
import math
import os
import shutil

import jax.numpy as jnp
from PIL import Image
import pytest

from semcorr_jax import methods

from helpers import pf_fixture
import test_api_cli as api_cli

pytestmark = pytest.mark.slow  # every test starts semcorr-eval processes

STEMS = ('pf_pascal_test', 'pf_pascal_test_untrained')
SUFFIXES = ('.json', '.md', '_pairs.csv', '_worst.png')


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  methods.register('shift_test', 'test_api_cli:ShiftMethod')
  return api_cli._make_workdir(  # pylint: disable=protected-access
      tmp_path_factory.mktemp('shift'), api_cli._config(),  # pylint: disable=protected-access
      {'shift': jnp.asarray(api_cli.SHIFT)})


@pytest.fixture(scope='module')
def pf_pascal_dir(tmp_path_factory):
  return pf_fixture.write_pf_pascal(tmp_path_factory.mktemp('pf_pascal'))


def _eval(*args):
  return api_cli._cli('evaluate', *args, fake=True)  # pylint: disable=protected-access


def _snapshot(directory):
  if not os.path.isdir(directory):
    return {}
  return {name: open(os.path.join(directory, name), 'rb').read()
          for name in sorted(os.listdir(directory))
          if os.path.isfile(os.path.join(directory, name))}


def _one_error_line(proc, match):
  assert proc.returncode == 1, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith('error: ') and match in lines[0], lines[0]


def test_eval_pf_pascal_trained_and_untrained(workdir, pf_pascal_dir):
  proc = _eval(f'--workdir={workdir}', '--benchmark=pf_pascal',
               f'--data_dir={pf_pascal_dir}', '--untrained')
  assert proc.returncode == 0, proc.stderr
  out = os.path.join(workdir, 'eval')
  written = [os.path.join(out, s + x) for s in STEMS for x in SUFFIXES]
  for path in written:
    assert f'wrote {path}' in proc.stdout
  # Trained: mapping_ts = model grid - (1.5, -2). A target keypoint at unit
  # coordinates u lands at 63 u in the model, moves by (-1.5, +2) and comes
  # back as source x - 1.5 (W - 1) / 63, y + 2 (H - 1) / 63; in the 224
  # square (x 224 / W, y 224 / H) every keypoint of a pair is off by the
  # same distance (8.6 px for 32 x 24, below 0.05 x 224 = 11.2): PCK 1.
  sizes = [pf_fixture.pascal_size(s) for s, _ in pf_fixture.PASCAL_TEST]
  errors = [math.hypot(1.5 * (w - 1) / 63 * 224 / w,
                       2.0 * (h - 1) / 63 * 224 / h) for w, h in sizes]
  saved = json.load(open(written[0]))
  assert (saved['evaluator'], saved['type'], saved['step']) == (
      'pf_pascal_test', 'benchmark', 3)
  trained = saved['trained']
  assert (trained['benchmark'], trained['split']) == ('pf_pascal', 'test')
  assert trained['pck@0.05'] == 1.0
  assert trained['mean_error_px'] == pytest.approx(sum(errors) / 4, abs=1e-4)
  assert '| all | 4 | 15 | 1.000 | 1.000 | 1.000 | 8.' in proc.stdout
  # Untrained: the shift starts at 0, the identity: no error at all; beside
  # the trained results and alone.
  untrained = json.load(open(written[4]))
  assert untrained['mean_error_px'] == pytest.approx(0, abs=1e-4)
  assert saved['untrained']['mean_error_px'] == untrained['mean_error_px']
  with open(written[2]) as f:
    assert len(f.read().strip().splitlines()) == 1 + 4  # header + pairs
  assert Image.open(written[3]).size == (768, 4 * 192)


def test_eval_user_errors_keep_eval_files(workdir, pf_pascal_dir, tmp_path):
  before = _snapshot(os.path.join(workdir, 'eval'))
  proc = _eval(f'--workdir={workdir}', '--benchmark=pf')
  _one_error_line(proc, '--benchmark=pf: not one of synthetic, pf_pascal, '
                  'pf_willow, spair71k, tss, caltech101')
  proc = _eval(f'--workdir={workdir}', '--benchmark=pf_pascal')
  _one_error_line(proc, 'pf_pascal needs --data_dir')
  incomplete = tmp_path / 'pf'
  shutil.copytree(pf_pascal_dir, incomplete,
                  ignore=shutil.ignore_patterns('tensorflow_datasets'))
  os.remove(incomplete / 'test_pairs.csv')
  proc = _eval(f'--workdir={workdir}', '--benchmark=pf_pascal',
               f'--data_dir={incomplete}')
  _one_error_line(proc, 'PF-PASCAL: no test_pairs_pf_pascal.csv or '
                  "test_pairs.csv for split 'test'")
  assert _snapshot(os.path.join(workdir, 'eval')) == before


def test_eval_sfnet_padding_protocol_at_a_chosen_resolution(workdir,
                                                            pf_pascal_dir):
  # --protocol=sfnet (the alias of 'padded') --input_size=32: images
  # squashed to 32 x 32, padded by 16 px to the model's 64 x 64. A target
  # keypoint at x sits at 16 + 31 x / (W - 1) in the model, moves by
  # (-1.5, +2) model pixels and comes back off by (1.5 (W - 1) / 31,
  # 2 (H - 1) / 31) original pixels.
  proc = _eval(f'--workdir={workdir}', '--benchmark=pf_pascal',
               f'--data_dir={pf_pascal_dir}', '--protocol=sfnet',
               '--input_size=32', '--alphas=0.1')
  assert proc.returncode == 0, proc.stderr
  assert 'note:' not in proc.stdout  # 32 + 2 x 16 = 64, as trained
  results = json.load(open(os.path.join(workdir, 'eval',
                                        'pf_pascal_test.json')))['trained']
  assert results['protocol']['input_size'] == [32, 32]
  assert results['protocol']['pad'] == 16
  assert results['protocol']['alphas'] == [0.1]
  sizes = [pf_fixture.pascal_size(s) for s, _ in pf_fixture.PASCAL_TEST]
  errors = [math.hypot(1.5 * (w - 1) / 31 * 224 / w,
                       2.0 * (h - 1) / 31 * 224 / h) for w, h in sizes]
  assert results['mean_error_px'] == pytest.approx(sum(errors) / 4,
                                                  abs=1e-4)
  proc = _eval(f'--workdir={workdir}', '--benchmark=pf_pascal',
               f'--data_dir={pf_pascal_dir}', '--input_size=3x3')
  _one_error_line(proc, "--input_size='3x3': expected H,W or N")


def test_eval_runs_the_configs_evaluators_on_the_best_model(tmp_path):
  # The latest checkpoint holds the known shift, best/ the identity (the
  # untrained model): --best scores the latter, so trained == untrained.
  methods.register('shift_test', 'test_api_cli:ShiftMethod')
  config = api_cli._config()  # pylint: disable=protected-access
  workdir = api_cli._make_workdir(  # pylint: disable=protected-access
      tmp_path / 'run', config, {'shift': jnp.asarray(api_cli.SHIFT)})
  api_cli._make_workdir(  # pylint: disable=protected-access
      tmp_path / 'run', config, {'shift': jnp.zeros(2)}, folder='best')
  proc = _eval(f'--workdir={workdir}', '--best', '--num_pairs=2',
               '--num_pictures=1')
  assert proc.returncode == 0, proc.stderr
  out = os.path.join(workdir, 'eval')
  saved = json.load(open(os.path.join(out, 'synthetic.json')))
  assert saved['evaluator'] == 'synthetic' and saved['step'] == 3
  assert saved['trained']['num_pairs'] == 2
  assert saved['trained']['epe'] == saved['untrained']['epe']
  for name in ('synthetic.json', 'synthetic.md', 'synthetic_untrained.json',
               'synthetic_pairs.png'):
    assert f'wrote {os.path.join(out, name)}' in proc.stdout
  assert '| metric | trained | untrained |' in proc.stdout
  proc = _eval(f'--workdir={workdir}', '--evals=synthetic,nope')
  _one_error_line(proc, "no evaluator 'nope' in the config; it has: "
                  'synthetic')
  proc = _eval(f'--workdir={workdir}', '--data_dir=/tmp')
  _one_error_line(proc, '--data_dir apply to --benchmark=<a real benchmark>')
