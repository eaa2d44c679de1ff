"""Torchvision-exact bottleneck ResNet (50/101/152) in Flax Linen.

The module reproduces `torchvision.models.resnet` numerically so that its
ImageNet weights load unchanged (`semcorr_jax.weights.torchvision_resnet`):

* v1.5 bottleneck: the stride sits on the 3x3 conv;
* explicit symmetric padding (7x7/2 stem pad 3, 3x3 convs pad 1, 3x3/2 max-pool
  pad 1). Flax's 'SAME' pads asymmetrically for stride 2 on even sizes, which
  keeps the shapes but silently changes every number downstream;
* no conv bias, BatchNorm eps 1e-5, downsample = 1x1 conv (stride s) + BN.

BatchNorm is frozen: it always normalises with the running statistics of the
`batch_stats` collection and never updates them (SFNet keeps the backbone in
eval mode; reference-facts §A.1). Apply without `mutable`.

Parameter names mirror torchvision's state-dict keys, `.` -> `/` and the block
index joined to its stage:

  conv1.weight                     params/conv1/kernel
  bn1.running_mean                 batch_stats/bn1/mean
  layer3.7.conv2.weight            params/layer3_7/conv2/kernel
  layer2.0.downsample.0.weight     params/layer2_0/downsample_conv/kernel
  layer2.0.downsample.1.bias       params/layer2_0/downsample_bn/bias
  fc.weight                        params/fc/kernel

Inputs are ImageNet-normalised NHWC images (`normalize_imagenet` on [0, 1]
images; docs/architecture.md).
"""

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Blocks per stage (layer1..layer4) of torchvision's bottleneck ResNets.
STAGE_SIZES = {
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
STAGE_NAMES = ('layer1', 'layer2', 'layer3', 'layer4')
EXPANSION = 4  # Bottleneck output channels = EXPANSION * block width.

# Output stride of each feature (input pixels per feature cell).
FEATURE_STRIDES = {'stem': 4, 'layer1': 4, 'layer2': 8, 'layer3': 16,
                   'layer4': 32}


def normalize_imagenet(images):
  """ImageNet mean/std normalisation.

  Args:
    images: (..., H, W, 3) float in [0, 1], RGB.

  Returns:
    (images - mean) / std, same shape, float32 (or the input's float dtype).
  """
  images = jnp.asarray(images)
  if not jnp.issubdtype(images.dtype, jnp.floating):
    images = images.astype(jnp.float32)
  mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
  std = jnp.asarray(IMAGENET_STD, images.dtype)
  return (images - mean) / std


def hyperpixel_layers(
    stage_sizes: Sequence[int] = STAGE_SIZES[101],
) -> dict[int, tuple[str, int]]:
  """Maps hyperpixel ids to (stage, block) (HPF/CATs numbering).

  Id 0 is the stem output (after the max-pool); id k >= 1 is the k-th
  bottleneck counted over all stages, its output taken before the final ReLU
  (reference-facts §C.2). For ResNet-101: 1-3 layer1, 4-7 layer2, 8-30 layer3,
  31-33 layer4.

  Args:
    stage_sizes: blocks per stage.

  Returns:
    {id: (stage_name, block_index)}, with ('stem', 0) for id 0.
  """
  layers = {0: ('stem', 0)}
  for stage, size in zip(STAGE_NAMES, stage_sizes):
    for block in range(size):
      layers[len(layers)] = (stage, block)
  return layers


HYPERPIXEL_LAYERS = hyperpixel_layers(STAGE_SIZES[101])


def required_last_stage(hyperpixel_ids: Sequence[int],
                        stage_sizes: Sequence[int] = STAGE_SIZES[101]) -> str:
  """The shallowest `last_stage` whose features contain all `hyperpixel_ids`."""
  layers = hyperpixel_layers(stage_sizes)
  stages = [layers[i][0] for i in hyperpixel_ids]
  index = max((STAGE_NAMES.index(s) for s in stages if s != 'stem'), default=0)
  return STAGE_NAMES[index]


def feature_channels(stage_sizes: Sequence[int] = STAGE_SIZES[101],
                     width: int = 64) -> dict[str, int]:
  """Channels of every feature `ResNet.__call__` returns (except logits)."""
  channels = {'stem': width}
  for i, stage in enumerate(STAGE_NAMES[:len(stage_sizes)]):
    channels[stage] = width * 2**i * EXPANSION
  for k, (stage, _) in hyperpixel_layers(stage_sizes).items():
    channels[f'hyper_{k}'] = channels[stage]
  return channels


def feature_strides(stage_sizes: Sequence[int] = STAGE_SIZES[101]
                    ) -> dict[str, int]:
  """Output stride of every feature `ResNet.__call__` returns (no logits)."""
  strides = {n: FEATURE_STRIDES[n]
             for n in ('stem',) + STAGE_NAMES[:len(stage_sizes)]}
  for k, (stage, _) in hyperpixel_layers(stage_sizes).items():
    strides[f'hyper_{k}'] = strides[stage]
  return strides


# torchvision initialises convs with kaiming_normal(fan_out, relu).
_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


class Bottleneck(nn.Module):
  """Torchvision v1.5 bottleneck: 1x1 -> 3x3 (stride) -> 1x1, residual.

  Attributes:
    width: channels of the 1x1 and 3x3 convs; the output has 4 * width.
    strides: stride of the 3x3 conv and of the downsample conv.
    downsample: project the shortcut with a 1x1 conv + BN.
    dtype: compute dtype.
  """
  width: int
  strides: int = 1
  downsample: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """(B, H, W, C) -> (B, H/s, W/s, 4*width), BEFORE the final ReLU."""
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             param_dtype=jnp.float32, kernel_init=_conv_init)
    norm = functools.partial(_frozen_batch_norm, dtype=self.dtype)
    s = self.strides
    y = conv(self.width, (1, 1), name='conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = conv(self.width, (3, 3), (s, s), ((1, 1), (1, 1)), name='conv2')(y)
    y = nn.relu(norm(name='bn2')(y))
    y = conv(self.width * EXPANSION, (1, 1), name='conv3')(y)
    y = norm(name='bn3')(y)
    if self.downsample:
      x = conv(self.width * EXPANSION, (1, 1), (s, s),
               name='downsample_conv')(x)
      x = norm(name='downsample_bn')(x)
    return y + x


def _frozen_batch_norm(name, dtype):
  # Always running statistics: frozen like SFNet's eval-mode backbone.
  return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5,
                      dtype=dtype, param_dtype=jnp.float32, name=name)


