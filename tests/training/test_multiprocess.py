"""Two local processes form one data-parallel job and train like one process."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from semcorr_jax import config_files
from semcorr_jax import methods
from semcorr_jax import parallel
from semcorr_jax import starting_state
from semcorr_jax import train
from semcorr_jax import workdirs

from helpers import multiprocess_train
from helpers import parity
from helpers import paths

pytestmark = pytest.mark.slow

REPO = str(paths.REPO)
CONFIG = os.path.join(REPO, 'configs', 'sfnet.py')
HELPER = os.path.join(REPO, 'tests', 'helpers', 'multiprocess_train.py')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _single_process_config():
  return config_files.load(CONFIG + ':test', multiprocess_train.OVERRIDES)


def _initial_variables(config):
  """The variables both runs start from (the trainer's init, seed and rng)."""
  method = methods.get(config.method)(config, train.total_train_steps(config))
  init_rng, _ = jax.random.split(jax.random.key(config.seed))
  state, _ = starting_state.initial_state(method, config, parallel.make_mesh(),
                                 init_rng)
  return jax.device_get(method.inference_variables(state))


def test_two_processes_train_like_one(tmp_path):
  port = _free_port()
  # Each process gets 2 CPU devices: a 4-device, 2-host mesh.
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=2')
  workdir = tmp_path / 'two_hosts'
  procs = [subprocess.Popen(
      [sys.executable, HELPER, str(port), str(i), str(workdir), CONFIG],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outputs = []
  for p in procs:
    try:
      out, _ = p.communicate(timeout=600)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    outputs.append(out)
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert 'process 0/2 devices 4 local 2' in outputs[0]
  assert 'process 1/2 devices 4 local 2' in outputs[1]

  # The same global batches on this process's 8 devices.
  config = _single_process_config()
  single = tmp_path / 'one_host'
  train.train_and_evaluate(config, str(single))
  two = workdirs.restore(str(workdir))
  one = workdirs.restore(str(single))
  assert two.step == one.step == 4
  # 4 devices on 2 hosts vs 8 devices on 1: only the summation order of the
  # gradient mean and of the batch statistics differs. With SGD that noise is
  # bounded by the size of the run's updates and statistics, not by each
  # value (helpers/parity.py states the bound and the measurements).
  init = _initial_variables(config)
  # It is the runs' own init: their frozen backbone equals it up to the last
  # bit of float32 (the init program is compiled for a different mesh in
  # each run, 1-ulp differences seen; another seed would differ by O(0.1)).
  for run in (two, one):
    for a, b in zip(jax.tree.leaves(init['params']['backbone']),
                    jax.tree.leaves(run.variables['params']['backbone'])):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  parity.assert_updates_close(init['params'], two.variables['params'],
                              one.variables['params'])
  stats = {k: v for k, v in one.variables.items() if k != 'params'}
  assert stats  # SFNet's adaptation BatchNorms
  parity.assert_statistics_close(
      {k: two.variables[k] for k in stats}, stats)
