"""Bilinear sampling and warping.

See docs/architecture.md, "Coordinate conventions".

`bilinear_sample` is the single sampling primitive. With `padding_mode='zeros'`
it equals PyTorch `F.grid_sample(mode='bilinear', padding_mode='zeros',
align_corners=True)` in values and in gradients with respect to both the image
and the coordinates: each of the four neighbours that falls outside the image
contributes 0 (the others keep their bilinear weights). `padding_mode='border'`
clamps the coordinates into the image first (PyTorch's 'border').
"""

import jax
import jax.numpy as jnp

from semcorr_jax.geometry import grids


def _sample_flat(
    image_flat: jax.Array, height: int, width: int, x: jax.Array, y: jax.Array
) -> jax.Array:
  """Zero-padded bilinear sampling.

  Args:
    image_flat: (B, H * W, C).
    height: H.
    width: W.
    x: (B, N) absolute x in pixels.
    y: (B, N) absolute y in pixels.

  Returns:
    (B, N, C).
  """
  # floor has zero derivative, so d/dx flows only through the weights, as in
  # PyTorch's backward (at integer x the right neighbour gets weight 0 but still
  # defines the slope).
  x0 = jnp.floor(x)
  y0 = jnp.floor(y)
  x1 = x0 + 1.0
  y1 = y0 + 1.0
  wx1 = x - x0
  wx0 = x1 - x
  wy1 = y - y0
  wy0 = y1 - y

  out = 0.0
  for xi, yi, w in (
      (x0, y0, wx0 * wy0),
      (x1, y0, wx1 * wy0),
      (x0, y1, wx0 * wy1),
      (x1, y1, wx1 * wy1),
  ):
    # Validity is decided on the float index, before the int cast, so far-away
    # coordinates cannot overflow int32 into a valid-looking index.
    valid = (xi >= 0) & (xi <= width - 1) & (yi >= 0) & (yi <= height - 1)
    xc = jnp.clip(xi, 0, width - 1).astype(jnp.int32)
    yc = jnp.clip(yi, 0, height - 1).astype(jnp.int32)
    idx = yc * width + xc  # (B, N)
    vals = jnp.take_along_axis(image_flat, idx[..., None], axis=1)  # (B, N, C)
    w = jnp.where(valid, w, 0.0)
    out = out + vals * w[..., None]
  return out


def bilinear_sample(
    image: jax.Array, coords: jax.Array, padding_mode: str = 'zeros'
) -> jax.Array:
  """Samples an image at absolute pixel coordinates (bilinear).

  Args:
    image: (B, H, W, C); give single-channel maps (masks) a trailing C = 1.
    coords: (B, ..., 2) absolute (x, y) in pixels of `image` (pixel centres at
      integers); any number of query axes, e.g. (B, Ha, Wa, 2) for a mapping or
      (B, N, 2) for points.
    padding_mode: 'zeros' (out-of-image neighbours contribute 0, PyTorch
      'zeros') or 'border' (coordinates clamped to [0, W - 1] x [0, H - 1]
      first, PyTorch 'border'; zero gradient w.r.t. clamped coordinates).

  Returns:
    (B, ..., C) sampled values, dtype of `image`.
  """
  if padding_mode not in ('zeros', 'border'):
    raise ValueError(
        f"padding_mode must be 'zeros' or 'border', got {padding_mode!r}"
    )
  b, h, w, c = image.shape
  query_shape = coords.shape[1:-1]
  # Coordinates and weights stay in (at least) float32 even for bfloat16 images:
  # a bf16 coordinate near x = 300 has a resolution of 2 pixels.
  coords = coords.reshape(b, -1, 2).astype(
      jnp.promote_types(coords.dtype, jnp.float32)
  )
  x, y = coords[..., 0], coords[..., 1]
  if padding_mode == 'border':
    x = jnp.clip(x, 0.0, w - 1.0)
    y = jnp.clip(y, 0.0, h - 1.0)
  out = _sample_flat(image.reshape(b, h * w, c), h, w, x, y)
  return out.reshape((b,) + query_shape + (c,)).astype(image.dtype)


def grid_sample(
    image: jax.Array, grid_normalized: jax.Array, padding_mode: str = 'zeros'
) -> jax.Array:
  """`F.grid_sample(mode='bilinear', align_corners=True)` on NHWC inputs.

  Args:
    image: (B, H, W, C).
    grid_normalized: (B, h, w, 2) normalised (x, y) in [-1, 1]
      (align_corners=True: -1 and 1 are the centres of the corner pixels);
      values outside [-1, 1] are allowed.
    padding_mode: 'zeros' or 'border' (see `bilinear_sample`).

  Returns:
    (B, h, w, C).
  """
  h, w = image.shape[1], image.shape[2]
  coords = grids.denormalize_coords(grid_normalized, h, w)
  return bilinear_sample(image, coords, padding_mode=padding_mode)


def warp(
    image_b: jax.Array, mapping_ab: jax.Array, padding_mode: str = 'zeros'
) -> jax.Array:
  """Warps image b into a's frame: `out[a] = image_b[mapping_ab[a]]` (bilinear).

  Args:
    image_b: (B, Hb, Wb, C).
    mapping_ab: (B, Ha, Wa, 2) absolute (x, y) in b's pixels, per pixel of a.
    padding_mode: 'zeros' (default; points mapped outside b read 0) or 'border'.

  Returns:
    (B, Ha, Wa, C).
  """
  return bilinear_sample(image_b, mapping_ab, padding_mode=padding_mode)


def sample_points(
    field: jax.Array, points: jax.Array, padding_mode: str = 'zeros'
) -> jax.Array:
  """Reads a dense field at sparse points (bilinear), e.g. keypoint transfer.

  Args:
    field: (B, H, W, C).
    points: (B, N, 2) absolute (x, y) in the field's pixels.
    padding_mode: 'zeros' or 'border'.

  Returns:
    (B, N, C).
  """
  return bilinear_sample(field, points, padding_mode=padding_mode)
