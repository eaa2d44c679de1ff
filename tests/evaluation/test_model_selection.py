"""Model selection on a benchmark's validation split during training."""

import json
import os

import pytest

from semcorr_jax import config_files
from semcorr_jax import train
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import selection

from helpers import pf_fixture


def _config(**overrides):
  return config_files.load('configs/sfnet.py:test', overrides)


def test_record_keeps_one_entry_per_step_and_the_best(tmp_path):
  config = _config(**{'eval.select_benchmark': 'pf_pascal'})
  workdir = str(tmp_path)
  selection.record(workdir, config, 2, 0.30)
  selection.record(workdir, config, 4, 0.50)
  data = selection.record(workdir, config, 6, 0.40)
  assert data['best_step'] == 4 and data['best_value'] == 0.50
  # A resumed run scores step 6 again: replaced, not appended.
  data = selection.record(workdir, config, 6, 0.60)
  assert [h['step'] for h in data['history']] == [2, 4, 6]
  assert data['best_step'] == 6
  # NaN never wins; ties go to the earlier step.
  selection.record(workdir, config, 8, float('nan'))
  data = selection.record(workdir, config, 10, 0.60)
  assert data['best_step'] == 6
  with open(os.path.join(workdir, 'eval', selection.FILE)) as f:
    on_disk = json.load(f)
  assert on_disk['best_step'] == 6
  assert on_disk['metric'] == 'pck@0.1'
  assert on_disk['split'] == 'validation'


def test_check_fails_before_training_without_data(tmp_path):
  selection.check(_config())  # no selection asked for: fine
  with pytest.raises(SemcorrError, match='select_data_dir'):
    selection.check(_config(**{'eval.select_benchmark': 'pf_pascal',
                               'eval_every': 2}))
  with pytest.raises(SemcorrError, match='does not exist'):
    selection.check(_config(**{'eval.select_benchmark': 'pf_pascal',
                               'eval.select_data_dir': str(tmp_path / 'no'),
                               'eval_every': 2}))
  with pytest.raises(SemcorrError, match='eval_every'):
    selection.check(_config(**{'eval.select_benchmark': 'pf_pascal',
                               'eval.select_data_dir': str(tmp_path)}))
  # The trainer checks first: nothing is written into the workdir.
  workdir = tmp_path / 'run'
  with pytest.raises(SemcorrError, match='select_data_dir'):
    train.train_and_evaluate(
        _config(**{'eval.select_benchmark': 'pf_pascal', 'eval_every': 2}),
        str(workdir))
  assert not workdir.exists()


def test_training_scores_the_validation_split(tmp_path):
  data_dir = pf_fixture.write_pf_pascal(tmp_path / 'pf')
  config = _config(**{'eval.select_benchmark': 'pf_pascal',
                      'eval.select_data_dir': str(data_dir),
                      'eval_every': 2, 'eval.untrained': False})
  workdir = tmp_path / 'run'
  train.train_and_evaluate(config, str(workdir))
  with open(workdir / 'eval' / selection.FILE) as f:
    data = json.load(f)
  steps = [h['step'] for h in data['history']]
  assert steps == [2, 4]  # eval_every=2 of 4 steps, and the end
  values = [h['value'] for h in data['history']]
  assert all(0.0 <= v <= 1.0 for v in values)
  assert data['best_value'] == max(values)
  logged = [json.loads(line) for line in open(workdir / 'metrics.jsonl')]
  val = [r for r in logged if r.get('split') == 'val']
  assert [r['step'] for r in val] == [2, 4]
