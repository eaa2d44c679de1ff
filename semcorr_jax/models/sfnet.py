"""SFNet base matcher (Lee et al., CVPR'19), the base net of CAMNet.

Frozen backbone (torchvision ResNet as in the paper, or EfficientNet-Lite0;
`models.backbones`) -> trainable adaptation layers on its two tapped
features (ResNet: layer3 and layer4) -> per-level ReLU'd cosine correlation
-> product of the levels -> L2 normalisation -> kernel soft-argmax
(reference-facts §A.1-A.4). The coarser tap is resized to the finer one's
grid (x2 for layer3/layer4), where the matching happens.

Conventions (docs/architecture.md): images NHWC in [0, 1]; a mapping
`mapping_ab` (B, ha, wa, 2) holds for every cell of a the matching (x, y) in
b's cells (x first, cell centres at integers); `corr_ab` is
(B, ha, wa, hb, wb). `mapping_st` is SFNet's `grid_S2T` (up to the
[-1, 1] normalisation, see `semcorr_jax.geometry.normalize_coords`).

Parameter tree:

  params/backbone/...          frozen backbone (ResNet: torchvision names)
  params/adapt_layer3/conv{i}  5x5 conv with bias (SFNet `adap_layer_feat3`)
  params/adapt_layer3/bn{i}    trainable BatchNorm (scale, bias)
  params/adapt_layer4/...      3x3 (SFNet `adap_layer_feat4`)
  batch_stats/backbone/...     frozen running statistics
  batch_stats/adapt_layer*/bn{i}  running mean / var, updated when train=True

The adaptation layers are named after the taps: `adapt_<finer tap>` and
`adapt_<coarser tap>` (adapt_stage3 / adapt_stage5 for Lite0's default).
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
from semcorr_jax.models import backbones

Array = jax.Array


def _torch_uniform(fan_in: int):
  """PyTorch's default Conv2d init for weights and bias: U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(max(fan_in, 1))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class SideBatchNorm(nn.Module):
  """BatchNorm whose batch statistics are computed per image side.

  SFNet runs its adaptation layers (BN in train mode) once on the source batch
  and once on the target batch, so each side is normalised with its own batch
  statistics and the running statistics are updated twice, source first. We
  run both sides in one concatenated batch (one conv call) and reproduce that
  exactly here, including PyTorch's unbiased variance in the running update.
  Under jit SPMD the means reduce over the global batch (no axis_name).

  Attributes:
    num_sides: number of equal chunks of the batch with separate statistics
      (2: [source; target]).
    momentum: PyTorch momentum (weight of the new statistic), 0.1.
    epsilon: added to the variance.
    dtype: output dtype; statistics are computed in float32.
  """
  num_sides: int = 2
  momentum: float = 0.1
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    """(num_sides * B, H, W, C) -> same shape, normalised per channel."""
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (c,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (c,), jnp.float32)
    x32 = x.astype(jnp.float32)
    if not train:
      y = (x32 - ra_mean.value) * jax.lax.rsqrt(ra_var.value + self.epsilon)
      return (y * scale + bias).astype(self.dtype)

    sides = x32.reshape((self.num_sides, -1) + x.shape[1:])  # (S, B, H, W, C)
    mean = jnp.mean(sides, axis=(1, 2, 3), keepdims=True)
    var = jnp.mean(jnp.square(sides - mean), axis=(1, 2, 3), keepdims=True)
    y = (sides - mean) * jax.lax.rsqrt(var + self.epsilon)
    y = (y * scale + bias).reshape(x.shape).astype(self.dtype)
    if not self.is_initializing():
      n = sides.shape[1] * sides.shape[2] * sides.shape[3]
      unbiased = n / max(n - 1, 1)
      new_mean, new_var = ra_mean.value, ra_var.value
      for s in range(self.num_sides):  # Sequential, as the two torch calls.
        m = self.momentum
        new_mean = (1 - m) * new_mean + m * mean[s].reshape(c)
        new_var = (1 - m) * new_var + m * unbiased * var[s].reshape(c)
      ra_mean.value = jax.lax.stop_gradient(new_mean)
      ra_var.value = jax.lax.stop_gradient(new_var)
    return y


