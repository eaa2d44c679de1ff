r"""CAMNet: confidence-aware refinement and self-supervised adversarial training.

Paper 000 (Huang, Wang, He; ACCV 2020) on the SFNet base network
(configs/sfnet.py). Variants (`--config=configs/camnet.py:<variant>`):

* `test`: seconds; a tiny backbone at 64x64 for unit tests.
* `quick`: the embedded default dataset on a 2-core CPU in minutes, with the
  `quick` SFNet's backbone and pairs (EfficientNet-Lite0 when installed;
  affine + TPS warps and occluders). A second stage: 150 steps starting
  from a trained `configs/sfnet.py:quick` run (its variables go under
  CAMNet's `base`; without `init_from.workdir` the run stops with one
  error):

    semcorr-train --config=configs/sfnet.py:quick --workdir=runs/sfnet_quick
    semcorr-train --config=configs/camnet.py:quick --workdir=runs/camnet_quick \
      --config.init_from.workdir=runs/sfnet_quick

  About 5 minutes for the second stage on a 2-core CPU. Expected: see
  docs/camnet.md (Table-3 rows x 3 seeds, `benchmarks/camnet_table3.py`).
* `paper`: ResNet-101 at 320x320 on PASCAL VOC 2012 segmentation pairs
  (PF-PASCAL test images excluded), the paper's loss weights, batch 16:

    semcorr-train --config=configs/camnet.py:paper --workdir=runs/camnet \
      --config.data.manual_dir=/path/to/VOCtrainval_11-May-2012.tar \
      --config.backbone.weights=/path/to/resnet101_torchvision.npz \
      --config.evals.pf_pascal.data_dir=/path/to/pf-pascal \
      --config.evals.pf_willow.data_dir=/path/to/pf-willow

  The evaluators are SFNet's (configs/sfnet.py:paper; the paper trains and
  selects models as SFNet, Sec. 5.1, and publishes no evaluation code, so
  SFNet's protocol is assumed), all with its 288 + 16 px padding: every 1000
  steps `pf_pascal_val` scores PF-PASCAL validation by alpha_bbox PCK@0.1
  (model selection: runs/camnet/eval/model_selection.json names the best
  step, its checkpoint is kept in runs/camnet/best/); `pf_pascal` (test,
  alpha_img) and `pf_willow` (test, L = the source keypoints' extent) score
  the last model at the end. Without a folder the run stops before training
  with one error naming the setting. The selected model's test scores:

    semcorr-eval --workdir=runs/camnet --best --evals=pf_pascal,pf_willow

  `pck@0.1` (refined flow) compares with the paper's PCK@0.1: 0.835 on
  PF-PASCAL test (alpha_img, Table 2) and 0.746 on PF-WILLOW (alpha_bbox,
  Table 1); its SFNet baseline (a configs/sfnet.py:paper run) with 0.819
  (Table 2) and 0.735 (Table 1). docs/camnet.md, "Compared with the
  paper".

Table 3 rows: a variant may name one after a comma
(`configs/camnet.py:quick,confidence`); `sweep` runs them all. Each row is
two switches, `model.refinement` and `gan.enabled`:
  'sfnet'       'none', False: the base network alone, trained with Eq. 4;
  'refinement'  'plain', False: + U(S) on the bare correlation, F_r = F_u;
  'confidence'  'confidence_aware', False: + confidence network and
                confidence-aware refinement (Eq. 1-3, 6-7);
  'full'        'confidence_aware', True: + the PatchGAN discriminator and
                L_adv (Eq. 8-14). The default.

From the paper: lambda 0.188 (= SFNet's 3/16), gamma = beta = 0.4, mu1 288,
mu2 18, PatchGAN D, LSGAN losses, 320x320, VOC 2012 + masks, SFNet's base
network (ResNet-101 layer3/layer4 + adaptation layers, kernel soft-argmax).
Not in the paper, chosen here (and stated in semcorr_jax/models/camnet.py):
* the ground-truth confidence threshold: 1 feature cell (16 px at 320x320 =
  PCK@0.05 of the image), `loss.confidence_threshold`;
* the confidence net: 1x1 projection of both adapted taps to 64 channels,
  the normalised flow (no gradient), 3 x (3x3 conv, BN, ReLU) of width 64,
  one logit + sigmoid;
* the refinement net: the correlation (times C_b) and each cell's own
  normalised (x, y) in, 3x3 stem to 128 channels, 4 DenseNet layers of
  growth 32, a zero-initialised 3x3 conv to a displacement added to the
  soft-argmax read-out of the correlation (docs/camnet.md says why);
* the discriminator: pix2pix 70x70 PatchGAN (width 64, 3 stride-2 layers)
  with instance norm and a sigmoid output (the paper's "values between 0 and
  1"); real pairs are the source warped by the ground truth, masked like the
  fake ones (`gan.real_pair='reference'` takes Eq. 9 literally: the target
  itself); D inputs are multiplied by the reference's foreground mask;
* optimisers: G as SFNet (Adam 3e-5, x0.2 at 75%); D Adam 3e-5 with
  b1 0.5 (pix2pix's GAN setting), its lr and schedule following
  `optimizer`'s unless `disc_optimizer.*` is set; one D update per G update
  (`gan.disc_steps`), on the warps of the same batch, G first;
* no smoothness term (Eq. 4 has none; SFNet's has weight 0.5).

Overrides use ml_collections syntax, e.g. `--config.gan.disc_steps=2`.
"""

