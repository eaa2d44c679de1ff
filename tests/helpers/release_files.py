"""Random NCNet / CATs release files with the official names and layout.

The key names and shapes are written here from the references' module
structure (not from our importers' tables), so that tests comparing the two
mean something:

* torchvision's bottleneck ResNet (`resnet_keys`): conv1, bn1, then per
  stage s (planes p = width * 2^(s-1)) and block b: conv1 (p, in, 1, 1),
  bn1, conv2 (p, p, 3, 3), bn2, conv3 (4p, p, 1, 1), bn3, and for b = 0
  downsample.0 (4p, in, 1, 1) and downsample.1; fc (classes, 4p) last.
  Checked against tests/fixtures/torchvision_resnet101_keys.json.
* NCNet (ignacio-rocco/ncnet lib/model.py, lib/conv4d.py, train.py):
  `FeatureExtraction.model` = Sequential(conv1, bn1, relu, maxpool, layer1,
  layer2, layer3); `NeighConsensus.conv` = Sequential(Conv4d, ReLU, ...),
  Conv4d weights pre-permuted to (k1, out, in, k2, k3, k4). Checkpoint
  {'epoch', 'args' (Namespace), 'state_dict', 'best_test_loss' (numpy
  float64), 'optimizer' (Adam), 'train_loss', 'test_loss' (numpy arrays)}.
* CATs (models/cats.py, train.py, utils_training/utils.py): x_normal,
  y_normal, feature_extraction.backbone.<whole torchvision ResNet>,
  proj.<l> Linear(C_id, proj_dim), decoder.{pos_embed_x, pos_embed_y,
  blocks.<d>.{attn, attn_multiscale}.{qkv, proj}, norm1..4, {mlp, mlp2}.
  {fc1, fc2}, proj, norm}. Checkpoint {'epoch', 'state_dict', 'optimizer'
  (AdamW, two groups), 'scheduler' (MultiStepLR, milestones a Counter),
  'best_loss'}; args.pkl a pickled Namespace.

`write_ours` writes a container with `save_torch_file` (no torch);
`write_torch` with `torch.save` (the test skips without torch).
"""

from __future__ import annotations

import argparse
import collections
import pickle

import numpy as np

from semcorr_jax.weights import pickle_records
from semcorr_jax.weights.state_dict import save_torch_file

EXPANSION = 4


class NumpyValue:
  """A numpy scalar or array that a checkpoint holds as itself, not as a
  tensor (e.g. NCNet's `best_test_loss`, `train_loss`)."""

  def __init__(self, value):
    self.value = value


def resnet_keys(stage_sizes, width=64, classes=1000, stages=4, fc=True):
  """[(torchvision key, shape)] of a bottleneck ResNet, in state-dict order.

  `stages`: how many of layer1..layer4 to list; `fc`: list the classifier.
  """
  keys = [('conv1.weight', (width, 3, 7, 7))] + _bn('bn1', width)
  inplanes = width
  for s, blocks in enumerate(stage_sizes[:stages], start=1):
    planes = width * 2 ** (s - 1)
    for b in range(blocks):
      prefix = f'layer{s}.{b}.'
      keys.append((prefix + 'conv1.weight', (planes, inplanes, 1, 1)))
      keys += _bn(prefix + 'bn1', planes)
      keys.append((prefix + 'conv2.weight', (planes, planes, 3, 3)))
      keys += _bn(prefix + 'bn2', planes)
      keys.append((prefix + 'conv3.weight', (EXPANSION * planes, planes, 1,
                                             1)))
      keys += _bn(prefix + 'bn3', EXPANSION * planes)
      if b == 0:
        keys.append((prefix + 'downsample.0.weight',
                     (EXPANSION * planes, inplanes, 1, 1)))
        keys += _bn(prefix + 'downsample.1', EXPANSION * planes)
      inplanes = EXPANSION * planes
  if fc:
    keys += [('fc.weight', (classes, inplanes)), ('fc.bias', (classes,))]
  return keys


