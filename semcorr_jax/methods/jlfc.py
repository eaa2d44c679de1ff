"""The `jlfc` method: feature extraction and cost aggregation learned jointly.

Paper 002 (docs/jlfc.md): the raw cost C of the features and the
aggregated cost A (NCNet's or CATs' aggregator, `config.model.aggregator`)
are trained with confidence-aware contrastive losses on their own and each
other's winner-take-all pseudo labels (`losses.jlfc`, Eqs. 1-5). It reads
the images only, so it trains on any pair source: real pairs without
ground truth (PF-PASCAL train pairs, the paper) or synthetic pairs (the
`quick` variants; their ground truth is used by evaluation only).

Parameter groups, each with its own optimiser settings
(`config.optimizer.groups`):

  backbone    the ImageNet backbone (frozen by default outside `paper`)
  features    the adaptation layers (with the backbone, the paper's
              "feature extraction")
  aggregator  the consensus (ncnet) or the appearance projections and the
              transformer (cats)

Frozen groups are put under `stop_gradient` in the loss.
"""

from __future__ import annotations

from typing import Any

import flax
import jax

from semcorr_jax import geometry
from semcorr_jax import outputs
from semcorr_jax.errors import SemcorrError
from semcorr_jax.losses import jlfc as jlfc_losses
from semcorr_jax.methods import base
from semcorr_jax.models import backbones
from semcorr_jax.models import jlfc as jlfc_model
from semcorr_jax.models import ncnet as ncnet_model

Array = jax.Array
PyTree = Any

GROUPS = ('backbone', 'features', 'aggregator')
# Flow name -> the model output it reads.
FLOW_COSTS = {'aggregated': 'agg', 'raw': 'raw'}
READOUTS = ('argmax', 'soft_argmax')


