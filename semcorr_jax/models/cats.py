"""CATs: Cost Aggregation with Transformers (Cho et al., NeurIPS 2021).

Hyperpixel features of both images (N backbone taps, each resized to S x S,
align corners) -> per-level correlation of the L2-normalised features ->
CATs' mutual filter -> the transformer aggregator (appearance embedding of
the raw features, intra-level then cross-level attention, swapping
self-attention with the correlation residual) -> mean over levels ->
soft-argmax over the source for every target cell (reference-facts §C.2).

Shapes. P = S * S cells per image, flattened row-major (index y * S + x,
x first in points, docs/architecture.md). The aggregator works on the
reference's flat layout: `corr` (B, N, P_src, P_trg), appearance
(B, N, P, proj_dim). The read-out returns `mapping_ts` (B, S, S, 2): for
every target cell the (x, y) in source cells (the direction CATs trains);
`mapping_st` comes from the same network run with the two images swapped
(`both_directions`), i.e. the trained read-out with the roles exchanged,
not a read-out of the transposed volume (which the loss never trains).

Parameter tree (the release's names, `proj.<l>` -> `proj_<l>`,
`decoder.blocks.<d>` -> `decoder/blocks_<d>`; Dense kernels are the torch
weights transposed):

  params/backbone/...               the backbone (frozen by default)
  params/proj_<l>/{kernel, bias}    appearance embedding of level l, C_l -> 128
  params/decoder/pos_embed_x        (1, N, 1, S, E / 2)
  params/decoder/pos_embed_y        (1, N, S, 1, E / 2)
  params/decoder/blocks_<d>/norm1..norm4, attn/{qkv, proj},
      attn_multiscale/{qkv, proj}, mlp/{fc1, fc2}, mlp2/{fc1, fc2}
  params/decoder/proj               Dense E -> S * S
  batch_stats/backbone/...          frozen running statistics

with E = S * S + proj_dim. The release's unused `decoder.norm` is not built.
With N = 1 the reference skips `attn_multiscale`, `mlp2`, `norm3` and
`norm4`; they are still created (at initialisation only) so that the tree is
the release's for every N.

Backbone BatchNorm: running statistics always (`models.resnet`,
`models.efficientnet`), also in training. CATs calls `net.train()`, which
puts the frozen backbone's BatchNorm in train mode: batch statistics, and
running statistics updated by every step. We keep the ImageNet statistics
(docs/cats.md, "Choices"); an imported release brings its own running
statistics with it.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from semcorr_jax import geometry
from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import backbones

Array = jax.Array

# Replaces a zero maximum in the mutual filter (the reference adds 1e-30).
ZERO_MAX = 1e-30


def trunc_normal(std: float = 0.02):
  """timm's `trunc_normal_(std)`: N(0, std^2) cut at the absolute +-2."""
  def init(key, shape, dtype=jnp.float32):
    bound = 2.0 / std
    return std * jax.random.truncated_normal(key, -bound, bound, shape, dtype)
  return init


def torch_linear_init(fan_in: int):
  """PyTorch's default `nn.Linear` init, U(+-1/sqrt(fan_in)) for both."""
  bound = 1.0 / math.sqrt(max(fan_in, 1))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def _dense(features: int, name: str, zero: bool = False) -> nn.Dense:
  """A Linear of the aggregator: trunc_normal(0.02) kernel (or zeros),
  zero bias."""
  return nn.Dense(features, kernel_init=(nn.initializers.zeros if zero else
                                         trunc_normal()),
                  bias_init=nn.initializers.zeros, name=name)


def _layer_norm(name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=1e-6, name=name)


def mutual_nn_filter(corr: Array) -> Array:
  """CATs' mutual filter `c * (c / max_trg c) * (c / max_src c)`.

  A maximum equal to 0 is replaced by 1e-30; the correlation is not ReLU'd
  (negative maxima flip signs, as in the reference).

  Args:
    corr: (..., P_src, P_trg).

  Returns:
    (..., P_src, P_trg).
  """
  max_over_trg = jnp.max(corr, axis=-1, keepdims=True)  # best t for each s
  max_over_src = jnp.max(corr, axis=-2, keepdims=True)  # best s for each t
  max_over_trg = jnp.where(max_over_trg == 0, ZERO_MAX, max_over_trg)
  max_over_src = jnp.where(max_over_src == 0, ZERO_MAX, max_over_src)
  return corr * ((corr / max_over_trg) * (corr / max_over_src))


