"""The `sfnet` method: SFNet model + self-supervised losses + Adam step.

Only the adaptation layers train (reference-facts §A.2, §A.7); the backbone
is frozen by the optimiser mask (`trainable`) and `stop_gradient` in the
model. The adaptation BatchNorm runs in train mode during training; the loss
hands its updated `batch_stats` to the base train step through
`base.MODEL_STATE`.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from semcorr_jax import geometry
from semcorr_jax.losses import sfnet as sfnet_losses
from semcorr_jax.methods import base
from semcorr_jax.models import backbones
from semcorr_jax.models import sfnet as sfnet_model

Array = jax.Array
PyTree = Any

# Key of the loss aux that carries the updated model state (not a metric).
MODEL_STATE = base.MODEL_STATE


class SFNetMethod(base.Method):
  """SFNet (Lee et al. 2019) trained on synthetic pairs with foreground masks.

  Config: `config.model` (see `semcorr_jax.models.sfnet.default_model_config`),
  `config.backbone` (see `semcorr_jax.models.backbones`), `config.loss`
  (mask_weight, flow_weight, smooth_weight), `config.optimizer` (see
  `base.make_optimizer`).
  """

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

  def trainable(self, params: PyTree) -> PyTree:
    """Everything but `params['backbone']` (SFNet trains adap3/adap4 only)."""
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict(
        {k: k[0] != 'backbone' for k in flat})

  # --- training ---------------------------------------------------------------
  def loss(self, params: PyTree, model_state: PyTree, batch: base.Batch,
           rng: Array) -> tuple[Array, dict[str, Any]]:
    """Train-mode loss; the aux also carries the updated model state.

    Returns:
      (loss, aux): the scalar batch-mean loss, and the scalar metrics
      ('mask_loss', 'flow_loss', 'smooth_loss' unweighted, 'mean_flow' in
      feature cells, 'mask_fraction') plus `aux[MODEL_STATE]`: the non-param
      collections after the forward (adaptation BN running statistics).
      `train_step` moves that entry into the state and out of the metrics;
      keeping it in this one function lets subclasses wrap `loss` alone.
    """
    del rng  # SFNet's forward and losses are deterministic.
    outputs, updates = self.model.apply(
        {'params': params, **model_state}, batch['source_image'],
        batch['target_image'], train=True, mutable=['batch_stats'])
    hw = outputs['feature_hw']
    mask_s = sfnet_losses.downsample_mask(batch['source_mask'], hw)
    mask_t = sfnet_losses.downsample_mask(batch['target_mask'], hw)
    cfg = self.config.loss
    weights = {'mask': cfg.mask_weight, 'flow': cfg.flow_weight,
               'smooth': cfg.smooth_weight}
    total, metrics = sfnet_losses.sfnet_loss(outputs, mask_s, mask_t, weights)
    flow_st = geometry.mapping_to_flow(outputs['mapping_st'])
    # Mean displacement in feature cells: a collapse detector (0 = identity).
    metrics['mean_flow'] = jnp.mean(jnp.linalg.norm(flow_st, axis=-1))
    metrics['mask_fraction'] = 0.5 * (jnp.mean(mask_s) + jnp.mean(mask_t))
    metrics[MODEL_STATE] = {**model_state, **updates}
    return total, metrics

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
    outputs = self.model.apply(variables, source, target, train=False)
    hw = outputs['feature_hw']
    src_hw, tgt_hw = source.shape[1:3], target.shape[1:3]
    return {
        'mapping_st': geometry.resize_mapping(outputs['mapping_st'], src_hw,
                                              hw, tgt_hw),
        'mapping_ts': geometry.resize_mapping(outputs['mapping_ts'], tgt_hw,
                                              hw, src_hw),
        'feature_mapping_st': outputs['mapping_st'],
        'feature_mapping_ts': outputs['mapping_ts'],
    }
