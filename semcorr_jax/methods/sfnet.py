"""The `sfnet` method: SFNet model + self-supervised losses + Adam step.

Only the adaptation layers train (reference-facts §A.2, §A.7): the backbone
is parameter group 'backbone' (the default grouping), frozen by
`config.optimizer.groups.backbone.frozen` and by `stop_gradient` in the
model. The adaptation BatchNorm runs in train mode during training; the loss
returns its updated `batch_stats` beside the metrics.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from semcorr_jax import geometry
from semcorr_jax import outputs
from semcorr_jax.losses import sfnet as sfnet_losses
from semcorr_jax.methods import base
from semcorr_jax.models import backbones
from semcorr_jax.models import sfnet as sfnet_model

Array = jax.Array
PyTree = Any


class SFNetMethod(base.Method):
  """SFNet (Lee et al. 2019) trained on synthetic pairs with foreground masks.

  Config (configs/sfnet.py): `config.model` (adapt_kernels, adapt_units,
  beta, kernel_sigma, dtype), `config.backbone` (`semcorr_jax.models.
  backbones`), `config.loss` (mask_weight, flow_weight, smooth_weight),
  `config.optimizer` (`base.make_optimizer`; groups 'backbone', 'model').
  """

  flows = (outputs.Flow('final', description='SFNet flow'),)
  batch_keys = ('source_image', 'target_image', 'source_mask', 'target_mask')

  def build_model(self) -> sfnet_model.SFNet:
    return sfnet_model.SFNet.from_config(
        self.config.model, backbones.backbone_config(self.config))

  # --- initialisation -------------------------------------------------------
  # `init_variables` is the base one (host-free, jittable: `model.init` on one
  # pair); the trainer applies `load_pretrained` to the fresh state outside
  # jit, so the weights file is read once, on the host.

  def load_pretrained(self, variables: PyTree) -> PyTree:
    """Loads `config.backbone.weights` into the `backbone` subtrees.

    Args:
      variables: {'params', 'batch_stats'} of the whole model (host arrays).

    Returns:
      `variables` itself for a random backbone (ResNet without weights, or
      weights='none'), else a copy whose `params/backbone` and
      `batch_stats/backbone` hold the checkpoint (strict: missing,
      unexpected or mis-shaped keys raise SemcorrError). Lite0 with
      weights=None loads the packaged ImageNet weights.
    """
    return backbones.load_backbone_pretrained(
        variables, backbones.backbone_config(self.config),
        subtree=('backbone',))

  # --- training ---------------------------------------------------------------
  def loss(self, params: PyTree, model_state: PyTree, batch: base.Batch,
           rng: Array) -> tuple[Array, tuple[dict[str, Array], PyTree]]:
    """Train-mode loss.

    Returns:
      (loss, (metrics, model_state)): the scalar batch-mean loss; the scalar
      metrics 'mask_loss', 'flow_loss', 'smooth_loss' (unweighted),
      'mean_flow' (feature cells) and 'mask_fraction'; and the non-param
      collections after the forward (adaptation BN running statistics).
    """
    del rng  # SFNet's forward and losses are deterministic.
    out, updates = self.model.apply(
        {'params': params, **model_state}, batch['source_image'],
        batch['target_image'], train=True, mutable=['batch_stats'])
    hw = out['feature_hw']
    mask_s = geometry.downsample_mask(batch['source_mask'], hw)
    mask_t = geometry.downsample_mask(batch['target_mask'], hw)
    cfg = self.config.loss
    weights = {'mask': cfg.mask_weight, 'flow': cfg.flow_weight,
               'smooth': cfg.smooth_weight}
    total, metrics = sfnet_losses.sfnet_loss(out, mask_s, mask_t, weights)
    flow_st = geometry.mapping_to_flow(out['mapping_st'])
    # Mean displacement in feature cells: a collapse detector (0 = identity).
    metrics['mean_flow'] = jnp.mean(jnp.linalg.norm(flow_st, axis=-1))
    metrics['mask_fraction'] = 0.5 * (jnp.mean(mask_s) + jnp.mean(mask_t))
    return total, (metrics, {**model_state, **updates})

  # --- inference --------------------------------------------------------------
  def predict(self, variables: PyTree, source: Array, target: Array
              ) -> dict[str, Array]:
    """Dense mappings at the input resolution (eval-mode BatchNorm).

    Args:
      variables: {'params', 'batch_stats'}.
      source: (B, H, W, 3) in [0, 1].
      target: (B, H, W, 3) in [0, 1].

    Returns:
      'mapping_st', 'mapping_ts': (B, H, W, 2) in input-image pixels, the
        feature-grid mappings lifted with align-corners bilinear resampling;
      'feature_mapping_st', 'feature_mapping_ts': (B, h, w, 2) in feature
        cells (the raw kernel soft-argmax output).
    """
    out = self.model.apply(variables, source, target, train=False)
    hw = out['feature_hw']
    src_hw, tgt_hw = source.shape[1:3], target.shape[1:3]
    return {
        'mapping_st': geometry.resize_mapping(out['mapping_st'], src_hw,
                                              hw, tgt_hw),
        'mapping_ts': geometry.resize_mapping(out['mapping_ts'], tgt_hw,
                                              hw, src_hw),
        'feature_mapping_st': out['mapping_st'],
        'feature_mapping_ts': out['mapping_ts'],
    }
