r"""JLFC: joint learning of feature extraction and cost aggregation (paper 002).

A trainable feature extractor (backbone + SFNet's adaptation layers) and a
cost aggregator (NCNet's consensus or CATs' transformer) trained together
with confidence-aware contrastive losses on each other's winner-take-all
pseudo labels, from image pairs alone (semcorr_jax/methods/jlfc.py;
docs/jlfc.md has every choice below with its reason).

A variant is `<size>[,ncnet|cats][,<row>]` (`--config=configs/jlfc.py:
quick,cats,no_joint`): size `test` (seconds, unit tests), `quick` (the
embedded default dataset on a 2-core CPU in minutes) or `paper`; the
aggregator (default ncnet); a row of the ablations (`ABLATIONS`, default
`full`): Table 2 (`no_joint`: both cross terms dropped; `no_confidence`:
M = 1) and Table 3 (`agg_only` = (a) L^A; `agg_cross` = (b) L^A + L^{C->A};
`no_joint` = (c) L^C + L^A; `full` = (d) all four). `sweep` lists the rows.

* `quick,ncnet`: 120 steps of 4 synthetic pairs of the embedded scenes
  (affine + TPS, occluders; configs/ncnet.py:quick's data, budget and
  consensus), EfficientNet-Lite0 tapped at stage5 (160 px: 10 x 10 cells):

    semcorr-train --config=configs/jlfc.py:quick,ncnet \
      --workdir=runs/jlfc_ncnet_quick

  Measured (32 held-out pairs, PCK@0.1 alpha_img, seeds 0-2; docs/jlfc.md
  "Quick runs"): 0.644 ± 0.010 against 0.225 ± 0.152 untrained; NCNet's own
  weak loss with the same budget (configs/ncnet.py:quick) reaches 0.768 ±
  0.003, and the rows without L^{C->A} (`no_joint`, `agg_only`) 0.74.
* `quick,cats`: configs/cats.py:quick's backbone, grid (S = 8 at 128 px),
  budget (300 steps of 8) and zero-initialised aggregator output, trained
  without ground truth:

    semcorr-train --config=configs/jlfc.py:quick,cats \
      --workdir=runs/jlfc_cats_quick

  Measured (seeds 0-1): 0.636 ± 0.010 PCK@0.1 (alpha_img) against 0.608
  untrained and 0.625 for configs/cats.py:quick, trained on the ground truth.

* `paper,ncnet` and `paper,cats`: ResNet-101 at 256 x 256 (16 x 16 cells:
  layer3 for ncnet; PF-PASCAL's hyperpixels resized to S = 16 for cats),
  adaptation layers of 2 residual units per tap (5 x 5 on ncnet's layer3,
  SFNet's; 1 x 1 on cats' hyperpixels), AdamW (weight decay 0.05, CATs')
  at the paper's rates: 3e-5 for feature extraction (backbone and
  adaptation) and 3e-6 for aggregation (CATs' train.py has the opposite;
  `--config.optimizer.groups.aggregator.lr=3e-5
  --config.optimizer.groups.features.lr=3e-6
  --config.optimizer.groups.backbone.lr=3e-6` gives it); constant rate;
  PF-PASCAL train pairs without keypoints; NCNet's batch and epochs (16,
  5) for ncnet, CATs' (32, 100) for cats; alpha1 0.1, alpha2 0.05 squared
  cells, gamma 0.05; Eq. 5 with lambda 0.5, 0.5:

    semcorr-train --config=configs/jlfc.py:paper,ncnet --workdir=runs/jlfc \
      --config.backbone.weights=/path/to/resnet101_torchvision.npz \
      --config.data.manual_dir=/path/to/pf-pascal \
      --config.evals.pf_pascal.data_dir=/path/to/pf-pascal \
      --config.evals.pf_willow.data_dir=/path/to/pf-willow \
      --config.evals.tss.data_dir=/path/to/tss

  Evaluated on PF-PASCAL test (alpha_img, 256 squash), PF-WILLOW test
  (L = max side of the source keypoints' extent, the NCNet family's rule;
  Table 1 mixes conventions, docs/jlfc.md) and TSS (flow
  accuracy at 0.05), every declared flow (aggregated and raw); PF-PASCAL
  validation selects the model once per epoch. Paper (Table 1, PCK@0.1):
  w/NCNet 80.0 PF-PASCAL, 86.6 PF-WILLOW; w/CATs 92.5, 79.8; the raw
  read-out of untrained ResNet-101 features: 53.3, 46.9 (the `raw_` scores
  of the untrained baseline with `--config.model.adapt_units=0
  --config.evals.pf_pascal.untrained_baseline=True`).

Overrides use ml_collections syntax, e.g. `--config.loss.temperature=0.1`.
"""

import ml_collections
from ml_collections import config_dict

from semcorr_jax import config_blocks