class ResNet(nn.Module):
  """Torchvision-exact bottleneck ResNet returning a dict of features.

  Attributes:
    stage_sizes: blocks per stage; (3, 4, 23, 3) is ResNet-101.
    width: stem channels and layer1 block width; stage i has width * 2**i and
      outputs 4 * width * 2**i channels. 64 for the torchvision models; tiny
      values keep tests fast.
    num_classes: adds the global-average-pool + `fc` head when set (1000 for
      ImageNet weights).
    last_stage: 'layer1'..'layer4': stages after it are neither built nor run
      (SFNet needs layer4, a layer3-only method saves its 15 M params).
    dtype: compute dtype; parameters and statistics stay float32.
  """
  stage_sizes: Sequence[int] = STAGE_SIZES[101]
  width: int = 64
  num_classes: int | None = None
  last_stage: str = 'layer4'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    """Runs the network.

    Args:
      x: (B, H, W, 3) ImageNet-normalised images (`normalize_imagenet`).

    Returns:
      A dict of features, all NHWC in `dtype`:
        'stem' and 'hyper_0' (the same array): (B, H/4, W/4, width) after
          the max-pool (HPF/CATs hyperpixel id 0);
        'hyper_k', k = 1..sum(stage_sizes[:last]): output of the k-th
          bottleneck before its final ReLU (HPF/CATs hyperpixel id k);
        'layer1'..`last_stage`: torchvision stage outputs (after ReLU), strides
          4, 8, 16, 32 and 4*width*(1, 2, 4, 8) channels;
        'logits': (B, num_classes), only when `num_classes` is set.
    """
    if self.last_stage not in STAGE_NAMES[:len(self.stage_sizes)]:
      raise ValueError(f'last_stage must be one of '
                       f'{STAGE_NAMES[:len(self.stage_sizes)]}, '
                       f'got {self.last_stage!r}')
    num_stages = STAGE_NAMES.index(self.last_stage) + 1
    if self.num_classes and num_stages != len(self.stage_sizes):
      raise ValueError('num_classes needs every stage; '
                       f'got last_stage={self.last_stage!r}')

    features = {}
    x = jnp.asarray(x, self.dtype)
    # Symmetric padding 3 and 1: torchvision's, unlike Flax 'SAME' (see top).
    x = nn.Conv(self.width, (7, 7), (2, 2), ((3, 3), (3, 3)), use_bias=False,
                dtype=self.dtype, param_dtype=jnp.float32,
                kernel_init=_conv_init, name='conv1')(x)
    x = nn.relu(_frozen_batch_norm('bn1', self.dtype)(x))
    x = nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
    features['stem'] = features['hyper_0'] = x

    k = 0
    for i, size in enumerate(self.stage_sizes[:num_stages]):
      for j in range(size):
        k += 1
        x = Bottleneck(self.width * 2**i,
                       strides=2 if i > 0 and j == 0 else 1,
                       downsample=j == 0,  # Channels change in every stage.
                       dtype=self.dtype,
                       name=f'{STAGE_NAMES[i]}_{j}')(x)
        features[f'hyper_{k}'] = x
        x = nn.relu(x)
      features[STAGE_NAMES[i]] = x

    if self.num_classes:
      x = jnp.mean(x, axis=(1, 2))
      features['logits'] = nn.Dense(self.num_classes, dtype=self.dtype,
                                    param_dtype=jnp.float32, name='fc')(x)
    return features


def resnet(depth: int, **kwargs) -> ResNet:
  """Torchvision's ResNet-`depth` (50, 101 or 152); kwargs go to `ResNet`."""
  if depth not in STAGE_SIZES:
    raise ValueError(f'depth must be one of {sorted(STAGE_SIZES)}, got {depth}')
  return ResNet(stage_sizes=STAGE_SIZES[depth], **kwargs)