class AdaptationLayer(nn.Module):
  """SFNet adaptation: `units` residual units `x = x + ReLU(BN(Conv(x)))`.

  Attributes:
    kernel_size: conv kernel (5 for layer3, 3 for layer4), stride 1, symmetric
      padding kernel_size // 2, with bias; channels are preserved.
    units: number of residual units (2).
    dtype: compute dtype.
  """
  kernel_size: int
  units: int = 2
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    """(2B, h, w, C) [source; target] -> (2B, h, w, C)."""
    c, k = x.shape[-1], self.kernel_size
    init = _torch_uniform(c * k * k)
    for i in range(self.units):
      y = nn.Conv(c, (k, k), padding=((k // 2, k // 2),) * 2, use_bias=True,
                  dtype=self.dtype, param_dtype=jnp.float32, kernel_init=init,
                  bias_init=init, name=f'conv{i}')(x)
      y = SideBatchNorm(dtype=self.dtype, name=f'bn{i}')(y, train)
      x = x + nn.relu(y)
    return x


def matching_correlations(levels_s: Sequence[Array], levels_t: Sequence[Array]
                          ) -> tuple[Array, Array]:
  """SFNet's `matching_layer` + level product + normalisation (§A.3).

  Per level `c_l = ReLU(<f_s / |f_s|, f_t / |f_t|>)` (eps 1e-6 inside the
  norms); `P = prod_l c_l`; `corr_st = P / |P|_over_t` and `corr_ts =
  P^T / |P^T|_over_s` (eps 1e-6). Computed in float32 at full precision.

  Args:
    levels_s: source features, each (B, h, w, C_l) on the same grid.
    levels_t: target features, each (B, h, w, C_l).

  Returns:
    corr_st (B, hs, ws, ht, wt) normalised over t, corr_ts (B, ht, wt, hs, ws)
    normalised over s.
  """
  prod = None
  for feat_s, feat_t in zip(levels_s, levels_t):
    feat_s = geometry.l2_normalize(feat_s.astype(jnp.float32), eps=1e-6)
    feat_t = geometry.l2_normalize(feat_t.astype(jnp.float32), eps=1e-6)
    corr = nn.relu(geometry.correlation_4d(
        feat_s, feat_t, precision=jax.lax.Precision.HIGHEST))
    prod = corr if prod is None else prod * corr
  # The transpose commutes with the level product (SFNet's corr_T2S).
  corr_st = geometry.normalize_over_b(prod, eps=1e-6)
  corr_ts = geometry.normalize_over_b(geometry.transpose_4d(prod), eps=1e-6)
  return corr_st, corr_ts


class SFNet(nn.Module):
  """SFNet: dense source <-> target mappings on the finer tap's grid.

  Every field comes from the config (`from_config`; configs/sfnet.py holds
  the values and notes the paper's).

  Attributes:
    backbone_spec: the frozen backbone and its two taps (finer first).
    adapt_kernels: conv kernel sizes of the finer and coarser adaptations.
    adapt_units: residual units per adaptation layer.
    beta: kernel soft-argmax inverse temperature (SFNet 50).
    kernel_sigma: kernel soft-argmax Gaussian std in feature cells (SFNet 5).
    dtype: compute dtype of the backbone and adaptation convs ('float32' or
      'bfloat16'); correlation and soft-argmax always run in float32.
  """
  backbone_spec: backbones.BackboneSpec
  adapt_kernels: Sequence[int]
  adapt_units: int
  beta: float
  kernel_sigma: float
  dtype: str

  @classmethod
  def from_config(cls, cfg: ml_collections.ConfigDict,
                  backbone_cfg: ml_collections.ConfigDict) -> SFNet:
    """Builds the module from `config.model` and `config.backbone`.

    Args:
      cfg: `config.model` (configs/sfnet.py: adapt_kernels, adapt_units,
        beta, kernel_sigma, dtype).
      backbone_cfg: `config.backbone` (`backbones.backbone_config(config)`).
    """
    return cls(
        backbone_spec=backbones.BackboneSpec.from_config(
            backbone_cfg).check_levels(2, 'SFNet'),
        adapt_kernels=tuple(cfg.adapt_kernels),
        adapt_units=cfg.adapt_units,
        beta=cfg.beta,
        kernel_sigma=cfg.kernel_sigma,
        dtype=cfg.dtype)

  @property
  def levels(self) -> tuple[str, str]:
    """The tapped features SFNet adapts and correlates, finer first."""
    return tuple(self.backbone_spec.features)

  @nn.compact
  def __call__(self, source: Array, target: Array, train: bool = False
               ) -> dict[str, Any]:
    """Matches source and target.

    Args:
      source: (B, H, W, 3) images in [0, 1].
      target: (B, H, W, 3) images in [0, 1] (same size as source).
      train: adaptation BatchNorm uses batch statistics (per side) and updates
        `batch_stats` (pass `mutable=['batch_stats']`); the backbone is always
        frozen.

    Returns:
      A dict with
        'mapping_st': (B, h, w, 2) for every source cell the (x, y) in target
          cells (SFNet grid_S2T), h x w the finer tap's grid (layer3: H/16 x
          W/16; `backbone_spec.strides[0]` in general);
        'mapping_ts': (B, h, w, 2) the other way (grid_T2S);
        'corr_st': (B, h, w, h, w) product correlation L2-normalised over t;
        'corr_ts': (B, h, w, h, w) its transpose L2-normalised over s;
        'features_s', 'features_t': (B, h, w, C3 + C4) the adapted features
          of both taps on the matching grid (float32), for heads that look
          at the features (CAMNet's confidence network);
        'feature_hw': (h, w) as Python ints (static).
    """
    if source.shape != target.shape:
      raise ValueError(f'source {source.shape} and target {target.shape} '
                       'must have the same shape')
    dtype = jnp.dtype(self.dtype)
    b = source.shape[0]
    # One batched pass for both sides: shared weights, bigger convs. The
    # backbone takes [0, 1] images and normalises them itself.
    backbone = backbones.build_backbone(self.backbone_spec, dtype,
                                        name='backbone')
    feats = backbone(jnp.concatenate([source, target], axis=0))
    adapted = []
    for level, feat, k in zip(self.levels, feats, self.adapt_kernels):
      # Frozen backbone: no gradient through it (also saves its backward).
      f = jax.lax.stop_gradient(feat)
      f = AdaptationLayer(k, self.adapt_units, dtype=dtype,
                          name=f'adapt_{level}')(f, train)
      adapted.append(f)
    f3, f4 = adapted
    h, w = f3.shape[1], f3.shape[2]
    # SFNet: interpolate(scale_factor=2, bilinear, align_corners=True); sizing
    # to the finer grid is the same for even inputs (stride ratio 2) and
    # defined for odd ones and other ratios.
    f4 = geometry.resize_images(f4.astype(jnp.float32), (h, w))

    corr_st, corr_ts = matching_correlations([f3[:b], f4[:b]],
                                             [f3[b:], f4[b:]])
    mapping_st = geometry.kernel_soft_argmax(corr_st, self.beta,
                                             self.kernel_sigma)
    mapping_ts = geometry.kernel_soft_argmax(corr_ts, self.beta,
                                             self.kernel_sigma)
    features = jnp.concatenate([f3.astype(jnp.float32), f4], axis=-1)
    return {'mapping_st': mapping_st, 'mapping_ts': mapping_ts,
            'corr_st': corr_st, 'corr_ts': corr_ts,
            'features_s': features[:b], 'features_t': features[b:],
            'feature_hw': (h, w)}
