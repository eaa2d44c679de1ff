"""Two local processes form one data-parallel job and train like one process."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np

from semcorr_jax import checkpointing
from semcorr_jax import config_files
from semcorr_jax import train

from helpers import multiprocess_train
from helpers import paths

REPO = str(paths.REPO)
CONFIG = os.path.join(REPO, 'configs', 'sfnet.py')
HELPER = os.path.join(REPO, 'tests', 'helpers', 'multiprocess_train.py')


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _single_process_config():
  return config_files.load(CONFIG + ':test', multiprocess_train.OVERRIDES)


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
  single = tmp_path / 'one_host'
  train.train_and_evaluate(_single_process_config(), str(single))
  _, _, two, step_two = checkpointing.restore_for_inference(str(workdir))
  _, _, one, step_one = checkpointing.restore_for_inference(str(single))
  assert step_two == step_one == 4
  # 4 devices on 2 hosts vs 8 devices on 1: only the summation order of the
  # gradient mean differs, which leaves ~1e-6 after 4 SGD steps at lr 0.1.
  for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(one)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5)
