"""Guided Semantic Flow (Jeon et al., ECCV 2020; paper 001), the network.

features F (Eq. 1's inputs) -> C (Eq. 1) -> Q (Eq. 4) -> pruning network
and truncation Q' (Eq. 5) -> G on the confident cells S (Eq. 6) -> MLS
layer G' (Eq. 7) -> C' (Eq. 8) -> matching network tau (Eq. 9). The pure
steps live in `semcorr_jax.geometry.guidance`; this module holds the
parameters. Shapes: one feature grid (h, w) for both images (same image
size); volumes (B, hs, ws, ht, wt); displacements (B, h, w, 2) in cells,
x first (docs/architecture.md).

Parameter tree (docs/gsf.md):

  params/features/backbone/...      the backbone (frozen by default)
  params/features/adapt_<tap>/...   SFNet's adaptation layers, same names
                                    as in an SFNet run (init_from maps an
                                    SFNet run's params under `features`)
  params/pruning/...                the pruning network W_P
  params/matching/...               the matching network W_M
  batch_stats/features/...          backbone and adaptation BatchNorm
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from semcorr_jax import geometry
from semcorr_jax.geometry import guidance as guidance_lib
from semcorr_jax.models import backbones
from semcorr_jax.models import sfnet as sfnet_model

Array = jax.Array


class AdaptedFeatures(nn.Module):
  """SFNet's feature path: backbone taps -> adaptation -> one grid.

  F = [l2n(f_fine), l2n(up(f_coarse))] / sqrt(2): each tap normalised, the
  coarser one resized to the finer grid, concatenated. Then <F_i, F_j> is
  the mean of the two taps' cosine similarities, a cosine itself (Eq. 1 on
  "conv4-23 + upsampled conv5-3"; how the taps combine is not in the paper).
  """
  backbone_spec: backbones.BackboneSpec
  adapt_kernels: Sequence[int]
  adapt_units: int
  train_backbone: bool
  dtype: str

  @nn.compact
  def __call__(self, images: Array, train: bool) -> Array:
    """(N, H, W, 3) in [0, 1] -> (N, h, w, C_fine + C_coarse) float32."""
    dtype = jnp.dtype(self.dtype)
    feats = backbones.build_backbone(self.backbone_spec, dtype,
                                     name='backbone')(images)
    levels = []
    for level, feat, k in zip(self.backbone_spec.features, feats,
                              self.adapt_kernels):
      if not self.train_backbone:
        feat = jax.lax.stop_gradient(feat)
      f = sfnet_model.AdaptationLayer(k, self.adapt_units, dtype=dtype,
                                      name=f'adapt_{level}')(feat, train)
      levels.append(f.astype(jnp.float32))
    h, w = levels[0].shape[1:3]
    levels = [geometry.l2_normalize(geometry.resize_images(f, (h, w)),
                                    eps=1e-6) for f in levels]
    return jnp.concatenate(levels, axis=-1) / math.sqrt(len(levels))


def _conv_plane(x: Array, conv: nn.Module, plane: str) -> Array:
  """Applies a 2D conv over the source or target plane of a 4D volume.

  x: (B, hs, ws, ht, wt, C); the other plane is folded into the batch.
  """
  b, hs, ws, ht, wt, c = x.shape
  if plane == 'target':
    y = conv(x.reshape(b * hs * ws, ht, wt, c))
    return y.reshape(b, hs, ws, ht, wt, -1)
  y = conv(x.transpose(0, 3, 4, 1, 2, 5).reshape(b * ht * wt, hs, ws, c))
  return y.reshape(b, ht, wt, hs, ws, -1).transpose(0, 3, 4, 1, 2, 5)


class SeparableConv4d(nn.Module):
  """3x3 over the source plane, then 3x3 over the target plane."""
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """(B, hs, ws, ht, wt, C) -> (B, hs, ws, ht, wt, features)."""
    x = _conv_plane(x, nn.Conv(self.features, (3, 3), name='source'),
                    'source')
    return _conv_plane(x, nn.Conv(self.features, (3, 3), name='target'),
                       'target')


def _pool_4d(x: Array) -> Array:
  """2x2 average pooling over both planes ('SAME' padding)."""
  return nn.avg_pool(x, (2, 2, 2, 2), strides=(2, 2, 2, 2), padding='SAME')


class PruningNet(nn.Module):
  """F(Q; W_P) of Eq. 5: logits of the sigmoid, one per entry of Q.

  An encoder-decoder over the 4D volume (the paper fixes only "encoder-
  decoder + sigmoid"): separable 4D convs (3x3 over the source plane, then
  over the target plane), 2x2x2x2 average pooling, the same back with a
  skip connection, a 1x1 to one logit. Separable: a full 3^4 kernel costs
  9x more; pooling both planes: the middle sees a 2x larger neighbourhood
  N_i of every match. The last bias starts at `bias_init` so that at
  initialisation F(Q) ~ sigmoid(bias_init) and Q' ~ T(Q, rho).
  """
  channels: Sequence[int]
  bias_init: float

  @nn.compact
  def __call__(self, q: Array) -> Array:
    """(B, hs, ws, ht, wt) -> logits of the same shape (float32)."""
    c1, c2 = self.channels
    x = q[..., None].astype(jnp.float32)
    skip = nn.relu(SeparableConv4d(c1, name='enc1')(x))
    y = nn.relu(SeparableConv4d(c2, name='enc2')(_pool_4d(skip)))
    y = jax.image.resize(y, skip.shape[:-1] + (c2,), 'linear')
    y = nn.relu(SeparableConv4d(c1, name='dec1')(
        jnp.concatenate([skip, y], axis=-1)))
    logits = nn.Dense(1, kernel_init=nn.initializers.zeros,
                      bias_init=nn.initializers.constant(self.bias_init),
                      name='out')(y)
    return logits[..., 0]


class MatchingNet(nn.Module):
  """F(C'; W_M) of Eq. 9: the residual of tau over G'.

  The soft-argmax of C' (inverse temperature `beta`) gives a matched
  position p_i; a conv head reads its offset from i + G'_i, the peak of C'
  and the spread of the soft-argmax distribution, and adds a learned
  correction (last conv zero-initialised, so at initialisation the residual
  is p_i - i - G'_i and tau = p). The paper fixes only "matching networks
  regress residual displacements at sub-pixel level".
  """
  beta: float
  width: int
  layers: int

  @nn.compact
  def __call__(self, corr_mod: Array, centers: Array) -> Array:
    """corr_mod C' (B, hs, ws, ht, wt), centers i + G'_i (B, hs, ws, 2)
    absolute -> residual (B, hs, ws, 2) in cells."""
    b, hs, ws, ht, wt = corr_mod.shape
    logits = self.beta * corr_mod.reshape(b, hs, ws, ht * wt)
    prob = jax.nn.softmax(logits, axis=-1)
    grid = geometry.pixel_grid(ht, wt).reshape(ht * wt, 2)
    position = prob @ grid                                  # (B, hs, ws, 2)
    spread = jnp.sqrt(jnp.sum(
        prob * jnp.sum(jnp.square(grid - position[..., None, :]), -1), -1)
        + 1e-6)
    offset = position - centers
    peak = jnp.max(corr_mod, axis=(-2, -1))
    x = jnp.concatenate([jax.lax.stop_gradient(offset), peak[..., None],
                         spread[..., None]], axis=-1)
    for i in range(self.layers):
      x = nn.relu(nn.Conv(self.width, (3, 3), name=f'conv{i}')(x))
    correction = nn.Conv(2, (3, 3), kernel_init=nn.initializers.zeros,
                         name='out')(x)
    return offset + correction


class GSF(nn.Module):
  """The whole network; every field from the config (`from_config`)."""
  backbone_spec: backbones.BackboneSpec
  adapt_kernels: Sequence[int]
  adapt_units: int
  train_backbone: bool
  train_features: bool
  dtype: str
  rho: float
  q_eps: float
  pruning: bool
  pruning_channels: Sequence[int]
  pruning_bias_init: float
  guidance_beta: float
  c_p: float
  mls: bool
  mls_confidence_weights: bool
  c_m: float
  matching: bool
  matching_beta: float
  matching_width: int
  matching_layers: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> GSF:
    """From `config.model`, `config.backbone` and the frozen groups."""
    m, groups = config.model, config.optimizer.groups
    return cls(
        backbone_spec=backbones.BackboneSpec.from_config(
            backbones.backbone_config(config)).check_levels(2, 'GSF'),
        adapt_kernels=tuple(m.adapt_kernels), adapt_units=m.adapt_units,
        train_backbone=not groups.backbone.frozen,
        train_features=not groups.features.frozen, dtype=m.dtype,
        rho=m.rho, q_eps=m.q_eps, pruning=m.pruning,
        pruning_channels=tuple(m.pruning_channels),
        pruning_bias_init=m.pruning_bias_init,
        guidance_beta=m.guidance_beta, c_p=m.c_p, mls=m.mls,
        mls_confidence_weights=m.mls_confidence_weights, c_m=m.c_m,
        matching=m.matching, matching_beta=m.matching_beta,
        matching_width=m.matching_width, matching_layers=m.matching_layers)

  def setup(self):
    self.features = AdaptedFeatures(
        self.backbone_spec, self.adapt_kernels, self.adapt_units,
        self.train_backbone, self.dtype)
    if self.pruning:
      self.pruner = PruningNet(self.pruning_channels, self.pruning_bias_init,
                               name='pruning')
    if self.matching:
      self.matcher = MatchingNet(self.matching_beta, self.matching_width,
                                 self.matching_layers, name='matching')

  def __call__(self, source: Array, target: Array, train: bool = False,
               both_directions: bool = False) -> dict[str, Any]:
    """Matches source to target (and target to source if asked).

    Args:
      source, target: (B, H, W, 3) in [0, 1], the same size.
      train: BatchNorm of the features in train mode when the features
        train (stage 2); stage 1 keeps them in eval mode, so their
        statistics stay as they are.
      both_directions: also the target -> source outputs (inference).

    Returns:
      'features_s', 'features_t': F (B, h, w, C); 'corr': C (B, h, w, h,
      w); and per direction d in ('st', 'ts' if asked): 'q_d' Q,
      'logits_d' the pruning logits (None without the pruning network),
      'confident_d' S (B, h, w) in {0, 1}, 'guidance_raw_d' G,
      'guidance_d' G', 'flow_d' tau (B, h, w, 2) displacements in cells;
      'feature_hw' (h, w).
    """
    if source.shape != target.shape:
      raise ValueError(f'source {source.shape} and target {target.shape} '
                       'must have the same shape')
    b = source.shape[0]
    feats = self.features(jnp.concatenate([source, target], axis=0),
                          train and self.train_features)
    if not self.train_features:
      feats = jax.lax.stop_gradient(feats)
    feat_s, feat_t = feats[:b], feats[b:]
    corr = geometry.correlation_4d(feat_s, feat_t,
                                   precision=jax.lax.Precision.HIGHEST)
    out = {'features_s': feat_s, 'features_t': feat_t, 'corr': corr,
           'feature_hw': tuple(feat_s.shape[1:3])}
    volumes = [corr]
    if both_directions:
      volumes.append(geometry.transpose_4d(corr))
    # Both directions in one batch: shared weights, one pass.
    heads = self._head(jnp.concatenate(volumes, axis=0))
    for k, direction in enumerate(('st', 'ts')[:len(volumes)]):
      for name, value in heads.items():
        out[f'{name}_{direction}'] = (
            None if value is None else value[k * b:(k + 1) * b])
    return out

  def _head(self, corr: Array) -> dict[str, Array | None]:
    """Pruning, propagation and matching on one batch of volumes."""
    q = guidance_lib.mutual_consistency(corr, eps=self.q_eps)
    logits = self.pruner(q) if self.pruning else None
    score = q if logits is None else q * jax.nn.sigmoid(logits)
    q_pruned = guidance_lib.truncate(score, self.rho)
    raw, valid = guidance_lib.guidance_displacement(q_pruned,
                                                    self.guidance_beta)
    h, w = corr.shape[1:3]
    cells = geometry.pixel_grid(h, w)
    if self.mls:
      weights = None
      if self.mls_confidence_weights:
        # Each s in S weighs by its margin above the threshold, so G' is a
        # continuous function of Q' even where a cell leaves S, and L_geo
        # reaches W_P (with Eq. 7's plain weights, only through rows with
        # several kept entries).
        margin = jnp.max(q_pruned, axis=(-2, -1)) - self.rho
        weights = jnp.maximum(margin, 0.0) / max(1.0 - self.rho, 1e-6)
      guide = guidance_lib.mls_interpolate(raw, valid, self.c_p, weights)
      corr_mod = guidance_lib.gaussian_modulation(corr, cells + guide,
                                                  self.c_m)
    else:  # Table 3a without the MLS layer: the paper's footnote 1.
      guide = raw * valid[..., None]
      corr_mod = guidance_lib.gaussian_modulation_at_confident(
          corr, cells + raw, valid, self.c_m)
    if self.matching:
      flow = guide + self.matcher(corr_mod, cells + guide)
    else:
      flow = guide
    return {'q': q, 'logits': logits, 'confident': valid,
            'guidance_raw': raw, 'guidance': guide, 'flow': flow}
