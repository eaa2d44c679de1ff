"""Tests for semcorr_jax/weights: state-dict readers and the ResNet converter.

The torchvision key names come from tests/fixtures/torchvision_resnet101_keys
.json (generated once with tests/fixtures/make_resnet_fixtures.py), so no test
here needs torch.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax.cli import convert_weights
from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import resnet
from semcorr_jax.weights import convert_torchvision_resnet
from semcorr_jax.weights import export_torchvision_resnet
from semcorr_jax.weights import load_backbone_weights
from semcorr_jax.weights import load_into
from semcorr_jax.weights import read_state_dict
from semcorr_jax.weights import save_npz
from semcorr_jax.weights import state_dict as state_dict_lib
from semcorr_jax.weights import torch_key
from helpers import paths

FIXTURE = paths.FIXTURES / (
    'torchvision_resnet101_keys.json')
TINY = dict(stage_sizes=(1, 2, 1, 1), width=8)


def _template(model):
  return jax.eval_shape(model.init, jax.random.key(0),
                        jnp.zeros((1, 32, 32, 3)))


@pytest.fixture(scope='module')
def resnet101_state_dict():
  """A random state dict with torchvision ResNet-101's exact keys and shapes."""
  keys = json.loads(FIXTURE.read_text())['keys']
  rng = np.random.default_rng(0)
  state = {}
  for key, shape in keys:
    if key.endswith('num_batches_tracked'):
      state[key] = np.zeros(shape, np.int64)
    else:
      state[key] = rng.standard_normal(shape, np.float32)
  return state


@pytest.fixture(scope='module')
def tiny_state_dict():
  """Torchvision-layout weights of the TINY ResNet, with a 10-class head."""
  template = _template(resnet.ResNet(**TINY, num_classes=10))
  rng = np.random.default_rng(1)
  variables = jax.tree.map(
      lambda x: rng.standard_normal(x.shape, np.float32), template)
  return export_torchvision_resnet(variables)


def test_fixture_is_torchvision_resnet101():
  keys = json.loads(FIXTURE.read_text())['keys']
  assert len(keys) == 626
  params = sum(np.prod(s) for k, s in keys
               if not k.endswith(('running_mean', 'running_var',
                                  'num_batches_tracked')))
  assert params == 44_549_160