def _bn(name, channels):
  return [(f'{name}.{leaf}', (channels,)) for leaf in
          ('weight', 'bias', 'running_mean', 'running_var')] + [
              (f'{name}.num_batches_tracked', ())]


def hyperpixel_channels(stage_sizes, width=64):
  """Channels of hyperpixel id 0 (stem) and 1.. (bottlenecks), as CATs'
  `channels` list ([64] + [256] * 3 + [512] * 4 + ... for ResNet-101)."""
  out = [width]
  for s, blocks in enumerate(stage_sizes, start=1):
    out += [EXPANSION * width * 2 ** (s - 1)] * blocks
  return out


def _random(keys, rng):
  """Random values at scales that keep a forward pass finite."""
  state = collections.OrderedDict()
  for key, shape in keys:
    if key.endswith('num_batches_tracked'):
      value = np.array(rng.integers(100, 10000), np.int64)
    elif key.endswith('running_var'):
      value = rng.uniform(0.5, 2.0, shape)
    elif len(shape) == 1 and key.endswith('.weight'):  # BN / LayerNorm
      value = rng.uniform(0.5, 1.5, shape)
    elif len(shape) >= 2 and key.endswith('.weight'):
      out_axis = 1 if key.startswith('NeighConsensus') else 0
      fan_in = np.prod(shape) // shape[out_axis]
      value = rng.standard_normal(shape) / np.sqrt(fan_in)
    else:  # biases, running means, position embeddings
      value = 0.1 * rng.standard_normal(shape)
    state[key] = np.asarray(value, value.dtype if value.dtype == np.int64
                            else np.float32)
  return state


# --- NCNet. ---

NCNET_SEQUENTIAL = {'conv1': 0, 'bn1': 1, 'layer1': 4, 'layer2': 5,
                    'layer3': 6}


def ncnet_keys(stage_sizes, width, kernel_sizes, channels):
  """[(key, shape)] of `ImMatchNet.state_dict()` (ResNet to layer3)."""
  keys = []
  for key, shape in resnet_keys(stage_sizes, width, stages=3, fc=False):
    top, _, rest = key.partition('.')
    keys.append((f'FeatureExtraction.model.{NCNET_SEQUENTIAL[top]}.{rest}',
                 shape))
  cin = 1
  for i, (k, cout) in enumerate(zip(kernel_sizes, channels)):
    keys.append((f'NeighConsensus.conv.{2 * i}.weight',
                 (k, cout, cin, k, k, k)))
    keys.append((f'NeighConsensus.conv.{2 * i}.bias', (cout,)))
    cin = cout
  return keys


def ncnet_args(kernel_sizes=(5, 5, 5), channels=(16, 16, 1)):
  """The Namespace of NCNet's train.py (its flags and defaults)."""
  return argparse.Namespace(
      checkpoint='', image_size=400, dataset_image_path='datasets/pf-pascal/',
      dataset_csv_path='datasets/pf-pascal/image_pairs/', num_epochs=5,
      batch_size=16, lr=0.0005, ncons_kernel_sizes=list(kernel_sizes),
      ncons_channels=list(channels), result_model_fn='checkpoint_adam',
      result_model_dir='trained_models', fe_finetune_params=1)


def _adam_state(state, names, rng):
  trainable = [k for k in names if not k.endswith(
      ('running_mean', 'running_var', 'num_batches_tracked'))][-4:]
  return {
      'state': {i: {'step': 920, 'exp_avg': rng.standard_normal(
          state[k].shape).astype(np.float32), 'exp_avg_sq': np.abs(
              rng.standard_normal(state[k].shape)).astype(np.float32)}
                for i, k in enumerate(trainable)},
      'param_groups': [{'lr': 0.0005, 'betas': (0.9, 0.999), 'eps': 1e-08,
                        'weight_decay': 0, 'amsgrad': False,
                        'params': list(range(len(trainable)))}]}