ALL_TERMS = ('raw', 'agg_to_raw', 'agg', 'raw_to_agg')
# Row -> loss overrides (paper 002, Tables 2 and 3).
ABLATIONS = {
    'full': {},                                              # T3 (d), T2 (a)
    'no_joint': {'loss.terms': ('raw', 'agg')},              # T3 (c), T2 (b)
    'no_confidence': {'loss.confidence_mask': False},        # T2 (c)
    'agg_only': {'loss.terms': ('agg',)},                    # T3 (a)
    'agg_cross': {'loss.terms': ('agg', 'raw_to_agg')},      # T3 (b)
}
AGGREGATORS = ('ncnet', 'cats')
SIZES = ('test', 'quick', 'paper')
# PF-PASCAL hyperpixels of HPF/CATs (ResNet-101 bottlenecks).
PF_PASCAL_HYPERPIXELS = (2, 17, 21, 22, 25, 26, 28)
LITE0_CATS_FEATURES = ('stage3', 'stage4', 'stage5', 'stage6')
RESNET50_CATS_FEATURES = ('hyper_7', 'hyper_10', 'hyper_13', 'hyper_16')


def _parse(variant: str) -> tuple[str, str, str]:
  size, *tokens = variant.split(',')
  if size not in SIZES:
    raise ValueError(f'unknown variant {variant!r}: <size>[,ncnet|cats]'
                     f'[,<row>] with size one of {SIZES}')
  aggregator, row = 'ncnet', 'full'
  for token in tokens:
    if token in AGGREGATORS:
      aggregator = token
    elif token in ABLATIONS:
      row = token
    else:
      raise ValueError(f'unknown variant part {token!r}: an aggregator '
                       f'{AGGREGATORS} or a row {tuple(ABLATIONS)}')
  return size, aggregator, row


def _benchmark(name, split, threshold, frame, every=0, select=''):
  """A benchmark evaluator: images squashed to 256 x 256, target keypoints
  moved into the source (NCNet's and CATs' protocol)."""
  return config_blocks.benchmark_eval(name, split, threshold, frame,
                                      protocol='resize', every=every,
                                      select=select)


