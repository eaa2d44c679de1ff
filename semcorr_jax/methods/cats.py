"""The `cats` method: CATs' network + end-point-error loss + AdamW step.

Supervision (`config.loss.supervision`):

* 'keypoints': real pairs (`data.source` 'pf_pascal' or 'spair71k'): the
  annotated keypoints give the ground-truth flow of the cells they cover
  (`losses.cats.keypoint_flow`), as CATs trains.
* 'dense': synthetic pairs: `loss.num_keypoints` target pixels per pair are
  drawn on the foreground visible in both images (`target_mask * valid_ts`)
  and their sources read from the dense ground truth `mapping_ts`
  (`losses.cats.sample_keypoints`); then the same keypoint flow.

Either way the loss is the mean end-point error over the covered target
cells of the read-out flow (target -> source, the direction CATs trains).
Parameter groups: 'backbone' (frozen by default; the paper's best setting
fine-tunes it at lr 3e-6) and 'aggregator' (the appearance projections and
the transformer, the reference's non-backbone group, lr 3e-5).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from semcorr_jax import geometry
from semcorr_jax import outputs
from semcorr_jax.errors import SemcorrError
from semcorr_jax.losses import cats as cats_losses
from semcorr_jax.methods import base
from semcorr_jax.models import backbones
from semcorr_jax.models import cats as cats_model

Array = jax.Array
PyTree = Any

GROUPS = ('backbone', 'aggregator')
IMAGES = ('source_image', 'target_image')
# The batch keys each kind of supervision reads.
SUPERVISION_KEYS = {
    'keypoints': IMAGES + ('source_keypoints', 'target_keypoints',
                           'keypoint_valid'),
    'dense': IMAGES + ('mapping_ts', 'valid_ts', 'target_mask'),
}


class CATsMethod(base.Method):
  """CATs (Cho et al. 2021), configs/cats.py.

  Config: `config.model` (feature_size, proj_dim, depth, num_heads,
  mlp_ratio, temperature, dtype), `config.backbone` (the hyperpixel taps,
  `semcorr_jax.models.backbones`), `config.loss` (supervision,
  num_keypoints, radius), `config.optimizer` (groups 'backbone',
  'aggregator').
  """

  flows = (outputs.Flow('final', description='CATs soft-argmax flow'),)
  param_group_names = GROUPS

  def __init__(self, config, total_steps: int):
    supervision = config.loss.supervision
    if supervision not in SUPERVISION_KEYS:
      raise SemcorrError(
          f'loss.supervision={supervision!r}: use '
          f'{" or ".join(map(repr, SUPERVISION_KEYS))}')
    # The trainer checks these against the data's batch spec.
    self.batch_keys = SUPERVISION_KEYS[supervision]
    super().__init__(config, total_steps)

  def build_model(self) -> cats_model.CATs:
    return cats_model.CATs.from_config(self.config)

  def param_groups(self, params: PyTree) -> PyTree:
    """'backbone' for params/backbone, 'aggregator' for everything else."""
    return base.labels_by_key(params, {'backbone': 'backbone'}, 'aggregator')

  def load_pretrained(self, variables: PyTree) -> PyTree:
    """Loads `config.backbone.weights` into `params/backbone` (and its
    `batch_stats`)."""
    return backbones.load_backbone_pretrained(
        variables, backbones.backbone_config(self.config),
        subtree=('backbone',))

  # --- training ---------------------------------------------------------------
  def keypoints(self, batch: base.Batch, rng: Array
                ) -> tuple[Array, Array, Array]:
    """(source_points, target_points, valid) of the batch, in pixels."""
    if self.config.loss.supervision == 'keypoints':
      return (batch['source_keypoints'], batch['target_keypoints'],
              batch['keypoint_valid'])
    weight = batch['target_mask'] * batch['valid_ts']
    return cats_losses.sample_keypoints(rng, batch['mapping_ts'], weight,
                                        self.config.loss.num_keypoints)

  def loss(self, params: PyTree, model_state: PyTree, batch: base.Batch,
           rng: Array) -> tuple[Array, tuple[dict[str, Array], PyTree]]:
    """Mean end-point error (cells) over the covered target cells.

    Returns:
      (loss, (metrics, model_state)): metrics 'epe' (= the loss),
      'covered_fraction' (supervised cells / all cells) and 'mean_flow'
      (mean predicted displacement in cells, a collapse detector); the
      model state is unchanged (frozen BatchNorm statistics).
    """
    out = self.model.apply({'params': params, **model_state},
                           batch['source_image'], batch['target_image'])
    hw = out['feature_hw']
    source, target, valid = self.keypoints(batch, rng)
    flow_gt, covered = cats_losses.keypoint_flow(
        source, target, valid, batch['target_image'].shape[1:3], hw,
        self.config.loss.radius)
    flow = geometry.mapping_to_flow(out['mapping_ts'])
    epe = cats_losses.endpoint_error(flow, flow_gt, covered)
    metrics = {'epe': epe, 'covered_fraction': jnp.mean(covered),
               'mean_flow': jnp.mean(jnp.linalg.norm(flow, axis=-1))}
    return epe, (metrics, model_state)

  # --- inference --------------------------------------------------------------
  def predict(self, variables: PyTree, source: Array, target: Array
              ) -> dict[str, Array]:
    """Both directions at the input resolution.

    `mapping_ts` is CATs' read-out; `mapping_st` the same network with the
    images swapped (one batched pass, `models.cats.CATs`).

    Returns:
      'mapping_st', 'mapping_ts': (B, H, W, 2) in input pixels (the S x S
      mappings lifted with align-corners bilinear resampling);
      'feature_mapping_st', 'feature_mapping_ts': (B, S, S, 2) in cells.
    """
    out = self.model.apply(variables, source, target, both_directions=True)
    hw = out['feature_hw']
    src_hw, tgt_hw = source.shape[1:3], target.shape[1:3]
    return {
        'mapping_st': geometry.resize_mapping(out['mapping_st'], src_hw, hw,
                                              tgt_hw),
        'mapping_ts': geometry.resize_mapping(out['mapping_ts'], tgt_hw, hw,
                                              src_hw),
        'feature_mapping_st': out['mapping_st'],
        'feature_mapping_ts': out['mapping_ts'],
    }
