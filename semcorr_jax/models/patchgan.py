"""PatchGAN discriminator (Isola et al. 2017), CAMNet's D (paper 000, Sec. 5.1).

pix2pix's N-layer design: a 4x4 conv of stride 2 with LeakyReLU(0.2), then
`num_layers - 1` more stride-2 4x4 convs doubling the width (capped at 8x),
one stride-1 4x4 conv, and a stride-1 4x4 conv to one channel. With
num_layers=3 each output cell sees a 70x70 patch. Normalisation is instance
norm (no running statistics, so D has no state to carry and each image is
judged on its own); pix2pix's default is BatchNorm.

The output is one score per patch. CAMNet describes D's output as values in
[0, 1]; `sigmoid_output=True` applies the sigmoid, False leaves the linear
score of the least-squares GAN paper (Mao et al.).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class PatchDiscriminator(nn.Module):
  """D(warped, reference) -> (B, h', w') patch scores.

  Set from `config.gan` (configs/camnet.py).

  Attributes:
    width: channels of the first conv (pix2pix ndf, 64).
    num_layers: stride-2 convs (3 gives 70x70 patches).
    sigmoid_output: squash scores to [0, 1].
    dtype: compute dtype; the scores are float32.
  """
  width: int
  num_layers: int
  sigmoid_output: bool
  dtype: Any

  @nn.compact
  def __call__(self, warped: Array, reference: Array) -> Array:
    """Scores image pairs.

    Args:
      warped: (B, H, W, 3) the source warped into the reference's frame.
      reference: (B, H, W, 3) the image it should align with.

    Returns:
      (B, h', w') float32 patch scores (h' ~ H / 2^num_layers - 2).
    """
    x = jnp.concatenate([warped, reference], axis=-1).astype(self.dtype)
    conv = lambda c, s, name: nn.Conv(  # pylint: disable=g-long-lambda
        c, (4, 4), strides=(s, s), padding=((1, 1), (1, 1)),
        dtype=self.dtype, param_dtype=jnp.float32, name=name)
    x = nn.leaky_relu(conv(self.width, 2, 'conv0')(x), 0.2)
    for i in range(1, self.num_layers + 1):
      stride = 2 if i < self.num_layers else 1
      x = conv(self.width * min(2 ** i, 8), stride, f'conv{i}')(x)
      x = nn.InstanceNorm(dtype=self.dtype, param_dtype=jnp.float32,
                          name=f'norm{i}')(x)
      x = nn.leaky_relu(x, 0.2)
    score = conv(1, 1, 'score')(x)[..., 0].astype(jnp.float32)
    return jax.nn.sigmoid(score) if self.sigmoid_output else score
