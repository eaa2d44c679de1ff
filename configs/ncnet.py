r"""NCNet: neighbourhood consensus networks, trained with the weak loss.

Rocco et al., NeurIPS 2018 (reference-facts.md C.1; docs/ncnet.md). Variants
(`--config=configs/ncnet.py:<variant>`):

* `test`: seconds; a tiny ResNet at 64x64 (4x4 cells) for unit tests.
* `quick`: the embedded default dataset (scikit-image photos, no download)
  on a 2-core CPU in about 3 minutes (120 steps of 4 pairs):

    semcorr-train --config=configs/ncnet.py:quick --workdir=runs/ncnet_quick

  EfficientNet-Lite0 with ImageNet weights (a random ResNet-50/16 with a
  notice when the `pretrained` extra is missing) tapped at stage5 (stride
  16, 112 channels) at 160x160: a 10x10 grid; the InLoc consensus (kernels
  3, 3, channels 16, 1); the synthetic pairs of configs/sfnet.py:quick
  (affine + TPS, occluders). Expected: held-out synthetic PCK (32 pairs,
  printed at the end and written to runs/ncnet_quick/eval/) above the
  untrained model's (seed 0): 0.381 PCK@0.1 at alpha_img, 0.186 at
  alpha_bbox (the random consensus blurs the volume; the raw correlation's
  argmax scores 0.620 / 0.409). Measured (seed 0): 0.765 / 0.483 after
  120 steps (PCK@0.05: 0.445 / 0.177 against 0.155 / 0.059 untrained);
  docs/ncnet.md has the table.
* `paper`: the PF-PASCAL setting of the release: ResNet-101 to layer3
  (25x25 cells at 400x400), kernels 5, 5, 5, channels 16, 16, 1, symmetric,
  Adam 5e-4, batch 16, 5 epochs over the 2,940 PF-PASCAL train rows (flip
  column honoured), the last block of layer3 fine-tuned
  (`fe_finetune_params=1` of the released checkpoint):

    semcorr-train --config=configs/ncnet.py:paper --workdir=runs/ncnet \
      --config.data.manual_dir=/path/to/pf-pascal \
      --config.backbone.weights=/path/to/resnet101_torchvision.npz \
      --config.evals.pf_pascal.data_dir=/path/to/pf-pascal

  Evaluated as NCNet's eval_pf_pascal.py: images resized to 400x400, the
  hard-argmax matches of every target cell, target keypoints moved into the
  source (bilinear between cells), PCK with the SCNet square (alpha_img,
  L = 224 after squashing both images to 224x224). Published: 78.9
  PCK@0.1 on PF-PASCAL test. `pf_pascal_val` scores PF-PASCAL validation
  once per epoch (184 steps) and keeps the best model in runs/ncnet/best/
  (the release keeps the lowest validation loss instead).
* `inloc`: the paper setting with the InLoc consensus of the README
  (kernels 3, 3, channels 16, 1), no fine-tuning.

Overrides use ml_collections syntax, e.g. `--config.model.conv4d_impl=
custom_vjp` (semcorr_jax/models/conv4d.py and benchmarks/aggregators.py
compare the implementations; `planes`, 2-D convolutions, is the fastest on
CPU).
"""

import ml_collections

from semcorr_jax import config_blocks

VARIANTS = ('test', 'quick', 'paper', 'inloc')
# The quick variant's Lite0 tap and image size (module docstring).
QUICK_TAP = 'stage5'
QUICK_SIZE = 160


