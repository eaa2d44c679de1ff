"""Hand-computed cases for Guided Semantic Flow's losses (semcorr_jax/losses/gsf.py).

Paper 001, Sec. 4.2: L_sil (Eq. 12, fixed), L_geo (Eq. 11), L_P (Eq. 10),
L_M (Eq. 13-14), L_sm and L_final (Eq. 15).
"""

import jax
import jax.numpy as jnp
import numpy as np
from numpy import testing as npt
import pytest

from semcorr_jax import geometry
from semcorr_jax.errors import SemcorrError
from semcorr_jax.losses import gsf as losses

LOG2 = float(np.log(2.0))
RHO = 0.9


def _finite(x):
  return bool(np.all(np.isfinite(np.asarray(x))))


# --- Eq. 12: silhouette consistency -------------------------------------------


def _silhouette_case():
  """Q on (1, 2, 2, 2, 2): S* = 3 foreground entries; the source cell (1, 1)
  is background. Returns q, mask_s and the boolean S*."""
  q = np.full((1, 2, 2, 2, 2), 0.5, np.float32)
  q[0, 0, 0, 0, 0] = 0.95
  q[0, 0, 0, 1, 1] = 0.91
  q[0, 0, 1, 1, 0] = 1.0
  q[0, 1, 0, 0, 1] = RHO  # not > rho: outside S*
  q[0, 1, 1, 0, 0] = 0.99  # background source cell
  mask_s = np.ones((1, 2, 2), np.float32)
  mask_s[0, 1, 1] = 0.0
  in_s = (q > RHO) & (mask_s[..., None, None] > 0.5)
  return q, mask_s, in_s


def test_silhouette_zero_when_pruning_keeps_everything():
  q, mask_s, _ = _silhouette_case()
  logits = np.full(q.shape, 30.0, np.float32)
  loss = jax.jit(losses.silhouette_loss)(q, logits, RHO, mask_s)
  assert 0.0 <= float(loss) < 1e-6


def test_silhouette_counts_only_foreground_entries_above_rho():
  q, mask_s, in_s = _silhouette_case()
  assert in_s.sum() == 3
  # log 2 on S*; entries outside S* get logit -20 (20 each if counted).
  logits = np.where(in_s, 0.0, -20.0).astype(np.float32)
  loss = jax.jit(losses.silhouette_loss)(q, logits, RHO, mask_s)
  npt.assert_allclose(loss, LOG2, rtol=1e-6)
  # Mean over S*: one entry at logit 2 -> (2 log 2 + log(1 + e^-2)) / 3.
  logits[0, 0, 0, 1, 1] = 2.0
  loss = jax.jit(losses.silhouette_loss)(q, logits, RHO, mask_s)
  npt.assert_allclose(loss, (2 * LOG2 + np.log1p(np.exp(-2.0))) / 3,
                      rtol=1e-6)


def test_silhouette_gradients_go_to_logits_on_s_star_not_to_q():
  q, mask_s, in_s = _silhouette_case()
  logits = np.zeros(q.shape, np.float32)
  g_q, g_l = jax.grad(losses.silhouette_loss, argnums=(0, 1))(
      q, logits, RHO, mask_s)
  npt.assert_array_equal(g_q, 0.0)
  # d/dx -log sigmoid(x) = sigmoid(x) - 1 = -1/2 at 0, divided by |S*| = 3.
  npt.assert_allclose(np.asarray(g_l)[in_s], -0.5 / 3, rtol=1e-6)
  npt.assert_array_equal(np.asarray(g_l)[~in_s], 0.0)


def test_silhouette_empty_s_star_is_zero_and_stable_at_large_logits():
  q = np.full((1, 2, 2, 2, 2), 0.3, np.float32)
  logits = np.full(q.shape, -200.0, np.float32)
  mask = np.ones((1, 2, 2), np.float32)
  loss, grad = jax.value_and_grad(losses.silhouette_loss, argnums=1)(
      q, logits, RHO, mask)
  assert float(loss) == 0.0
  npt.assert_array_equal(grad, 0.0)
  # A huge negative logit on S* stays finite (-log sigmoid(-200) = 200).
  q[0, 0, 0, 0, 0] = 0.95
  loss, grad = jax.value_and_grad(losses.silhouette_loss, argnums=1)(
      q, logits, RHO, mask)
  npt.assert_allclose(loss, 200.0, rtol=1e-6)
  assert _finite(grad)