def ncnet_checkpoint(stage_sizes=(1, 1, 1, 1), width=8, kernel_sizes=(3, 3),
                     channels=(4, 1), seed=0):
  """A random `ncnet_pfpascal.pth.tar` content (official container)."""
  rng = np.random.default_rng(seed)
  keys = ncnet_keys(stage_sizes, width, kernel_sizes, channels)
  state = _random(keys, rng)
  return {
      'epoch': 5,
      'args': ncnet_args(kernel_sizes, channels),
      'state_dict': state,
      'best_test_loss': NumpyValue(np.float64(-0.6177)),
      'optimizer': _adam_state(state, list(state), rng),
      'train_loss': NumpyValue(np.linspace(-0.3, -0.6, 5)),
      'test_loss': NumpyValue(np.linspace(-0.35, -0.62, 5)),
  }


# --- CATs. ---

def cats_args(hyperpixel='[0,8,20,21,26,28,29,30]', depth=1,
              feature_size=16, proj_dim=128, num_heads=6, mlp_ratio=4):
  """The Namespace of CATs' train.py (its flags and defaults)."""
  return argparse.Namespace(
      name_exp='2021_06_01_12_00', snapshots='./snapshots', pretrained=None,
      start_epoch=-1, epochs=100, batch_size=32, n_threads=32, seed=2021,
      datapath='../Datasets_CATs', benchmark='spair', thres='auto',
      alpha=0.1, momentum=0.9, weight_decay=0.05, lr=3e-5, lr_backbone=3e-6,
      scheduler='step', step='[70, 80, 90]', step_gamma=0.5,
      feature_size=feature_size, feature_proj_dim=proj_dim, depth=depth,
      num_heads=num_heads, mlp_ratio=mlp_ratio, hyperpixel=hyperpixel,
      freeze=True, augmentation=True)