class JLFCMethod(base.Method):
  """JLFC (Kim et al.), configs/jlfc.py.

  Config: `config.backbone`, `config.model` (aggregator, adaptation,
  the aggregator's fields, readout, readout_temperature, dtype),
  `config.loss` (terms, raw_weight, agg_weight, temperature,
  agg_temperature, alpha1, alpha2, alpha_unit, confidence_mask,
  directions), `config.optimizer` (groups of `GROUPS`).
  """

  flows = (
      # consistency: the Eq. 2 mask of the cost's WTA labels.
      outputs.Flow('aggregated', extras=('confidence', 'consistency'),
                   description='aggregated cost A'),
      outputs.Flow('raw', extras=('confidence', 'consistency'),
                   description='WTA of the raw cost C'),
  )
  batch_keys = ('source_image', 'target_image')
  param_group_names = GROUPS

  def __init__(self, config, total_steps: int):
    jlfc_losses.check_loss_config(config.loss)
    if config.model.readout not in READOUTS:
      raise SemcorrError(f'model.readout={config.model.readout!r}: use one '
                         f'of {READOUTS}')
    if config.model.readout_temperature <= 0:
      raise SemcorrError('model.readout_temperature must be > 0, got '
                         f'{config.model.readout_temperature}')
    super().__init__(config, total_steps)

  @property
  def agg_temperature(self) -> float:
    """gamma of the terms scoring A (`loss.temperature` when unset)."""
    cfg = self.config.loss
    return cfg.temperature if cfg.agg_temperature is None else (
        cfg.agg_temperature)

  def build_model(self) -> jlfc_model.JLFC:
    train_backbone = base.group_settings(self.config.optimizer,
                                         'backbone') is not None
    return jlfc_model.JLFC.from_config(self.config, train_backbone)

  def param_groups(self, params: PyTree) -> PyTree:
    """'backbone', 'features' (adapt_*), 'aggregator' (everything else)."""
    flat = flax.traverse_util.flatten_dict(params)

    def label(path):
      if path[0] == 'backbone':
        return 'backbone'
      return 'features' if path[0].startswith('adapt_') else 'aggregator'
    return flax.traverse_util.unflatten_dict({k: label(k) for k in flat})

  def load_pretrained(self, variables: PyTree) -> PyTree:
    """Loads `config.backbone.weights` into the `backbone` subtrees."""
    return backbones.load_backbone_pretrained(
        variables, backbones.backbone_config(self.config),
        subtree=('backbone',))

  def alpha2_cells(self, grid_hw, image_hw) -> float:
    cfg = self.config.loss
    return jlfc_losses.alpha2_in_cells(cfg.alpha2, cfg.alpha_unit, grid_hw,
                                       image_hw)

  # --- training ---------------------------------------------------------------
  def _without_frozen_gradients(self, params: PyTree) -> PyTree:
    return base.without_frozen_gradients(
        self.config.optimizer, GROUPS, params, self.param_groups(params))

  def loss(self, params: PyTree, model_state: PyTree, batch: base.Batch,
           rng: Array) -> tuple[Array, tuple[dict[str, Array], PyTree]]:
    """Eq. 5 on the batch (`losses.jlfc.joint_loss`).

    Returns:
      (loss, (metrics, model_state)): metrics 'loss_<term>' of every
      enabled term, 'consistent_raw', 'consistent_agg', 'wta_agreement';
      the adaptation layers' updated running statistics.
    """
    del rng  # Deterministic.
    variables = {'params': self._without_frozen_gradients(params),
                 **model_state}
    out, updates = self.model.apply(
        variables, batch['source_image'], batch['target_image'], train=True,
        mutable=['batch_stats'])
    cfg = self.config.loss
    alpha2 = self.alpha2_cells(out['feature_hw'],
                               batch['source_image'].shape[1:3])
    loss, metrics = jlfc_losses.joint_loss(
        out['raw'], out['agg'], terms=cfg.terms, raw_weight=cfg.raw_weight,
        agg_weight=cfg.agg_weight, temperature=cfg.temperature,
        agg_temperature=self.agg_temperature,
        alpha1=cfg.alpha1, alpha2=alpha2,
        confidence_mask=cfg.confidence_mask, directions=cfg.directions)
    return loss, (metrics, {**model_state, **updates})

  # --- inference --------------------------------------------------------------
  def readouts(self, cost: Array, flow: str, alpha2: float
               ) -> dict[str, Array]:
    """One flow's maps in cells: mappings, confidence, consistency.

    Args:
      cost: (B, h, w, h, w) source -> target.
      flow: 'aggregated' or 'raw'.
      alpha2: Eq. 2's absolute tolerance in squared cells.
    """
    cfg, loss_cfg = self.config.model, self.config.loss
    gamma = (self.agg_temperature if flow == 'aggregated' else
             loss_cfg.temperature)
    cost_ts = geometry.transpose_4d(cost)
    wta_st = jlfc_losses.wta_mapping(cost)
    wta_ts = jlfc_losses.wta_mapping(cost_ts)
    maps = {'mapping_st': wta_st, 'mapping_ts': wta_ts}
    if flow == 'aggregated' and cfg.readout == 'soft_argmax':
      beta = 1.0 / cfg.readout_temperature
      maps = {'mapping_st': geometry.soft_argmax(cost, beta),
              'mapping_ts': geometry.soft_argmax(cost_ts, beta)}
    maps['confidence_st'] = ncnet_model.max_softmax(cost / gamma, 'b')
    maps['confidence_ts'] = ncnet_model.max_softmax(cost / gamma, 'a')
    maps['consistency_st'] = jlfc_losses.consistency_mask(
        wta_st, wta_ts, loss_cfg.alpha1, alpha2)
    maps['consistency_ts'] = jlfc_losses.consistency_mask(
        wta_ts, wta_st, loss_cfg.alpha1, alpha2)
    return maps

  def predict(self, variables: PyTree, source: Array, target: Array
              ) -> dict[str, Array]:
    """Both flows, both directions, at the input resolution.

    Returns:
      The aggregated flow (primary): 'mapping_st', 'mapping_ts'
      (B, H, W, 2) in input pixels (cell mappings lifted with align-corners
      bilinear resampling), 'confidence_st', 'confidence_ts' (B, H, W)
      (largest softmax probability of the cost over gamma),
      'consistency_st', 'consistency_ts' (B, H, W) (the Eq. 2 mask of the
      WTA labels, lifted bilinearly: in [0, 1] between cells); the raw flow
      the same under 'raw_'; 'feature_mapping_st', 'feature_mapping_ts'
      (B, h, w, 2): the aggregated mappings in cells.
    """
    out = self.model.apply(variables, source, target, train=False)
    hw = out['feature_hw']
    image = {'s': source.shape[1:3], 't': target.shape[1:3]}
    alpha2 = self.alpha2_cells(hw, image['s'])
    result = {}
    for flow, cost_key in FLOW_COSTS.items():
      maps = self.readouts(out[cost_key], flow, alpha2)
      lifted = {}
      for d in outputs.DIRECTIONS:
        a, b = d
        lifted[f'mapping_{d}'] = geometry.resize_mapping(
            maps[f'mapping_{d}'], image[a], hw, image[b])
        for extra in ('confidence', 'consistency'):
          lifted[f'{extra}_{d}'] = geometry.resize_images(
              maps[f'{extra}_{d}'][..., None], image[a])[..., 0]
      result.update(outputs.prefixed(self.flows, flow, lifted))
      if flow == 'aggregated':
        result['feature_mapping_st'] = maps['mapping_st']
        result['feature_mapping_ts'] = maps['mapping_ts']
    return result
