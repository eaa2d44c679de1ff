"""NCNet (Rocco et al., NeurIPS 2018): neighbourhood consensus networks.

images -> backbone tap (ResNet-101 layer3 in the paper) -> features
L2-normalised over channels (eps 1e-6 inside the square root) -> 4-D
correlation c (plain dot products, no ReLU) -> soft mutual nearest-neighbour
filtering (`mutual_matching`) -> symmetric neighbourhood consensus
(`NeighConsensus`, stacked `Conv4d` + ReLU) -> `mutual_matching` again ->
the filtered volume (B, Ha, Wa, Hb, Wb) and its read-outs (`dense_matches`).
reference-facts.md §C.1 has the reference layer by layer; docs/ncnet.md the
equations and the choices.

Parameter tree (names fixed for the release importer):

  params/backbone/...               the tapped backbone (frozen unless
                                    `finetune_blocks`; BatchNorm always in
                                    eval mode, as the reference's
                                    `FeatureExtraction.eval()`)
  params/consensus/conv_<i>/kernel  (k, k, k, k, Cin, Cout), i-th Conv4d
  params/consensus/conv_<i>/bias    (Cout,)
  batch_stats/backbone/...          the backbone's running statistics

The release stores `NeighConsensus.conv.{0,2,4}.weight` as
(k1, out, in, k2, k3, k4); ours is `w.transpose(0, 3, 4, 5, 2, 1)`.

Shapes: volumes (B, Ha, Wa, Hb, Wb) with a = source, b = target; mappings
(B, H, W, 2) absolute (x, y) in the other image's cells
(docs/architecture.md).
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
from semcorr_jax.models import conv4d as conv4d_lib
from semcorr_jax.models import efficientnet as effnet_lib
from semcorr_jax.models import resnet as resnet_lib

Array = jax.Array

# NCNet's epsilons: added to each maximum (MutualMatching) and inside the
# square root of the feature norm (featureL2Norm).
MUTUAL_EPS = 1e-5
FEATURE_EPS = 1e-6


def mutual_matching(corr: Array, eps: float = MUTUAL_EPS) -> Array:
  """NCNet's soft mutual nearest-neighbour filter (`MutualMatching`).

  `c * (c / (max_A c + eps)) * (c / (max_B c + eps))`: max_A is the maximum
  over all source cells for each target cell, max_B over all target cells
  for each source cell (`geometry.mutual_nn_filter`). It commutes with
  swapping the two images (`geometry.transpose_4d`) up to float rounding.

  Args:
    corr: (B, Ha, Wa, Hb, Wb).
    eps: added to each maximum.

  Returns:
    (B, Ha, Wa, Hb, Wb).
  """
  return geometry.mutual_nn_filter(corr, eps=eps)


def max_softmax(corr: Array, over: str) -> Array:
  """Largest softmax probability of every cell's row or column.

  Args:
    corr: (B, Ha, Wa, Hb, Wb).
    over: 'b' (softmax over the target cells of each source cell) or 'a'
      (over the source cells of each target cell).

  Returns:
    (B, Ha, Wa) for 'b', (B, Hb, Wb) for 'a', in (0, 1]:
    1 / sum exp(c - max c).
  """
  if over == 'a':
    corr = geometry.transpose_4d(corr)
  elif over != 'b':
    raise ValueError(f"over must be 'a' or 'b', got {over!r}")
  b, h, w = corr.shape[:3]
  flat = corr.reshape(b, h, w, -1)
  return jnp.exp(-jax.nn.logsumexp(
      flat - jnp.max(flat, axis=-1, keepdims=True), axis=-1))


def dense_matches(corr: Array, soft_beta: float) -> dict[str, Array]:
  """Read-outs of a filtered volume, both directions, in cells.

  The reference evaluates with `corr_to_matches(do_softmax=True)`: for every
  target cell the argmax over the source cells of the softmax over the
  source cells, i.e. the plain argmax (softmax is monotonic); its score is
  that softmax maximum. The same is done the other way for source cells.

  Args:
    corr: (B, Ha, Wa, Hb, Wb).
    soft_beta: inverse temperature of the soft read-out (1: the softmax the
      weak loss trains).

  Returns:
    'mapping_st' (B, Ha, Wa, 2): hard argmax over the target cells, (x, y)
      in target cells; 'mapping_ts' (B, Hb, Wb, 2) the reverse (the
      reference's matches);
    'confidence_st' (B, Ha, Wa), 'confidence_ts' (B, Hb, Wb): the maximum
      softmax probability (the reference's match score, in (0, 1]);
    'soft_mapping_st', 'soft_mapping_ts': expected (x, y) under
      softmax(soft_beta * corr) over the other image's cells.
  """
  corr_ts = geometry.transpose_4d(corr)
  return {
      'mapping_st': geometry.hard_argmax(corr),
      'mapping_ts': geometry.hard_argmax(corr_ts),
      'confidence_st': max_softmax(corr, 'b'),
      'confidence_ts': max_softmax(corr, 'a'),
      'soft_mapping_st': geometry.soft_argmax(corr, soft_beta),
      'soft_mapping_ts': geometry.soft_argmax(corr_ts, soft_beta),
  }


class NeighConsensus(nn.Module):
  """Stacked 4-D convolutions + ReLU on a correlation volume.

  `NC(x) = relu(conv_n(... relu(conv_0(x))))` with a ReLU after every layer,
  the last included; channels 1 -> channels[0] -> ... -> channels[-1] = 1.
  Symmetric mode: `NC(x) + NC(x^T)^T` with ^T swapping (Ha, Wa) and (Hb, Wb)
  and the same weights twice (the result then commutes with swapping the
  images: NCsym(x^T) = NCsym(x)^T).

  Attributes:
    kernel_sizes: kernel size of each layer (odd).
    channels: output channels of each layer; the last must be 1.
    symmetric: add the pass on the transposed volume.
    impl: `conv4d.IMPLEMENTATIONS` ('planes', 'native', 'sequential', 'custom_vjp').
  """
  kernel_sizes: Sequence[int]
  channels: Sequence[int]
  symmetric: bool = True
  impl: str = 'planes'

  @nn.compact
  def __call__(self, corr: Array) -> Array:
    """(B, Ha, Wa, Hb, Wb) -> (B, Ha, Wa, Hb, Wb)."""
    if len(self.kernel_sizes) != len(self.channels) or not self.channels:
      raise SemcorrError(
          f'model.kernel_sizes {tuple(self.kernel_sizes)} and model.channels '
          f'{tuple(self.channels)} must name the same number (>= 1) of layers')
    if self.channels[-1] != 1:
      raise SemcorrError(f'model.channels must end with 1 (one output '
                         f'volume), got {tuple(self.channels)}')
    convs = [conv4d_lib.Conv4d(c, k, impl=self.impl, name=f'conv_{i}')
             for i, (k, c) in enumerate(zip(self.kernel_sizes,
                                            self.channels))]

    def stack(x):
      x = x[..., None]
      for conv in convs:
        x = nn.relu(conv(x))
      return x[..., 0]

    if not self.symmetric:
      return stack(corr)
    n = corr.shape[0]
    corr_t = geometry.transpose_4d(corr)
    if corr.shape == corr_t.shape:  # One pass over both (batch 2B).
      both = stack(jnp.concatenate([corr, corr_t], axis=0))
      return both[:n] + geometry.transpose_4d(both[n:])
    return stack(corr) + geometry.transpose_4d(stack(corr_t))


def tapped_blocks(spec: backbones.BackboneSpec) -> tuple[str, ...]:
  """Module names of the blocks of the tapped stage, up to the tap.

  ResNet 'layer3' of ResNet-101 -> ('layer3_0', ..., 'layer3_22'); a
  'hyper_k' tap -> its stage's blocks up to block k; Lite0 'stage5' ->
  ('blocks_8', 'blocks_9', 'blocks_10'); 'stage5_block1' -> ('blocks_8',
  'blocks_9'). The stem (and Lite0's head) has none.
  """
  tap = spec.features[0]
  if spec.name == backbones.LITE0:
    stage = effnet_lib.feature_stage(tap)
    if stage not in effnet_lib.STAGE_NAMES:
      return ()
    blocks = list(effnet_lib.stage_blocks(stage))
    if '_block' in tap:
      blocks = blocks[:int(tap.split('_block')[1]) + 1]
    return tuple(f'blocks_{i}' for i in blocks)
  sizes = spec.resnet_stage_sizes
  if tap.startswith('hyper_'):
    stage, block = resnet_lib.hyperpixel_layers(sizes)[int(tap[6:])]
  elif tap in resnet_lib.STAGE_NAMES:
    stage = tap
    block = sizes[resnet_lib.STAGE_NAMES.index(tap)] - 1
  else:
    return ()
  if stage == 'stem':
    return ()
  return tuple(f'{stage}_{j}' for j in range(block + 1))


def finetuned_blocks(spec: backbones.BackboneSpec, count: int
                     ) -> tuple[str, ...]:
  """The last `count` blocks before the tap (the reference's
  `fe_finetune_params`), as backbone module names.

  Raises:
    SemcorrError: a negative count, or more blocks than the tapped stage
      has up to the tap.
  """
  blocks = tapped_blocks(spec)
  if count < 0 or count > len(blocks):
    raise SemcorrError(
        f'model.finetune_blocks={count}: the tap {spec.features[0]!r} of '
        f'{spec.arch} has {len(blocks)} block(s) in its stage; use 0..'
        f'{len(blocks)}')
  return blocks[len(blocks) - count:] if count else ()


class NCNet(nn.Module):
  """Backbone tap -> correlation -> mutual matching -> NC -> mutual matching.

  Attributes:
    backbone_spec: one tap (`config.backbone`).
    kernel_sizes, channels, symmetric, impl: the `NeighConsensus`.
    train_backbone: let gradients reach the backbone (some of its blocks are
      fine-tuned); False puts the features under `stop_gradient`.
    soft_beta: inverse temperature of the soft read-out.
    dtype: backbone compute dtype; the volume is float32.
  """
  backbone_spec: backbones.BackboneSpec
  kernel_sizes: Sequence[int]
  channels: Sequence[int]
  symmetric: bool = True
  impl: str = 'planes'
  train_backbone: bool = False
  soft_beta: float = 1.0
  dtype: str = 'float32'

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict,
                  train_backbone: bool) -> NCNet:
    """From a run config: `config.backbone` (one tap) and `config.model`."""
    spec = backbones.BackboneSpec.from_config(
        backbones.backbone_config(config)).check_levels(1, 'ncnet')
    m = config.model
    return cls(backbone_spec=spec, kernel_sizes=tuple(m.kernel_sizes),
               channels=tuple(m.channels), symmetric=m.symmetric,
               impl=m.conv4d_impl, train_backbone=train_backbone,
               soft_beta=m.soft_beta, dtype=m.dtype)

  def setup(self):
    self.backbone = backbones.build_backbone(
        self.backbone_spec, jnp.dtype(self.dtype), name=None)
    self.consensus = NeighConsensus(self.kernel_sizes, self.channels,
                                    self.symmetric, self.impl)

  def features(self, images: Array) -> Array:
    """(N, H, W, 3) in [0, 1] -> (N, h, w, C) L2-normalised, float32."""
    feat = self.backbone(images)[0]
    if not self.train_backbone:
      feat = jax.lax.stop_gradient(feat)
    return geometry.l2_normalize(feat.astype(jnp.float32), eps=FEATURE_EPS)

  def match(self, feat_a: Array, feat_b: Array) -> Array:
    """(B, Ha, Wa, C), (B, Hb, Wb, C) -> filtered volume (B, Ha, Wa, Hb, Wb)."""
    corr = geometry.correlation_4d(feat_a, feat_b)
    corr = mutual_matching(corr)
    corr = self.consensus(corr)
    return mutual_matching(corr)

  def __call__(self, source: Array, target: Array) -> dict[str, Any]:
    """Images (B, H, W, 3) in [0, 1] -> the volume and its read-outs.

    Returns:
      'corr' (B, ha, wa, hb, wb) and the `dense_matches` in cells.
    """
    n = source.shape[0]
    if source.shape == target.shape:  # One backbone pass (batch 2B).
      feats = self.features(jnp.concatenate([source, target], axis=0))
      feat_a, feat_b = feats[:n], feats[n:]
    else:
      feat_a, feat_b = self.features(source), self.features(target)
    corr = self.match(feat_a, feat_b)
    return {'corr': corr, **dense_matches(corr, self.soft_beta)}
