r"""CATs: cost aggregation with transformers (Cho et al., NeurIPS 2021).

Hyperpixel correlations of N backbone taps (each resized to S x S) -> CATs'
mutual filter -> transformer aggregator with swapping self-attention ->
soft-argmax flow, trained with the end-point error against keypoint flow.
docs/cats.md has the pipeline, the tests and the choices.

A variant is `<size>[,<dataset>][,frozen]` (`--config=configs/cats.py:
paper,pf_pascal,frozen`): size `test` (seconds, unit tests), `quick` (the
embedded default dataset on a 2-core CPU in minutes) or `paper`; dataset
`spair` (the paper's default: SPair-71k hyperpixels and evaluation) or
`pf_pascal` (PF-PASCAL pairs, HPF's PF-PASCAL hyperpixels); `frozen` keeps
the backbone fixed (the paper variants otherwise fine-tune it, the paper's
best setting; test and quick are always frozen).

* `quick`: synthetic pairs of the embedded scenes (affine + TPS warps,
  occluders; as configs/sfnet.py:quick), supervised by the dense ground
  truth sampled at 32 foreground keypoints per pair:

    semcorr-train --config=configs/cats.py:quick --workdir=runs/cats_quick

  EfficientNet-Lite0 (ImageNet weights, the `pretrained` extra) tapped at
  stage3, stage4, stage5 and stage6 (strides 8, 16, 16, 32) at 128 x 128,
  S = 8, 300 steps of batch 8 at lr 3e-4, the aggregator's last Linear
  starting at zero (`model.zero_proj`, docs/cats.md); without the weights
  a random ResNet-50/16 with four hyperpixel taps, with a one-line notice
  on stderr. Expected (seed 0, 32 held-out
  pairs; about 7 minutes on a shared 2-core CPU): PCK@0.1 0.350 vs 0.320
  untrained at alpha_bbox, 0.608 vs 0.576 at alpha_img (PCK@0.05 alpha_img
  0.301 vs 0.254); docs/cats.md, "Quick runs".
* `paper` (= `paper,spair`) and `paper,pf_pascal`: CATs' train.py
  (reference-facts.md §C.2): ResNet-101 at 256 x 256, S = 16, proj 128,
  depth 1, 6 heads, MLP ratio 4, temperature 0.02; AdamW (weight decay
  0.05) at 3e-5 for the aggregator and 3e-6 for the backbone, x0.5 at 70,
  80 and 90 % of 100 epochs, batch 32. Hyperpixels: SPair
  [0, 8, 20, 21, 26, 28, 29, 30], PF-PASCAL (2, 17, 21, 22, 25, 26, 28).
  Evaluated as CATs (§D.4): images squashed to 256 x 256, target keypoints
  moved into the source; PF-PASCAL alpha_img (L = the square side),
  SPair-71k alpha_bbox (L = max side of the source box on the squash).
  The validation split selects the model (pck@0.1).

    semcorr-train --config=configs/cats.py:paper,pf_pascal \
      --workdir=runs/cats_pf_pascal \
      --config.backbone.weights=/path/to/resnet101_torchvision.npz \
      --config.data.manual_dir=/path/to/pf-pascal \
      --config.evals.pf_pascal.data_dir=/path/to/pf-pascal

  `paper,spair` trains on the SPair-71k training pairs (Layout/large/
  trn.txt; `--config.data.manual_dir=/path/to/SPair-71k`, prepared once
  into `--config.data.data_dir`) and selects on its validation split.
  Published PCK@0.1 (CATs README / paper): PF-PASCAL 92.6 fine-tuned, 89.1
  frozen (alpha_img); SPair-71k 49.9 fine-tuned, 42.4 frozen (alpha_bbox).

Overrides use ml_collections syntax, e.g. `--config.model.depth=4`.
"""

import ml_collections

from semcorr_jax import config_blocks

# Hyperpixel ids (ResNet-101 bottlenecks; hyper_0 = the stem), HPF's beam
# search per dataset (reference-facts.md §C.2).
SPAIR_HYPERPIXELS = (0, 8, 20, 21, 26, 28, 29, 30)
PF_PASCAL_HYPERPIXELS = (2, 17, 21, 22, 25, 26, 28)
# Quick taps: Lite0 stage outputs at strides 8, 16, 16, 32 (40, 80, 112 and
# 192 channels); the fallback ResNet-50's bottlenecks at the same strides.
LITE0_FEATURES = ('stage3', 'stage4', 'stage5', 'stage6')
RESNET50_FEATURES = ('hyper_7', 'hyper_10', 'hyper_13', 'hyper_16')
DATASETS = ('spair', 'pf_pascal')


def _hyper(ids):
  return tuple(f'hyper_{i}' for i in ids)


def _parse(variant: str) -> tuple[str, str | None, bool]:
  size, *tokens = variant.split(',')
  if size not in ('test', 'quick', 'paper'):
    raise ValueError(f'unknown variant {variant!r}: <size>[,<dataset>]'
                     '[,frozen] with size test, quick or paper')
  dataset, frozen = None, False
  for token in tokens:
    if token in DATASETS:
      dataset = token
    elif token == 'frozen':
      frozen = True
    else:
      raise ValueError(f'unknown variant part {token!r}: a dataset '
                       f'{DATASETS} or frozen')
  if size == 'paper':
    dataset = dataset or 'spair'
  elif dataset == 'spair':
    raise ValueError(f'unknown variant {variant!r}: the spair dataset '
                     'exists only as paper,spair')
  return size, dataset, frozen or size != 'paper'


