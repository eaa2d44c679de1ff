"""Tests for the N-tap backbones (semcorr_jax/models/backbones.py).

Strides and channels from `tap_info` (no model run) against the shapes the
built module returns, on tiny ResNets and on Lite0 (shapes only); the order
of the returned taps; the error for unknown taps; and that the two-tap
(SFNet) backbone still is the plain network with the same variables.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import backbones
from semcorr_jax.models import resnet
from semcorr_jax.weights import export_torchvision_resnet
from semcorr_jax.weights import save_npz

TINY = dict(stage_sizes=(1, 2, 1, 1), width=4)  # Hyperpixels 0..5.
LITE0 = 'efficientnet_lite0'


def _spec(features, **kwargs):
  return backbones.BackboneSpec(features=tuple(features), **kwargs)


def _init_with_output(spec, shape):
  module = backbones.build_backbone(spec)
  return jax.eval_shape(lambda: module.init_with_output(
      jax.random.key(0), jnp.zeros(shape)))


def _assert_shapes_match_tap_info(spec, shape):
  info = backbones.tap_info(spec)
  assert list(info) == list(spec.features)
  out, variables = _init_with_output(spec, shape)
  assert isinstance(out, tuple) and len(out) == len(spec.features)
  b, h, w, _ = shape
  for name, feature in zip(spec.features, out):
    stride, channels = info[name]
    # Every stride-2 layer rounds up (torchvision padding / TF 'SAME').
    assert feature.shape == (b, math.ceil(h / stride), math.ceil(w / stride),
                             channels), name
  return variables


@pytest.mark.parametrize('features', [
    ('hyper_0', 'layer1', 'hyper_3', 'layer3', 'hyper_5'),
    ('hyper_5', 'stem', 'hyper_1', 'layer2', 'hyper_4', 'layer4', 'hyper_0'),
])
def test_resnet_taps_have_their_stride_and_channels(features):
  spec = _spec(features, **TINY)
  assert spec.strides == tuple(
      {'stem': 4, 'layer1': 4, 'layer2': 8, 'layer3': 16, 'layer4': 32,
       'hyper_0': 4, 'hyper_1': 4, 'hyper_3': 8, 'hyper_4': 16,
       'hyper_5': 32}[f] for f in features)
  _assert_shapes_match_tap_info(spec, (2, 37, 50, 3))


def test_resnet101_tap_info_without_running():
  info = backbones.tap_info({'name': 'resnet', 'depth': 101,
                             'features': ('hyper_0', 'hyper_8', 'hyper_30',
                                          'hyper_33', 'layer3')})
  assert info == {'hyper_0': (4, 64), 'hyper_8': (16, 1024),
                  'hyper_30': (16, 1024), 'hyper_33': (32, 2048),
                  'layer3': (16, 1024)}
  assert info['hyper_8'].stride == 16 and info['hyper_8'].channels == 1024
  taps = backbones.available_taps({'name': 'resnet', 'depth': 101})
  assert [n for n in taps if n.startswith('hyper_')] == [
      f'hyper_{k}' for k in range(34)]
  assert len(backbones.available_taps({'name': 'resnet', 'depth': 50})) == (
      5 + 17)
  # CATs' SPair hyperpixels need layer3 only: layer4 is not built.
  cats = _spec([f'hyper_{k}' for k in (0, 8, 20, 21, 26, 28, 29, 30)])
  assert cats.last_stage == 'layer3'
  assert _spec(['hyper_0']).last_stage == 'layer1'
  assert _spec(['layer2', 'hyper_31']).last_stage == 'layer4'


@pytest.mark.parametrize('features', [
    ('stem', 'stage2_block0', 'stage3', 'stage4_block2', 'stage6_block0'),
    ('stage7_block0', 'stage1_block0', 'head', 'stage5_block1'),
])
def test_lite0_taps_have_their_stride_and_channels(features):
  spec = _spec(features, name=LITE0)
  variables = _assert_shapes_match_tap_info(spec, (2, 45, 61, 3))
  built = variables['params']
  # Only the stages up to the deepest tap (and the head when tapped).
  last = 15 if 'stage7_block0' in features else 14
  assert f'blocks_{last}' in built and f'blocks_{last + 1}' not in built
  assert ('conv_head' in built) == ('head' in features)


def test_lite0_tap_info_and_block_names():
  info = backbones.tap_info({'name': LITE0, 'features': (
      'stage3_block0', 'stage3_block1', 'stage4_block0', 'stage6_block3',
      'head')})
  assert list(info.values()) == [(8, 40), (8, 40), (16, 80), (32, 192),
                                 (32, 1280)]
  taps = backbones.available_taps({'name': LITE0})
  assert [n for n in taps if n.startswith('stage3_')] == ['stage3_block0',
                                                           'stage3_block1']
  assert sum('_block' in n for n in taps) == 16
  assert _spec(['stage3_block0'], name=LITE0).last_stage == 'stage3'
  assert _spec(['stem'], name=LITE0).last_stage == 'stage1'


def _tiny_variables(module, image):
  """Random variables with BatchNorm statistics away from (0, 1)."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), image)
  leaves, tree = jax.tree.flatten(shapes)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  leaves = [jax.random.uniform(k, s.shape, s.dtype, 0.5, 1.5)
            if s.ndim == 1 else 0.3 * jax.random.normal(k, s.shape, s.dtype)
            for k, s in zip(keys, leaves)]
  return jax.tree.unflatten(tree, leaves)


