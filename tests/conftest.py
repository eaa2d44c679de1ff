"""Test set-up: 8 simulated CPU devices, quiet TensorFlow, TF off accelerators.

`chex.set_n_cpu_devices(8)` works by setting
`--xla_force_host_platform_device_count=8` in `XLA_FLAGS` (before any JAX
backend starts, keeping the other flags there), so subprocesses (CLI tests)
see 8 devices too unless their test sets its own `XLA_FLAGS`.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Compilation dominates the tiny test models; XLA's optimisation passes cost
# ~3x in compile time and buy nothing at these sizes. Set through the
# environment (before JAX is imported: it reads them then) so subprocesses
# (CLI tests) inherit it.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')
# Many tests start training subprocesses of the same tiny configs (kill and
# resume, CLIs); JAX's persistent compilation cache lets every process after
# the first load the compiled steps instead of compiling them again (about
# half of such a process's time on 2 cores). A size limit turns on the
# cache's file lock, which the two pytest-xdist workers need to share it.
os.environ.setdefault(
    'JAX_COMPILATION_CACHE_DIR',
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                 '.pytest_cache', 'jax_compilation_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
os.environ.setdefault('JAX_COMPILATION_CACHE_MAX_SIZE', str(4 << 30))

import chex  # noqa: E402  pylint: disable=g-import-not-at-top

chex.set_n_cpu_devices(8)

import jax  # noqa: E402  pylint: disable=g-import-not-at-top

jax.config.update('jax_default_matmul_precision', 'highest')

try:
  import tensorflow as tf  # noqa: E402  pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
except ImportError:  # pragma: no cover
  pass

import sys  # noqa: E402  pylint: disable=g-import-not-at-top

import pytest  # noqa: E402  pylint: disable=g-import-not-at-top

# `from helpers import ...` from any test folder.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import paths  # noqa: E402  pylint: disable=g-import-not-at-top


@pytest.fixture
def load_config():
  """`load_config('sfnet', 'test', **overrides)`: a config file of configs/.

  Overrides use dotted keys, e.g. `load_config('sfnet', **{'optimizer.lr': 0.1})`.
  """
  from semcorr_jax import config_files  # pylint: disable=g-import-not-at-top

  def load(method: str = 'sfnet', variant: str = 'test', **overrides):
    return config_files.load(f'{paths.CONFIGS / method}.py:{variant}',
                             overrides or None)
  return load