def get_config(variant: str = 'quick,ncnet') -> ml_collections.ConfigDict:
  """Returns the locked config of `<size>[,ncnet|cats][,<row>]`."""
  size, aggregator, row = _parse(variant)
  c = ml_collections.ConfigDict()
  c.method = 'jlfc'
  c.seed = 0

  # ncnet: one tap; cats: the hyperpixel levels
  c.backbone = config_blocks.backbone(
      ('layer3',) if aggregator == 'ncnet' else tuple(
          f'hyper_{i}' for i in PF_PASCAL_HYPERPIXELS))
  c.model = ml_collections.ConfigDict(dict(
      aggregator=aggregator,      # 'ncnet' | 'cats'
      # The paper's "additional layers": SFNet's residual units per tap.
      adapt_kernel=3,
      adapt_units=2,              # 0: features straight from the backbone
      # ncnet: NeighConsensus
      kernel_sizes=(5, 5, 5),
      channels=(16, 16, 1),
      symmetric=True,
      conv4d_impl='planes',       # 'planes' | 'native' | 'sequential' | 'custom_vjp'
      # cats: S, appearance embedding, transformer
      feature_size=16,
      proj_dim=128,
      depth=1,
      num_heads=6,
      mlp_ratio=4.0,
      zero_proj=False,
      # The aggregated flow: 'argmax' (NCNet's evaluation, Eq. 1) or
      # 'soft_argmax' at `readout_temperature` (CATs' evaluation).
      readout='argmax' if aggregator == 'ncnet' else 'soft_argmax',
      readout_temperature=0.02,
      dtype='float32',            # backbone and adaptation compute dtype
  ))
  c.loss = ml_collections.ConfigDict(dict(
      terms=ALL_TERMS,            # the enabled terms of Eq. 5
      raw_weight=0.5,             # lambda_C
      agg_weight=0.5,             # lambda_A
      temperature=0.05,           # gamma of the terms scoring C (Eq. 3)
      # gamma of the terms scoring A; None = `temperature`
      agg_temperature=config_dict.placeholder(float),
      alpha1=0.1,                 # Eq. 2, relative
      alpha2=0.05,                # Eq. 2, absolute, in `alpha_unit` squared
      alpha_unit='cells',         # 'cells' | 'normalized' | 'pixels'
      confidence_mask=True,       # False: M = 1 (Table 2, row c)
      # 'st' (Eqs. 3-4 as printed) | 'both'. CATs' aggregator is not
      # symmetric: 'st' would train only the rows of A, while the read-outs
      # and evaluators also use its columns (target -> source).
      directions='st' if aggregator == 'ncnet' else 'both',
  ))
  # Groups: 'backbone', 'features' (adaptation layers), 'aggregator'.
  c.optimizer = config_blocks.optimizer(
      'adamw', 3e-5, weight_decay=0.05,
      groups=dict(
          backbone=config_blocks.group(frozen=size != 'paper', lr=3e-5),
          features=config_blocks.group(frozen=False, lr=3e-5),
          aggregator=config_blocks.group(frozen=False, lr=3e-6)))
  c.init_from = config_blocks.init_from()

  c.data = config_blocks.pair_data(
      (256, 256), (320, 320), warp='mixed', affine_std=0.25, tps_prob=1.0,
      occluders=3)
  c.batch_size = 16 if aggregator == 'ncnet' else 32
  c.num_epochs = 5 if aggregator == 'ncnet' else 100
  c.num_train_steps = -1        # > 0 overrides num_epochs
  c.log_every = 50
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.update(config_blocks.trainer_tools())

  c.evals = ml_collections.ConfigDict(dict(
      synthetic=config_blocks.synthetic_eval()))

  if size == 'paper':
    c.data.source = 'pf_pascal'
    del c.evals['synthetic']
    steps_per_epoch = 2940 // c.batch_size
    c.evals.pf_pascal = _benchmark('pf_pascal', 'test', 'img', 'square')
    c.evals.pf_pascal_val = _benchmark(
        'pf_pascal', 'validation', 'img', 'square', every=steps_per_epoch,
        select='pck@0.1')
    c.evals.pf_pascal_val.data_dir = c.evals.pf_pascal.get_ref(
        'data_dir').identity()
    c.evals.pf_willow = _benchmark('pf_willow', 'test', 'kps', 'original')
    c.evals.tss = _benchmark('tss', 'test', 'img', 'original')
    c.checkpoint_every = steps_per_epoch
    # SFNet's layer3 adaptation is 5 x 5; on CATs' six 1024-channel
    # hyperpixels 3 x 3 units would add 114M parameters, 1 x 1 ones 12.8M.
    c.model.adapt_kernel = 5 if aggregator == 'ncnet' else 1
  elif size == 'quick':
    lite0 = config_blocks.lite0_if_installed(c.backbone,
                                             'configs/jlfc.py:quick')
    c.data.scene_size = (192, 192)
    c.data.num_scenes = 256
    c.data.heldout_scenes = 32
    c.evals.synthetic.num_pairs = 32
    c.optimizer.groups.aggregator.lr = 1e-3
    c.optimizer.groups.features.lr = 1e-3
    if aggregator == 'ncnet':
      c.backbone.features = ('stage5',) if lite0 else ('layer3',)
      c.model.kernel_sizes = (3, 3)
      c.model.channels = (16, 1)
      c.data.image_size = (160, 160)
      c.batch_size = 4
      c.num_train_steps = 120
      c.log_every = 10
      c.checkpoint_every = 40
    else:
      c.backbone.features = (LITE0_CATS_FEATURES if lite0 else
                             RESNET50_CATS_FEATURES)
      c.model.feature_size = 8
      c.model.zero_proj = True
      c.data.image_size = (128, 128)
      c.data.scene_size = (160, 160)
      c.optimizer.groups.aggregator.lr = 3e-4
      c.batch_size = 8
      c.num_train_steps = 300
      c.log_every = 25
      c.checkpoint_every = 100
  else:  # test
    c.backbone.stage_sizes = (1, 1, 1, 1)
    c.backbone.width = 8
    if aggregator == 'ncnet':
      c.backbone.features = ('layer3',)
      c.model.kernel_sizes = (3, 3)
      c.model.channels = (4, 1)
    else:
      c.backbone.features = ('hyper_0', 'hyper_2', 'hyper_4')
      c.model.feature_size = 4
      c.model.proj_dim = 8
    c.model.adapt_units = 1
    c.data.image_size = (64, 64)
    c.data.scene_size = (80, 80)
    c.data.num_scenes = 16
    c.data.heldout_scenes = 4
    c.data.occluders = 0
    c.optimizer.groups.aggregator.lr = 1e-3
    c.optimizer.groups.features.lr = 1e-3
    c.batch_size = 8
    c.num_train_steps = 4
    c.log_every = 2
    c.checkpoint_every = 2
    c.evals.synthetic.num_pairs = 4
    c.evals.synthetic.batch_size = 4

  config_blocks.set_fields(c, ABLATIONS[row])
  c.lock()
  return c


def sweep(add):
  """Tables 2 and 3: every row with the same seed, data and budget.

  Each `add(**overrides)` call is one run, e.g. launched as
  `semcorr-train --config=configs/jlfc.py:quick,ncnet
  --config.loss.terms="('raw', 'agg')"` (the same as
  `configs/jlfc.py:quick,ncnet,no_joint`);
  benchmarks/jlfc_ablation.py runs them over seeds and writes the table.
  """
  for overrides in ABLATIONS.values():
    add(**overrides)
