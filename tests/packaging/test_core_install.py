"""Inference needs only the core dependencies: no TensorFlow, TFDS, TensorBoard, CLU.

A run of the SFNet `test` config (trained here, one step, through the
packaged `semcorr_jax.configs`) is loaded and matched in a subprocess where
those packages cannot be imported (tests/helpers/core_install.py), by the
API and by the `semcorr-match` console script. Its mappings must equal the
ones this process (TensorFlow loaded) computes from the same checkpoint.
"""

import importlib
import json
import os
import pathlib
import pkgutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

import semcorr_jax
import semcorr_jax.configs
from semcorr_jax import train
from semcorr_jax.configs import sfnet
from helpers import core_install
from helpers import paths


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  config = sfnet.get_config('test')
  config.num_train_steps = 1
  config.checkpoint_every = 1
  config.evals = ml_collections.ConfigDict()
  workdir = str(tmp_path_factory.mktemp('core') / 'run')
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='module')
def core_run(workdir, tmp_path_factory):
  """OUT_DIR of tests/helpers/core_install.py, run on `workdir`."""
  out = tmp_path_factory.mktemp('core_out')
  result = subprocess.run(
      [sys.executable, str(paths.HELPERS / 'core_install.py'), workdir,
       str(out)], cwd=str(paths.REPO), capture_output=True, text=True,
      timeout=600, check=False)
  report_file = out / 'report.json'
  assert report_file.is_file(), result.stderr[-3000:]
  report = json.loads(report_file.read_text())
  assert result.returncode == 0, result.stderr[-3000:]
  return out, report


def test_inference_imports_only_core_dependencies(core_run):
  _, report = core_run
  blocked = set(report['blocked_modules'])
  assert set(core_install.TRAINING_STACK) <= blocked
  assert {'tqdm', 'pytest'} <= blocked  # train / test extras, not core
  assert not blocked & {'jax', 'flax', 'orbax', 'numpy', 'PIL', 'skimage',
                        'matplotlib', 'safetensors', 'etils', 'chex'}
  package = os.path.dirname(os.path.abspath(semcorr_jax.__file__))
  # semcorr_jax importing anything a core install lacks, or anything at all
  # importing the training stack (jax's optional imports are fine).
  wrong = [a for a in report['blocked']
           if a['name'].partition('.')[0] in core_install.TRAINING_STACK
           or os.path.abspath(a['importer']).startswith(package + os.sep)]
  assert not wrong, '\n'.join(f"{a['name']}:\n{a['stack']}" for a in wrong)
  assert report['step'] == 1
  assert report['cli_exit'] in (0, None)
  # Every packaged config builds its `test` variant in the core install.
  names = sorted(p.stem for p in paths.CONFIGS.glob('*.py')
                 if p.stem != '__init__')
  assert report['configs'] == {name: name for name in names}


def test_core_mappings_equal_full_install(core_run, workdir):
  out, _ = core_run
  core = np.load(out / 'api.npz')
  source, target = core_install.pair()
  (hs, ws), (ht, wt) = source.shape[:2], target.shape[:2]
  # Lifted to the original grids: source (48, 80), target (72, 56).
  assert core['mapping_st'].shape == (hs, ws, 2)
  assert core['mapping_ts'].shape == (ht, wt, 2)
  for name in ('mapping_st', 'mapping_ts', 'same_st'):
    assert np.all(np.isfinite(core[name])), name
  # mapping_st holds target (x, y): inside the target (soft-argmax averages
  # grid positions), in the ORIGINAL target's pixels.
  st = core['mapping_st']
  assert st[..., 0].min() >= -0.5 and st[..., 0].max() <= wt - 0.5
  assert st[..., 1].min() >= -0.5 and st[..., 1].max() <= ht - 0.5

  # The same numbers as this process, where TensorFlow is importable.
  matcher = semcorr_jax.load(workdir)
  full = matcher.match(source, target)
  np.testing.assert_allclose(core['mapping_st'], full['mapping_st'],
                             atol=1e-3)
  np.testing.assert_allclose(core['mapping_ts'], full['mapping_ts'],
                             atol=1e-3)
  # semcorr-match read the same pixels from PNG files: the same mapping.
  cli = np.load(out / 'cli_mapping.npy')
  np.testing.assert_allclose(cli, core['mapping_st'], atol=1e-3)
  assert (out / 'cli.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_identical_pair_maps_near_identity(core_run):
  # Matching an image with itself: every feature's best match is itself
  # (normalised self-correlation is maximal), so after the lift back from
  # the 64x64 model grid mapping_st is close to the pixel grid. A lift that
  # kept the 64x64 model's pixels instead of 48x80 ones would be ~13 px off
  # (measured: median 0.5 px).
  out, _ = core_run
  same = np.load(out / 'api.npz')['same_st']
  h, w = same.shape[:2]
  ys, xs = np.mgrid[0:h, 0:w]
  error = np.hypot(same[..., 0] - xs, same[..., 1] - ys)
  assert np.median(error) < 2.0, np.median(error)


def test_every_config_module_imports_by_the_package_name():
  names = sorted(m.name for m in pkgutil.iter_modules(
      semcorr_jax.configs.__path__))
  on_disk = sorted(p.stem for p in paths.CONFIGS.glob('*.py')
                   if p.stem != '__init__')
  assert names == on_disk
  assert 'sfnet' in names
  for name in names:
    module = importlib.import_module(f'semcorr_jax.configs.{name}')
    assert module.__name__ == f'semcorr_jax.configs.{name}'
    # Each config file names its own method (configs/<method>.py).
    assert module.get_config('test').method == name
  config = sfnet.get_config('test')
  assert tuple(config.data.image_size) == (64, 64)


def test_configs_package_is_the_repository_folder():
  # An editable install maps semcorr_jax.configs onto configs/ (not a copy).
  folder = pathlib.Path(semcorr_jax.configs.__file__).resolve().parent
  if folder != paths.CONFIGS.resolve():
    pytest.skip(f'semcorr_jax.configs is installed at {folder}')
  assert os.path.samefile(sfnet.__file__, paths.CONFIGS / 'sfnet.py')