def hyperpixel_correlation(feat_s: Array, feat_t: Array) -> Array:
  """Per-level correlation of L2-normalised features, flat layout.

  Args:
    feat_s: (B, S, S, C) source features of one level.
    feat_t: (B, S, S, C) target features.

  Returns:
    (B, P_src, P_trg) `<l2n(f_s), l2n(f_t)>` (eps 1e-6 inside the root).
  """
  b, h, w, c = feat_s.shape
  fs = geometry.l2_normalize(feat_s, eps=1e-6).reshape(b, h * w, c)
  ft = geometry.l2_normalize(feat_t, eps=1e-6).reshape(b, h * w, c)
  return jnp.einsum('bsc,btc->bst', fs, ft)


def soft_argmax_ts(corr: Array, feature_size: int, temperature: float
                   ) -> Array:
  """For every target cell, the expected source cell under a softmax.

  `softmax_src(corr / temperature)`, expectation of the source (x, y); the
  reference's expectation over `linspace(-1, 1, S)` unnormalised by
  `(x + 1)(S - 1) / 2` is the same number.

  Args:
    corr: (B, P_src, P_trg) aggregated correlation.
    feature_size: S.
    temperature: softmax temperature (CATs: 0.02).

  Returns:
    (B, S, S, 2) mapping_ts in source cells.
  """
  s = feature_size
  corr_ts = jnp.swapaxes(corr, 1, 2).reshape(-1, s, s, s, s)
  return geometry.soft_argmax(corr_ts, 1.0 / temperature)


class Mlp(nn.Module):
  """fc1 -> exact-erf GELU -> fc2 (timm `Mlp`, no dropout)."""
  hidden: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    y = _dense(self.hidden, 'fc1')(x)
    y = nn.gelu(y, approximate=False)
    return _dense(x.shape[-1], 'fc2')(y)


class Attention(nn.Module):
  """Multi-head self-attention with a fused qkv (bias) and an output proj."""
  num_heads: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """(B, T, E) -> (B, T, E)."""
    b, t, e = x.shape
    head = e // self.num_heads
    qkv = _dense(3 * e, 'qkv')(x).reshape(b, t, 3, self.num_heads, head)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # (B, T, H, D)
    # softmax(q k^T / sqrt(D)) v; XLA:CPU runs this about 2x faster than
    # the same product written as two einsums.
    y = jax.nn.dot_product_attention(q, k, v).reshape(b, t, e)
    return _dense(e, 'proj')(y)


class MultiscaleBlock(nn.Module):
  """Intra-level self-attention, mlp2, cross-level attention, mlp.

  x (B, N, T, E): `x += attn(norm1 x)` over the T tokens of each level,
  `x += mlp2(norm4 x)`, `x += attn_multiscale(norm3 x)` over the N levels of
  each token, `x += mlp(norm2 x)`. With N = 1: attn and mlp only.
  """
  num_heads: int
  mlp_ratio: float

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """(B, N, T, E) -> (B, N, T, E)."""
    b, n, t, e = x.shape
    hidden = int(e * self.mlp_ratio)
    attn = Attention(self.num_heads, name='attn')
    attn_ms = Attention(self.num_heads, name='attn_multiscale')
    mlp, mlp2 = Mlp(hidden, name='mlp'), Mlp(hidden, name='mlp2')
    norms = {i: _layer_norm(f'norm{i}') for i in (1, 2, 3, 4)}
    y = x.reshape(b * n, t, e)
    y = y + attn(norms[1](y))
    if n == 1:
      if self.is_initializing():  # the release's tree for every N
        mlp2(norms[4](y))
        attn_ms(norms[3](y))
      y = y + mlp(norms[2](y))
      return y.reshape(b, n, t, e)
    y = y + mlp2(norms[4](y))
    # Tokens of one cell across the N levels.
    y = y.reshape(b, n, t, e).transpose(0, 2, 1, 3).reshape(b * t, n, e)
    y = y + attn_ms(norms[3](y))
    y = y.reshape(b, t, n, e).transpose(0, 2, 1, 3).reshape(b * n, t, e)
    y = y + mlp(norms[2](y))
    return y.reshape(b, n, t, e)


