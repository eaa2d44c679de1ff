"""Test set-up: 8 simulated CPU devices, quiet TensorFlow, TF off accelerators."""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# Compilation dominates the tiny test models; XLA's optimisation passes cost
# ~3x in compile time and buy nothing at these sizes. Set through the
# environment so subprocesses (CLI tests) inherit it.
os.environ.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')

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
