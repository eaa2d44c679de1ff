"""benchmarks/camnet_table3.py on the `test` configs: rows x seeds, one command.

Two seeds of the `confidence` row (CAMNet started from that seed's SFNet
base, trained with SFNet's own loss): the table has every column with mean
and spread, and each CAMNet run really started from its seed's base (its
untrained base flow scores exactly like the trained SFNet).
"""

import json
import os
import subprocess
import sys

import pytest
from helpers import paths

SCRIPT = str(paths.REPO / 'benchmarks' / 'camnet_table3.py')


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  root = tmp_path_factory.mktemp('table3')
  cmd = [sys.executable, SCRIPT, f'--root={root}', '--seeds=0,1',
         '--variant=test', '--rows=confidence']
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert done.returncode == 0, done.stderr[-3000:]
  return root, done


def _synthetic(root, run):
  with open(root / run / 'eval' / 'synthetic.json') as f:
    return json.load(f)


@pytest.mark.slow
def test_table_has_every_row_and_seed(sweep):
  root, done = sweep
  text = (root / 'table3.md').read_text()
  assert text in done.stdout
  lines = text.splitlines()
  conf = next(l for l in lines if l.startswith('| `confidence` |'))
  # Mean ± spread of 2 seeds in every column.
  assert conf.count('±') == 12, conf
  for seed in (0, 1):
    assert f'| `confidence` {seed} |' in text
  # The mean of the table is the mean of the runs' own reports.
  values = [_synthetic(root, f'confidence_s{s}')['trained']['pck@0.1']
            for s in (0, 1)]
  mean = f'{(values[0] + values[1]) / 2:.3f}'
  # Columns: row, PCK_bbox@0.05, PCK_bbox@0.1, PCK@0.05, PCK@0.1, ...
  assert conf.split('|')[5].strip().startswith(mean), (conf, values)


@pytest.mark.slow
def test_refinement_rows_start_from_the_seeds_trained_base(sweep):
  root, _ = sweep
  for seed in (0, 1):
    base = _synthetic(root, f'base_s{seed}')['trained']
    camnet = _synthetic(root, f'confidence_s{seed}')
    assert camnet['step'] == 4 and base['num_keypoints'] > 0
    # Before its own training, CAMNet's base flow is the trained SFNet's.
    assert camnet['untrained']['base_pck@0.1'] == pytest.approx(
        base['pck@0.1'], abs=1e-6)
    assert camnet['untrained']['base_epe'] == pytest.approx(
        base['epe'], rel=1e-5)
    # F_u is scored beside F_b and F_r.
    assert 'update_pck@0.05' in camnet['trained']


@pytest.mark.slow
def test_a_finished_run_is_not_trained_again(sweep):
  root, _ = sweep
  before = os.path.getmtime(root / 'base_s0' / 'eval' / 'synthetic.json')
  done = subprocess.run(
      [sys.executable, SCRIPT, f'--root={root}', '--seeds=0',
       '--variant=test', '--rows=confidence'], capture_output=True, text=True,
      timeout=600, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'training' not in done.stdout
  assert os.path.getmtime(
      root / 'base_s0' / 'eval' / 'synthetic.json') == before
