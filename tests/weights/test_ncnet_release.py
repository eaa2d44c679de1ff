"""Tests for semcorr_jax/weights/ncnet_release.py and cli/import_ncnet.py.

Release files are random, with the official names, shapes and container
(tests/helpers/release_files.py, written from NCNet's module structure):
full-size names and shapes are checked against `jax.eval_shape` of the
paper config; values on the tiny `test` config (ResNet width 8, one block
per stage, consensus 3, 3 / 4, 1). Files are written with our writer, and
with torch.save (zip and the legacy format of the 2018 release) when torch
is importable.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax import config_files
from semcorr_jax import workdirs
from semcorr_jax.cli import import_ncnet
from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import ncnet
from semcorr_jax.weights import ncnet_release
from semcorr_jax.weights.pickle_records import numpy_record
from helpers import paths
from helpers import release_files as rf

RESNET101 = (3, 4, 23, 3)


def _config(variant, overrides=None):
  return config_files.load(str(paths.CONFIGS / f'ncnet.py:{variant}'),
                           overrides)


def _template(config):
  model = ncnet.NCNet.from_config(config, train_backbone=False)
  x = jnp.zeros((1, 64, 64, 3))
  return jax.eval_shape(model.init, jax.random.key(0), x, x)


@pytest.fixture(scope='module')
def tiny():
  """(template of configs/ncnet.py:test, a random release for it)."""
  return _template(_config('test')), rf.ncnet_checkpoint()


def test_helper_resnet_keys_are_torchvision_names():
  fixture = json.loads((paths.FIXTURES /
                        'torchvision_resnet101_keys.json').read_text())
  assert [[k, list(s)] for k, s in rf.resnet_keys(RESNET101)] == (
      fixture['keys'])


def test_paper_config_names_and_shapes_are_the_release():
  table = ncnet_release.release_mapping(_template(_config('paper')))
  official = {k: s for k, s in rf.ncnet_keys(RESNET101, 64, (5, 5, 5),
                                             (16, 16, 1))
              if not k.endswith('num_batches_tracked')}
  assert {k: e.shape for k, e in table.items()} == official
  entry = table['NeighConsensus.conv.4.weight']
  assert entry.path == ('params', 'consensus', 'conv_2', 'kernel')
  assert entry.shape == (5, 1, 16, 5, 5, 5)
  assert table['FeatureExtraction.model.6.22.bn3.running_var'].path == (
      'batch_stats', 'backbone', 'layer3_22', 'bn3', 'var')


def _check_values(out, state):
  params, stats = out['params'], out['batch_stats']
  w = state['NeighConsensus.conv.0.weight']  # (k1, out, in, k2, k3, k4)
  kernel = params['consensus']['conv_0']['kernel']  # (k1..k4, in, out)
  assert kernel.shape == (3, 3, 3, 3, 1, 4)
  np.testing.assert_array_equal(kernel, w.transpose(0, 3, 4, 5, 2, 1))
  # One element by hand: kernel[a, b, c, d, i, o] = w[a, o, i, b, c, d].
  w1 = state['NeighConsensus.conv.2.weight']
  assert params['consensus']['conv_1']['kernel'][2, 0, 1, 2, 3, 0] == (
      w1[2, 0, 3, 0, 1, 2])
  np.testing.assert_array_equal(params['consensus']['conv_1']['bias'],
                                state['NeighConsensus.conv.2.bias'])
  np.testing.assert_array_equal(
      params['backbone']['conv1']['kernel'],
      state['FeatureExtraction.model.0.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params['backbone']['bn1']['scale'],
                                state['FeatureExtraction.model.1.weight'])
  np.testing.assert_array_equal(
      stats['backbone']['layer3_0']['downsample_bn']['mean'],
      state['FeatureExtraction.model.6.0.downsample.1.running_mean'])
  np.testing.assert_array_equal(
      params['backbone']['layer2_0']['conv2']['kernel'],
      state['FeatureExtraction.model.5.0.conv2.weight'].transpose(2, 3, 1, 0))


def test_official_container_written_by_us_imports(tiny, tmp_path):
  template, checkpoint = tiny
  path = tmp_path / 'ncnet_pfpascal.pth.tar'
  rf.write_ours(checkpoint, path)
  out = ncnet_release.import_ncnet_release(path, template)
  assert jax.tree.structure(out) == jax.tree.structure(template)
  assert all(isinstance(x, np.ndarray) and x.dtype == np.float32
             for x in jax.tree.leaves(out))
  _check_values(out, checkpoint['state_dict'])
  release = ncnet_release.read_release(path)
  assert release.args['ncons_channels'] == [4, 1]
  assert release.args['fe_finetune_params'] == 1


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_official_container_written_by_torch_imports(tiny, tmp_path, legacy):
  torch = pytest.importorskip('torch')
  template, checkpoint = tiny
  path = tmp_path / 'ncnet_pfpascal.pth.tar'
  rf.write_torch(checkpoint, path, torch, legacy=legacy)
  _check_values(ncnet_release.import_ncnet_release(path, template),
                checkpoint['state_dict'])


def _error(checkpoint, template):
  with pytest.raises(SemcorrError) as info:
    ncnet_release.import_ncnet_release(checkpoint, template)
  assert '\n' not in str(info.value)
  return str(info.value)


def test_strict_keys_shapes_and_args(tiny):
  template, checkpoint = tiny
  state = dict(checkpoint['state_dict'])
  del state['FeatureExtraction.model.4.0.bn2.running_var']
  state['NeighConsensus.conv.6.weight'] = np.zeros(3, np.float32)
  state['NeighConsensus.conv.0.bias'] = np.zeros(5, np.float32)
  message = _error(dict(checkpoint, state_dict=state), template)
  assert '1 missing (FeatureExtraction.model.4.0.bn2.running_var)' in message
  assert '1 unexpected (NeighConsensus.conv.6.weight)' in message
  assert 'NeighConsensus.conv.0.bias: got (5,), expected (4,)' in message
  # The paper's consensus against the test config's: named with the fix.
  paper = dict(checkpoint, args=rf.ncnet_args())
  message = _error(paper, template)
  assert 'kernel sizes [5, 5, 5] and channels [16, 16, 1]' in message
  assert 'config.model.kernel_sizes=(5, 5, 5)' in message
  # A state dict entry that is not a tensor, even a harmless one.
  state = dict(checkpoint['state_dict'])
  state['FeatureExtraction.model.1.weight'] = numpy_record(np.float64(1))
  assert "'FeatureExtraction.model.1.weight' is a pickled numpy" in _error(
      dict(checkpoint, state_dict=state), template)
  assert "no 'state_dict'" in _error({'epoch': 1}, template)


def test_old_files_without_counters_or_args_and_vgg_names(tiny):
  template, checkpoint = tiny
  state = {k.replace('FeatureExtraction.model.', 'FeatureExtraction.vgg.'): v
           for k, v in checkpoint['state_dict'].items()
           if not k.endswith('num_batches_tracked')}
  out = ncnet_release.import_ncnet_release({'state_dict': state}, template)
  _check_values(out, checkpoint['state_dict'])


def test_workdir_is_evaluable(tiny, tmp_path):
  _, checkpoint = tiny
  path = tmp_path / 'ncnet_pfpascal.pth.tar'
  rf.write_ours(checkpoint, path)
  workdir = import_ncnet.import_to_workdir(path, _config('test'),
                                           tmp_path / 'run')
  restored = workdirs.restore(workdir)
  assert restored.step == 0
  _check_values(jax.device_get(restored.variables), checkpoint['state_dict'])
  x = jnp.linspace(0, 1, 64 * 64 * 3).reshape(1, 64, 64, 3)
  out = jax.jit(restored.method.predict)(restored.variables, x, x[:, ::-1])
  assert out['mapping_ts'].shape[-1] == 2
  assert np.all(np.isfinite(np.asarray(out['mapping_ts'])))
