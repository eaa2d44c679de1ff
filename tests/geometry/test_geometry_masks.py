"""Tests for semcorr_jax.geometry.masks: foreground masks on feature grids."""

import jax.numpy as jnp
import numpy as np
from PIL import Image

from semcorr_jax import geometry


def _pil_downsample(mask, hw):
  """SFNet's pipeline: uint8 0/255 -> PIL bilinear resize -> /255 > 0.1."""
  img = Image.fromarray((np.asarray(mask) * 255).astype(np.uint8))
  img = img.resize((hw[1], hw[0]), Image.BILINEAR)
  return (np.asarray(img, np.float32) / 255.0 > 0.1).astype(np.float32)


def test_downsample_mask_matches_sfnet_pil_pipeline():
  rng = np.random.default_rng(0)
  masks = np.zeros((4, 64, 80), np.float32)
  masks[0, 16:32, 32:48] = 1.0  # One cell of the 4x5 grid.
  masks[1, 5:40, 3:71] = 1.0
  masks[2] = rng.random((64, 80)) > 0.7
  yy, xx = np.mgrid[:64, :80]
  masks[3] = (yy - 30)**2 + (xx - 45)**2 < 18**2
  out = np.asarray(geometry.downsample_mask(jnp.asarray(masks), (4, 5)))
  assert out.shape == (4, 4, 5) and out.dtype == np.float32
  for mask, got in zip(masks, out):
    np.testing.assert_array_equal(got, _pil_downsample(mask, (4, 5)))
  # The antialiased (triangle) filter reaches into neighbouring cells:
  # (2, 2) gets 0.125 x 0.75 = 9.4% (background), the border cell (0, 2) gets
  # 0.143 x 0.75 = 10.7% (the filter is renormalised at the image border).
  expected = np.zeros((4, 5), np.float32)
  expected[0, 2] = expected[1, 2] = 1.0
  np.testing.assert_array_equal(out[0], expected)
  np.testing.assert_array_equal(
      geometry.downsample_mask(jnp.ones((2, 64, 64)), (4, 4)),
      jnp.ones((2, 4, 4)))


def test_downsample_mask_keeps_thin_parts_like_pil():
  # A 2-px vertical line at the centre of cell column 1: ~12% coverage > 10%;
  # point-sampled bilinear would miss it entirely.
  mask = np.zeros((1, 64, 64), np.float32)
  mask[:, :, 23:25] = 1.0
  out = np.asarray(geometry.downsample_mask(jnp.asarray(mask), (4, 4)))
  np.testing.assert_array_equal(out[0, :, 1], 1.0)
  assert out[0, :, [0, 2, 3]].sum() == 0
  mask[:, :, 24] = 0.0  # 1 px: ~6% < 10%.
  assert geometry.downsample_mask(jnp.asarray(mask), (4, 4)).sum() == 0


def test_downsample_mask_threshold():
  # A quarter of every cell is foreground: kept at 0.1, dropped at 0.3.
  mask = np.zeros((1, 64, 64), np.float32)
  mask[:, ::2, ::2] = 1.0
  np.testing.assert_array_equal(
      geometry.downsample_mask(jnp.asarray(mask), (4, 4)), 1.0)
  np.testing.assert_array_equal(
      geometry.downsample_mask(jnp.asarray(mask), (4, 4), threshold=0.3), 0.0)