def get_config(variant: str = 'quick') -> ml_collections.ConfigDict:
  """Returns the locked config of `variant` (`VARIANTS`)."""
  if variant not in VARIANTS:
    raise ValueError(f'unknown variant {variant!r}: {", ".join(VARIANTS)}')
  c = ml_collections.ConfigDict()
  c.method = 'ncnet'
  c.seed = 0

  c.backbone = config_blocks.backbone(('layer3',))  # NCNet reads one tap
  c.model = ml_collections.ConfigDict(dict(
      kernel_sizes=(5, 5, 5),     # NeighConsensus, one per Conv4d
      channels=(16, 16, 1),       # 1 -> 16 -> 16 -> 1
      symmetric=True,             # NC(x) + NC(x^T)^T
      conv4d_impl='planes',       # 'planes' | 'native' | 'sequential' | 'custom_vjp'
      # Last blocks of the tapped stage that train (group
      # 'backbone_finetune'); the release's fe_finetune_params.
      finetune_blocks=0,
      soft_beta=1.0,              # the `soft` flow's inverse temperature
      dtype='float32',            # backbone compute dtype
  ))
  # NCNet's groups: 'backbone', 'backbone_finetune', 'model'. The release
  # trains every unfrozen parameter with one Adam at a constant rate.
  c.optimizer = config_blocks.optimizer(
      'adam', 5e-4,
      groups=dict(backbone=config_blocks.group(frozen=True),
                  backbone_finetune=config_blocks.group(frozen=False),
                  model=config_blocks.group(frozen=False)))
  c.init_from = config_blocks.init_from()

  # The synthetic pairs of configs/sfnet.py:quick: affine + TPS, occluders.
  c.data = config_blocks.pair_data(
      (400, 400), (320, 320), warp='mixed', affine_std=0.25, tps_prob=1.0,
      occluders=3)
  c.batch_size = 16
  c.num_epochs = 5
  c.num_train_steps = -1        # > 0 overrides num_epochs
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.update(config_blocks.trainer_tools())

  c.evals = ml_collections.ConfigDict(dict(
      synthetic=config_blocks.synthetic_eval()))

  if variant in ('paper', 'inloc'):
    c.data.source = 'pf_pascal'
    # Real pairs have no dense ground truth for the synthetic evaluator.
    del c.evals['synthetic']

    # NCNet's evaluation (eval_pf_pascal.py, reference-facts.md C.1, D.4):
    # images resized to the model size (400), target keypoints moved into
    # the source, PCK in the SCNet square (alpha_img, 224).
    def benchmark(split, threshold, frame):
      return config_blocks.benchmark_eval('pf_pascal', split, threshold,
                                          frame, protocol='resize')

    c.evals.pf_pascal = benchmark('test', 'img', 'square')
    val = benchmark('validation', 'img', 'square')
    val.every, val.select = 184, 'pck@0.1'  # One epoch of 2,940 / 16.
    val.data_dir = c.evals.pf_pascal.get_ref('data_dir').identity()
    c.evals.pf_pascal_val = val
    c.checkpoint_every = 184
    if variant == 'paper':
      c.model.finetune_blocks = 1
    else:
      c.model.kernel_sizes = (3, 3)
      c.model.channels = (16, 1)
  elif variant == 'quick':
    if config_blocks.lite0_if_installed(c.backbone,
                                        'configs/ncnet.py:quick'):
      c.backbone.features = (QUICK_TAP,)
    # CPU budget: the InLoc consensus on a 10x10 grid.
    c.model.kernel_sizes = (3, 3)
    c.model.channels = (16, 1)
    c.data.image_size = (QUICK_SIZE, QUICK_SIZE)
    c.data.scene_size = (192, 192)
    c.data.num_scenes = 256
    c.data.heldout_scenes = 32
    c.optimizer.lr = 1e-3
    c.batch_size = 4
    c.num_train_steps = 120
    c.log_every = 10
    c.checkpoint_every = 40
    c.evals.synthetic.num_pairs = 32
  elif variant == 'test':
    c.backbone.stage_sizes = (1, 1, 1, 1)
    c.backbone.width = 8
    c.model.kernel_sizes = (3, 3)
    c.model.channels = (4, 1)
    c.data.image_size = (64, 64)
    c.data.scene_size = (80, 80)
    c.data.num_scenes = 16
    c.data.heldout_scenes = 4
    c.data.occluders = 0
    c.optimizer.lr = 1e-3
    c.batch_size = 8
    c.num_train_steps = 4
    c.log_every = 2
    c.checkpoint_every = 2
    c.evals.synthetic.num_pairs = 4
    c.evals.synthetic.batch_size = 4
  c.lock()
  return c
