"""CAMNet (Huang et al., ACCV'20): confidence-aware semantic matching.

Paper 000, Sec. 3. Four parts, run in both matching directions:

  base       the SFNet base correspondence network (Sec. 3.2):
             correlation S and base flow F_b by kernel soft-argmax;
  confidence C(f, F) -> per-cell confidence in [0, 1] (Eq. 1), also applied
             to the refined flow for the refined confidence C_r (Sec. 4.2);
  refinement U(C_b, S) -> updated flow F_u (Eq. 2) from the correlation
             multiplied by the base confidence (Sec. 5.1);
  fusion     F_r = F_b * C_b + F_u * (1 - C_b) (Eq. 3, `fuse_flows`).

Direction names follow docs/architecture.md: the paper's F^{s<-t} (defined on
the target grid, pointing into the source) is our `mapping_ts`, its
confidence C^{s<-t} is `confidence_ts`, and S^{s<-t} with (h_s w_s) channels
per target cell is `corr_ts`.

Choices the paper leaves open (configs/camnet.py states them too):
* f^t of Eq. 1 is the base network's adapted features of both taps on the
  matching grid, projected by a 1x1 conv to `confidence_features` channels.
  The flow enters in SFNet's normalised units (2 = the image width), and
  without gradient: the confidence judges the flow, it does not bend it.
* The confidence head ends in one logit per cell and a sigmoid, which is the
  two-way softmax of the paper with one logit fixed at 0.
* U is a DenseNet-style block (stem conv, `refine_layers` layers of
  BN-ReLU-3x3 conv with `refine_growth` channels concatenated, BN-ReLU) and
  a 3x3 conv to two channels, over the correlation and every cell's own
  normalised position. The two channels are a displacement added to the
  soft-argmax read-out of the correlation (`RefinementNet` says why); the
  last conv starts at zero, so F_u starts as that read-out.
* `refinement='plain'` (Table 3, "Baseline + Refinement") feeds U the bare
  correlation and takes F_r = F_u; `'none'` is the base network alone.

Parameter tree: params/base/... (the SFNet tree: backbone, adapt_*),
params/confidence/..., params/refinement/...; batch_stats likewise.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from semcorr_jax import geometry
from semcorr_jax.models import backbones
from semcorr_jax.models import sfnet

Array = jax.Array

REFINEMENTS = ('none', 'plain', 'confidence_aware')
READOUTS = ('soft_argmax', 'none')
CONFIDENCE_INPUTS = ('features_flow', 'features_flow_match',
                     'features_flow_match_cues')


def fuse_flows(base: Array, update: Array, confidence: Array) -> Array:
  """Flow fusion, Eq. 3: F_r = F_b * C_b + F_u * (1 - C_b).

  The weights sum to one, so fusing absolute mappings equals fusing flows
  (mapping = grid + flow).

  Args:
    base: (B, h, w, 2) base flow or mapping F_b.
    update: (B, h, w, 2) updated flow or mapping F_u, same units.
    confidence: (B, h, w) base confidence C_b in [0, 1].

  Returns:
    (B, h, w, 2) refined F_r.
  """
  c = confidence[..., None]
  return base * c + update * (1.0 - c)


def consistency_cues(mapping: Array, corr: Array, batch: int) -> Array:
  """Two per-cell correctness cues no network has to learn.

  Args:
    mapping: (2B, h, w, 2) mappings in cells, rows [st; ts] (the layout of
      CAMNet's heads), so row i's reverse mapping is row (i + B) mod 2B.
    corr: (2B, h, w, h, w) the correlations the mappings come from.
    batch: B.

  Returns:
    (2B, h, w, 2) without gradient: log(1 + forward-backward error in
    cells) of each mapping against its reverse, and the correlation's
    maximum over the other image.
  """
  mapping = jax.lax.stop_gradient(mapping)
  reverse = jnp.concatenate([mapping[batch:], mapping[:batch]], axis=0)
  cycle = jnp.log1p(geometry.cycle_error(mapping, reverse))
  n, h, w = corr.shape[:3]
  peak = jnp.max(corr.reshape(n, h, w, -1), axis=-1)
  return jax.lax.stop_gradient(jnp.stack([cycle, peak], axis=-1))


def _batch_norm(train: bool, dtype: Any, name: str | None = None
                ) -> nn.BatchNorm:
  # Under jit SPMD the statistics reduce over the global batch.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32,
                      name=name)


class ConfidenceNet(nn.Module):
  """C(f, F): per-cell probability that the flow F is correct (Eq. 1).

  Attributes:
    feature_channels: width of the 1x1 projection of the features.
    width: channels of the 3x3 conv + BN + ReLU layers.
    num_layers: number of those layers.
    dtype: compute dtype.
  """
  feature_channels: int
  width: int
  num_layers: int
  dtype: Any

  @nn.compact
  def __call__(self, features: Array, flow: Array, train: bool,
               matched: Array | None = None,
               cues: Array | None = None) -> Array:
    """Confidence logits.

    Args:
      features: (B, h, w, C) features of the image the flow starts from.
      flow: (B, h, w, 2) the flow in normalised units.
      train: BatchNorm mode.
      matched: optional (B, h, w, C) the other image's features read at
        the flow's matches; adds them (projected) and their cosine
        similarity with `features` to the input.
      cues: optional (B, h, w, K) per-cell scalars appended to the input
        (e.g. the flow's forward-backward error).

    Returns:
      (B, h, w) float32 logits.
    """
    project = nn.Conv(self.feature_channels, (1, 1), dtype=self.dtype,
                      param_dtype=jnp.float32, name='project')
    parts = [project(features), flow.astype(self.dtype)]
    if matched is not None:
      cosine = jnp.sum(geometry.l2_normalize(features)
                       * geometry.l2_normalize(matched), axis=-1,
                       keepdims=True)
      parts += [project(matched), cosine.astype(self.dtype)]
    if cues is not None:
      parts.append(cues.astype(self.dtype))
    x = jnp.concatenate(parts, axis=-1)
    for i in range(self.num_layers):
      x = nn.Conv(self.width, (3, 3), padding=1, use_bias=False,
                  dtype=self.dtype, param_dtype=jnp.float32,
                  name=f'conv{i}')(x)
      x = nn.relu(_batch_norm(train, self.dtype, f'bn{i}')(x))
    logit = nn.Conv(1, (1, 1), dtype=jnp.float32, param_dtype=jnp.float32,
                    name='logit')(x)
    return logit[..., 0].astype(jnp.float32)


def cell_coordinates(h: int, w: int) -> Array:
  """Every cell's own position in SFNet's normalised units.

  Returns:
    (h, w, 2) (x, y) in [-1, 1], cell centres (`geometry.normalize_coords`
    of the integer grid).
  """
  return geometry.normalize_coords(geometry.pixel_grid(h, w), h, w)


class RefinementNet(nn.Module):
  """U(C_b, S): updated flow from the (confidence-weighted) correlation (Eq. 2).

  Position-aware: a stack of zero-padded convolutions over a correlation
  whose channels index absolute cells of the other image is equivariant to
  translations of the source grid, so away from the border it cannot output
  a displacement that depends on where the cell is. Two parts make U able to
  represent correspondences (docs/camnet.md):
  * every cell's normalised (x, y) is appended to its input channels, so the
    convolutions can turn an absolute match into a displacement;
  * `readout='soft_argmax'`: F_u is the soft-argmax of the bare correlation
    (inverse temperature `beta`) plus the network's 2-channel output, a
    displacement that starts at zero. `readout='none'`: F_u is the cell's
    own position plus that displacement (identity at initialisation).

  Attributes:
    width: channels of the stem conv.
    growth: channels each dense layer adds.
    num_layers: dense layers.
    dtype: compute dtype.
    readout: 'soft_argmax' | 'none' (above).
    beta: the soft-argmax's inverse temperature.
    coordinates: append the cells' positions to the input (False: the
      translation-equivariant U of the first CAMNet runs).
  """
  width: int
  growth: int
  num_layers: int
  dtype: Any
  readout: str = 'soft_argmax'
  beta: float = 50.0
  coordinates: bool = True

  @nn.compact
  def __call__(self, corr: Array, confidence: Array | None, train: bool
               ) -> Array:
    """Updated flow F_u.

    Args:
      corr: (B, h, w, hb, wb) correlation normalised over b (S^{b<-a} of the
        paper for every cell of a).
      confidence: (B, h, w) C_b in [0, 1], or None (plain refinement).
      train: BatchNorm mode.

    Returns:
      (B, h, w, 2) F_u as positions in b, in normalised units.
    """
    b, h, w, hb, wb = corr.shape
    x = corr.reshape(b, h, w, hb * wb)
    if confidence is not None:
      x = x * confidence[..., None]
    own = cell_coordinates(h, w)
    if self.coordinates:
      x = jnp.concatenate([x, jnp.broadcast_to(own, (b, h, w, 2))], axis=-1)
    x = nn.Conv(self.width, (3, 3), padding=1, dtype=self.dtype,
                param_dtype=jnp.float32, name='stem')(x.astype(self.dtype))
    for i in range(self.num_layers):
      y = nn.relu(_batch_norm(train, self.dtype, f'bn{i}')(x))
      y = nn.Conv(self.growth, (3, 3), padding=1, use_bias=False,
                  dtype=self.dtype, param_dtype=jnp.float32,
                  name=f'dense{i}')(y)
      x = jnp.concatenate([x, y], axis=-1)
    x = nn.relu(_batch_norm(train, self.dtype, 'bn_out')(x))
    displacement = nn.Conv(2, (3, 3), padding=1, dtype=jnp.float32,
                           param_dtype=jnp.float32,
                           kernel_init=nn.initializers.zeros,
                           name='flow')(x).astype(jnp.float32)
    if self.readout == 'soft_argmax':
      start = geometry.normalize_coords(
          geometry.soft_argmax(corr.astype(jnp.float32), self.beta), hb, wb)
    else:
      start = own
    return start + displacement


class CAMNet(nn.Module):
  """Base SFNet + confidence estimation + confidence-aware refinement.

  Every field comes from the config (`from_config`, configs/camnet.py).

  Attributes:
    base: the SFNet base correspondence network.
    refinement: 'none', 'plain' or 'confidence_aware' (Table 3 rows).
    confidence_features, confidence_width, confidence_layers: ConfidenceNet.
    confidence_inputs: 'features_flow' (Eq. 1: the features of the image
      the flow starts from and the flow) or 'features_flow_match' (also the
      other image's features read at the matches and their cosine
      similarity, so C can compare what the flow pairs up).
      'features_flow_match_cues' adds `consistency_cues` (the flow's
      forward-backward error and the correlation's peak).
    refine_width, refine_growth, refine_layers, refine_readout,
      refine_coordinates: RefinementNet's width, growth, num_layers,
      readout, coordinates (its beta is the base network's).
  """
  base: sfnet.SFNet
  refinement: str
  confidence_features: int
  confidence_width: int
  confidence_layers: int
  confidence_inputs: str
  refine_width: int
  refine_growth: int
  refine_layers: int
  refine_readout: str
  refine_coordinates: bool

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict,
                  backbone_cfg: ml_collections.ConfigDict) -> CAMNet:
    """Builds the module from `config.model` and `config.backbone`.

    Args:
      cfg: `config.model`: SFNet's fields (the base network) and CAMNet's
        (configs/camnet.py holds every value).
      backbone_cfg: `config.backbone` (`backbones.backbone_config(config)`).
    """
    if cfg.confidence_inputs not in CONFIDENCE_INPUTS:
      raise ValueError(f'model.confidence_inputs={cfg.confidence_inputs!r}; '
                       f'use one of {CONFIDENCE_INPUTS}')
    if cfg.refine_readout not in READOUTS:
      raise ValueError(f'model.refine_readout={cfg.refine_readout!r}; use '
                       f'one of {READOUTS}')
    if cfg.refinement not in REFINEMENTS:
      raise ValueError(f'model.refinement={cfg.refinement!r}; use one of '
                       f'{REFINEMENTS}')
    return cls(
        base=sfnet.SFNet.from_config(cfg, backbone_cfg),
        refinement=cfg.refinement,
        confidence_features=cfg.confidence_features,
        confidence_width=cfg.confidence_width,
        confidence_layers=cfg.confidence_layers,
        confidence_inputs=cfg.confidence_inputs,
        refine_width=cfg.refine_width,
        refine_growth=cfg.refine_growth,
        refine_layers=cfg.refine_layers,
        refine_readout=cfg.refine_readout,
        refine_coordinates=bool(cfg.refine_coordinates))

  @property
  def has_confidence(self) -> bool:
    return self.refinement == 'confidence_aware'

  @nn.compact
  def __call__(self, source: Array, target: Array, train: bool = False
               ) -> dict[str, Any]:
    """Matches source and target in both directions.

    Args:
      source: (B, H, W, 3) images in [0, 1].
      target: (B, H, W, 3) images in [0, 1].
      train: BatchNorm in train mode (pass `mutable=['batch_stats']`).

    Returns:
      The base network's outputs renamed 'base_mapping_st'/'_ts' (B, h, w, 2)
      in cells, plus 'mapping_st'/'_ts' the final (refined) mappings (the
      base ones when refinement='none'), 'update_mapping_st'/'_ts' (F_u),
      and with confidence: 'base_confidence_logit_st'/'_ts' and
      'refined_confidence_logit_st'/'_ts' (B, h, w), 'base_confidence_st'/
      '_ts' and 'refined_confidence_st'/'_ts' their sigmoids; 'corr_st',
      'corr_ts', 'feature_hw' as the base network.
    """
    out = dict(self.base(source, target, train=train))
    hw = out['feature_hw']
    out['base_mapping_st'] = out.pop('mapping_st')
    out['base_mapping_ts'] = out.pop('mapping_ts')
    features = {'st': out.pop('features_s'), 'ts': out.pop('features_t')}
    dtype = jnp.dtype(self.base.dtype)
    if self.refinement == 'none':
      out['mapping_st'] = out['base_mapping_st']
      out['mapping_ts'] = out['base_mapping_ts']
      return out

    confidence_net = ConfidenceNet(
        self.confidence_features, self.confidence_width,
        self.confidence_layers, dtype=dtype, name='confidence')
    refine_net = RefinementNet(self.refine_width, self.refine_growth,
                               self.refine_layers, dtype=dtype,
                               readout=self.refine_readout,
                               beta=self.base.beta,
                               coordinates=self.refine_coordinates,
                               name='refinement')

    # Both directions go through the heads in one batch (shared weights):
    # rows [st; ts], each with the features of the image it starts from.
    base_map = jnp.concatenate([out['base_mapping_st'],
                                out['base_mapping_ts']], axis=0)
    corr = jnp.concatenate([out['corr_st'], out['corr_ts']], axis=0)
    feats = jnp.concatenate([features['st'], features['ts']], axis=0)
    others = jnp.concatenate([features['ts'], features['st']], axis=0)

    b = source.shape[0]

    def confidence_logit(mapping: Array) -> Array:
      # The confidence judges the flow; it does not bend it.
      mapping = jax.lax.stop_gradient(mapping)
      flow = geometry.normalized_flow(mapping, hw)
      matched, cues = None, None
      if self.confidence_inputs != 'features_flow':
        matched = geometry.bilinear_sample(others, mapping)
      if self.confidence_inputs == 'features_flow_match_cues':
        cues = consistency_cues(mapping, corr, b)
      return confidence_net(feats, flow, train, matched, cues)

    base_conf = None
    if self.has_confidence:
      base_logit = confidence_logit(base_map)
      base_conf = jax.nn.sigmoid(base_logit)
    update = geometry.denormalize_coords(
        refine_net(corr, base_conf, train), hw[0], hw[1])
    if self.has_confidence:
      refined = fuse_flows(base_map, update, base_conf)
      refined_logit = confidence_logit(refined)
      for name, value in (('base_confidence_logit', base_logit),
                          ('refined_confidence_logit', refined_logit)):
        out[f'{name}_st'], out[f'{name}_ts'] = value[:b], value[b:]
        conf = jax.nn.sigmoid(value)
        short = name.replace('_logit', '')
        out[f'{short}_st'], out[f'{short}_ts'] = conf[:b], conf[b:]
    else:
      refined = update
    out['update_mapping_st'], out['update_mapping_ts'] = update[:b], update[b:]
    out['mapping_st'], out['mapping_ts'] = refined[:b], refined[b:]
    return out


def build(config: ml_collections.ConfigDict) -> CAMNet:
  """CAMNet of a whole config (`config.model`, `config.backbone`)."""
  return CAMNet.from_config(config.model, backbones.backbone_config(config))