def _benchmark(name, split, threshold, every=0, select=''):
  """A benchmark evaluator with CATs' protocol (256 squash, 'ts')."""
  return config_blocks.benchmark_eval(
      name, split, threshold, 'square', protocol='resize', square_side=256,
      every=every, select=select)


def get_config(variant: str = 'quick') -> ml_collections.ConfigDict:
  """Returns the locked config of `<size>[,<dataset>][,frozen]`."""
  size, dataset, frozen = _parse(variant)
  c = ml_collections.ConfigDict()
  c.method = 'cats'
  c.seed = 0

  # The backbone's hyperpixel taps: one level of the aggregator per tap, in
  # this order.
  c.backbone = config_blocks.backbone(_hyper(SPAIR_HYPERPIXELS))
  c.model = ml_collections.ConfigDict(dict(
      feature_size=16,            # S: every level resized to S x S
      proj_dim=128,               # appearance embedding; E = S^2 + proj_dim
      depth=1,                    # MultiscaleBlocks (CATs' train.py: 1)
      num_heads=6,
      mlp_ratio=4.0,
      temperature=0.02,           # soft-argmax over the source
      # Not in CATs: True starts the aggregator's last Linear at zero, so
      # the untrained network reads out the mean filtered correlation.
      zero_proj=False,
      dtype='float32',            # backbone compute dtype
  ))
  c.loss = ml_collections.ConfigDict(dict(
      # 'keypoints': annotated keypoints of real pairs; 'dense': synthetic
      # pairs, the dense ground truth sampled at `num_keypoints` points.
      supervision='dense',
      num_keypoints=32,
      radius=17.0 / 16.0,         # a cell's box half side, cells (35 px / 16)
  ))
  # Groups: 'backbone', 'aggregator' (the appearance projections and the
  # transformer).
  c.optimizer = config_blocks.optimizer(
      'adamw', 3e-5, decay_at=(0.7, 0.8, 0.9), decay_factor=0.5,
      weight_decay=0.05,
      groups=dict(backbone=config_blocks.group(frozen=frozen, lr=3e-6),
                  aggregator=config_blocks.group(frozen=False)))
  c.init_from = config_blocks.init_from()

  c.data = config_blocks.pair_data((256, 256), (256, 256))
  c.batch_size = 32
  c.num_epochs = 100
  c.num_train_steps = -1        # > 0 overrides num_epochs
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.update(config_blocks.trainer_tools())

  c.evals = ml_collections.ConfigDict(dict(
      synthetic=config_blocks.synthetic_eval()))

  if size == 'quick':
    lite0 = config_blocks.lite0_if_installed(c.backbone,
                                             'configs/cats.py:quick')
    c.backbone.features = LITE0_FEATURES if lite0 else RESNET50_FEATURES
    c.model.feature_size = 8      # E = 64 + 128 = 192 = 6 x 32
    c.data.image_size = (128, 128)
    c.data.scene_size = (160, 160)
    c.data.warp = 'mixed'
    c.data.affine_std = 0.25
    c.data.tps_prob = 1.0
    c.data.occluders = 3
    c.data.num_scenes = 256
    c.data.heldout_scenes = 32
    # From CATs' init the untrained read-out is noise (the appearance
    # embeddings swamp the correlations through `proj`): training EPE 3.3
    # cells on quick pairs, against 1.4 for the mean filtered correlation,
    # which a zero `proj` returns. 300 steps do not recover that from
    # noise; from zero, 3e-4 lowers it (1e-3 first raises it).
    c.model.zero_proj = True
    c.optimizer.lr = 3e-4
    c.optimizer.decay_at = (0.8,)
    c.batch_size = 8
    c.num_train_steps = 300
    c.log_every = 25
    c.checkpoint_every = 100
    c.evals.synthetic.num_pairs = 32
  elif size == 'test':
    c.backbone.stage_sizes = (1, 1, 1, 1)
    c.backbone.width = 8
    c.backbone.features = ('hyper_0', 'hyper_2', 'hyper_4')
    c.model.feature_size = 4
    c.model.proj_dim = 8          # E = 16 + 8 = 24 = 6 x 4
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

  if dataset is not None:
    # Real pairs: annotated keypoints, no dense ground truth to score.
    c.loss.supervision = 'keypoints'
    del c.evals['synthetic']
  if dataset == 'pf_pascal':
    c.data.source = 'pf_pascal'
    if size == 'paper':
      c.backbone.features = _hyper(PF_PASCAL_HYPERPIXELS)
      # CATs: thres 'auto' = alpha_img on PF-PASCAL, validation and test.
      c.evals.pf_pascal_val = _benchmark('pf_pascal', 'validation', 'img',
                                         every=460, select='pck@0.1')
      c.evals.pf_pascal = _benchmark('pf_pascal', 'test', 'img')
      c.evals.pf_pascal_val.data_dir = c.evals.pf_pascal.get_ref(
          'data_dir').identity()
  elif dataset == 'spair':
    c.data.source = 'spair71k'
    c.data.max_keypoints = 40     # CATs' SPair loader pads to 40 points
    c.evals.spair_val = _benchmark('spair71k', 'validation', 'bbox',
                                   every=2000, select='pck@0.1')
    c.evals.spair = _benchmark('spair71k', 'test', 'bbox')
    c.evals.spair_val.data_dir = c.evals.spair.get_ref('data_dir').identity()
  c.lock()
  return c
