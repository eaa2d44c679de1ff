"""JLFC's network: a trainable feature extractor and a cost aggregator.

Paper 002 (Kim et al., joint learning of feature extraction and cost
aggregation), docs/jlfc.md:

  images -> backbone taps -> adaptation layers (SFNet's residual units,
  the paper's "additional layers") -> L2-normalised features -> raw cost C
  -> aggregator -> aggregated cost A

with one of two aggregators (`aggregator`):

* 'ncnet': one tap; C = the 4-D correlation (B, h, w, h, w) of the adapted
  features; A = mutual matching -> symmetric neighbourhood consensus ->
  mutual matching (`models.ncnet`).
* 'cats': N hyperpixel taps, each resized to S x S (align corners) before
  its adaptation layer; C = the mean over levels of the per-level
  correlations; A = CATs' transformer aggregator on the mutually filtered
  stack of levels, with the appearance embeddings of the adapted features
  (`models.cats`), reshaped to (B, S, S, S, S).

Both costs are returned source -> target, (B, Ha, Wa, Hb, Wb)
(docs/architecture.md); the losses read them in both directions.

Parameter tree (the NCNet and CATs names, so their release importers'
workdirs can seed one part through `init_from.subtrees`):

  params/backbone/...             the backbone
  params/adapt_<tap>/conv<i>, bn<i>   adaptation layer of a tap (none with
                                  `adapt_units` 0)
  params/consensus/conv_<i>       'ncnet': the Conv4d stack
  params/proj_<l>, params/decoder 'cats': the aggregator
  batch_stats/backbone/...        frozen running statistics
  batch_stats/adapt_<tap>/bn<i>   the adaptation layers' running statistics
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from semcorr_jax import geometry
from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import backbones
from semcorr_jax.models import cats as cats_model
from semcorr_jax.models import ncnet as ncnet_model
from semcorr_jax.models import sfnet as sfnet_model

Array = jax.Array

AGGREGATORS = ('ncnet', 'cats')


class JLFC(nn.Module):
  """Feature extractor + aggregator; every field from the config.

  Attributes:
    backbone_spec: the taps (one for 'ncnet', N hyperpixels for 'cats').
    aggregator: 'ncnet' or 'cats'.
    adapt_kernel: kernel of the adaptation convs.
    adapt_units: residual units per adaptation layer (0: none).
    train_backbone: False puts the backbone's features under
      stop_gradient.
    kernel_sizes, channels, symmetric, conv4d_impl: 'ncnet's consensus.
    feature_size, proj_dim, depth, num_heads, mlp_ratio, zero_proj: 'cats'.
    dtype: compute dtype of the backbone and adaptation convs; the costs
      are float32.
  """
  backbone_spec: backbones.BackboneSpec
  aggregator: str = 'ncnet'
  adapt_kernel: int = 3
  adapt_units: int = 2
  train_backbone: bool = False
  kernel_sizes: Sequence[int] = (5, 5, 5)
  channels: Sequence[int] = (16, 16, 1)
  symmetric: bool = True
  conv4d_impl: str = 'planes'
  feature_size: int = 16
  proj_dim: int = 128
  depth: int = 1
  num_heads: int = 6
  mlp_ratio: float = 4.0
  zero_proj: bool = False
  dtype: str = 'float32'

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict,
                  train_backbone: bool) -> JLFC:
    """From `config.backbone` and `config.model` (configs/jlfc.py)."""
    m = config.model
    if m.aggregator not in AGGREGATORS:
      raise SemcorrError(f'model.aggregator={m.aggregator!r}: use one of '
                         f'{AGGREGATORS}')
    spec = backbones.BackboneSpec.from_config(
        backbones.backbone_config(config))
    if m.aggregator == 'ncnet':
      spec.check_levels(1, 'jlfc with the ncnet aggregator')
    else:
      cats_model.check_sizes(m.feature_size, m.proj_dim, m.num_heads)
    if m.adapt_units < 0 or m.adapt_kernel < 1 or m.adapt_kernel % 2 == 0:
      raise SemcorrError(
          f'model.adapt_units={m.adapt_units} and model.adapt_kernel='
          f'{m.adapt_kernel}: need units >= 0 and an odd kernel')
    return cls(
        backbone_spec=spec, aggregator=m.aggregator,
        adapt_kernel=m.adapt_kernel, adapt_units=m.adapt_units,
        train_backbone=train_backbone, kernel_sizes=tuple(m.kernel_sizes),
        channels=tuple(m.channels), symmetric=m.symmetric,
        conv4d_impl=m.conv4d_impl, feature_size=m.feature_size,
        proj_dim=m.proj_dim, depth=m.depth, num_heads=m.num_heads,
        mlp_ratio=m.mlp_ratio, zero_proj=m.zero_proj, dtype=m.dtype)

  def _features(self, images: Array, train: bool) -> list[Array]:
    """(2B, H, W, 3) [source; target] -> adapted features per tap, float32.

    'cats' resizes every tap to S x S before adapting it.
    """
    dtype = jnp.dtype(self.dtype)
    feats = backbones.build_backbone(self.backbone_spec, dtype,
                                     name='backbone')(images)
    out = []
    for tap, f in zip(self.backbone_spec.features, feats):
      if not self.train_backbone:
        f = jax.lax.stop_gradient(f)
      if self.aggregator == 'cats':
        f = geometry.resize_images(f.astype(jnp.float32),
                                   (self.feature_size, self.feature_size))
      if self.adapt_units:
        f = sfnet_model.AdaptationLayer(
            self.adapt_kernel, self.adapt_units, dtype=dtype,
            name=f'adapt_{tap}')(f.astype(dtype), train)
      out.append(f.astype(jnp.float32))
    return out

  @nn.compact
  def __call__(self, source: Array, target: Array, train: bool = False
               ) -> dict[str, Any]:
    """Both costs of a batch of pairs.

    Args:
      source: (B, H, W, 3) in [0, 1].
      target: (B, H, W, 3) in [0, 1], the same size.
      train: the adaptation layers' BatchNorm uses per-side batch
        statistics and updates `batch_stats` (pass
        `mutable=['batch_stats']`).

    Returns:
      'raw': C (B, h, w, h, w); 'agg': A (B, h, w, h, w), source ->
      target; 'feature_hw': (h, w).
    """
    if source.shape != target.shape:
      raise SemcorrError(f'source {source.shape} and target {target.shape} '
                         'must have the same shape')
    b = source.shape[0]
    levels = self._features(jnp.concatenate([source, target], axis=0), train)
    if self.aggregator == 'ncnet':
      f = geometry.l2_normalize(levels[0], eps=ncnet_model.FEATURE_EPS)
      raw = geometry.correlation_4d(f[:b], f[b:])
      consensus = ncnet_model.NeighConsensus(
          self.kernel_sizes, self.channels, self.symmetric, self.conv4d_impl,
          name='consensus')
      agg = ncnet_model.mutual_matching(
          consensus(ncnet_model.mutual_matching(raw)))
      return {'raw': raw, 'agg': agg, 'feature_hw': raw.shape[1:3]}

    s = self.feature_size
    corrs, emb_s, emb_t = [], [], []
    for l, f in enumerate(levels):
      corrs.append(cats_model.hyperpixel_correlation(f[:b], f[b:]))
      c = f.shape[-1]
      dense = nn.Dense(self.proj_dim,
                       kernel_init=cats_model.torch_linear_init(c),
                       bias_init=cats_model.torch_linear_init(c),
                       name=f'proj_{l}')
      emb = dense(f.reshape(2 * b, s * s, c))
      emb_s.append(emb[:b])
      emb_t.append(emb[b:])
    stack = jnp.stack(corrs, axis=1)  # (B, N, P_src, P_trg)
    decoder = cats_model.TransformerAggregator(
        num_levels=len(levels), feature_size=s,
        embed_dim=s * s + self.proj_dim, depth=self.depth,
        num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
        zero_proj=self.zero_proj, name='decoder')
    agg = decoder(cats_model.mutual_nn_filter(stack),
                  jnp.stack(emb_s, axis=1), jnp.stack(emb_t, axis=1))
    shape = (b, s, s, s, s)
    return {'raw': jnp.mean(stack, axis=1).reshape(shape),
            'agg': agg.reshape(shape), 'feature_hw': (s, s)}