def test_silhouette_per_image_means():
  q, mask_s, _ = _silhouette_case()
  q2 = np.concatenate([q, np.full_like(q, 0.95)])  # image 2: |S*| = 16
  mask2 = np.concatenate([mask_s, np.ones_like(mask_s)])
  logits = np.zeros(q2.shape, np.float32)
  logits[1] = 30.0
  per_image = losses.silhouette_loss(q2, logits, RHO, mask2, per_image=True)
  npt.assert_allclose(per_image, [LOG2, 0.0], atol=1e-6)
  pooled = losses.silhouette_loss(q2, logits, RHO, mask2)
  npt.assert_allclose(pooled, 3 * LOG2 / (3 + 16), rtol=1e-5)


# --- Eq. 11: geometry consistency ---------------------------------------------


def _shifted_features():
  """Source (1, 2, 4, 2) features and a target whose column x + 1 holds the
  source column x (target column 0 is junk)."""
  rng = np.random.default_rng(0)
  feat_s = rng.normal(size=(1, 2, 4, 2)).astype(np.float32)
  feat_t = np.empty_like(feat_s)
  feat_t[:, :, 1:] = feat_s[:, :, :-1]
  feat_t[:, :, 0] = rng.normal(size=(1, 2, 2))
  guidance = np.zeros((1, 2, 4, 2), np.float32)
  guidance[..., 0] = 1.0
  return feat_s, feat_t, guidance


_geo = jax.jit(losses.geometry_consistency_loss, static_argnums=4)


def test_geometry_loss_zero_for_identical_features_and_zero_guidance():
  feat = np.random.default_rng(1).normal(size=(2, 3, 3, 4)).astype(np.float32)
  valid = np.ones((2, 3, 3), np.float32)
  loss = _geo(feat, feat, np.zeros((2, 3, 3, 2), np.float32), valid, 3,
              np.ones((2, 3, 3), np.float32))
  assert float(loss) == 0.0


def test_geometry_loss_one_cell_shift_by_hand():
  feat_s, feat_t, guidance = _shifted_features()
  mask = np.ones((1, 2, 4), np.float32)
  # Warped target = source except the last column, which reads off the grid
  # (0): e = |F^s|^2 there.
  e_last = np.sum(feat_s[0, :, 3] ** 2, axis=-1)  # (2,) rows y = 0, 1
  valid = np.zeros((1, 2, 4), np.float32)
  valid[0, 0, 1] = 1.0  # window x in 0..2: the exact shift, no error
  assert float(_geo(feat_s, feat_t, guidance, valid, 3, mask)) == 0.0
  valid[0, 0, 1] = 0.0
  valid[0, 0, 2] = 1.0  # window x in 1..3, y in 0..1: 6 cells, 2 with error
  npt.assert_allclose(_geo(feat_s, feat_t, guidance, valid, 3, mask),
                      e_last.sum() / 6, rtol=1e-5)
  valid[0, 1, 3] = 1.0  # window x in 2..3, y in 0..1: 4 more cells, 2 errors
  npt.assert_allclose(_geo(feat_s, feat_t, guidance, valid, 3, mask),
                      2 * e_last.sum() / 10, rtol=1e-5)
  mask[0, 1, 3] = 0.0  # background cells drop out of both sums
  npt.assert_allclose(_geo(feat_s, feat_t, guidance, valid, 3, mask),
                      2 * e_last[0] / 8, rtol=1e-5)
  # The exact shift scores better than no guidance.
  valid[:] = 1.0
  assert float(_geo(feat_s, feat_t, guidance, valid, 3, mask)) < float(
      _geo(feat_s, feat_t, 0 * guidance, valid, 3, mask))


def test_geometry_loss_empty_s_is_zero_with_zero_gradient():
  feat_s, feat_t, guidance = _shifted_features()
  guidance = guidance + 0.3
  valid = np.zeros((1, 2, 4), np.float32)
  mask = np.ones((1, 2, 4), np.float32)
  loss, grads = jax.value_and_grad(
      losses.geometry_consistency_loss, argnums=(0, 1, 2))(
          feat_s, feat_t, guidance, valid, 3, mask)
  assert float(loss) == 0.0
  for g in grads:
    npt.assert_array_equal(g, 0.0)


def test_geometry_loss_gradient_reaches_guidance_and_is_finite():
  feat_s, feat_t, guidance = _shifted_features()
  valid = np.ones((1, 2, 4), np.float32)
  mask = np.ones((1, 2, 4), np.float32)
  grad = jax.grad(losses.geometry_consistency_loss, argnums=2)(
      feat_s, feat_t, guidance + 0.25, valid, 3, mask)
  assert _finite(grad)
  assert np.abs(np.asarray(grad)).max() > 0


def test_geometry_loss_rejects_an_even_window():
  feat_s, feat_t, guidance = _shifted_features()
  ones = np.ones((1, 2, 4), np.float32)
  with pytest.raises(SemcorrError, match='odd'):
    losses.geometry_consistency_loss(feat_s, feat_t, guidance, ones, 4, ones)