def cats_aggregator_keys(num_levels, feature_size, embed_dim, depth,
                         mlp_ratio):
  """[(key, shape)] of CATs' `decoder` (TransformerAggregator)."""
  n, s, e = num_levels, feature_size, embed_dim
  hidden = int(e * mlp_ratio)
  keys = [('decoder.pos_embed_x', (1, n, 1, s, e // 2)),
          ('decoder.pos_embed_y', (1, n, s, 1, e // 2))]
  for d in range(depth):
    p = f'decoder.blocks.{d}.'
    for attn in ('attn', 'attn_multiscale'):
      keys += [(f'{p}{attn}.qkv.weight', (3 * e, e)),
               (f'{p}{attn}.qkv.bias', (3 * e,)),
               (f'{p}{attn}.proj.weight', (e, e)),
               (f'{p}{attn}.proj.bias', (e,))]
    for norm in ('norm1', 'norm2', 'norm3', 'norm4'):
      keys += [(f'{p}{norm}.weight', (e,)), (f'{p}{norm}.bias', (e,))]
    for mlp in ('mlp', 'mlp2'):
      keys += [(f'{p}{mlp}.fc1.weight', (hidden, e)),
               (f'{p}{mlp}.fc1.bias', (hidden,)),
               (f'{p}{mlp}.fc2.weight', (e, hidden)),
               (f'{p}{mlp}.fc2.bias', (e,))]
  keys += [('decoder.proj.weight', (s * s, e)), ('decoder.proj.bias', (s * s,)),
           ('decoder.norm.weight', (e,)), ('decoder.norm.bias', (e,))]
  return keys


def cats_keys(stage_sizes, width, hyperpixel_ids, feature_size, proj_dim,
              depth, mlp_ratio, classes=1000):
  """[(key, shape)] of `CATs.state_dict()`."""
  keys = [('x_normal', (feature_size,)), ('y_normal', (feature_size,))]
  keys += [('feature_extraction.backbone.' + k, shape) for k, shape in
           resnet_keys(stage_sizes, width, classes)]
  channels = hyperpixel_channels(stage_sizes, width)
  for l, i in enumerate(hyperpixel_ids):
    keys += [(f'proj.{l}.weight', (proj_dim, channels[i])),
             (f'proj.{l}.bias', (proj_dim,))]
  keys += cats_aggregator_keys(len(hyperpixel_ids), feature_size,
                               feature_size ** 2 + proj_dim, depth, mlp_ratio)
  return keys


def cats_checkpoint(stage_sizes=(1, 1, 1, 1), width=8, hyperpixel_ids=(0, 2, 3),
                    feature_size=4, proj_dim=8, depth=1, mlp_ratio=4,
                    seed=0):
  """A random `model_best.pth` content and its args (official layout)."""
  rng = np.random.default_rng(seed)
  keys = cats_keys(stage_sizes, width, hyperpixel_ids, feature_size,
                   proj_dim, depth, mlp_ratio, classes=10)
  state = _random(keys, rng)
  grid = np.linspace(-1, 1, feature_size).astype(np.float32)
  state['x_normal'], state['y_normal'] = grid, grid.copy()
  optimizer = _adam_state(state, list(state), rng)
  optimizer['state'] = {i: dict(v, step=np.array(1200.0, np.float32))
                        for i, v in optimizer['state'].items()}
  optimizer['param_groups'] = [
      dict(optimizer['param_groups'][0], lr=3e-5, weight_decay=0.05,
           initial_lr=3e-5, maximize=False, foreach=None, capturable=False,
           differentiable=False, fused=None),
      {'lr': 3e-6, 'betas': (0.9, 0.999), 'eps': 1e-08, 'weight_decay': 0.05,
       'amsgrad': False, 'initial_lr': 3e-6, 'params': []}]
  checkpoint = {
      'epoch': 12,
      'state_dict': state,
      'optimizer': optimizer,
      'scheduler': {'milestones': collections.Counter({70: 1, 80: 1, 90: 1}),
                    'gamma': 0.5, 'base_lrs': [3e-5, 3e-6], 'last_epoch': 11,
                    'verbose': True, '_step_count': 12,
                    '_get_lr_called_within_step': False,
                    '_last_lr': [3e-5, 3e-6]},
      'best_loss': 41.25,
  }
  ids = ','.join(str(i) for i in hyperpixel_ids)
  args = cats_args(f'[{ids}]', depth, feature_size, proj_dim, 6, mlp_ratio)
  return checkpoint, args


# --- Writers. ---

def _ours(value):
  if isinstance(value, NumpyValue):
    return pickle_records.numpy_record(value.value)
  if type(value) in (dict, collections.OrderedDict):  # Not a Counter.
    return type(value)((k, _ours(v)) for k, v in value.items())
  if isinstance(value, list):
    return [_ours(v) for v in value]
  return value


def write_ours(checkpoint, path):
  """Writes with our writer (zip `torch.save` layout; no torch)."""
  save_torch_file(_ours(checkpoint), path)


def _torch(value, torch):
  if isinstance(value, NumpyValue):
    return value.value
  if isinstance(value, np.ndarray):
    return torch.from_numpy(value)
  if type(value) in (dict, collections.OrderedDict):  # Not a Counter.
    return type(value)((k, _torch(v, torch)) for k, v in value.items())
  if isinstance(value, list):
    return [_torch(v, torch) for v in value]
  return value


def write_torch(checkpoint, path, torch, legacy=False):
  """Writes with `torch.save` (legacy: the pre-1.6 format NCNet's file has)."""
  torch.save(_torch(checkpoint, torch), path,
             _use_new_zipfile_serialization=not legacy)


def write_args(args, path):
  """Writes a run's args.pkl as CATs' train.py does (`pickle.dump`)."""
  with open(path, 'wb') as f:
    pickle.dump(args, f)