class TransformerAggregator(nn.Module):
  """CATs' aggregator with swapping self-attention (the release's `decoder`).

  Call as the reference, `aggregator(corr, source, target)`:

    x = proj(blocks(cat(corr^T, target) + pos))^T + corr    (target tokens)
    x = proj(blocks(cat(x, source) + pos)) + corr           (source tokens)
    return mean over the N levels of x

  The same `blocks` and the same `proj` serve both passes.

  Attributes:
    num_levels: N hyperpixel levels.
    feature_size: S (P = S * S tokens per level).
    embed_dim: E = S * S + appearance dim.
    depth: number of `MultiscaleBlock`s (CATs' train.py: 1).
    num_heads: attention heads (E divisible by it).
    mlp_ratio: MLP hidden size / E.
    zero_proj: start `proj` at zero (not in CATs): the untrained
      aggregator then returns the mean of the filtered correlations.
  """
  num_levels: int
  feature_size: int
  embed_dim: int
  depth: int = 1
  num_heads: int = 6
  mlp_ratio: float = 4.0
  zero_proj: bool = False

  @nn.compact
  def __call__(self, corr: Array, source: Array, target: Array) -> Array:
    """Aggregates the stacked correlations.

    Args:
      corr: (B, N, P_src, P_trg) filtered correlations.
      source: (B, N, P_src, E - P) source appearance embeddings.
      target: (B, N, P_trg, E - P) target appearance embeddings.

    Returns:
      (B, P_src, P_trg) the mean over levels.
    """
    n, s, e = self.num_levels, self.feature_size, self.embed_dim
    half = e // 2
    pos_x = self.param('pos_embed_x', trunc_normal(), (1, n, 1, s, half))
    pos_y = self.param('pos_embed_y', trunc_normal(), (1, n, s, 1, half))
    pos = jnp.concatenate([jnp.broadcast_to(pos_x, (1, n, s, s, half)),
                           jnp.broadcast_to(pos_y, (1, n, s, s, half))],
                          axis=-1).reshape(1, n, s * s, e)
    blocks = [MultiscaleBlock(self.num_heads, self.mlp_ratio,
                              name=f'blocks_{d}') for d in range(self.depth)]
    proj = _dense(s * s, 'proj', zero=self.zero_proj)

    def run(x):
      for block in blocks:
        x = block(x)
      return proj(x)

    x = jnp.concatenate([jnp.swapaxes(corr, -1, -2), target], axis=-1) + pos
    x = jnp.swapaxes(run(x), -1, -2) + corr
    x = jnp.concatenate([x, source], axis=-1) + pos
    x = run(x) + corr
    return jnp.mean(x, axis=1)