def test_taps_come_in_the_named_order_and_equal_the_plain_network():
  image = jax.random.uniform(jax.random.key(2), (1, 32, 32, 3))
  names = ('layer2', 'hyper_0', 'hyper_5', 'hyper_2', 'layer1')
  module = backbones.build_backbone(_spec(names, **TINY))
  variables = _tiny_variables(module, image)
  tapped = jax.jit(module.apply)(variables, image)
  plain = jax.jit(resnet.ResNet(**TINY).apply)(
      variables, resnet.normalize_imagenet(image))
  assert len(tapped) == len(names)
  for name, feature in zip(names, tapped):
    # Separate compilations may fuse differently: float32 rounding only.
    np.testing.assert_allclose(feature, plain[name], rtol=1e-5, atol=1e-5,
                               err_msg=name)
  # layer2 = relu(hyper_3), not hyper_2 (same shape): told apart above.
  assert float(jnp.max(jnp.abs(plain['layer2'] - plain['hyper_2']))) > 0.1
  # hyper_k is before the block's ReLU, the stage output after it.
  assert float(jnp.min(tapped[2])) < 0 <= float(jnp.min(plain['layer4']))


def test_two_tap_backbone_keeps_the_resnet_tree_and_outputs():
  image = jax.random.uniform(jax.random.key(3), (2, 32, 32, 3))
  spec = backbones.BackboneSpec(stage_sizes=(1, 1, 1, 1), width=4)
  assert spec.features == ('layer3', 'layer4')
  assert spec.check_levels(2, 'SFNet') is spec
  module = backbones.build_backbone(spec)
  variables = _tiny_variables(module, image)
  plain = resnet.ResNet(stage_sizes=(1, 1, 1, 1), width=4)
  assert jax.tree.structure(variables) == jax.tree.structure(
      jax.eval_shape(plain.init, jax.random.key(0), image))
  f3, f4 = module.apply(variables, image)
  out = plain.apply(variables, resnet.normalize_imagenet(image))
  np.testing.assert_array_equal(f3, out['layer3'])
  np.testing.assert_array_equal(f4, out['layer4'])


def test_unknown_taps_are_one_error_listing_the_valid_ones():
  with pytest.raises(SemcorrError) as info:
    backbones.tap_info({'name': 'resnet', 'features': ('layer3', 'hyper_34')})
  message = str(info.value)
  assert "'hyper_34' is not a feature of resnet101" in message
  assert 'stem, layer1, layer2, layer3, layer4, hyper_0..hyper_33' in message
  assert '\n' not in message
  with pytest.raises(SemcorrError, match=r"'hyper_6', 'conv5' are not "
                     r'features of resnet\(1,2,1,1\)/w4; .*hyper_0..hyper_5'):
    _spec(['hyper_6', 'layer1', 'conv5'], **TINY)
  with pytest.raises(SemcorrError, match=r'head, stage1_block0, '
                     r'stage2_block0..stage2_block1, .*stage7_block0$'):
    _spec(['stage3_block2'], name=LITE0)
  with pytest.raises(SemcorrError, match='twice'):
    _spec(['layer3', 'layer3'])
  with pytest.raises(SemcorrError, match='names no feature'):
    _spec([])


def test_features_from_config():
  assert backbones.BackboneSpec.from_config(
      {'features': 'layer3'}).features == ('layer3',)
  assert backbones.BackboneSpec.from_config(
      {'name': LITE0, 'features': None}).features == ('stage3', 'stage5')
  spec = backbones.BackboneSpec.from_config(
      {'features': ['hyper_0', 'hyper_8', 'layer4']})
  assert spec.describe() == 'resnet101 hyper_0+hyper_8+layer4'
  assert spec.channels == (64, 1024, 2048)
  with pytest.raises(SemcorrError, match='reads 2 features'):
    spec.check_levels(2, 'SFNet')


def test_pretrained_resnet_loads_for_hyperpixel_taps(tmp_path):
  image = jnp.zeros((1, 32, 32, 3))
  full = resnet.ResNet(**TINY)
  weights = jax.tree.map(np.asarray, _tiny_variables(full, image))
  path = str(tmp_path / 'tiny.npz')
  save_npz(export_torchvision_resnet(weights), path)
  config = dict(TINY, name='resnet', weights=path,
                features=('hyper_0', 'hyper_2', 'hyper_4'))
  spec = backbones.BackboneSpec.from_config(config)
  assert spec.last_stage == 'layer3'
  template = jax.eval_shape(backbones.build_backbone(spec, name=None).init,
                            jax.random.key(0), image)
  variables = {c: {'backbone': jax.tree.map(
      lambda s: np.zeros(s.shape, s.dtype), template[c])} for c in template}
  loaded = backbones.load_backbone_pretrained(variables, config)
  assert 'layer4_0' not in loaded['params']['backbone']
  for c in ('params', 'batch_stats'):
    jax.tree.map(np.testing.assert_array_equal, loaded[c]['backbone'],
                 {k: v for k, v in weights[c].items() if k in template[c]})
