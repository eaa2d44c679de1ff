r"""SFNet: the base matcher of CAMNet, trained self-supervised on synthetic pairs.

Variants (`--config=configs/sfnet.py:<variant>`):

* `test`: seconds; a tiny backbone at 64x64 for unit tests.
* `quick`: the embedded default dataset (scikit-image photos, no download) on a
  2-core CPU in a few minutes. This is what `make demo` runs:

    semcorr-train --config=configs/sfnet.py:quick --workdir=runs/sfnet_quick

  Expected: the held-out PCK@0.1 of the trained model beats the untrained one
  (both are printed at the end and written to runs/sfnet_quick/eval/).
* `paper`: the SFNet setting (reference-facts.md A.6-A.7): ResNet-101 at
  320x320, adaptation layers on layer3 (5x5) and layer4 (3x3), Adam 3e-5,
  x0.2 at 75% of training, batch 16, 40 epochs over PASCAL VOC 2012
  segmentation images (PF-PASCAL test images excluded), affine warps
  theta = I + N(0, 0.15^2):

    semcorr-train --config=configs/sfnet.py:paper --workdir=runs/sfnet_paper \
      --config.data.manual_dir=/path/to/VOCtrainval_11-May-2012.tar \
      --config.model.backbone_weights=/path/to/resnet101_torchvision.npz

  SFNet reports 78.7 PCK@0.1 (alpha_img) on PF-PASCAL with ImageNet weights.

Overrides use ml_collections syntax, e.g. `--config.batch_size=32`.
"""

import ml_collections


def get_config(variant: str = 'quick') -> ml_collections.ConfigDict:
  """Returns the locked config of `variant` ('test' | 'quick' | 'paper')."""
  if variant not in ('test', 'quick', 'paper'):
    raise ValueError(f'unknown variant {variant!r}: test, quick or paper')
  c = ml_collections.ConfigDict()
  c.method = 'sfnet'
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      backbone_depth=101,
      backbone_stage_sizes=None,  # None: from depth; tuple to override
      backbone_width=64,
      backbone_weights=None,      # torchvision ResNet state dict (.npz/.pth)
      adapt_kernels=(5, 3),       # layer3, layer4
      adapt_units=2,
      beta=50.0,                  # kernel soft-argmax inverse temperature
      kernel_sigma=5.0,           # Gaussian kernel, feature cells
      dtype='float32',
  ))
  c.loss = ml_collections.ConfigDict(dict(
      mask_weight=3.0, flow_weight=16.0, smooth_weight=0.5))
  c.optimizer = ml_collections.ConfigDict(dict(
      name='adam', lr=3e-5, decay_at=(0.75,), decay_factor=0.2))

  c.data = ml_collections.ConfigDict(dict(
      source='embedded',
      image_size=(320, 320),
      num_scenes=512,
      heldout_scenes=64,
      scene_size=(320, 320),
      warp='affine',
      affine_std=0.15,
      tps_std=0.4,
      tps_prob=0.0,
      flip_prob=0.5,
      color_jitter=0.1,
      data_dir=None,
      manual_dir=None,
      exclude_list=None,
  ))
  c.batch_size = 16
  c.num_epochs = 40
  c.num_train_steps = -1        # > 0 overrides num_epochs
  c.log_every = 50
  c.checkpoint_every = 500
  c.eval_every = 0
  c.keep_checkpoints = 3

  c.eval = ml_collections.ConfigDict(dict(
      num_pairs=64, batch_size=8, seed=1234, alphas=(0.05, 0.1, 0.15),
      keypoint_stride=8, untrained=True))

  if variant == 'paper':
    c.data.source = 'voc2012'
  elif variant == 'quick':
    c.model.backbone_depth = 50
    c.model.backbone_width = 16
    c.data.image_size = (160, 160)
    c.data.scene_size = (192, 192)
    c.data.num_scenes = 256
    c.data.heldout_scenes = 32
    c.optimizer.lr = 1e-3
    c.batch_size = 8
    c.num_train_steps = 300
    c.log_every = 25
    c.checkpoint_every = 100
    c.eval.num_pairs = 32
    c.eval.keypoint_stride = 8
  elif variant == 'test':
    c.model.backbone_stage_sizes = (1, 1, 1, 1)
    c.model.backbone_width = 8
    c.data.image_size = (64, 64)
    c.data.scene_size = (80, 80)
    c.data.num_scenes = 16
    c.data.heldout_scenes = 4
    c.optimizer.lr = 1e-3
    c.batch_size = 8
    c.num_train_steps = 4
    c.log_every = 2
    c.checkpoint_every = 2
    c.eval.num_pairs = 4
    c.eval.batch_size = 4
    c.eval.keypoint_stride = 8
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
