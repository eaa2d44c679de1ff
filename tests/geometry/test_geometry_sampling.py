"""Tests for semcorr_jax.geometry.sampling, incl. PyTorch grid_sample parity.

The always-on parity test reads tests/fixtures/grid_sample_torch.npz (made by
tests/fixtures/make_grid_sample_fixture.py with torch 2.13); the live test runs
only where torch is importable. Inputs are numpy and the functions under test
are jitted (cheaper than eager dispatch on CPU).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
from numpy import testing as npt
import pytest

from semcorr_jax import geometry
from helpers import paths

_FIXTURE = os.path.join(
    str(paths.FIXTURES), 'grid_sample_torch.npz'
)
# float32 parity with PyTorch: values are O(1) and each gradient entry sums a
# handful of O(1) terms.
_ATOL = 1e-5

_warp = jax.jit(geometry.warp)
_sample_points = jax.jit(geometry.sample_points, static_argnames='padding_mode')


@jax.jit
def _grid_sample_and_vjp(image, grid, cotangent):
  out, vjp = jax.vjp(geometry.grid_sample, image, grid)
  grad_image, grad_grid = vjp(cotangent)
  return out, grad_image, grad_grid


def _identity(b, h, w):
  xs, ys = np.meshgrid(np.arange(w), np.arange(h))
  return np.broadcast_to(
      np.stack([xs, ys], -1).astype(np.float32), (b, h, w, 2)
  )


def test_matches_torch_fixture_values_and_gradients():
  ref = np.load(_FIXTURE)
  out, grad_image, grad_grid = _grid_sample_and_vjp(
      ref['image'], ref['grid'], ref['cotangent']
  )
  npt.assert_allclose(out, ref['output'], atol=_ATOL)
  npt.assert_allclose(grad_image, ref['grad_image'], atol=_ATOL)
  npt.assert_allclose(grad_grid, ref['grad_grid'], atol=_ATOL)
  # The fixture really exercises the zero padding: some points have all four
  # neighbours outside.
  assert np.any(ref['output'] == 0.0) and np.any(np.abs(ref['grid']) > 1.0)


def test_matches_torch_live():
  torch = pytest.importorskip('torch')
  f = torch.nn.functional
  rng = np.random.default_rng(7)
  for (b, h, w, c), (gh, gw) in (
      ((2, 6, 9, 4), (5, 3)),
      ((1, 1, 4, 2), (2, 2)),
      ((1, 20, 20, 8), (7, 11)),
  ):
    image = rng.uniform(size=(b, h, w, c)).astype(np.float32)
    grid = rng.uniform(-1.2, 1.2, size=(b, gh, gw, 2)).astype(np.float32)
    grid[:, 0, 0] = [1.0, -1.0]  # exactly on a corner
    cot = rng.normal(size=(b, gh, gw, c)).astype(np.float32)
    image_t = (
        torch.tensor(image)
        .permute(0, 3, 1, 2)
        .contiguous()
        .requires_grad_(True)
    )
    grid_t = torch.tensor(grid).requires_grad_(True)
    out_t = f.grid_sample(
        image_t,
        grid_t,
        mode='bilinear',
        padding_mode='zeros',
        align_corners=True,
    ).permute(0, 2, 3, 1)
    (out_t * torch.tensor(cot)).sum().backward()
    out, grad_image, grad_grid = _grid_sample_and_vjp(image, grid, cot)
    npt.assert_allclose(out, out_t.detach().numpy(), atol=_ATOL)
    npt.assert_allclose(
        grad_image, image_t.grad.permute(0, 2, 3, 1).numpy(), atol=_ATOL
    )
    # Grid gradients are pixel gradients times (W - 1) / 2 (up to 9.5 here).
    npt.assert_allclose(grad_grid, grid_t.grad.numpy(), atol=1e-4)
  # resize_images == F.interpolate(bilinear, align_corners=True), e.g. SFNet's
  # layer4 x2 upsample.
  x = rng.uniform(size=(2, 10, 7, 3)).astype(np.float32)
  ref = f.interpolate(
      torch.tensor(x).permute(0, 3, 1, 2),
      scale_factor=2,
      mode='bilinear',
      align_corners=True,
  )
  npt.assert_allclose(
      jax.jit(geometry.resize_images, static_argnums=1)(x, (20, 14)),
      ref.permute(0, 2, 3, 1).numpy(),
      atol=_ATOL,
  )


def test_identity_warp_returns_input():
  image = np.random.default_rng(0).uniform(size=(2, 5, 7, 3)).astype(np.float32)
  npt.assert_allclose(_warp(image, _identity(2, 5, 7)), image, atol=1e-6)


@pytest.mark.parametrize('dx,dy', [(2, 1), (-1, 0), (0, -3)])
def test_integer_shift_equals_zero_filled_roll(dx, dy):
  image = np.random.default_rng(1).uniform(size=(2, 6, 8, 3)).astype(np.float32)
  # out[y, x] = image[y + dy, x + dx], 0 where that falls outside.
  mapping = _identity(2, 6, 8) + np.array([dx, dy], np.float32)
  expected = np.zeros_like(image)
  ys, xs = np.mgrid[0:6, 0:8]
  src_x, src_y = xs + dx, ys + dy
  ok = (src_x >= 0) & (src_x < 8) & (src_y >= 0) & (src_y < 6)
  expected[:, ok] = image[:, src_y[ok], src_x[ok]]
  npt.assert_allclose(_warp(image, mapping), expected, atol=1e-6)


def test_bilinear_hand_values_and_half_outside():
  image = np.array([[1.0, 2.0], [3.0, 5.0]], np.float32).reshape(1, 2, 2, 1)
  pts = np.array(
      [[[0.25, 0.5], [1.5, 0.0], [-0.5, 1.0], [0.0, 0.0]]], np.float32
  )
  out = np.asarray(_sample_points(image, pts))[0, :, 0]
  # (0.25, 0.5): the rows mix to 0.5 * (1, 2) + 0.5 * (3, 5) = (2, 3.5), then
  # along x: 0.75 * 2 + 0.25 * 3.5.
  npt.assert_allclose(out[0], 0.75 * 2.0 + 0.25 * 3.5, rtol=1e-6)
  # (1.5, 0): half of pixel (1, 0) = 2, half zero padding; (-0.5, 1) likewise
  # half of pixel (0, 1) = 3.
  npt.assert_allclose(out[1], 1.0, rtol=1e-6)
  npt.assert_allclose(out[2], 1.5, rtol=1e-6)
  npt.assert_allclose(out[3], 1.0, rtol=1e-6)


def test_border_padding_clamps():
  image = np.array([[1.0, 2.0], [3.0, 5.0]], np.float32).reshape(1, 2, 2, 1)
  pts = np.array([[[1.5, 0.0], [-4.0, 1.0], [7.0, 9.0]]], np.float32)
  out = np.asarray(_sample_points(image, pts, padding_mode='border'))[0, :, 0]
  npt.assert_allclose(out, [2.0, 3.0, 5.0], rtol=1e-6)
  with pytest.raises(ValueError):
    geometry.sample_points(image, pts, padding_mode='reflection')


def test_grid_sample_equals_bilinear_sample_on_denormalised_coords():
  rng = np.random.default_rng(2)
  image = rng.uniform(size=(2, 5, 7, 3)).astype(np.float32)
  grid_n = rng.uniform(-1.1, 1.1, size=(2, 4, 4, 2)).astype(np.float32)
  coords = (grid_n + 1.0) / 2.0 * np.array([6.0, 4.0], np.float32)
  npt.assert_allclose(
      jax.jit(geometry.grid_sample)(image, grid_n),
      jax.jit(geometry.bilinear_sample)(image, coords),
      atol=1e-6,
  )


def test_gradients_finite_far_outside_and_match_finite_differences():
  image = np.random.default_rng(3).uniform(size=(1, 4, 5, 2)).astype(np.float32)
  pts = np.array(
      [[[1e10, -1e10], [-3.0, 2.0], [1.3, 2.6], [3.7, 0.2]]], np.float32
  )
  eps = 1e-2
  steps = np.zeros((4,) + pts.shape, np.float32)  # x and y of points 2 and 3
  for s, (k, d) in enumerate(((2, 0), (2, 1), (3, 0), (3, 1))):
    steps[s, 0, k, d] = eps

  def loss(image, pts):
    return jnp.sum(geometry.sample_points(image, pts) ** 2)

  @jax.jit
  def run(image, pts):
    grads = jax.grad(loss, argnums=(0, 1))(image, pts)
    fd = jax.vmap(
        lambda s: (loss(image, pts + s) - loss(image, pts - s)) / (2 * eps)
    )(steps)
    return grads, fd

  (gi, gp), fd = run(image, pts)
  gi, gp = np.asarray(gi), np.asarray(gp)
  assert np.all(np.isfinite(gi)) and np.all(np.isfinite(gp))
  # All four neighbours outside -> no gradient.
  npt.assert_array_equal(gp[0, :2], 0.0)
  # Central differences at interior, non-integer points (smooth there).
  npt.assert_allclose(gp[0, 2:].reshape(-1), fd, rtol=1e-2, atol=1e-4)


def test_vmap_over_batch_matches_batched_call():
  rng = np.random.default_rng(4)
  image = rng.uniform(size=(3, 4, 5, 2)).astype(np.float32)
  pts = rng.uniform(-1.0, 5.0, size=(3, 6, 2)).astype(np.float32)

  @jax.jit
  def run(image, pts):
    sample_one = lambda i, p: geometry.sample_points(i[None], p[None])[0]
    mapped = jax.vmap(sample_one)(image, pts)
    return geometry.sample_points(image, pts), mapped

  batched, mapped = run(image, pts)
  npt.assert_allclose(batched, mapped, atol=1e-6)


def test_bfloat16_image_keeps_float32_coordinates():
  # bf16 has spacing 2 near x = 300, so bf16 coordinates would read 301 and
  # 300.5 as even pixels; the sampler keeps coordinates in float32 and only the
  # values are bf16.
  parity = np.broadcast_to(np.arange(320) % 2, (1, 2, 320)).astype(np.float32)
  image = parity[..., None].astype(jnp.bfloat16)  # odd pixels 1, even 0
  pts = np.array([[[300.0, 0.0], [301.0, 1.0], [300.5, 0.0]]], np.float32)
  out = _sample_points(image, pts)
  assert out.dtype == jnp.bfloat16
  npt.assert_array_equal(
      np.asarray(out).astype(np.float32)[0, :, 0], [0.0, 1.0, 0.5]
  )