class CATs(nn.Module):
  """The whole network; every field from the config (`from_config`).

  Attributes:
    backbone_spec: the taps, in the order of the levels.
    feature_size: S, the side every level is resized to.
    proj_dim: appearance embedding size (128).
    depth, num_heads, mlp_ratio: the aggregator's.
    temperature: soft-argmax temperature (0.02).
    zero_proj: the aggregator's `proj` starts at zero (not in CATs).
    train_backbone: False puts the backbone features under stop_gradient.
    dtype: the backbone's compute dtype; the rest runs in float32.
  """
  backbone_spec: backbones.BackboneSpec
  feature_size: int = 16
  proj_dim: int = 128
  depth: int = 1
  num_heads: int = 6
  mlp_ratio: float = 4.0
  temperature: float = 0.02
  zero_proj: bool = False
  train_backbone: bool = False
  dtype: str = 'float32'

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> CATs:
    """From `config.model`, `config.backbone` and the frozen backbone group."""
    m = config.model
    check_sizes(m.feature_size, m.proj_dim, m.num_heads)
    return cls(
        backbone_spec=backbones.BackboneSpec.from_config(
            backbones.backbone_config(config)),
        feature_size=m.feature_size, proj_dim=m.proj_dim, depth=m.depth,
        num_heads=m.num_heads, mlp_ratio=m.mlp_ratio,
        temperature=m.temperature, zero_proj=m.zero_proj,
        train_backbone=not config.optimizer.groups.backbone.frozen,
        dtype=m.dtype)

  @property
  def embed_dim(self) -> int:
    return self.feature_size ** 2 + self.proj_dim

  def hyperpixels(self, images: Array) -> list[Array]:
    """(B, H, W, 3) in [0, 1] -> N levels (B, S, S, C_l) float32."""
    feats = backbones.build_backbone(self.backbone_spec,
                                     jnp.dtype(self.dtype),
                                     name='backbone')(images)
    out = []
    for f in feats:
      if not self.train_backbone:
        f = jax.lax.stop_gradient(f)
      out.append(geometry.resize_images(
          f.astype(jnp.float32), (self.feature_size, self.feature_size)))
    return out

  @nn.compact
  def __call__(self, source: Array, target: Array,
               both_directions: bool = False) -> dict[str, Any]:
    """Matches two batches of images of the same size.

    Args:
      source: (B, H, W, 3) in [0, 1].
      target: (B, H, W, 3) in [0, 1].
      both_directions: also run the network with the images swapped, for
        `mapping_st`.

    Returns:
      'corr': (B, P_src, P_trg) the aggregated correlation;
      'mapping_ts': (B, S, S, 2) for every target cell the (x, y) in source
        cells; with `both_directions` also 'mapping_st' (B, S, S, 2), every
        source cell in target cells; 'feature_hw': (S, S).
    """
    b = source.shape[0]
    s = self.feature_size
    levels = self.hyperpixels(jnp.concatenate([source, target], axis=0))
    corrs, emb_s, emb_t = [], [], []
    for l, f in enumerate(levels):
      f_s, f_t = f[:b], f[b:]
      corrs.append(hyperpixel_correlation(f_s, f_t))
      dense = nn.Dense(self.proj_dim, kernel_init=torch_linear_init(
          f.shape[-1]), bias_init=torch_linear_init(f.shape[-1]),
                       name=f'proj_{l}')
      emb = dense(f.reshape(2 * b, s * s, f.shape[-1]))
      emb_s.append(emb[:b])
      emb_t.append(emb[b:])
    corr = mutual_nn_filter(jnp.stack(corrs, axis=1))  # (B, N, Ps, Pt)
    emb_s, emb_t = jnp.stack(emb_s, axis=1), jnp.stack(emb_t, axis=1)
    decoder = TransformerAggregator(
        num_levels=len(levels), feature_size=s, embed_dim=self.embed_dim,
        depth=self.depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
        zero_proj=self.zero_proj, name='decoder')
    if both_directions:  # the swapped pair rides on the batch
      refined = decoder(
          jnp.concatenate([corr, jnp.swapaxes(corr, -1, -2)], axis=0),
          jnp.concatenate([emb_s, emb_t], axis=0),
          jnp.concatenate([emb_t, emb_s], axis=0))
      mappings = soft_argmax_ts(refined, s, self.temperature)
      return {'corr': refined[:b], 'mapping_ts': mappings[:b],
              'mapping_st': mappings[b:], 'feature_hw': (s, s)}
    refined = decoder(corr, emb_s, emb_t)
    return {'corr': refined,
            'mapping_ts': soft_argmax_ts(refined, s, self.temperature),
            'feature_hw': (s, s)}


def check_sizes(feature_size: int, proj_dim: int, num_heads: int) -> None:
  """The embedding E = S^2 + proj_dim splits into heads and x/y halves.

  Raises:
    SemcorrError: E odd or not divisible by `num_heads`.
  """
  e = feature_size ** 2 + proj_dim
  if e % 2 or e % num_heads:
    raise SemcorrError(
        f'model.feature_size={feature_size} and model.proj_dim={proj_dim} '
        f'give an embedding of {e}, which must be even and divisible by '
        f'model.num_heads={num_heads}; change one of them')

