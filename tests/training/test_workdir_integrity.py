"""A run is never lost: what `train_and_evaluate` checks before it writes,
the workdir lock, damaged checkpoints and a failed first start.

Only public entry points (`train.train_and_evaluate`, `workdirs.restore`,
the files of a workdir) are used, so these tests also run against older
versions of the trainer.
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from semcorr_jax import config_files
from semcorr_jax import train
from semcorr_jax import workdirs
from semcorr_jax.errors import NonFiniteLossError
from semcorr_jax.errors import SemcorrError

from helpers import paths


def _config(load_config, **overrides):
  base = {'evals.synthetic.untrained_baseline': False, 'keep_checkpoints': 5}
  return load_config('sfnet', 'test', **{**base, **overrides})


def snapshot(folder) -> dict[str, str]:
  """sha256 of every file under `folder`, by relative path."""
  out = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, folder)] = hashlib.sha256(
            f.read()).hexdigest()
  return out


def damage(checkpoint_dir) -> str:
  """Truncates the largest file of a checkpoint to half its size."""
  files = [os.path.join(r, n) for r, _, ns in os.walk(checkpoint_dir)
           for n in ns]
  biggest = max(files, key=os.path.getsize)
  os.truncate(biggest, os.path.getsize(biggest) // 2)
  return biggest


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished 4-step SFNet run with checkpoints at steps 2 and 4."""
  config = config_files.load(
      f'{paths.CONFIGS}/sfnet.py:test',
      {'evals.synthetic.untrained_baseline': False, 'keep_checkpoints': 5})
  workdir = tmp_path_factory.mktemp('trained') / 'run'
  train.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.fixture
def run_copy(trained, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(trained, workdir)
  return workdir


def _params(workdir, step=None):
  return jax.tree.leaves(workdirs.restore(str(workdir), step).variables)


def test_another_methods_config_is_refused_and_the_workdir_untouched(
    run_copy, load_config):
  before = snapshot(run_copy)
  config = load_config('camnet', 'test')
  with pytest.raises(SemcorrError, match="holds a 'sfnet' run") as e:
    train.train_and_evaluate(config, str(run_copy))
  assert '\n' not in str(e.value)
  assert snapshot(run_copy) == before
  workdirs.restore(str(run_copy))  # still loads for inference


def test_another_model_shape_is_refused_and_the_workdir_untouched(
    run_copy, load_config):
  before = snapshot(run_copy)
  config = _config(load_config, **{'backbone.width': 16})
  with pytest.raises(SemcorrError, match='init_from.workdir') as e:
    train.train_and_evaluate(config, str(run_copy))
  assert '\n' not in str(e.value)
  assert snapshot(run_copy) == before


@pytest.mark.parametrize('field', ['log_every', 'checkpoint_every',
                                   'batch_size', 'keep_checkpoints',
                                   'num_train_steps'])
def test_a_bad_value_fails_first_and_writes_nothing(run_copy, tmp_path,
                                                    load_config, field):
  before = snapshot(run_copy)
  config = _config(load_config, **{field: 0})
  with pytest.raises(SemcorrError, match=f'config.{field}=0'):
    train.train_and_evaluate(config, str(run_copy))
  assert snapshot(run_copy) == before
  fresh = tmp_path / 'fresh'
  with pytest.raises(SemcorrError, match=f'config.{field}=0'):
    train.train_and_evaluate(config, str(fresh))
  assert not fresh.exists()


def test_a_failed_first_start_leaves_no_workdir(tmp_path, load_config):
  # Fails after the model and data are built (the run it names is missing).
  config = _config(load_config, **{
      'init_from.workdir': str(tmp_path / 'missing'),
      'init_from.subtrees': ('params',)})
  fresh = tmp_path / 'fresh'
  with pytest.raises(SemcorrError):
    train.train_and_evaluate(config, str(fresh))
  assert not fresh.exists()
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(SemcorrError):
    train.train_and_evaluate(config, str(empty))
  assert empty.is_dir() and not list(empty.iterdir())


def test_a_resume_with_another_config_keeps_the_previous_one(
    run_copy, load_config):
  old = (run_copy / 'config.json').read_bytes()
  config = _config(load_config, num_train_steps=6, **{'optimizer.lr': 5e-4})
  train.train_and_evaluate(config, str(run_copy))
  new = json.loads((run_copy / 'config.json').read_text())
  assert new['num_train_steps'] == 6 and new['optimizer']['lr'] == 5e-4
  assert (run_copy / 'config_history' / '1.json').read_bytes() == old
  # Resuming with the same config again adds no version.
  train.train_and_evaluate(config, str(run_copy))
  assert sorted(os.listdir(run_copy / 'config_history')) == ['1.json']


def test_a_held_workdir_is_refused(run_copy, load_config):
  # Another process holds the lock: a child that flocks and waits.
  script = ('import fcntl, os, sys, time, json\n'
            f'fd = os.open({str(run_copy / ".lock")!r}, os.O_RDWR | '
            'os.O_CREAT)\n'
            'fcntl.flock(fd, fcntl.LOCK_EX)\n'
            'os.write(fd, json.dumps({"pid": os.getpid(), "host": "h", '
            '"started": time.time()}).encode())\n'
            'print("held", flush=True)\n'
            'sys.stdin.read()\n')
  child = subprocess.Popen([sys.executable, '-c', script],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True)
  try:
    assert child.stdout.readline().strip() == 'held'
    before = snapshot(run_copy)
    config = _config(load_config)
    with pytest.raises(SemcorrError,
                       match=f'in use .* pid {child.pid} on host h'):
      train.train_and_evaluate(config, str(run_copy))
    assert snapshot(run_copy) == before
  finally:
    child.stdin.close()
    child.wait(timeout=30)


def test_a_stale_lock_is_reported_and_taken_over(run_copy, load_config,
                                                 capfd):
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True)
  (run_copy / '.lock').write_text(json.dumps(
      {'pid': int(dead.stdout), 'host': socket.gethostname(),
       'started': 0}))
  train.train_and_evaluate(_config(load_config), str(run_copy))
  err = capfd.readouterr().err
  assert 'stale lock' in err and f'pid {int(dead.stdout)}' in err
  assert not (run_copy / '.lock').exists()


