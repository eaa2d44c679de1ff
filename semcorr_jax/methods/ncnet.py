"""The `ncnet` method: NCNet trained with its weak loss on image pairs.

Reads the images only, so it trains on any pair source, real (PF-PASCAL
train pairs, the paper) or synthetic (the `quick` variant). Parameter
groups:

  backbone            the backbone, frozen (`optimizer.groups.backbone`)
                      and under `stop_gradient`
  backbone_finetune   the last `model.finetune_blocks` blocks before the tap
                      (the release's `fe_finetune_params`); empty with 0
  model               the neighbourhood consensus

The backbone's BatchNorm always normalises with its running statistics,
also in fine-tuned blocks (the reference keeps `FeatureExtraction` in eval
mode), so the model state never changes. Frozen groups are put under
`stop_gradient` in the loss, so with fine-tuning the backward pass stops at
the first fine-tuned block.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from semcorr_jax import geometry
from semcorr_jax import outputs
from semcorr_jax.losses import ncnet as ncnet_losses
from semcorr_jax.methods import base
from semcorr_jax.models import backbones
from semcorr_jax.models import ncnet as ncnet_model

Array = jax.Array
PyTree = Any

GROUPS = ('backbone', 'backbone_finetune', 'model')


class NCNetMethod(base.Method):
  """NCNet (Rocco et al. 2018), configs/ncnet.py.

  Config: `config.backbone` (one tap), `config.model` (kernel_sizes,
  channels, symmetric, conv4d_impl, finetune_blocks, soft_beta, dtype),
  `config.optimizer` (groups of `GROUPS`).
  """

  flows = (
      outputs.Flow('final', extras=('confidence',),
                   description='argmax of the filtered volume (NCNet eval); '
                   'confidence = its softmax probability'),
      outputs.Flow('soft', description='expected cell under the softmax of '
                   'the filtered volume'),
  )
  batch_keys = ('source_image', 'target_image')
  param_group_names = GROUPS

  def build_model(self) -> ncnet_model.NCNet:
    spec = backbones.BackboneSpec.from_config(
        backbones.backbone_config(self.config))
    self.finetuned = ncnet_model.finetuned_blocks(
        spec, self.config.model.finetune_blocks)
    train_backbone = bool(self.finetuned) or base.group_settings(
        self.config.optimizer, 'backbone') is not None
    return ncnet_model.NCNet.from_config(self.config, train_backbone)

  def param_groups(self, params: PyTree) -> PyTree:
    """'backbone_finetune' for the fine-tuned blocks, 'backbone' for the
    rest of the backbone, 'model' for the consensus."""
    finetuned = set(self.finetuned)
    flat = flax.traverse_util.flatten_dict(params)

    def label(path):
      if path[0] != 'backbone':
        return 'model'
      return 'backbone_finetune' if path[1] in finetuned else 'backbone'
    return flax.traverse_util.unflatten_dict({k: label(k) for k in flat})

  def load_pretrained(self, variables: PyTree) -> PyTree:
    """Loads `config.backbone.weights` into the `backbone` subtrees."""
    return backbones.load_backbone_pretrained(
        variables, backbones.backbone_config(self.config),
        subtree=('backbone',))

  # --- training ---------------------------------------------------------------
  def _without_frozen_gradients(self, params: PyTree) -> PyTree:
    return base.without_frozen_gradients(
        self.config.optimizer, GROUPS, params, self.param_groups(params))

  def loss(self, params: PyTree, model_state: PyTree, batch: base.Batch,
           rng: Array) -> tuple[Array, tuple[dict[str, Array], PyTree]]:
    """The weak loss on the global batch (losses/ncnet.py).

    The negatives roll the source *features* by one, the same as rolling
    the images (the backbone sees each image alone), with one backbone pass.

    Returns:
      (loss, (metrics, model_state)): metrics 'score_pos', 'score_neg'
      and 'mean_confidence' (max softmax over the target cells of the
      positives); the model state unchanged.
    """
    del rng  # Deterministic.
    variables = {'params': self._without_frozen_gradients(params),
                 **model_state}
    source, target = batch['source_image'], batch['target_image']
    n = source.shape[0]
    feats = self.model.apply(variables, jnp.concatenate([source, target]),
                             method=ncnet_model.NCNet.features)
    feat_s, feat_t = feats[:n], feats[n:]
    corr = self.model.apply(
        variables,
        jnp.concatenate([feat_s, ncnet_losses.negative_sources(feat_s)]),
        jnp.concatenate([feat_t, feat_t]), method=ncnet_model.NCNet.match)
    loss, metrics = ncnet_losses.weak_loss(corr[:n], corr[n:])
    metrics['mean_confidence'] = jnp.mean(
        ncnet_model.max_softmax(corr[:n], 'b'))
    return loss, (metrics, model_state)

  # --- inference --------------------------------------------------------------
  def predict(self, variables: PyTree, source: Array, target: Array
              ) -> dict[str, Array]:
    """Both read-outs in both directions at the input resolution.

    Returns:
      'mapping_st', 'mapping_ts' (B, H, W, 2): the hard argmax (NCNet's
      evaluation), cell mappings lifted with align-corners bilinear
      resampling (between cells the matched positions are interpolated, as
      the reference's `bilinearInterpPointTnf`), in input pixels;
      'confidence_st', 'confidence_ts' (B, H, W): the argmax's softmax
      probability, lifted the same way; 'soft_mapping_st',
      'soft_mapping_ts': the soft read-out; 'feature_mapping_st',
      'feature_mapping_ts' (B, h, w, 2): the argmax in cells.
    """
    out = self.model.apply(variables, source, target)
    grid = {'s': out['corr'].shape[1:3], 't': out['corr'].shape[3:5]}
    image = {'s': source.shape[1:3], 't': target.shape[1:3]}
    result = {}
    for d in outputs.DIRECTIONS:
      a, b = d
      for prefix in ('', 'soft_'):
        result[f'{prefix}mapping_{d}'] = geometry.resize_mapping(
            out[f'{prefix}mapping_{d}'], image[a], grid[b], image[b])
      result[f'confidence_{d}'] = geometry.resize_images(
          out[f'confidence_{d}'][..., None], image[a])[..., 0]
      result[f'feature_mapping_{d}'] = out[f'mapping_{d}']
    return result
