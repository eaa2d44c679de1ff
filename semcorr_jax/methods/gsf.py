"""The `gsf` method: Guided Semantic Flow model + weakly supervised losses.

Two stages (Sec. 4.3, `config.stage`): stage 1 trains the pruning network
alone with L_P (Eq. 10; groups 'features' and 'matching' frozen, the
features' BatchNorm in eval mode, so nothing but `params/pruning` changes);
stage 2 trains end to end with L_final (Eq. 15). Weak supervision: the
losses read the images and the foreground (masks of synthetic pairs, object
boxes of real pairs, else every cell); dense ground truth only reaches the
evaluators.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from semcorr_jax import geometry
from semcorr_jax import outputs
from semcorr_jax.losses import gsf as gsf_losses
from semcorr_jax.methods import base
from semcorr_jax.models import backbones
from semcorr_jax.models import gsf as gsf_model

Array = jax.Array
PyTree = Any

GROUPS = ('backbone', 'features', 'pruning', 'matching')


def box_mask(box: Array, valid: Array, image_hw: tuple[int, int],
             grid_hw: tuple[int, int]) -> Array:
  """Cells of a (h, w) grid whose centres lie in a pixel box.

  Args:
    box: (B, 4) (x0, y0, x1, y1) in input-image pixels.
    valid: (B,) 1 where the box is known; unknown boxes give all cells.
    image_hw: (H, W) of the image; grid_hw: (h, w) of the grid (align
      corners: cell x covers pixel x * (W - 1) / (w - 1)).

  Returns:
    (B, h, w) float32 in {0, 1}.
  """
  (height, width), (h, w) = image_hw, grid_hw
  xy = geometry.rescale_coords(geometry.pixel_grid(h, w), (h, w),
                               (height, width))
  x, y = xy[None, ..., 0], xy[None, ..., 1]
  box = box[:, None, None, :]
  inside = ((x >= box[..., 0]) & (x <= box[..., 2]) &
            (y >= box[..., 1]) & (y <= box[..., 3]))
  return jnp.where(valid[:, None, None] > 0.5, inside, True).astype(
      jnp.float32)


def foreground(batch: base.Batch, side: str, grid_hw: tuple[int, int]
               ) -> Array:
  """The foreground cells of `side` ('source' | 'target'), (B, h, w).

  A mask if the batch has one (synthetic pairs), else the object box (real
  pairs), else every cell.
  """
  image = batch[f'{side}_image']
  if f'{side}_mask' in batch:
    return geometry.downsample_mask(batch[f'{side}_mask'], grid_hw)
  if f'{side}_bbox' in batch:
    return box_mask(batch[f'{side}_bbox'], batch[f'{side}_bbox_valid'],
                    image.shape[1:3], grid_hw)
  return jnp.ones((image.shape[0],) + tuple(grid_hw), jnp.float32)


class GSFMethod(base.Method):
  """Guided Semantic Flow (Jeon et al. 2020), configs/gsf.py."""

  flows = (
      outputs.Flow('final', description="tau = G' + F(C'), Eq. 9"),
      outputs.Flow('guidance', extras=('confident',),
                   description="G', confident matches propagated, Eq. 7"),
  )
  batch_keys = ('source_image', 'target_image')
  param_group_names = GROUPS

  def build_model(self) -> gsf_model.GSF:
    return gsf_model.GSF.from_config(self.config)

  def param_groups(self, params: PyTree) -> PyTree:
    """'backbone' under features/backbone, 'pruning' and 'matching' their
    networks, 'features' the adaptation layers."""
    flat = flax.traverse_util.flatten_dict(params)

    def label(path):
      if 'backbone' in path:
        return 'backbone'
      return path[0] if path[0] in ('pruning', 'matching') else 'features'
    return flax.traverse_util.unflatten_dict({k: label(k) for k in flat})

  def load_pretrained(self, variables: PyTree) -> PyTree:
    """Loads `config.backbone.weights` into `features/backbone`."""
    return backbones.load_backbone_pretrained(
        variables, backbones.backbone_config(self.config),
        subtree=('features', 'backbone'))

  # --- training ---------------------------------------------------------------
  def loss(self, params: PyTree, model_state: PyTree, batch: base.Batch,
           rng: Array) -> tuple[Array, tuple[dict[str, Array], PyTree]]:
    """L_P (stage 1) or L_final (stage 2), batch means.

    Returns:
      (loss, (metrics, model_state)): metrics are every term (unweighted),
      the confident fraction |S| / hw, the fraction of S* and the mean
      |G'| and |tau| in cells (collapse detectors).
    """
    del rng  # Deterministic forward and losses.
    out, updates = self.model.apply(
        {'params': params, **model_state}, batch['source_image'],
        batch['target_image'], train=True, mutable=['batch_stats'])
    hw = out['feature_hw']
    mask_s = foreground(batch, 'source', hw)
    cfg, model_cfg = self.config.loss, self.config.model
    q, logits = out['q_st'], out['logits_st']
    sil = (gsf_losses.silhouette_loss(q, logits, model_cfg.rho, mask_s)
           if logits is not None else jnp.zeros(()))
    geo = gsf_losses.geometry_consistency_loss(
        out['features_s'], out['features_t'], out['guidance_st'],
        out['confident_st'], cfg.geo_window, mask_s)
    pruning = gsf_losses.pruning_loss(cfg.sil_weight * sil, geo,
                                      cfg.geo_weight)
    metrics = {
        'sil_loss': sil, 'geo_loss': geo, 'pruning_loss': pruning,
        'confident_fraction': jnp.mean(out['confident_st']),
        'silhouette_fraction': jnp.mean(
            (q > model_cfg.rho).any(axis=(-2, -1)).astype(jnp.float32)),
        'mean_guidance': jnp.mean(jnp.linalg.norm(out['guidance_st'], axis=-1)),
        'mean_flow': jnp.mean(jnp.linalg.norm(out['flow_st'], axis=-1)),
    }
    if self.config.stage == 1:
      total = pruning
    else:
      match = gsf_losses.matching_loss(
          out['features_s'], out['features_t'], out['flow_st'],
          cfg.match_radius, cfg.match_beta, mask_s, corr=out['corr'])
      smooth = gsf_losses.smoothness_loss(out['flow_st'], mask_s)
      total = gsf_losses.final_loss(pruning, match, smooth,
                                    cfg.pruning_weight, cfg.match_weight,
                                    cfg.smooth_weight)
      metrics.update(match_loss=match, smooth_loss=smooth)
    return total, (metrics, {**model_state, **updates})

  # --- inference --------------------------------------------------------------
  def predict(self, variables: PyTree, source: Array, target: Array
              ) -> dict[str, Array]:
    """Both flows in both directions at the input resolution.

    Returns:
      'mapping_st', 'mapping_ts' (tau) and 'guidance_mapping_st',
      'guidance_mapping_ts' (G'): (B, H, W, 2) in input pixels;
      'guidance_confident_st', 'guidance_confident_ts': (B, H, W) the
      confident cells S in {0, 1} (nearest cell); 'feature_mapping_st',
      'feature_guidance_st': (B, h, w, 2) in cells.
    """
    out = self.model.apply(variables, source, target, train=False,
                           both_directions=True)
    hw = out['feature_hw']
    cells = geometry.pixel_grid(*hw)
    sizes = {'st': (source.shape[1:3], target.shape[1:3]),
             'ts': (target.shape[1:3], source.shape[1:3])}
    result = {}
    for d, (from_hw, to_hw) in sizes.items():
      for key, prefix in (('flow', ''), ('guidance', 'guidance_')):
        result[f'{prefix}mapping_{d}'] = geometry.resize_mapping(
            cells + out[f'{key}_{d}'], from_hw, hw, to_hw)
      confident = out[f'confident_{d}'][..., None]
      result[f'guidance_confident_{d}'] = jax.image.resize(
          confident, confident.shape[:1] + tuple(from_hw) + (1,),
          'nearest')[..., 0]
    result['feature_mapping_st'] = cells + out['flow_st']
    result['feature_guidance_st'] = cells + out['guidance_st']
    return result