import os

import ml_collections
from ml_collections import config_dict

from semcorr_jax import config_blocks
from semcorr_jax import config_files

# Table 3 rows -> their switches.
ABLATIONS = {
    'sfnet': {'model.refinement': 'none', 'gan.enabled': False},
    'refinement': {'model.refinement': 'plain', 'gan.enabled': False},
    'confidence': {'model.refinement': 'confidence_aware',
                   'gan.enabled': False},
    'full': {'model.refinement': 'confidence_aware', 'gan.enabled': True},
    # Not in the paper: the full model whose confidence also reads the
    # flow's forward-backward error and the correlation peak.
    'full_cues': {'model.refinement': 'confidence_aware', 'gan.enabled': True,
                  'model.confidence_inputs': 'features_flow_match_cues'},
}
_SFNET_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                             'sfnet.py')


def get_config(variant: str = 'quick') -> ml_collections.ConfigDict:
  """Returns the locked config of `variant` ('test' | 'quick' | 'paper').

  A variant may carry a Table-3 row after a comma, e.g. 'quick,confidence'.
  """
  variant, _, ablation = variant.partition(',')
  ablation = ablation or 'full'
  if ablation not in ABLATIONS:
    raise ValueError(f'unknown Table-3 row {ablation!r}: one of '
                     f'{tuple(ABLATIONS)}')
  # The base network's settings are SFNet's, variant for variant.
  c = config_files.load(f'{_SFNET_CONFIG}:{variant}')
  c.unlock()
  c.method = 'camnet'
  c.model.update(dict(
      refinement='confidence_aware',
      confidence_features=64,
      confidence_width=64,
      confidence_layers=3,
      # 'features_flow' (Eq. 1) | 'features_flow_match' (+ the other
      # image's features at the matches and their cosine similarity) |
      # 'features_flow_match_cues' (+ forward-backward error, correlation
      # peak: models/camnet.py `consistency_cues`)
      confidence_inputs='features_flow',
      refine_width=128,
      refine_growth=32,
      refine_layers=4,
      # F_u = soft-argmax read-out of S + U's displacement ('soft_argmax')
      # or the cell's own position + U's displacement ('none').
      refine_readout='soft_argmax',
      # The cells' normalised (x, y) as 2 more input channels of U.
      refine_coordinates=True,
  ))
  c.loss = ml_collections.ConfigDict(dict(
      mask_weight=0.188,             # lambda, Eq. 4
      base_weight=0.4,               # gamma, Eq. 5
      base_confidence_weight=0.4,    # beta, Eq. 7
      align_weight=288.0,            # mu1, Eq. 11
      confidence_weight=18.0,        # mu2, Eq. 11
      adversarial_weight=1.0,        # weight of L_adv in Eq. 11
      confidence_threshold=1.0,      # GT confidence: error <= this, cells
      # Not in the paper: weight of a direct end-point-error loss on F_u
      # against the synthetic flow (0 = the paper's self-supervised U).
      update_flow_weight=0.0,
  ))
  c.gan = ml_collections.ConfigDict(dict(
      enabled=True,
      disc_steps=1,                  # D updates per G update
      real_pair='warped_gt',         # 'warped_gt' | 'reference' (Eq. 9)
      width=64,                      # PatchGAN ndf
      num_layers=3,                  # 70x70 patches
      sigmoid_output=True,
  ))
  # D's schedule follows G's: derived references, so `--config.optimizer.lr`
  # reaches D too, while `--config.disc_optimizer.lr` replaces D's alone
  # (setting a derived reference detaches it; setting G's shared one would
  # not).
  def follow(field):
    return c.optimizer.get_ref(field).identity()

  c.disc_optimizer = ml_collections.ConfigDict(dict(
      name='adam', lr=follow('lr'), b1=0.5, b2=0.999,
      decay_at=follow('decay_at'), decay_factor=follow('decay_factor'),
      weight_decay=0.0, momentum=config_dict.placeholder(float),
      grad_clip_norm=config_dict.placeholder(float)))

  if variant == 'paper':
    # The evaluators are SFNet's (configs/sfnet.py:paper; Sec. 5.1 follows
    # SFNet): model selection on PF-PASCAL validation by alpha_bbox PCK@0.1
    # every 1000 steps (eval/model_selection.json, the best checkpoint in
    # workdir/best/), PF-PASCAL and PF-WILLOW test at the end, all with the
    # 288 + 16 px padding protocol.
    c.checkpoint_every = 1000
  elif variant == 'quick':
    # CPU budget: thinner heads and D (the matching grid is 20x20 as in the
    # paper, so the refinement stem still reads 400 correlation channels).
    c.model.update(dict(confidence_features=32, confidence_width=32,
                        confidence_layers=2, refine_width=64,
                        refine_growth=16, refine_layers=3))
    c.gan.width = 8
    # Not Eq. 1's inputs alone: the confidence also sees the other image's
    # features at the matches (AUC@0.1 0.78 vs 0.67 with Eq. 1's inputs on
    # the earlier quick pairs, docs/camnet.md).
    c.model.confidence_inputs = 'features_flow_match'
    # A second stage: meant to start from a trained `sfnet.py:quick` base
    # (--config.init_from.workdir, benchmarks/camnet_table3.py does).
    c.num_train_steps = 150
    c.init_from.subtrees = ('params:params/base',
                            'batch_stats:batch_stats/base')
  elif variant == 'test':
    c.model.update(dict(confidence_features=8, confidence_width=8,
                        confidence_layers=1, refine_width=8, refine_growth=4,
                        refine_layers=2))
    c.gan.width = 4
    c.gan.num_layers = 2

  config_blocks.set_fields(c, ABLATIONS[ablation])
  c.lock()
  return c


def sweep(add):
  """The Table-3 ablation: every row with the same seed, data and budget.

  Each `add(**overrides)` call is one run, e.g. launched as
  `semcorr-train --config=configs/camnet.py:quick
  --config.model.refinement=plain --config.gan.enabled=False`
  (the same as `configs/camnet.py:quick,refinement`).
  """
  for overrides in ABLATIONS.values():
    add(**overrides)
