"""Pixel grids and coordinate conversions.

See docs/architecture.md, "Coordinate conventions".

Points are `(x, y)`, x first, in pixels with pixel centres at integer
coordinates, so an image of width W spans x in [0, W - 1]. Normalised
coordinates live in [-1, 1] with align_corners=True: `x_n = 2 x / (W - 1) - 1`,
so the corner pixel centres are exactly -1 and 1 at every resolution. A mapping
`mapping_ab` of shape `(B, Ha, Wa, 2)` holds, for every pixel of a, the matching
absolute `(x, y)` in b's pixels; `flow_ab = mapping_ab - pixel_grid(Ha, Wa)`.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Guards `size - 1` for images one pixel wide (PyTorch maps every point of a
# size-1 axis to 0).
_SIZE_EPS = 1e-6


def _is_static(*sizes) -> bool:
  return all(isinstance(s, (int, np.integer)) for s in sizes)


def _sizes_xy(height, width, dtype=jnp.float32) -> jax.Array:
  """Returns `(W - 1, H - 1)` (x first), each clamped to >= eps, shape (2,).

  A numpy constant for static (int) sizes, a traced array otherwise.
  """
  if _is_static(height, width):
    spans = [max(width - 1, _SIZE_EPS), max(height - 1, _SIZE_EPS)]
    return np.asarray(spans, dtype=dtype)
  span = lambda n: jnp.maximum(jnp.asarray(n, dtype) - 1.0, _SIZE_EPS)
  return jnp.stack([span(width), span(height)])


def pixel_grid(height: int, width: int, dtype=jnp.float32) -> jax.Array:
  """Absolute pixel-centre coordinates of an image.

  Args:
    height: H, image height in pixels.
    width: W, image width in pixels.
    dtype: dtype of the result.

  Returns:
    (H, W, 2) array whose entry [i, j] is (x, y) = (j, i).
  """
  xs = jnp.arange(width, dtype=dtype)
  ys = jnp.arange(height, dtype=dtype)
  gx, gy = jnp.meshgrid(xs, ys, indexing='xy')  # both (H, W)
  return jnp.stack([gx, gy], axis=-1)


def normalize_coords(points: jax.Array, height: int, width: int) -> jax.Array:
  """Converts absolute pixel (x, y) to [-1, 1] coordinates (align_corners=True).

  `x_n = 2 x / (W - 1) - 1`, `y_n = 2 y / (H - 1) - 1`; `W - 1` is clamped to
  >= 1e-6 so a one-pixel axis does not divide by zero.

  Args:
    points: (..., 2) absolute (x, y) in pixels of an H x W image.
    height: H.
    width: W.

  Returns:
    (..., 2) normalised (x, y); pixel 0 -> -1, pixel W - 1 -> 1.
  """
  spans = _sizes_xy(height, width, points.dtype)
  return 2.0 * points / spans - 1.0


def denormalize_coords(
    points_n: jax.Array, height: int, width: int
) -> jax.Array:
  """Inverse of `normalize_coords`: [-1, 1] (align_corners=True) -> pixels.

  Args:
    points_n: (..., 2) normalised (x, y).
    height: H of the image the pixels refer to.
    width: W of the image the pixels refer to.

  Returns:
    (..., 2) absolute (x, y); -1 -> 0, 1 -> W - 1 (H - 1 for y).
  """
  # No eps needed here (no division), but reuse the clamp so W == 1 maps
  # everything to ~0 like PyTorch.
  spans = _sizes_xy(height, width, points_n.dtype)
  return (points_n + 1.0) * 0.5 * spans


def mapping_to_flow(mapping: jax.Array) -> jax.Array:
  """`flow_ab = mapping_ab - pixel_grid(Ha, Wa)`.

  Args:
    mapping: (B, Ha, Wa, 2) absolute (x, y) in b's pixels.

  Returns:
    (B, Ha, Wa, 2) displacement (dx, dy) in pixels.
  """
  h, w = mapping.shape[-3], mapping.shape[-2]
  return mapping - pixel_grid(h, w, mapping.dtype)


def flow_to_mapping(flow: jax.Array) -> jax.Array:
  """`mapping_ab = flow_ab + pixel_grid(Ha, Wa)`.

  Args:
    flow: (B, Ha, Wa, 2) displacement (dx, dy) in pixels.

  Returns:
    (B, Ha, Wa, 2) absolute (x, y) in b's pixels.
  """
  h, w = flow.shape[-3], flow.shape[-2]
  return flow + pixel_grid(h, w, flow.dtype)


def normalized_flow(mapping_ab: jax.Array, hw_b: Sequence[int]
                    ) -> jax.Array:
  """SFNet's flow `grid_ab - regular_grid_a` in align-corners [-1, 1] units.

  Args:
    mapping_ab: (B, ha, wa, 2) absolute (x, y) in b's cells.
    hw_b: (hb, wb) of b's grid.

  Returns:
    (B, ha, wa, 2) flow (dx, dy) in normalised units (2 = the whole image).
  """
  ha, wa = mapping_ab.shape[1], mapping_ab.shape[2]
  grid_ab = normalize_coords(mapping_ab, hw_b[0], hw_b[1])
  regular = normalize_coords(pixel_grid(ha, wa, mapping_ab.dtype), ha, wa)
  return grid_ab - regular


def normalized_to_mapping(flow: jax.Array, hw_b: Sequence[int]) -> jax.Array:
  """Inverse of `normalized_flow`: flow in [-1, 1] units -> cells of b.

  Args:
    flow: (B, ha, wa, 2) displacement in align-corners normalised units.
    hw_b: (hb, wb) grid the mapping points into.

  Returns:
    (B, ha, wa, 2) absolute (x, y) in b's cells.
  """
  ha, wa = flow.shape[1], flow.shape[2]
  regular = normalize_coords(pixel_grid(ha, wa, flow.dtype), ha, wa)
  return denormalize_coords(regular + flow, hw_b[0], hw_b[1])


def rescale_coords(
    points: jax.Array, from_hw: Sequence[int], to_hw: Sequence[int]
) -> jax.Array:
  """Moves pixel points to another image size at the same normalised place.

  `x' = x (W_to - 1) / (W_from - 1)` (denominator clamped to >= 1e-6).

  Args:
    points: (..., 2) absolute (x, y) in pixels of an image of size `from_hw`.
    from_hw: (H_from, W_from).
    to_hw: (H_to, W_to).

  Returns:
    (..., 2) absolute (x, y) in pixels of an image of size `to_hw`.
  """
  if _is_static(*from_hw, *to_hw):
    # Ratio in float64 on the host, rounded once.
    ratio = _sizes_xy(*to_hw, np.float64) / _sizes_xy(*from_hw, np.float64)
    return points * np.asarray(ratio, points.dtype)
  to_spans = _sizes_xy(to_hw[0], to_hw[1], points.dtype)
  from_spans = _sizes_xy(from_hw[0], from_hw[1], points.dtype)
  return points * (to_spans / from_spans)


def in_bounds(points: jax.Array, height: int, width: int) -> jax.Array:
  """1.0 where (x, y) lies inside [0, W - 1] x [0, H - 1], else 0.0.

  Args:
    points: (..., 2) absolute (x, y) in pixels.
    height: H.
    width: W.

  Returns:
    (...) float mask in {0, 1} (no gradient).
  """
  x, y = points[..., 0], points[..., 1]
  inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
  return jax.lax.stop_gradient(inside.astype(points.dtype))


def _interp_matrix(in_size: int, out_size: int) -> np.ndarray:
  """(out_size, in_size) float64 linear-interpolation weights, align_corners.

  Output sample o sits at input coordinate `s = o (in - 1) / (out - 1)` (0 when
  out == 1, like PyTorch); its weights are the hat function
  `max(0, 1 - |s - i|)`, i.e. exact linear interpolation between two inputs.
  Built with numpy from the static sizes: a compile-time constant, exact in
  float64 (device-side division is not always correctly rounded).
  """
  if out_size > 1:
    src = np.arange(out_size) * (in_size - 1) / (out_size - 1)
  else:
    src = np.zeros((1,))
  idx = np.arange(in_size)
  return np.maximum(0.0, 1.0 - np.abs(src[:, None] - idx[None, :]))


def resize_images(
    x: jax.Array, out_hw: Sequence[int], precision=jax.lax.Precision.HIGHEST
) -> jax.Array:
  """Bilinear resize with align_corners=True (corner pixels stay corners).

  Equals PyTorch `F.interpolate(x, size=out_hw, mode='bilinear',
  align_corners=True)` (e.g. SFNet's layer4 `scale_factor=2` upsample). Written
  as two small interpolation-matrix products, which map onto the MXU / tensor
  cores; `precision` defaults to HIGHEST so GPUs do not fall back to TF32.

  Args:
    x: (B, H, W, C) images or fields.
    out_hw: (H_out, W_out).
    precision: einsum precision.

  Returns:
    (B, H_out, W_out, C), same dtype as x.
  """
  h, w = x.shape[-3], x.shape[-2]
  h_out, w_out = int(out_hw[0]), int(out_hw[1])
  # Weights in (at least) float32: sample positions stay exact for bf16 inputs.
  wdtype = jnp.promote_types(x.dtype, jnp.float32)
  wy = jnp.asarray(_interp_matrix(h, h_out), wdtype)
  wx = jnp.asarray(_interp_matrix(w, w_out), wdtype)
  y = jnp.einsum('oh,...hwc->...owc', wy, x, precision=precision)
  y = jnp.einsum('pw,...owc->...opc', wx, y, precision=precision)
  return y.astype(x.dtype)


def resize_mapping(
    mapping: jax.Array,
    out_hw: Sequence[int],
    target_from_hw: Sequence[int],
    target_to_hw: Sequence[int],
) -> jax.Array:
  """Resamples a mapping to a new grid and rescales its values to a new target.

  Typical use: lift a 20x20 feature-grid `mapping_ab` (values in 20x20 b-cells)
  to a 320x320 image grid with values in 320x320 b-pixels:

    resize_mapping(m, (320, 320), (20, 20), (320, 320))

  Args:
    mapping: (B, Ha, Wa, 2) absolute (x, y) in pixels of a target of size
      `target_from_hw`.
    out_hw: (H_out, W_out) grid the field is bilinearly resampled to
      (align_corners=True).
    target_from_hw: (H, W) of the target the values currently refer to.
    target_to_hw: (H, W) of the target the values should refer to.

  Returns:
    (B, H_out, W_out, 2) absolute (x, y) in pixels of a `target_to_hw` target.
  """
  field = resize_images(mapping, out_hw)
  return rescale_coords(field, target_from_hw, target_to_hw)
