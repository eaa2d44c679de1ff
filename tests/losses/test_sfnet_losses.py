"""Hand-computed cases for SFNet's losses (semcorr_jax/losses/sfnet.py, §A.5).

Grids are 4 x 5 (h x w) so the normalised units differ per axis:
one cell is 2 / (w - 1) = 0.5 in x and 2 / (h - 1) = 2/3 in y.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax import geometry
from semcorr_jax.losses import sfnet as losses

# Jitted once per shape: one compile instead of one per eager primitive.
mask_consistency_loss = jax.jit(losses.mask_consistency_loss)
flow_consistency_loss = jax.jit(losses.flow_consistency_loss)
smoothness_loss = jax.jit(losses.smoothness_loss)
flow_smoothness = jax.jit(losses.flow_smoothness,
                          static_argnames='sum_components')
sfnet_loss = jax.jit(losses.sfnet_loss)

H, W = 4, 5
SFNET_WEIGHTS = {'mask': 3.0, 'flow': 16.0, 'smooth': 0.5}  # configs/sfnet.py
UX, UY = 2.0 / (W - 1), 2.0 / (H - 1)  # One cell in normalised units.


def _identity(b=1, h=H, w=W):
  return jnp.broadcast_to(geometry.pixel_grid(h, w), (b, h, w, 2))


def _shifted(dx=0.0, dy=0.0, b=1):
  return _identity(b) + jnp.asarray([dx, dy], jnp.float32)


def _block(cols, rows=(1, 2), b=1):
  """(b, H, W) mask with ones on rows x cols."""
  m = np.zeros((b, H, W), np.float32)
  m[:, rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = 1.0
  return jnp.asarray(m)


# --- mask consistency ---------------------------------------------------------


def test_mask_loss_zero_for_identity_and_identical_masks():
  m = _block((1, 2))
  loss = mask_consistency_loss(_identity(), _identity(), m, m)
  np.testing.assert_allclose(loss, [0.0], atol=1e-7)


def test_mask_loss_counts_shifted_cells():
  ms, mt = _block((0, 1)), _block((1, 2))  # Target = source moved right 1.
  # Identity mappings: 4 cells differ on each side -> 4/20 + 4/20.
  loss = mask_consistency_loss(_identity(), _identity(), ms, mt)
  np.testing.assert_allclose(loss, [8.0 / (H * W)], rtol=1e-6)
  # The true mappings (s -> t one cell right, t -> s one left) explain it.
  loss = mask_consistency_loss(_shifted(1.0), _shifted(-1.0), ms, mt)
  np.testing.assert_allclose(loss, [0.0], atol=1e-7)
  # Swapped directions double the error: sampling reads mask_t at mapping_st.
  loss = mask_consistency_loss(_shifted(-1.0), _shifted(1.0), ms, mt)
  assert float(loss[0]) > 8.0 / (H * W)


def test_mask_loss_bilinear_half_cell():
  ms, mt = _block((0, 1)), _block((1, 2))
  # mapping_st = identity + (0.5, 0): M^_s(x) = (M_t(x) + M_t(x + 1)) / 2
  # -> per fg row: x=0: (0.5-1)^2, x=1: 0, x=2: (0.5-0)^2, x=3,4: 0 -> 0.5;
  # two rows -> 1.0 / 20. The t side uses the exact inverse -> 0.
  loss = mask_consistency_loss(_shifted(0.5), _shifted(-1.0), ms, mt)
  np.testing.assert_allclose(loss, [1.0 / (H * W)], rtol=1e-6)


# --- flow consistency ---------------------------------------------------------


def test_flow_loss_zero_for_exact_inverse_pair():
  ms, mt = _block((1, 2)), _block((2, 3))
  loss = flow_consistency_loss(_shifted(1.0), _shifted(-1.0), ms, mt)
  np.testing.assert_allclose(loss, [0.0], atol=1e-7)
  loss = flow_consistency_loss(_shifted(0.0, 1.0), _shifted(0.0, -1.0),
                                      _block((1, 3), rows=(0, 1)),
                                      _block((1, 3), rows=(1, 2)))
  np.testing.assert_allclose(loss, [0.0], atol=1e-7)


def test_flow_loss_value_and_normalisation():
  ms = _block((1, 2))  # 4 fg cells -> N_s = 5.
  mt = _block((1, 3))  # 6 fg cells -> N_t = 7.
  # F_st = (UX, 0) everywhere, F_ts = 0: s side F~ = 0 -> 4 UX^2 / 5;
  # t side F~_ts = -F_st(identity) M_t -> 6 UX^2 / 7.
  loss = flow_consistency_loss(_shifted(1.0), _identity(), ms, mt)
  np.testing.assert_allclose(loss, [4 * UX**2 / 5 + 6 * UX**2 / 7], rtol=1e-6)
  # In y the unit is UY: same counts.
  loss = flow_consistency_loss(_shifted(0.0, 1.0), _identity(), ms, mt)
  np.testing.assert_allclose(loss, [4 * UY**2 / 5 + 6 * UY**2 / 7], rtol=1e-6)


def test_flow_loss_perturbed_inverse():
  ms, mt = _block((1, 2)), _block((2, 3))
  # mapping_ts misses the inverse by 0.5 cell in x (all samples stay inside):
  # the residual per fg cell is UX - 1.5 UX = -0.5 UX on both sides.
  loss = flow_consistency_loss(_shifted(1.0), _shifted(-1.5), ms, mt)
  np.testing.assert_allclose(loss, [2 * 4 * (0.5 * UX)**2 / 5], rtol=1e-6)


# --- smoothness ---------------------------------------------------------------


def _ramp_flow(h=3, w=4):
  x = jnp.broadcast_to(jnp.arange(w, dtype=jnp.float32), (1, h, w))
  return jnp.stack([x, jnp.zeros_like(x)], axis=-1)


def test_smoothness_constant_flow_interior_is_zero_border_is_not():
  flow = jnp.full((1, 3, 4, 2), 0.7)
  interior = jnp.zeros((1, 3, 4)).at[:, 1, 1:3].set(1.0)
  np.testing.assert_allclose(flow_smoothness(flow, interior), [0.0])
  # Zero padding: border cells see c / 2 per padded side. Field = 1.4
  # (x + y components summed); per row |dx| = 0.7 + 0 + 0 + 0.7; rows 0 and
  # 2 add |dy| = 0.7 per cell: (3 * 1.4 + 2 * 2.8) / (12 + 1).
  full = jnp.ones((1, 3, 4))
  np.testing.assert_allclose(flow_smoothness(flow, full),
                             [(3 * 1.4 + 2 * 2.8) / 13], rtol=1e-6)


def test_smoothness_linear_ramp_exact():
  # Field x = 0..3 on 3x4: |dx| per row .5+1+1+1 = 3.5 (x3 rows = 10.5);
  # |dy| rows 0 and 2 = (0+1+2+3)/2 = 3 each -> 6. N = 12 + 1.
  value = flow_smoothness(_ramp_flow(), jnp.ones((1, 3, 4)))
  np.testing.assert_allclose(value, [16.5 / 13], rtol=1e-6)
  # Masking the right column drops 3 x 1 (dx) + 2 x 1.5 (dy) -> 10.5 / 10.
  mask = jnp.ones((1, 3, 4)).at[:, :, 3].set(0.0)
  np.testing.assert_allclose(flow_smoothness(_ramp_flow(), mask),
                             [10.5 / 10], rtol=1e-6)


def test_smoothness_sums_flow_components_like_sfnet():
  ramp = _ramp_flow()
  flow = ramp.at[..., 1].set(-ramp[..., 0])  # F = (x, -x): F_x + F_y = 0.
  full = jnp.ones((1, 3, 4))
  np.testing.assert_allclose(flow_smoothness(flow, full), [0.0])
  np.testing.assert_allclose(
      flow_smoothness(flow, full, sum_components=False),
      [2 * 16.5 / 13], rtol=1e-6)


def test_smoothness_loss_from_mappings():
  # mapping_st x = 2 x  ->  normalised flow = UX' * x with UX' = 2 / (w - 1).
  ident = _identity(h=3, w=4)
  mapping_st = ident.at[..., 0].multiply(2.0)
  full = jnp.ones((1, 3, 4))
  value = smoothness_loss(mapping_st, ident, full, full)
  np.testing.assert_allclose(value, [2.0 / 3.0 * 16.5 / 13], rtol=1e-6)


# --- total --------------------------------------------------------------------


def test_sfnet_loss_weights_and_batch_mean():
  ms = jnp.concatenate([_block((0, 1)), _block((1, 3))])
  mt = jnp.concatenate([_block((1, 2)), _block((2, 3))])
  outputs = {'mapping_st': _shifted(1.0, b=2).at[1].add(0.3),
             'mapping_ts': _shifted(-0.5, 0.5, b=2)}
  args = (outputs['mapping_st'], outputs['mapping_ts'], ms, mt)
  l1 = mask_consistency_loss(*args)
  l2 = flow_consistency_loss(*args)
  l3 = smoothness_loss(*args)
  assert l1.shape == l2.shape == l3.shape == (2,)
  total, metrics = sfnet_loss(outputs, ms, mt, SFNET_WEIGHTS)
  expected = np.mean(3.0 * l1 + 16.0 * l2 + 0.5 * l3)
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  np.testing.assert_allclose(metrics['flow_loss'], np.mean(l2), rtol=1e-6)
  total2, _ = sfnet_loss(outputs, ms, mt,
                                {'mask': 1.0, 'flow': 0.0, 'smooth': 0.0})
  np.testing.assert_allclose(total2, np.mean(l1), rtol=1e-6)


@pytest.mark.parametrize('fn', [losses.mask_consistency_loss,
                                losses.flow_consistency_loss,
                                losses.smoothness_loss])
def test_losses_have_finite_gradients(fn):
  ms = mt = _block((1, 2))
  noise = 0.2 * jax.random.normal(jax.random.key(0), (1, H, W, 2))
  grad = jax.jit(jax.grad(lambda m: jnp.sum(fn(m, _shifted(-0.7), ms, mt))))(
      _shifted(0.6) + noise)
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)
