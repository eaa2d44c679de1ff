"""Building blocks of `configs/*.py`: the config sections every method shares.

Each function returns a new `ml_collections.ConfigDict` with the section's
fields in a fixed order and the shared defaults; a config passes the values
it picks as keyword arguments, so its file still lists what it chooses:

  c.backbone = config_blocks.backbone(('layer3',))
  c.optimizer = config_blocks.optimizer(
      'adam', 5e-4, groups=dict(backbone=config_blocks.group(frozen=True),
                                model=config_blocks.group(frozen=False)))
  c.init_from = config_blocks.init_from()
  c.data = config_blocks.pair_data((400, 400), (320, 320), warp='mixed')
  c.evals = ml_collections.ConfigDict(dict(
      synthetic=config_blocks.synthetic_eval()))

Placeholders (`config_dict.placeholder(type)`) are None fields whose type is
fixed, so `--config.<section>.<field>=...` can still set them; every call
makes new ones, so no two configs (or sections) share a reference. A keyword
that names no field of the section raises ValueError.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping, Sequence

import ml_collections
from ml_collections import config_dict

from semcorr_jax.weights import efficientnet_lite


def _section(name: str, fields: dict[str, Any],
             overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ValueError(f'config_blocks.{name}: no field {unknown[0]!r}; the '
                     f'fields are {", ".join(fields)}')
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def backbone(features: Sequence[str], **overrides) -> ml_collections.ConfigDict:
  """The backbone (semcorr_jax/models/backbones.py); ResNet-101 by default.

  Fields:
    name: 'resnet' | 'efficientnet_lite0'.
    depth: resnet only (101).
    width: resnet only (64).
    stage_sizes: resnet only; None: from `depth`. A placeholder, e.g.
      `--config.backbone.stage_sizes=(1,1,1,1)`.
    weights: resnet: a torchvision state dict (.npz/.pth), None/'none' =
      random; efficientnet_lite0: None = the packaged ImageNet weights,
      'none' = random, or a path. A placeholder.
    features: the tapped layers, finer first.

  Args:
    features: `features`.
    **overrides: other fields' values.
  """
  return _section('backbone', dict(
      name='resnet',
      depth=101,
      width=64,
      stage_sizes=config_dict.placeholder(tuple),
      weights=config_dict.placeholder(str),
      features=features,
  ), overrides)


def lite0_if_installed(backbone_config: ml_collections.ConfigDict,
                       config_name: str) -> bool:
  """Switches a `backbone` section to EfficientNet-Lite0 when installed.

  The packaged ImageNet weights (the `pretrained` extra) give `name`
  'efficientnet_lite0'; without them the backbone becomes a random
  ResNet-50 of width 16 and a one-line notice naming `config_name` goes to
  stderr. The caller sets the taps (`features`) for either.

  Returns:
    Whether the backbone is Lite0.
  """
  if efficientnet_lite.packaged_lite0_path():
    backbone_config.name = 'efficientnet_lite0'
    return True
  print(f'{config_name}: EfficientNet-Lite0 weights not installed, using a '
        'random ResNet-50/16 backbone (install: '
        f'{efficientnet_lite.INSTALL_HINT})', file=sys.stderr)
  backbone_config.depth = 50
  backbone_config.width = 16
  return False


def group(frozen: bool, lr: float | None = None) -> ml_collections.ConfigDict:
  """One parameter group's entry of `optimizer(groups=...)`.

  Args:
    frozen: whether the group stays fixed, e.g.
      `--config.optimizer.groups.backbone.frozen=False` fine-tunes it.
    lr: the group's own learning rate; None: a float placeholder (the
      optimizer's `lr` unless set, e.g.
      `--config.optimizer.groups.backbone.lr=3e-6`).
  """
  return ml_collections.ConfigDict(dict(
      frozen=frozen,
      lr=config_dict.placeholder(float) if lr is None else lr))


def optimizer(name: str, lr: float,
              groups: Mapping[str, ml_collections.ConfigDict],
              **overrides) -> ml_collections.ConfigDict:
  """Every parameter group's optimiser defaults (semcorr_jax/methods/base.py).

  `groups.<name>` overrides them for one group (any field below, or
  `frozen`); a group it does not name uses the defaults.

  Fields:
    name: 'adam' | 'adamw' | 'sgd'.
    lr: the learning rate.
    decay_at: fractions of training where the rate is multiplied by
      `decay_factor` (default: none, a constant rate).
    decay_factor: default 1.0.
    b1, b2: adam, adamw (0.9, 0.999).
    weight_decay: adamw (0.0).
    momentum: sgd; None (a placeholder) = plain SGD.
    grad_clip_norm: None (a placeholder) = no clipping.
    groups: the method's parameter groups, each a `group(...)`.

  Args:
    name: `name`.
    lr: `lr`.
    groups: group name -> `group(...)`, in the method's order.
    **overrides: other fields' values.
  """
  return _section('optimizer', dict(
      name=name,
      lr=lr,
      decay_at=(),
      decay_factor=1.0,
      b1=0.9,
      b2=0.999,
      weight_decay=0.0,
      momentum=config_dict.placeholder(float),
      grad_clip_norm=config_dict.placeholder(float),
      groups=dict(groups),
  ), overrides)


def init_from(**overrides) -> ml_collections.ConfigDict:
  """Start from another run (fine-tuning, or a later training stage).

  Its variables (all, or the `subtrees`) replace the fresh ones before step
  1.

  Fields:
    workdir: the run's workdir; None (a placeholder): start fresh.
    step: its checkpoint step; None (a placeholder): the latest.
    folder: 'checkpoints', or 'best' for its selected model.
    subtrees: () for all variables, else paths 'path' or 'src:dst',
      '/'-separated in {'params': ..., 'batch_stats': ...}, e.g.
      'params:params/base' puts its params under `base`.

  Args:
    **overrides: fields' values.
  """
  return _section('init_from', dict(
      workdir=config_dict.placeholder(str),
      step=config_dict.placeholder(int),
      folder='checkpoints',
      subtrees=(),
  ), overrides)


def trainer_tools(**overrides) -> ml_collections.ConfigDict:
  """The trainer's optional tools (semcorr_jax/train_hooks.py), top-level
  fields of a config: `c.update(config_blocks.trainer_tools())`.

  A config without them trains with the defaults (both off).

  Fields:
    image_every: steps between TensorBoard pictures of the model's matches
      on a fixed held-out batch; 0 = none, e.g.
      `--config.image_every=500`.
    profile_steps: steps traced by `jax.profiler` once the first step has
      finished (into workdir/tensorboard/plugins/profile/); 0 = none.

  Args:
    **overrides: fields' values.
  """
  return _section('trainer_tools', dict(
      image_every=0,
      profile_steps=0,
  ), overrides)


def pair_data(image_size: tuple[int, int], scene_size: tuple[int, int],
              **overrides) -> ml_collections.ConfigDict:
  """The training pairs (semcorr_jax/data/pipeline.py documents each field).

  By default synthetic pairs of the embedded scenes under affine warps
  theta = I + N(0, 0.15^2), no TPS, no occluders; `source` 'voc2012' warps
  VOC 2012 images the same way, 'folder' the user's own images, a
  real-pair source ('pf_pascal', 'spair71k') reads annotated pairs instead.

  Fields:
    source: 'embedded' | 'voc2012' | 'folder' | 'pf_pascal' | 'spair71k'.
    folder, heldout_folder: 'folder': the training images (masks
      optional) and the held-out ones (None: the training images under
      held-out warps); placeholders, e.g.
      `--config.data.folder=~/my_images`.
    image_size: the model input (H, W).
    num_scenes, heldout_scenes: training and held-out scenes (512, 64).
    scene_size, scene_seed: the size (H, W) and seed of the embedded
      scenes the pairs are warped from ('folder': the size its images are
      loaded at).
    warp: 'affine' | 'tps' | 'mixed'; affine_std (0.15), tps_std (0.4),
      tps_prob (0.0), flip_prob (0.5), color_jitter (0.1).
    occluders: most occluding objects per view; 0 = none.
    void_as: voc2012: the void label 255 counts as 'foreground' or not.
    max_keypoints: real pairs: keypoint rows; 0 = none (20).
    data_dir, manual_dir, exclude_list: folders and files of the real data
      sets (placeholders: None, settable with `--config.data.<field>=...`).

  Args:
    image_size: `image_size`.
    scene_size: `scene_size`.
    **overrides: other fields' values.
  """
  return _section('pair_data', dict(
      source='embedded',
      folder=config_dict.placeholder(str),
      heldout_folder=config_dict.placeholder(str),
      image_size=image_size,
      num_scenes=512,
      heldout_scenes=64,
      scene_size=scene_size,
      scene_seed=0,
      warp='affine',
      affine_std=0.15,
      tps_std=0.4,
      tps_prob=0.0,
      flip_prob=0.5,
      color_jitter=0.1,
      occluders=0,
      void_as='foreground',
      max_keypoints=20,
      data_dir=config_dict.placeholder(str),
      manual_dir=config_dict.placeholder(str),
      exclude_list=config_dict.placeholder(str),
  ), overrides)


def synthetic_eval(**overrides) -> ml_collections.ConfigDict:
  """The `synthetic` evaluator: held-out synthetic pairs with dense truth.

  Named evaluators live under `config.evals`
  (semcorr_jax/evaluation/evaluators.py): each runs every `every` steps (0:
  only at the end) and at the end, next to the untrained model when
  `untrained_baseline`; `select` names a metric to maximise (model
  selection: the best checkpoint is kept in workdir/best/). Defaults: 64
  pairs in batches of 8, seed 1234, PCK at alphas 0.05, 0.1, 0.15, one
  keypoint every 8 pixels.

  Args:
    **overrides: fields' values.
  """
  return _section('synthetic_eval', dict(
      type='synthetic', every=0, untrained_baseline=True, select='',
      num_pairs=64, batch_size=8, seed=1234, alphas=(0.05, 0.1, 0.15),
      keypoint_stride=8,
  ), overrides)


def benchmark_eval(name: str, split: str, threshold: str, frame: str, *,
                   protocol: str, every: int = 0, select: str = '',
                   **protocol_fields) -> ml_collections.ConfigDict:
  """A `benchmark` evaluator: one split of a benchmark, target to source.

  `data_dir` and `num_pairs` are placeholders (None: required folder, all
  pairs); the other fields are semcorr_jax/evaluation/evaluators.py's.

  Args:
    name: the benchmark ('pf_pascal', 'pf_willow', 'spair71k', 'tss').
    split: 'test' | 'validation'.
    threshold: the PCK threshold's L ('img', 'bbox', 'kps').
    frame: where distances are measured ('square', 'original').
    protocol: a preset of semcorr_jax/evaluation/protocol.py.
    every: steps between evaluations (0: at the end only).
    select: '' or the metric to maximise (model selection).
    **protocol_fields: more protocol fields (e.g. `square_side`), placed
      after `frame`.
  """
  return ml_collections.ConfigDict(dict(
      type='benchmark', benchmark=name, split=split,
      data_dir=config_dict.placeholder(str), protocol=protocol,
      direction='ts', threshold=threshold, frame=frame, **protocol_fields,
      every=every, untrained_baseline=False, select=select,
      num_pairs=config_dict.placeholder(int)))


def set_fields(config: ml_collections.ConfigDict,
               values: Mapping[str, Any]) -> None:
  """Sets dotted fields of an unlocked `config`, e.g. an ablation row's
  {'loss.terms': ('raw', 'agg')}."""
  for key, value in values.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value
