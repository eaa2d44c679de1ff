"""Tests for the torchvision-exact ResNet (semcorr_jax/models/resnet.py).

Always on: parameter counts (eval_shape only), feature layout, frozen
BatchNorm, and numerics of a tiny ResNet against a numpy re-implementation of
torchvision's forward pass. Optional (needs torch + torchvision, marked slow):
random-weight torchvision ResNet-101 vs ours, per stage.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax.models import resnet
from semcorr_jax.weights import convert_torchvision_resnet
from semcorr_jax.weights import export_torchvision_resnet

TINY = dict(stage_sizes=(1, 2, 1, 1), width=8, num_classes=5)
# One tiny model and one input shape for most tests: a single jit compile.
MODEL = resnet.ResNet(**TINY)
APPLY = jax.jit(MODEL.apply)
X_SHAPE = (2, 64, 32, 3)


def _shapes(model, size=(1, 32, 32, 3)):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(size))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('depth,num_classes,expected', [
    (101, 1000, 44_549_160),  # torchvision resnet101().parameters().
    (50, 1000, 25_557_032),  # torchvision resnet50().parameters().
    (101, None, 44_549_160 - 2048 * 1000 - 1000),
])
def test_parameter_count_matches_torchvision(depth, num_classes, expected):
  variables = _shapes(resnet.resnet(depth, num_classes=num_classes))
  assert set(variables) == {'params', 'batch_stats'}
  assert _count(variables['params']) == expected
  assert {x.dtype for x in jax.tree.leaves(variables)} == {np.dtype('float32')}


def test_last_stage_layer3_builds_no_layer4():
  variables = _shapes(resnet.resnet(101, last_stage='layer3'))
  assert not [m for m in variables['params'] if m.startswith('layer4')]
  assert len([m for m in variables['params'] if m.startswith('layer3')]) == 23
  # layer4 of ResNet-101 holds 14,964,736 parameters.
  assert _count(variables['params']) == 44_549_160 - 2_049_000 - 14_964_736
  with pytest.raises(ValueError, match='num_classes'):
    _shapes(resnet.resnet(101, num_classes=10, last_stage='layer3'))


def _tiny_variables(model, seed=0):
  """Random params and BatchNorm statistics, without compiling `model.init`.

  Kernels are He-normal so activations stay O(1); the statistics are far from
  (0, 1) so that using them (and using them correctly) shows in the output.
  """
  rng = np.random.default_rng(seed)

  def randomise(path, x):
    name = path[-1].key
    if name == 'kernel':
      fan_in = np.prod(x.shape[:-1])
      value = rng.normal(0, np.sqrt(2 / fan_in), x.shape)
    elif name == 'mean':
      value = rng.normal(0, 0.2, x.shape)
    elif name in ('var', 'scale'):
      value = rng.uniform(0.5, 1.5, x.shape)
    else:
      value = rng.normal(0, 0.1, x.shape)
    return value.astype(np.float32)

  return jax.tree_util.tree_map_with_path(randomise, _shapes(model))


def _inputs(seed=1, shape=X_SHAPE):
  return jax.random.normal(jax.random.key(seed), shape)


def test_feature_layout():
  out = APPLY(_tiny_variables(MODEL), _inputs())
  channels = resnet.feature_channels(TINY['stage_sizes'], TINY['width'])
  expected = {'stem', 'layer1', 'layer2', 'layer3', 'layer4', 'logits'}
  expected |= {f'hyper_{k}' for k in range(6)}
  assert set(out) == expected
  strides = resnet.feature_strides(TINY['stage_sizes'])
  assert set(strides) == set(channels) == expected - {'logits'}
  batch, height, width, _ = X_SHAPE
  for name, stride in strides.items():
    assert out[name].shape == (batch, height // stride, width // stride,
                               channels[name]), name
    assert out[name].dtype == jnp.float32
  # Hyperpixel 0 is the stem (after the max-pool).
  np.testing.assert_array_equal(out['hyper_0'], out['stem'])
  assert out['logits'].shape == (batch, 5)
  # hyper_k is the block output before its ReLU; stage outputs are after it.
  np.testing.assert_array_equal(out['layer2'], jax.nn.relu(out['hyper_3']))
  assert float(jnp.min(out['hyper_3'])) < 0
  assert out['hyper_2'].shape == out['hyper_3'].shape


def test_hyperpixel_ids_follow_hpf_numbering():
  layers = resnet.HYPERPIXEL_LAYERS
  assert len(layers) == 34
  assert layers[0] == ('stem', 0)
  assert [layers[k] for k in (1, 3, 4, 7, 8, 30, 31, 33)] == [
      ('layer1', 0), ('layer1', 2), ('layer2', 0), ('layer2', 3),
      ('layer3', 0), ('layer3', 22), ('layer4', 0), ('layer4', 2)]
  assert resnet.required_last_stage([0, 8, 20, 21, 26, 28, 29, 30]) == 'layer3'
  assert resnet.required_last_stage((2, 17, 21, 22, 25, 26, 28)) == 'layer3'
  assert resnet.required_last_stage([0]) == 'layer1'
  assert resnet.required_last_stage([31]) == 'layer4'
  channels = resnet.feature_channels()
  assert [channels[f'hyper_{k}'] for k in (0, 3, 7, 30, 33)] == [
      64, 256, 512, 1024, 2048]
  strides = resnet.feature_strides()
  assert [strides[f'hyper_{k}'] for k in (0, 3, 4, 7, 8, 30, 31, 33)] == [
      4, 4, 8, 8, 16, 16, 32, 32]
  assert 'hyper_34' not in strides
  model = resnet.ResNet(stage_sizes=(1, 2, 1, 1), width=8, last_stage='layer2')
  out = jax.eval_shape(model.apply, _shapes(model), _inputs())
  assert set(out) == {'stem', 'layer1', 'layer2', 'hyper_0', 'hyper_1',
                      'hyper_2', 'hyper_3'}


def test_normalize_imagenet():
  images = np.random.default_rng(0).uniform(size=(2, 4, 5, 3))
  out = resnet.normalize_imagenet(images)
  expected = (images - np.array([0.485, 0.456, 0.406])) / np.array(
      [0.229, 0.224, 0.225])
  np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
  assert resnet.normalize_imagenet(np.zeros((1, 1, 1, 3), np.uint8)).dtype == (
      jnp.float32)


def test_frozen_batch_norm_uses_running_statistics():
  variables = _tiny_variables(MODEL)
  x = _inputs()
  # Running statistics make every example independent of the rest of the
  # batch (batch statistics would not).
  other = x.at[1].set(10 * x[1] + 3)
  np.testing.assert_allclose(APPLY(variables, x)['layer4'][0],
                             APPLY(variables, other)['layer4'][0],
                             rtol=1e-6, atol=1e-6)
  # Even when the caller allows updates, the statistics never change.
  small = resnet.ResNet(stage_sizes=(1,), width=4, last_stage='layer1')
  small_variables = _tiny_variables(small)
  _, updates = jax.jit(lambda v, x: small.apply(v, x, mutable=['batch_stats']))(
      small_variables, x)
  jax.tree.map(np.testing.assert_array_equal, updates['batch_stats'],
               small_variables['batch_stats'])


def test_compute_dtype_bfloat16():
  config = dict(stage_sizes=(1,), width=4, last_stage='layer1')
  model = resnet.ResNet(**config, dtype=jnp.bfloat16)
  shapes = _shapes(model)
  assert {x.dtype for x in jax.tree.leaves(shapes)} == {np.dtype('float32')}
  variables = _tiny_variables(model)
  out = jax.jit(model.apply)(variables, _inputs())
  assert out['layer1'].dtype == jnp.bfloat16
  ref = jax.jit(resnet.ResNet(**config).apply)(variables, _inputs())
  scale = float(jnp.max(jnp.abs(ref['layer1'])))
  err = float(jnp.max(jnp.abs(out['layer1'].astype(jnp.float32)
                              - ref['layer1'])))
  assert err < 0.05 * scale


# --- A numpy re-implementation of torchvision's forward pass (NCHW, OIHW). ---


def _np_conv(x, w, stride, pad):
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  windows = np.lib.stride_tricks.sliding_window_view(
      x, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
  return np.einsum('ncyxhw,ochw->noyx', windows, w)


def _np_max_pool(x):  # 3x3, stride 2, padding 1 (padded with -inf).
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))
  return windows[:, :, ::2, ::2].max(axis=(-2, -1))


def _np_resnet(sd, stage_sizes, x):
  """Torchvision ResNet forward; returns NHWC {stem, hyper_k, layerN}.

  hyper_0 is the stem; hyper_k (k >= 1) the k-th bottleneck before its ReLU.
  """
  def bn(name, y):
    c = (slice(None), None, None)
    scale = sd[f'{name}.weight'] / np.sqrt(sd[f'{name}.running_var'] + 1e-5)
    return (y - sd[f'{name}.running_mean'][c]) * scale[c] + sd[
        f'{name}.bias'][c]

  relu = lambda y: np.maximum(y, 0)
  feats = {}
  y = relu(bn('bn1', _np_conv(x, sd['conv1.weight'], 2, 3)))
  y = feats['stem'] = feats['hyper_0'] = _np_max_pool(y)
  k = 0
  for i, size in enumerate(stage_sizes):
    for j in range(size):
      p, s, k = f'layer{i + 1}.{j}', 2 if i and not j else 1, k + 1
      out = relu(bn(f'{p}.bn1', _np_conv(y, sd[f'{p}.conv1.weight'], 1, 0)))
      out = relu(bn(f'{p}.bn2', _np_conv(out, sd[f'{p}.conv2.weight'], s, 1)))
      out = bn(f'{p}.bn3', _np_conv(out, sd[f'{p}.conv3.weight'], 1, 0))
      if j == 0:
        y = bn(f'{p}.downsample.1',
               _np_conv(y, sd[f'{p}.downsample.0.weight'], s, 0))
      feats[f'hyper_{k}'] = out + y
      y = relu(out + y)
    feats[f'layer{i + 1}'] = y
  feats = {n: f.transpose(0, 2, 3, 1) for n, f in feats.items()}
  feats['logits'] = y.mean(axis=(2, 3)) @ sd['fc.weight'].T + sd['fc.bias']
  return feats


@pytest.mark.parametrize('size', [X_SHAPE[1:3], (30, 34)])
def test_matches_numpy_torchvision_reference(size):
  """Even sizes are where Flax 'SAME' would pad differently from torchvision."""
  sd = export_torchvision_resnet(_tiny_variables(MODEL, seed=3))
  sd = {k: v.astype(np.float64) for k, v in sd.items()}
  variables = convert_torchvision_resnet(sd, stage_sizes=TINY['stage_sizes'])
  x = np.random.default_rng(0).normal(size=(2, 3) + tuple(size))
  expected = _np_resnet(sd, TINY['stage_sizes'], x)
  out = APPLY(variables, jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32))
  assert set(out) == set(expected)
  for name, ref in expected.items():
    scale = np.abs(ref).max()
    np.testing.assert_allclose(out[name], ref, rtol=0, atol=1e-5 * scale,
                               err_msg=name)


def test_symmetric_padding_is_not_flax_same():
  """Guards the test above: 'SAME' padding would change the stem output."""
  x = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
  w = jax.random.normal(jax.random.key(1), (7, 7, 3, 4))
  conv = lambda pad: jax.lax.conv_general_dilated(
      x, w, (2, 2), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  same, explicit = conv('SAME'), conv(((3, 3), (3, 3)))
  assert same.shape == explicit.shape
  assert float(jnp.max(jnp.abs(same - explicit))) > 1e-2


# --- Optional: parity with real torchvision. ---


def _torch_features(torch, model, x):
  """Stem, every bottleneck before its last ReLU, and stage outputs (NHWC)."""
  feats = {}
  with torch.no_grad():
    y = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    feats['stem'] = y
    k = 0
    for stage in ('layer1', 'layer2', 'layer3', 'layer4'):
      for block in getattr(model, stage):
        k += 1
        out = block.relu(block.bn1(block.conv1(y)))
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
        shortcut = y if block.downsample is None else block.downsample(y)
        pre = out + shortcut
        post = block(y)  # torchvision's own forward, for the stage outputs.
        feats[f'hyper_{k}'] = pre
        y = post
      feats[stage] = y
    feats['logits'] = model.fc(torch.flatten(model.avgpool(y), 1))
  return {n: (f.numpy().transpose(0, 2, 3, 1) if f.ndim == 4 else f.numpy())
          for n, f in feats.items()}


@pytest.mark.slow
def test_torchvision_resnet101_parity(monkeypatch):
  if 'triton' not in sys.modules:
    # torchvision imports triton when it is installed; triton loaded after
    # TensorFlow (conftest) segfaults (clashing bundled LLVMs). This test runs
    # on CPU and needs no triton.
    monkeypatch.setitem(sys.modules, 'triton', None)
  torch = pytest.importorskip('torch')
  torchvision = pytest.importorskip('torchvision')
  torch.manual_seed(0)
  model = torchvision.models.resnet101(weights=None)
  # Realistic, randomised BN statistics: one train-mode pass with momentum 1
  # sets them to batch statistics (keeps activations O(1) in 33 blocks), then
  # perturb them and the affine parameters.
  calib = torch.randn(2, 3, 160, 160)
  for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      m.momentum = 1.0
  with torch.no_grad():
    model.train()(calib)
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_var.mul_(torch.rand(m.num_features) + 0.5)
        m.running_mean.add_(0.1 * torch.randn(m.num_features))
        m.weight.copy_(torch.rand(m.num_features) + 0.5)
        m.bias.copy_(0.1 * torch.randn(m.num_features))
  model.eval()

  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  variables = convert_torchvision_resnet(sd)
  images = np.random.default_rng(0).uniform(size=(1, 224, 160, 3))
  x = np.asarray(resnet.normalize_imagenet(images.astype(np.float32)))
  expected = _torch_features(torch, model,
                             torch.from_numpy(x.transpose(0, 3, 1, 2).copy()))
  out = jax.jit(resnet.resnet(101, num_classes=1000).apply)(variables, x)

  for name in ('stem', 'hyper_1', 'layer1', 'hyper_7', 'layer2', 'hyper_8',
               'hyper_20', 'hyper_30', 'layer3', 'hyper_33', 'layer4',
               'logits'):
    ref = expected[name]
    err = np.abs(np.asarray(out[name]) - ref).max()
    scale = np.abs(ref).max()
    # float32 through 101 layers: observed max |err| / max |ref| ~ 1e-6.
    assert err <= 1e-4 * scale, (name, err, scale)