# --- Eq. 13-14: matching --------------------------------------------------------

_SCORES = np.asarray([[0.1, 0.2, 0.3],
                      [0.4, 0.9, 0.5],
                      [0.0, -0.2, 0.6]], np.float32)  # rows y, columns x


def _one_cell_case():
  """One source cell with feature (1, 0) and a 3x3 target whose scores
  <F^s, F^t_j> are _SCORES."""
  feat_s = np.asarray([1.0, 0.0], np.float32).reshape(1, 1, 1, 2)
  feat_t = np.stack([_SCORES, np.ones_like(_SCORES)], -1)[None]
  return feat_s, feat_t, np.ones((1, 1, 1), np.float32)


_match = jax.jit(losses.matching_loss, static_argnums=3)


def test_matching_loss_hand_computed_window_inside_the_grid():
  feat_s, feat_t, mask = _one_cell_case()
  flow = np.asarray([1.0, 1.0], np.float32).reshape(1, 1, 1, 2)
  beta = 2.0
  expected = -(beta * 0.9 - np.log(np.sum(np.exp(beta * _SCORES))))
  npt.assert_allclose(_match(feat_s, feat_t, flow, 1, beta, mask), expected,
                      rtol=1e-5)


def test_matching_loss_hand_computed_window_off_the_grid_reads_zero():
  feat_s, feat_t, mask = _one_cell_case()
  flow = np.zeros((1, 1, 1, 2), np.float32)  # matched at (0, 0): corner
  beta = 3.0
  window = np.zeros((3, 3), np.float32)  # offsets -1..1; off-grid = 0
  window[1:, 1:] = _SCORES[:2, :2]
  expected = -(beta * 0.1 - np.log(np.sum(np.exp(beta * window))))
  npt.assert_allclose(_match(feat_s, feat_t, flow, 1, beta, mask), expected,
                      rtol=1e-5)


