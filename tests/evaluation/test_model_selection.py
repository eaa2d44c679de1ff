"""Model selection: the history file, and the trainer driving it from the
evaluator whose `select` is set."""

import json
import os

import ml_collections
import pytest

from semcorr_jax import train
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import selection

from helpers import pf_fixture

ABOUT = {'evaluator': 'pf_val', 'benchmark': 'pf_pascal',
         'split': 'validation'}


def test_record_keeps_one_entry_per_step_and_the_best(tmp_path):
  workdir = str(tmp_path)

  def record(step, value):
    return selection.record(workdir, step, value, metric='pck@0.1',
                            about=ABOUT)

  record(2, 0.30)
  record(4, 0.50)
  data = record(6, 0.40)
  assert data['best_step'] == 4 and data['best_value'] == 0.50
  # A resumed run scores step 6 again: replaced, not appended.
  data = record(6, 0.60)
  assert [h['step'] for h in data['history']] == [2, 4, 6]
  assert data['best_step'] == 6
  # NaN never wins; ties go to the earlier step.
  record(8, float('nan'))
  data = record(10, 0.60)
  assert data['best_step'] == 6
  with open(selection.path(workdir)) as f:
    on_disk = json.load(f)
  assert on_disk['best_step'] == 6
  assert on_disk['history'][3] == {'step': 8, 'value': None}  # strict JSON
  assert {k: on_disk[k] for k in ('metric', 'evaluator', 'split')} == {
      'metric': 'pck@0.1', 'evaluator': 'pf_val', 'split': 'validation'}


def test_record_refuses_an_unreadable_history(tmp_path):
  os.makedirs(tmp_path / 'eval')
  (tmp_path / 'eval' / selection.FILE).write_text('{not json')
  with pytest.raises(SemcorrError, match='cannot read'):
    selection.record(str(tmp_path), 2, 0.5, metric='pck@0.1')


def _config(load_config, **settings):
  config = load_config('sfnet', 'test')
  with config.unlocked():
    config.evals.pf_val = ml_collections.ConfigDict({
        'type': 'benchmark', 'benchmark': 'pf_pascal', 'split': 'validation',
        'data_dir': None, 'every': 2, 'untrained_baseline': False,
        'select': 'pck@0.1', **settings})
    config.evals.synthetic.untrained_baseline = False
  return config


# --- with the trainer (semcorr_jax.train) -------------------------------------
def test_trainer_checks_the_evaluators_first(load_config, tmp_path):
  workdir = tmp_path / 'run'
  with pytest.raises(SemcorrError,
                     match='pf_pascal needs --config.evals.pf_val.data_dir'):
    train.train_and_evaluate(_config(load_config), str(workdir))
  assert not workdir.exists()  # nothing written


@pytest.mark.slow
def test_training_selects_on_the_validation_split(load_config, tmp_path):
  data_dir = pf_fixture.write_pf_pascal(tmp_path / 'pf')
  config = _config(load_config, data_dir=str(data_dir))
  workdir = tmp_path / 'run'
  train.train_and_evaluate(config, str(workdir))
  with open(workdir / 'eval' / selection.FILE) as f:
    data = json.load(f)
  assert [h['step'] for h in data['history']] == [2, 4]  # every 2 of 4 steps
  values = [h['value'] for h in data['history']]
  assert all(0.0 <= v <= 1.0 for v in values)
  assert data['best_value'] == max(values)
  assert (data['evaluator'], data['metric']) == ('pf_val', 'pck@0.1')
  # The selected checkpoint is kept apart.
  kept = [p for p in os.listdir(workdir / 'best') if p.isdigit()]
  assert kept == [str(data['best_step'])]
  assert os.path.exists(workdir / 'eval' / 'pf_val.json')
