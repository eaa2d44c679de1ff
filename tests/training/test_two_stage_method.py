"""A method from outside the package runs on the generic spine unchanged.

The toy method (tests/helpers/toy_method.py) trains on real image pairs
without dense ground truth (the PF-PASCAL fixture), declares two parameter
groups with their own learning rates, two named flows and its own evaluator
(PF-PASCAL validation, with model selection), and has a second stage that
starts from the first with `init_from`. `train_and_evaluate` and `semcorr-eval`
serve it with no edit to generic code; a kill in either stage resumes to the
same parameters as an uninterrupted run.
"""

import json
import os
import subprocess
import sys

import flax
import jax
import numpy as np
import pytest

from helpers import kill_resume
from helpers import paths
from helpers import pf_fixture
from helpers import toy_method
from semcorr_jax import train
from semcorr_jax import workdirs

CONFIG = str(paths.HELPERS / 'toy_method.py')


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp('toy')
  manual = pf_fixture.write_pf_pascal(root / 'manual')
  return {'manual_dir': str(manual), 'data_dir': str(root / 'tfds')}


def _config(folders, variant='test', **overrides):
  config = toy_method.get_config(variant)
  config.data.manual_dir = folders['manual_dir']
  config.data.data_dir = folders['data_dir']
  config.evals.pf_val.data_dir = folders['manual_dir']
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _flat(tree):
  return flax.traverse_util.flatten_dict(jax.device_get(tree), sep='/')


@pytest.fixture(scope='module')
def stages(folders, tmp_path_factory):
  root = tmp_path_factory.mktemp('stages')
  one, two = str(root / 'stage1'), str(root / 'stage2')
  results1 = train.train_and_evaluate(_config(folders), one)
  results2 = train.train_and_evaluate(
      _config(folders, 'stage2', **{'init_from.workdir': one}), two)
  return {'one': one, 'two': two, 'results1': results1,
          'results2': results2}


def test_both_flows_scored_by_its_own_evaluator(stages):
  trained = stages['results1']['evals']['pf_val']['trained']
  scalars = trained.get('summary', trained)
  for key in ('pck@0.1', 'identity_pck@0.1'):
    assert 0.0 <= scalars[key] <= 1.0, key
  for stage in ('one', 'two'):
    assert os.path.exists(os.path.join(stages[stage], 'eval',
                                       'pf_val.json'))
    assert os.path.exists(os.path.join(stages[stage], 'eval',
                                       'model_selection.json'))


def test_two_parameter_groups_with_their_learning_rates(stages):
  train1 = [m for m in _metrics(stages['one']) if m['split'] == 'train']
  train2 = [m for m in _metrics(stages['two']) if m['split'] == 'train']
  np.testing.assert_allclose(
      [m['learning_rate/features'] for m in train1], 0.01, rtol=1e-6)
  np.testing.assert_allclose(
      [m['learning_rate/head'] for m in train1], 0.5, rtol=1e-6)
  # Stage 2 freezes the features: no learning rate is logged for them.
  assert all('learning_rate/features' not in m for m in train2)
  np.testing.assert_allclose(
      [m['learning_rate/head'] for m in train2], 0.2, rtol=1e-6)


def test_stage2_starts_from_stage1(stages):
  one = _flat(workdirs.restore(stages['one']).variables)
  two = _flat(workdirs.restore(stages['two']).variables)
  fresh_config = _config({'manual_dir': '', 'data_dir': ''})
  method = toy_method.ToyMethod(fresh_config, 1)
  fresh = _flat(method.init_variables(
      jax.random.key(0), workdirs.image_batch(fresh_config)))
  for key in one:
    if key.startswith('params/features'):
      # Copied from stage 1, then frozen: bit-identical.
      np.testing.assert_array_equal(two[key], one[key], err_msg=key)
      assert not np.array_equal(one[key], fresh[key]), key
  # The head trained on from stage 1's translation.
  assert not np.array_equal(two['params/translation'],
                            one['params/translation'])
  # Stage 2's untrained baseline is stage 1's trained model.
  base2 = stages['results2']['evals']['pf_val']['untrained']
  trained1 = stages['results1']['evals']['pf_val']['trained']
  pick = lambda r: r.get('summary', r)
  for key in ('pck@0.1', 'identity_pck@0.1'):
    assert pick(base2)[key] == pytest.approx(pick(trained1)[key]), key


def test_best_checkpoint_is_kept_by_orbax(stages):
  best = os.path.join(stages['one'], 'best')
  steps = [p for p in os.listdir(best) if p.isdigit()]
  assert len(steps) == 1
  with open(os.path.join(stages['one'], 'eval',
                         'model_selection.json')) as f:
    selection = json.load(f)
  assert int(steps[0]) == selection['best_step']
  restored = workdirs.restore(stages['one'], folder='best')
  assert restored.step == selection['best_step']


def _env():
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      [str(paths.TESTS), env.get('PYTHONPATH', '')])
  return env


@pytest.mark.slow
def test_semcorr_eval_runs_the_same_evaluators(stages, tmp_path):
  # Move the trainer's report aside; semcorr-eval must write it again.
  path = os.path.join(stages['two'], 'eval', 'pf_val.json')
  with open(path) as f:
    expected = json.load(f)
  os.remove(path)
  result = subprocess.run(
      [sys.executable, '-m', 'semcorr_jax.cli.evaluate',
       f'--workdir={stages["two"]}'],
      env=_env(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(path) as f:
    again = json.load(f)
  pick = lambda r: r['trained'].get('summary', r['trained'])
  for key in ('pck@0.1', 'identity_pck@0.1'):
    assert pick(again)[key] == pytest.approx(pick(expected)[key]), key


def _train_cmd(workdir, variant, folders, extra=()):
  return [sys.executable, '-m', 'semcorr_jax.cli.train',
          f'--config={CONFIG}:{variant}', f'--workdir={workdir}',
          f'--config.data.manual_dir={folders["manual_dir"]}',
          f'--config.data.data_dir={folders["data_dir"]}',
          f'--config.evals.pf_val.data_dir={folders["manual_dir"]}',
          '--config.num_train_steps=10', '--config.checkpoint_every=2',
          *extra]


@pytest.mark.slow
@pytest.mark.parametrize('variant', ['test', 'stage2'])
def test_kill_and_resume_is_bit_identical_in_each_stage(
    stages, folders, tmp_path, variant):
  extra = ()
  if variant == 'stage2':
    extra = (f'--config.init_from.workdir={stages["one"]}',)
  straight = tmp_path / 'straight'
  result = subprocess.run(_train_cmd(straight, variant, folders, extra),
                          env=_env(), capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  killed = tmp_path / 'killed'
  kill_resume.kill_then_resume(_train_cmd(killed, variant, folders, extra),
                               killed, steps=10, env=_env())
  a = _flat(workdirs.restore(str(straight)).variables)
  b = _flat(workdirs.restore(str(killed)).variables)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