def test_a_damaged_latest_checkpoint_is_named_and_skipped(
    run_copy, trained, load_config, capfd):
  expected = _params(trained, 4)
  damage(run_copy / 'checkpoints' / '4')
  # Inference reads the newest intact checkpoint and names the damaged one.
  restored = workdirs.restore(str(run_copy))
  assert restored.step == 2
  err = capfd.readouterr().err
  assert 'checkpoints/4 is corrupt' in err
  # A resume starts from step 2, moves step 4 aside, and trains step 3 and
  # 4 again: the same parameters as the run before the damage.
  train.train_and_evaluate(_config(load_config), str(run_copy))
  out, err = capfd.readouterr()
  assert 'Resumed from step 2' in out
  assert 'checkpoints/4 is corrupt' in err
  assert (run_copy / 'corrupt_checkpoints' / '4').is_dir()
  for a, b in zip(_params(run_copy, 4), expected):
    np.testing.assert_array_equal(a, b)


def test_every_checkpoint_damaged_is_called_corruption(run_copy,
                                                       load_config):
  damage(run_copy / 'checkpoints' / '4')
  damage(run_copy / 'checkpoints' / '2')
  before = snapshot(run_copy)
  with pytest.raises(SemcorrError, match='corrupt') as e:
    train.train_and_evaluate(_config(load_config), str(run_copy))
  assert 'does not match' not in str(e.value)
  assert snapshot(run_copy) == before
  with pytest.raises(SemcorrError, match='corrupt'):
    workdirs.restore(str(run_copy))


def test_metrics_hold_each_step_once_across_resumes(run_copy, load_config):
  # A run killed after logging steps 3 and 4 but before checkpoint 4 was
  # complete: what it logged after its last checkpoint is logged again.
  shutil.rmtree(run_copy / 'checkpoints' / '4')
  train.train_and_evaluate(_config(load_config, log_every=1),
                           str(run_copy))
  records = [json.loads(l) for l in open(run_copy / 'metrics.jsonl')]
  keys = [(r['step'], r['split']) for r in records]
  assert len(keys) == len(set(keys)), keys
  assert [s for s, split in keys if split == 'train'] == [2, 3, 4]


def test_a_resume_stopped_by_a_nan_keeps_the_runs_config(run_copy,
                                                          load_config):
  before = (run_copy / 'config.json').read_bytes()
  config = _config(load_config, num_train_steps=8, log_every=1,
                   **{'optimizer.lr': 1e30})
  with pytest.raises(NonFiniteLossError):
    train.train_and_evaluate(config, str(run_copy))
  # No checkpoint of the lr=1e30 config exists: config.json still
  # describes the checkpoints beside it.
  assert (run_copy / 'config.json').read_bytes() == before
  assert not (run_copy / 'config_history').exists()
