"""Foreground masks on feature grids."""

from typing import Sequence

import jax
import jax.numpy as jnp


def downsample_mask(mask: jax.Array, hw: Sequence[int],
                    threshold: float = 0.1) -> jax.Array:
  """Resizes foreground masks to a feature grid and binarises `> threshold`.

  SFNet resizes its 320x320 masks to 20x20 with PIL's bilinear filter, which
  antialiases when shrinking (a triangle filter as wide as the scale factor),
  then binarises `> 0.1`: a cell is foreground if roughly 10% of its pixels
  are. `jax.image.resize(..., 'linear', antialias=True)` is the same filter
  (pixel-centre convention, like PIL); point-sampling bilinear would alias
  thin parts away.

  Args:
    mask: (B, H, W) foreground in [0, 1].
    hw: (h, w) output grid.
    threshold: binarisation threshold (SFNet 0.1).

  Returns:
    (B, h, w) float32 in {0, 1}.
  """
  b = mask.shape[0]
  shape = (b, int(hw[0]), int(hw[1]))
  small = jax.image.resize(mask.astype(jnp.float32), shape, method='linear',
                           antialias=True)
  return (small > threshold).astype(jnp.float32)