def test_matching_loss_equals_sampling_the_features_at_every_candidate():
  rng = np.random.default_rng(2)
  feat_s = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  feat_t = rng.normal(size=(2, 4, 3, 5)).astype(np.float32)
  flow = rng.uniform(-2, 2, (2, 3, 4, 2)).astype(np.float32)
  mask = (rng.uniform(size=(2, 3, 4)) < 0.7).astype(np.float32)
  radius, beta = 2, 1.5

  def reference(fs, ft, fl):
    side = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    ox, oy = jnp.meshgrid(side, side, indexing='xy')
    offsets = jnp.stack([ox.ravel(), oy.ravel()], -1)  # (K, 2), zero at K//2
    cand = geometry.flow_to_mapping(fl)[..., None, :] + offsets
    sampled = geometry.bilinear_sample(ft, cand)  # (B, hs, ws, K, C)
    s = beta * jnp.sum(fs[..., None, :] * sampled, -1)
    nll = -jax.nn.log_softmax(s, -1)[..., offsets.shape[0] // 2]
    return jnp.sum(nll * mask) / jnp.sum(mask)

  loss, grads = jax.jit(
      jax.value_and_grad(losses.matching_loss, argnums=(0, 1, 2)),
      static_argnums=3)(feat_s, feat_t, flow, radius, beta, mask)
  ref, ref_grads = jax.jit(jax.value_and_grad(reference, argnums=(0, 1, 2)))(
      feat_s, feat_t, flow)
  npt.assert_allclose(loss, ref, rtol=1e-5)
  for g, r in zip(grads, ref_grads):
    assert _finite(g)
    npt.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_matching_loss_is_lower_at_the_true_match():
  rng = np.random.default_rng(3)
  feat_t = geometry.l2_normalize(
      jnp.asarray(rng.normal(size=(1, 6, 6, 8)), jnp.float32))
  feat_s = feat_t[:, 1:5, 1:5]  # source cell (x, y) = target (x + 1, y + 1)
  mask = np.ones((1, 4, 4), np.float32)
  true = np.ones((1, 4, 4, 2), np.float32)
  off = true + np.asarray([1.0, 0.0], np.float32)
  kwargs = dict(radius=2, beta=10.0, mask_s=mask)
  good = float(losses.matching_loss(feat_s, feat_t, true, **kwargs))
  bad = float(losses.matching_loss(feat_s, feat_t, off, **kwargs))
  assert good < bad - 1.0


def test_matching_loss_counts_foreground_cells_only():
  feat_s, feat_t, mask = _one_cell_case()
  feat_s2 = np.concatenate([feat_s, feat_s], axis=2)  # (1, 1, 2, 2)
  flow = np.zeros((1, 1, 2, 2), np.float32)
  flow[0, 0, 0] = [1.0, 1.0]  # cell x = 0 matched to the centre (1, 1)
  flow[0, 0, 1] = [-1.0, 1.0]  # cell x = 1 matched to (0, 1)
  mask2 = np.asarray([[[1.0, 0.0]]], np.float32)
  one = _match(feat_s, feat_t, flow[:, :, :1], 1, 2.0, mask)
  both = _match(feat_s2, feat_t, flow, 1, 2.0, mask2)
  npt.assert_allclose(both, one, rtol=1e-6)


# --- L_sm ---------------------------------------------------------------------------


def _ramp(h, w, a, b, c, d):
  """tau = (a x + b y, c x + d y) on an h x w grid, (1, h, w, 2)."""
  p = np.asarray(geometry.pixel_grid(h, w))
  return np.stack([a * p[..., 0] + b * p[..., 1],
                   c * p[..., 0] + d * p[..., 1]], -1)[None].astype(np.float32)


def test_smoothness_constant_flow_is_zero():
  flow = np.broadcast_to(np.asarray([2.0, -1.0], np.float32), (2, 4, 5, 2))
  loss = jax.jit(losses.smoothness_loss)(flow, np.ones((2, 4, 5), np.float32))
  assert float(loss) == 0.0


def test_smoothness_linear_ramp_by_hand():
  flow = _ramp(4, 5, 0.5, -1.0, 2.0, 0.25)
  mask = np.ones((1, 4, 5), np.float32)
  loss = jax.jit(losses.smoothness_loss)(flow, mask)
  npt.assert_allclose(loss, 0.5 + 1.0 + 2.0 + 0.25, rtol=1e-6)


def test_smoothness_excludes_background_cells():
  flow = _ramp(4, 5, 0.5, -1.0, 2.0, 0.25)
  mask = np.ones((1, 4, 5), np.float32)
  mask[0, 0, :] = 0.0
  mask[0, :, 4] = 0.0
  flow[0, 0, :] = 100.0  # junk in the background
  flow[0, :, 4] = -50.0
  loss = jax.jit(losses.smoothness_loss)(flow, mask)
  npt.assert_allclose(loss, 3.75, rtol=1e-6)
  # One foreground cell: no pair at all -> 0, finite gradient.
  lone = np.zeros((1, 4, 5), np.float32)
  lone[0, 2, 2] = 1.0
  loss, grad = jax.value_and_grad(losses.smoothness_loss)(flow, lone)
  assert float(loss) == 0.0
  npt.assert_array_equal(grad, 0.0)


def test_smoothness_per_image():
  flow = np.concatenate([_ramp(3, 3, 1.0, 0, 0, 0), _ramp(3, 3, 0, 0, 0, 2)])
  mask = np.ones((2, 3, 3), np.float32)
  npt.assert_allclose(losses.smoothness_loss(flow, mask, per_image=True),
                      [1.0, 2.0], rtol=1e-6)
  # Pooled: x-pairs give (6 * 1 + 0) / 12, y-pairs (0 + 6 * 2) / 12.
  npt.assert_allclose(losses.smoothness_loss(flow, mask), 1.5, rtol=1e-6)


# --- Eq. 10 and 15 ------------------------------------------------------------------


def test_pruning_loss_eq10():
  npt.assert_allclose(losses.pruning_loss(jnp.float32(0.7), jnp.float32(2.0),
                                          0.25), 0.7 + 0.25 * 2.0, rtol=1e-6)


def test_final_loss_eq15():
  out = losses.final_loss(jnp.float32(1.0), jnp.float32(2.0),
                          jnp.float32(4.0), 0.5, 3.0, 0.125)
  npt.assert_allclose(out, 0.5 + 6.0 + 0.5, rtol=1e-6)
  grads = jax.grad(losses.final_loss, argnums=(0, 1, 2))(
      1.0, 2.0, 4.0, 0.5, 3.0, 0.125)
  npt.assert_allclose(grads, [0.5, 3.0, 0.125])


def test_matching_loss_with_the_models_correlation_is_the_same():
  rng = np.random.default_rng(3)
  feat_s = jnp.asarray(rng.normal(size=(1, 4, 5, 3)), jnp.float32)
  feat_t = jnp.asarray(rng.normal(size=(1, 4, 5, 3)), jnp.float32)
  flow = jnp.asarray(rng.normal(size=(1, 4, 5, 2)), jnp.float32)
  mask = jnp.ones((1, 4, 5))
  corr = jnp.einsum('bijc,bklc->bijkl', feat_s, feat_t,
                    precision=jax.lax.Precision.HIGHEST)
  np.testing.assert_allclose(
      losses.matching_loss(feat_s, feat_t, flow, 1, 2.0, mask, corr=corr),
      losses.matching_loss(feat_s, feat_t, flow, 1, 2.0, mask),
      rtol=1e-5, atol=1e-6)
