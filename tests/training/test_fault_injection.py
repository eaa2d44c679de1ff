"""Fault injection: kills at random points (one during a checkpoint write), a
damaged newest checkpoint, and a full disk. A run still ends bit-identical to
an uninterrupted one, with each step logged once."""

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from semcorr_jax import workdirs

from helpers import paths

STEPS = 16
ENV = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
FAULT_TRAIN = str(paths.HELPERS / 'fault_train.py')


def _flags(workdir, steps=STEPS):
  return [f'--config={paths.CONFIGS}/sfnet.py:test', f'--workdir={workdir}',
          f'--config.num_train_steps={steps}', '--config.checkpoint_every=4',
          '--config.log_every=1', '--config.keep_checkpoints=10',
          '--config.evals.synthetic.untrained_baseline=False']


def _train_cmd(workdir, steps=STEPS):
  return [sys.executable, '-m', 'semcorr_jax.cli.train', *_flags(workdir,
                                                                  steps)]


def _logged_steps(workdir) -> list[int]:
  path = workdir / 'metrics.jsonl'
  if not path.exists():
    return []
  steps = []
  for line in path.read_text().splitlines():
    try:
      record = json.loads(line)
    except ValueError:
      continue
    if record.get('split') == 'train':
      steps.append(record['step'])
  return steps


def _kill_when_logged(workdir, step, timeout=600):
  """Starts a run and SIGKILLs it once metrics.jsonl holds `step`."""
  proc = subprocess.Popen(_train_cmd(workdir), env=ENV,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  deadline = time.time() + timeout
  try:
    while time.time() < deadline and proc.poll() is None:
      if step in _logged_steps(workdir):
        proc.send_signal(signal.SIGKILL)
        break
      time.sleep(0.01)
  finally:
    if proc.poll() is None:
      proc.kill()
    _, err = proc.communicate()
  assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]


def _committed(workdir) -> list[int]:
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()
                if p.name.isdigit())


def _params(workdir):
  return jax.tree.leaves(workdirs.restore(str(workdir)).variables['params'])


@pytest.mark.slow  # six training subprocesses
def test_random_kills_and_a_damaged_checkpoint_end_like_an_uninterrupted_run(
    tmp_path):
  rng = random.Random(12)
  ref = tmp_path / 'uninterrupted'
  subprocess.run(_train_cmd(ref), env=ENV, check=True, timeout=600,
                 capture_output=True)
  run = tmp_path / 'faulty'

  # 1. Killed at a random step after the first checkpoint (4).
  _kill_when_logged(run, rng.choice([5, 6, 7]))
  assert _committed(run) == [4]
  # 2. Killed while the checkpoint of step 8 is being written.
  killed = subprocess.run([sys.executable, FAULT_TRAIN, '8', *_flags(run)],
                          env=ENV, timeout=600, capture_output=True)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  assert 8 not in _committed(run)
  assert any('orbax-checkpoint-tmp' in p.name
             for p in (run / 'checkpoints').iterdir()), 'not mid-write'
  # 3. Killed at a random step after checkpoint 8.
  _kill_when_logged(run, rng.choice([9, 10, 11]))
  assert _committed(run) == [4, 8]
  # 4. The newest checkpoint is damaged (half its largest file is gone).
  files = [os.path.join(r, n) for r, _, ns in os.walk(run / 'checkpoints' / '8')
           for n in ns]
  biggest = max(files, key=os.path.getsize)
  os.truncate(biggest, os.path.getsize(biggest) // 2)

  final = subprocess.run(_train_cmd(run), env=ENV, timeout=600,
                         capture_output=True, text=True)
  assert final.returncode == 0, final.stderr[-2000:]
  assert 'Resumed from step 4' in final.stdout
  assert 'checkpoints/8 is corrupt' in final.stderr
  assert (run / 'corrupt_checkpoints' / '8').is_dir()
  assert not any('tmp' in p.name for p in (run / 'checkpoints').iterdir())

  for a, b in zip(_params(ref), _params(run), strict=True):
    np.testing.assert_array_equal(a, b)
  assert _logged_steps(run) == list(range(1, STEPS + 1))
  records = [json.loads(l) for l in (run / 'metrics.jsonl').open()]
  keys = [(r['step'], r['split']) for r in records]
  assert len(keys) == len(set(keys))


def _limit_file_size(limit):
  def preexec():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
  return preexec


@pytest.mark.slow  # three training subprocesses
def test_a_full_disk_while_saving_is_one_line_and_loses_nothing(tmp_path):
  run = tmp_path / 'run'
  subprocess.run(_train_cmd(run, steps=4), env=ENV, check=True, timeout=600,
                 capture_output=True)
  before = {p.name: sorted(os.listdir(p)) for p in
            (run / 'checkpoints').iterdir()}
  # Files may not grow past 1 MB: the next checkpoint's arrays cannot be
  # written (as on a full disk), while the logs still can.
  full = subprocess.run(_train_cmd(run, steps=8), env=ENV, timeout=600,
                        capture_output=True, text=True,
                        preexec_fn=_limit_file_size(1 << 20))
  lines = [l for l in full.stderr.splitlines() if l.strip()]
  assert full.returncode == 1, full.stderr[-3000:]
  assert 'Traceback' not in full.stderr, full.stderr[-3000:]
  assert lines[-1].startswith('error: saving a checkpoint'), lines[-3:]
  assert 'step 4' in lines[-1] and 'run the same command again' in lines[-1]
  assert {p.name: sorted(os.listdir(p)) for p in
          (run / 'checkpoints').iterdir()} == before  # nothing half-written
  again = subprocess.run(_train_cmd(run, steps=8), env=ENV, timeout=600,
                         capture_output=True, text=True)
  assert again.returncode == 0, again.stderr[-2000:]
  assert 'Resumed from step 4' in again.stdout
  assert _logged_steps(run) == list(range(1, 9))