def test_resnet101_fixture_converts_to_exact_tree(resnet101_state_dict):
  sd = resnet101_state_dict
  variables = convert_torchvision_resnet(sd)
  expected = _template(resnet.resnet(101, num_classes=1000))
  assert (jax.tree.structure(variables) == jax.tree.structure(expected))
  jax.tree.map(lambda a, b: (a.shape, a.dtype) == (b.shape, b.dtype) or
               pytest.fail(f'{a.shape} != {b.shape}'), variables, expected)
  # Every key was consumed: same leaf count as non-counter keys.
  assert len(jax.tree.leaves(variables)) == len(
      [k for k in sd if not k.endswith('num_batches_tracked')])
  # Layouts: OIHW -> HWIO, Linear (out, in) -> (in, out), BN renames.
  params, stats = variables['params'], variables['batch_stats']
  np.testing.assert_array_equal(params['conv1']['kernel'],
                                sd['conv1.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      params['layer3_22']['conv2']['kernel'][1, 2, 5, 7],
      sd['layer3.22.conv2.weight'][7, 5, 1, 2])
  np.testing.assert_array_equal(
      params['layer2_0']['downsample_conv']['kernel'][0, 0],
      sd['layer2.0.downsample.0.weight'][:, :, 0, 0].T)
  np.testing.assert_array_equal(params['fc']['kernel'], sd['fc.weight'].T)
  np.testing.assert_array_equal(params['fc']['bias'], sd['fc.bias'])
  np.testing.assert_array_equal(params['layer4_2']['bn3']['scale'],
                                sd['layer4.2.bn3.weight'])
  np.testing.assert_array_equal(stats['layer1_0']['downsample_bn']['var'],
                                sd['layer1.0.downsample.1.running_var'])
  np.testing.assert_array_equal(stats['bn1']['mean'], sd['bn1.running_mean'])


def test_resnet101_layer3_backbone_leaves_layer4_and_fc_unused(
    resnet101_state_dict, tmp_path):
  path = tmp_path / 'resnet101.npz'
  save_npz(resnet101_state_dict, path)
  template = _template(resnet.resnet(101, last_stage='layer3'))
  variables, unused = load_backbone_weights(template, path,
                                            resnet.STAGE_SIZES[101], 'layer3')
  assert jax.tree.structure(variables) == jax.tree.structure(template)
  assert unused == sorted(k for k in resnet101_state_dict
                          if k.startswith(('layer4.', 'fc.'))
                          and not k.endswith('num_batches_tracked'))
  assert len(unused) == 3 * (3 + 3 * 4) + (1 + 4) + 2  # blocks, downsample, fc


def test_torch_key_names():
  assert torch_key(('params', 'conv1', 'kernel')) == 'conv1.weight'
  assert torch_key(('batch_stats', 'bn1', 'var')) == 'bn1.running_var'
  assert torch_key(('params', 'layer3_17', 'bn2', 'scale')) == (
      'layer3.17.bn2.weight')
  assert torch_key(('params', 'layer2_0', 'downsample_conv', 'kernel')) == (
      'layer2.0.downsample.0.weight')
  assert torch_key(('batch_stats', 'layer2_0', 'downsample_bn', 'mean')) == (
      'layer2.0.downsample.1.running_mean')
  assert torch_key(('params', 'fc', 'bias')) == 'fc.bias'
  assert torch_key(('params', 'conv1', 'embedding')) is None


def test_export_then_load_round_trips(tiny_state_dict):
  template = _template(resnet.ResNet(**TINY, num_classes=10))
  variables, unused = load_into(template, tiny_state_dict)
  assert unused == []
  again = export_torchvision_resnet(variables)
  assert again.keys() == tiny_state_dict.keys()
  for k, v in tiny_state_dict.items():
    np.testing.assert_array_equal(again[k], v)


def _error(template, sd, **kwargs):
  with pytest.raises(SemcorrError) as info:
    load_into(template, sd, **kwargs)
  message = str(info.value)
  assert '\n' not in message
  return message


def test_strict_about_missing_unexpected_and_shapes(tiny_state_dict):
  template = _template(resnet.ResNet(**TINY, num_classes=10))
  sd = dict(tiny_state_dict)
  del sd['layer2.1.bn2.running_var']
  assert 'missing (layer2.1.bn2.running_var)' in _error(template, sd)

  sd = dict(tiny_state_dict, **{'layer2.2.conv1.weight': np.zeros(1)})
  assert 'unexpected (layer2.2.conv1.weight)' in _error(template, sd)

  sd = dict(tiny_state_dict)
  sd['layer3.0.downsample.0.weight'] = np.zeros((64, 32, 1, 1), np.float32)
  assert ('layer3.0.downsample.0.weight: got (64, 32, 1, 1), expected '
          '(128, 64, 1, 1)') in _error(template, sd)

  # All problems at once: counts, and the first few names of each kind.
  sd = {k: v for k, v in tiny_state_dict.items() if not k.startswith('layer4')}
  sd.update({f'extra.{i}': np.zeros(1) for i in range(7)})
  sd['fc.weight'] = np.zeros((3, 256))
  message = _error(template, sd)
  assert '20 missing (layer4.0.' in message
  assert '7 unexpected (extra.0' in message and '(2 more)' in message
  assert '1 shape mismatches (fc.weight: got (3, 256), expected (10, 256))' in (
      message)


def test_convert_infers_width_and_drops_unbuilt_layers(tiny_state_dict):
  variables = convert_torchvision_resnet(tiny_state_dict, TINY['stage_sizes'],
                                         include_fc=False, last_stage='layer2')
  assert sorted(variables['params']) == [
      'bn1', 'conv1', 'layer1_0', 'layer2_0', 'layer2_1']
  with pytest.raises(SemcorrError, match='missing'):
    convert_torchvision_resnet(tiny_state_dict, stage_sizes=(1, 3, 1, 1))
  with pytest.raises(SemcorrError, match=r'unexpected \(layer2\.1\.'):
    convert_torchvision_resnet(tiny_state_dict, stage_sizes=(1, 1, 1, 1))


def test_load_into_subtree_with_prefix(tiny_state_dict):
  backbone = _template(resnet.ResNet(**TINY, last_stage='layer3'))
  head = {'kernel': np.ones((2, 2), np.float32)}
  variables = {'params': {'backbone': backbone['params'], 'head': head},
               'batch_stats': {'backbone': backbone['batch_stats']}}
  sd = {'module.' + k: v for k, v in tiny_state_dict.items()}
  sd['optimizer_step'] = np.zeros(())
  loaded, unused = load_into(variables, sd, subtree=('backbone',),
                             prefix='module.',
                             allow_unused=[r'layer4\.', r'fc\.'])
  assert loaded['params']['head'] is head
  np.testing.assert_array_equal(
      loaded['batch_stats']['backbone']['layer3_0']['bn1']['mean'],
      tiny_state_dict['layer3.0.bn1.running_mean'])
  assert 'optimizer_step' in unused and 'module.fc.bias' in unused
  assert 'module.layer4.0.conv3.weight' in unused
  with pytest.raises(SemcorrError,
                     match='backbone/bn1/bias is not a torchvision ResNet'):
    load_into(variables, sd, prefix='module.')


def test_load_backbone_weights_is_strict_outside_unbuilt_layers(
    tiny_state_dict, tmp_path):
  template = _template(resnet.ResNet(**TINY, last_stage='layer3'))
  path = tmp_path / 'tiny.npz'
  sd = dict(tiny_state_dict, **{'layer3.1.conv1.weight': np.zeros(1)})
  save_npz(sd, path)
  with pytest.raises(SemcorrError, match=r'tiny\.npz: .*unexpected '
                     r'\(layer3\.1\.conv1\.weight\)'):
    load_backbone_weights(template, path, TINY['stage_sizes'], 'layer3')
  with pytest.raises(ValueError, match='last_stage'):
    load_backbone_weights(template, path, TINY['stage_sizes'], 'layer4')
  with pytest.raises(SemcorrError, match='no such weights file'):
    load_backbone_weights(template, tmp_path / 'nope.npz')


# --- Readers. ---


def test_npz_and_safetensors_round_trip(tiny_state_dict, tmp_path):
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  save_npz(tiny_state_dict, tmp_path / 'w.npz')
  save_file(tiny_state_dict, str(tmp_path / 'w.safetensors'))
  for name in ('w.npz', 'w.safetensors'):
    read = read_state_dict(tmp_path / name)
    assert read.keys() == tiny_state_dict.keys()
    for k, v in tiny_state_dict.items():
      np.testing.assert_array_equal(read[k], v)
      assert read[k].dtype == v.dtype


@pytest.mark.parametrize('name,content,match', [
    ('missing.npz', None, 'no such weights file'),
    ('corrupt.npz', b'not a zip file', 'cannot read .npz weights'),
    ('corrupt.safetensors', b'\x08\x00\x00\x00\x00\x00\x00\x00{bad json',
     'cannot read .safetensors weights'),
    ('weights.h5', b'', "unknown weights format '.h5'"),
])
def test_read_errors_are_one_line(tmp_path, name, content, match):
  path = tmp_path / name
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(SemcorrError, match=match) as info:
    read_state_dict(path)
  assert '\n' not in str(info.value) and name in str(info.value)


def test_corrupt_pth_is_one_error_without_torch(tmp_path, monkeypatch):
  # .pth files are read by our restricted unpickler, never by torch.
  monkeypatch.setitem(__import__('sys').modules, 'torch', None)
  path = tmp_path / 'resnet.pth'
  path.write_bytes(b'whatever')
  with pytest.raises(SemcorrError, match='not a readable torch.save file'):
    read_state_dict(path)


def test_pth_with_torch(tiny_state_dict, tmp_path):
  torch = pytest.importorskip('torch')
  path = tmp_path / 'w.pth'
  torch.save({'state_dict': {k: torch.from_numpy(v)
                             for k, v in tiny_state_dict.items()},
              'epoch': 3}, path)
  read = read_state_dict(path)
  assert read.keys() == tiny_state_dict.keys()
  np.testing.assert_array_equal(read['conv1.weight'],
                                tiny_state_dict['conv1.weight'])


def test_cli_converts_to_npz(tiny_state_dict, tmp_path, capsys):
  save_npz(tiny_state_dict, tmp_path / 'in.npz')
  assert convert_weights.main([str(tmp_path / 'in.npz'),
                               str(tmp_path / 'out.npz')]) == 0
  assert read_state_dict(tmp_path / 'out.npz').keys() == tiny_state_dict.keys()
  assert convert_weights.main([str(tmp_path / 'nope.pth'), 'x.npz']) == 1
  assert 'no such weights file' in capsys.readouterr().err
  assert convert_weights.main([]) == 1


def test_save_safetensors_is_read_by_safetensors_itself(tmp_path, capsys):
  state = {'conv.weight': np.arange(24, dtype=np.float32).reshape(2, 3, 4),
           'bn.num_batches_tracked': np.array(7, np.int64),
           # A strided view: written contiguous, same values.
           'fc.bias': np.arange(10, dtype=np.float16)[::2]}
  state_dict_lib.save_safetensors(state, tmp_path / 'w', {'source': 'test'})
  path = tmp_path / 'w.safetensors'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['w.safetensors']
  # The format by hand: 8-byte little-endian header length, JSON header.
  raw = path.read_bytes()
  header = json.loads(raw[8:8 + int.from_bytes(raw[:8], 'little')])
  assert header['__metadata__'] == {'source': 'test'}
  assert header['conv.weight']['dtype'] == 'F32'
  assert header['conv.weight']['shape'] == [2, 3, 4]
  assert header['fc.bias'] == dict(header['fc.bias'], dtype='F16', shape=[5])
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  for read in (load_file(str(path)), read_state_dict(path)):
    assert read.keys() == state.keys()
    for k, v in state.items():
      np.testing.assert_array_equal(read[k], v)
      assert read[k].dtype == v.dtype
  with pytest.raises(SemcorrError, match="entry 'nested' is a dict"):
    state_dict_lib.save_safetensors({'nested': {'a': np.ones(2)}},
                                    tmp_path / 'bad.safetensors')
  assert not (tmp_path / 'bad.safetensors').exists()
  # The converter picks the format by suffix.
  assert convert_weights.main([str(path), str(tmp_path / 'c.safetensors')]) == 0
  assert load_file(str(tmp_path / 'c.safetensors')).keys() == state.keys()
  assert 'wrote 3 arrays' in capsys.readouterr().out
