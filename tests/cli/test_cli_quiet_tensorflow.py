"""TensorFlow's start-up logs stay off the tools' stderr (semcorr_jax/cli)."""

import os
import subprocess
import sys

import pytest

from semcorr_jax import cli

from helpers import paths

PRE_INIT = ('WARNING: All log messages before absl::InitializeLog() is called '
            'are written to STDERR\n')
ONEDNN = ('I0000 00:00:1796471993.802863    7149 port.cc:153] oneDNN custom '
          'operations are on. You may see slightly different numerical '
          'results ...\n')
CPU_GUARD = ('I0102 03:04:05.678901    7149 cpu_feature_guard.cc:227] This '
             'TensorFlow binary is optimized ...\n')
WARNING = 'W0000 00:00:1796471993.9    7149 op_level_cost.cc:699] a warning\n'
ERROR = 'E0000 00:00:1796471994.0    7149 cuda_dnn.cc:8] an error\n'
PYTHON = 'UserWarning: something of ours\n'


def test_filter_keeps_what_the_log_level_asks_for():
  text = PRE_INIT + ONEDNN + CPU_GUARD + PYTHON + WARNING + PRE_INIT + ERROR
  assert cli.filter_native_logs(text, 0) == text
  assert cli.filter_native_logs(text, 1) == PYTHON + WARNING + ERROR
  assert cli.filter_native_logs(text, 2) == PYTHON + ERROR
  assert cli.filter_native_logs(text, 3) == PYTHON


@pytest.mark.slow
def test_user_error_is_one_line_where_tensorflow_logs_at_import():
  # TF_ENABLE_ONEDNN_OPTS=1 takes the path of CPUs with AVX512-VNNI or AMX
  # (Intel Xeons) on any CPU: importing TensorFlow then logs "oneDNN custom
  # operations are on" from two libraries, whatever TF_CPP_MIN_LOG_LEVEL says.
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  env.update(TF_ENABLE_ONEDNN_OPTS='1', JAX_PLATFORMS='cpu')
  code = ('from semcorr_jax.cli import common\n'
          'from semcorr_jax.errors import SemcorrError\n'
          '@common.main_wrapper\n'
          'def main(argv):\n'
          '  import tensorflow as tf\n'
          '  tf.constant(1.0)\n'
          "  raise SemcorrError('bad  input')\n"
          'common.run(main)\n')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, cwd=paths.REPO, env=env, timeout=300)
  assert proc.returncode == 1, proc.stderr
  assert proc.stderr == 'error: bad input\n'
