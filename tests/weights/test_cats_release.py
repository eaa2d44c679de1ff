"""Tests for semcorr_jax/weights/cats_release.py and cli/import_cats.py.

Release files are random, with the official names, shapes and container
(tests/helpers/release_files.py, written from CATs' module structure):
full-size names and shapes are checked against `jax.eval_shape` of the
paper config; values on the tiny `test` config (ResNet width 8, one block
per stage, S = 4, proj 8). Files are written with our writer, and with
torch.save when torch is importable; args.pkl with `pickle.dump`, as CATs'
train.py.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax import config_files
from semcorr_jax import workdirs
from semcorr_jax.cli import import_cats
from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import cats
from semcorr_jax.weights import cats_release
from helpers import paths
from helpers import release_files as rf

RESNET101 = (3, 4, 23, 3)
SPAIR = (0, 8, 20, 21, 26, 28, 29, 30)
TEST_IDS = (0, 2, 4)  # configs/cats.py:test


def _config(variant, overrides=None):
  return config_files.load(str(paths.CONFIGS / f'cats.py:{variant}'),
                           overrides)


def _template(config):
  model = cats.CATs.from_config(config)
  x = jnp.zeros((1, 32, 32, 3))
  return jax.eval_shape(model.init, jax.random.key(0), x, x)


@pytest.fixture(scope='module')
def tiny():
  """(template of configs/cats.py:test, checkpoint, args for it)."""
  checkpoint, args = rf.cats_checkpoint(hyperpixel_ids=TEST_IDS)
  return _template(_config('test')), checkpoint, args


def _files(tmp_path, checkpoint, args):
  path = tmp_path / 'model_best.pth'
  rf.write_ours(checkpoint, path)
  rf.write_args(args, tmp_path / 'args.pkl')
  return path, tmp_path / 'args.pkl'


def test_paper_config_names_and_shapes_are_the_release():
  config = _config('paper')
  table = cats_release.release_mapping(_template(config))
  ignored = re.compile(r'x_normal|y_normal|decoder\.norm\.|.*\.fc\.|'
                       r'feature_extraction\.backbone\.layer4\.|'
                       r'.*num_batches_tracked')
  official = {k: s for k, s in rf.cats_keys(RESNET101, 64, SPAIR, 16, 128, 1,
                                            4)
              if not ignored.match(k)}
  assert {k: e.shape for k, e in table.items()} == official
  assert table['decoder.blocks.0.norm4.weight'].path == (
      'params', 'decoder', 'blocks_0', 'norm4', 'scale')
  assert table['proj.7.weight'].shape == (128, 1024)  # hyper_30: layer3
  assert table['decoder.pos_embed_y'].shape == (1, 8, 16, 1, 192)
  # The config's flags are the release's (CATs' train.py defaults).
  cats_release.check_config(config, vars(rf.cats_args()))


def _check_values(out, state):
  params, stats = out['params'], out['batch_stats']
  dec = params['decoder']
  qkv = state['decoder.blocks.0.attn_multiscale.qkv.weight']  # (3E, E)
  np.testing.assert_array_equal(
      dec['blocks_0']['attn_multiscale']['qkv']['kernel'], qkv.T)
  assert dec['blocks_0']['mlp2']['fc1']['kernel'][5, 3] == (
      state['decoder.blocks.0.mlp2.fc1.weight'][3, 5])
  np.testing.assert_array_equal(dec['blocks_0']['norm2']['scale'],
                                state['decoder.blocks.0.norm2.weight'])
  np.testing.assert_array_equal(dec['blocks_0']['norm2']['bias'],
                                state['decoder.blocks.0.norm2.bias'])
  np.testing.assert_array_equal(dec['pos_embed_x'],
                                state['decoder.pos_embed_x'])
  np.testing.assert_array_equal(dec['proj']['kernel'],
                                state['decoder.proj.weight'].T)
  np.testing.assert_array_equal(params['proj_2']['kernel'],
                                state['proj.2.weight'].T)
  np.testing.assert_array_equal(params['proj_0']['bias'],
                                state['proj.0.bias'])
  prefix = 'feature_extraction.backbone.'
  np.testing.assert_array_equal(
      params['backbone']['layer2_0']['conv3']['kernel'],
      state[prefix + 'layer2.0.conv3.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(stats['backbone']['bn1']['var'],
                                state[prefix + 'bn1.running_var'])


def test_official_files_written_by_us_import(tiny, tmp_path):
  template, checkpoint, args = tiny
  path, args_path = _files(tmp_path, checkpoint, args)
  out = cats_release.import_cats_release(path, template, args_path)
  assert jax.tree.structure(out) == jax.tree.structure(template)
  assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(out))
  _check_values(out, checkpoint['state_dict'])
  release = cats_release.read_release(path, args_path)
  assert cats_release.hyperpixel_ids(release.args) == [0, 2, 4]
  cats_release.check_config(_config('test'), release.args)


def test_official_file_written_by_torch_imports(tiny, tmp_path):
  torch = pytest.importorskip('torch')
  template, checkpoint, args = tiny
  path = tmp_path / 'model_best.pth'
  rf.write_torch(checkpoint, path, torch)
  rf.write_args(args, tmp_path / 'args.pkl')
  _check_values(cats_release.import_cats_release(path, template,
                                                 tmp_path / 'args.pkl'),
                checkpoint['state_dict'])


def test_stages_the_model_does_not_build_are_ignored():
  # Taps up to layer3: the release's layer4 (and fc) go unused.
  config = _config('test', {'backbone.features': ('hyper_0', 'hyper_2',
                                                  'hyper_3')})
  template = _template(config)
  assert 'layer4_0' not in template['params']['backbone']
  checkpoint, args = rf.cats_checkpoint(hyperpixel_ids=(0, 2, 3))
  out = cats_release.import_cats_release(checkpoint, template, args)
  _check_values(out, checkpoint['state_dict'])


def _error(call):
  with pytest.raises(SemcorrError) as info:
    call()
  assert '\n' not in str(info.value)
  return str(info.value)


def test_strict_keys_shapes_and_flags(tiny):
  template, checkpoint, args = tiny
  state = dict(checkpoint['state_dict'])
  del state['decoder.blocks.0.norm3.bias']
  state['decoder.head.weight'] = np.zeros(3, np.float32)
  state['proj.1.weight'] = np.zeros((8, 3), np.float32)
  bad = dict(checkpoint, state_dict=state)
  message = _error(lambda: cats_release.import_cats_release(bad, template,
                                                            args))
  assert '1 missing (decoder.blocks.0.norm3.bias)' in message
  assert '1 unexpected (decoder.head.weight)' in message
  assert 'proj.1.weight: got (8, 3), expected (8, 64)' in message
  # The SPair release's flags against the test config: every field named.
  message = _error(lambda: cats_release.check_config(_config('test'),
                                                     vars(rf.cats_args())))
  assert ("config.backbone.features=('hyper_0', 'hyper_8', 'hyper_20', "
          "'hyper_21', 'hyper_26', 'hyper_28', 'hyper_29', 'hyper_30')"
          in message)
  assert 'config.model.feature_size=16 (is 4)' in message
  assert 'config.model.proj_dim=128 (is 8)' in message
  assert 'config.model.depth' not in message  # Both 1.
  args4 = rf.cats_args('[0,2,4]', depth=4, feature_size=4, proj_dim=8)
  assert _error(lambda: cats_release.check_config(_config('test'),
                                                  vars(args4))) == (
      'the CATs release does not match the config; set '
      'config.model.depth=4 (is 1)')
  assert 'no hyperpixel ids' in _error(
      lambda: cats_release.hyperpixel_ids({'hyperpixel': '[]'}))
  assert 'needs its args.pkl' in _error(
      lambda: cats_release.import_cats_release(checkpoint, template))


def test_hyperpixel_string_parsed_as_cats_does():
  # CATs' parse_list: every integer in the string; levels in id order.
  assert cats_release.hyperpixel_ids(
      {'hyperpixel': '[2, 17,21,22,25,26,28]'}) == [2, 17, 21, 22, 25, 26, 28]
  assert cats_release.hyperpixel_ids({'hyperpixel': '(8, 0)'}) == [0, 8]


def test_workdir_is_evaluable(tiny, tmp_path):
  _, checkpoint, args = tiny
  path, _ = _files(tmp_path, checkpoint, args)  # args.pkl beside it
  workdir = import_cats.import_to_workdir(path, _config('test'),
                                          tmp_path / 'run')
  restored = workdirs.restore(workdir)
  assert restored.step == 0
  _check_values(jax.device_get(restored.variables), checkpoint['state_dict'])
  x = jnp.linspace(0, 1, 64 * 64 * 3).reshape(1, 64, 64, 3)
  out = jax.jit(restored.method.predict)(restored.variables, x, x[:, ::-1])
  assert np.all(np.isfinite(np.asarray(out['mapping_ts'])))
