"""Hand-computed cases for JLFC's losses (semcorr_jax/losses/jlfc.py).

Paper 002: WTA pseudo labels (Eq. 1), the forward-backward consistency mask
(Eq. 2), the confidence-aware contrastive loss (Eq. 3), its cross terms
(Eq. 4), their weighted sum (Eq. 5) and the unit of alpha2.
"""

import jax
import jax.numpy as jnp
import numpy as np
from numpy import testing as npt
import pytest

from semcorr_jax import geometry
from semcorr_jax.errors import SemcorrError
from semcorr_jax.losses import jlfc as losses

ALPHA1, ALPHA2 = 0.1, 0.05  # JLFC's tolerances (paper 002, Sec. 3).
UNFLOW_ALPHA1, UNFLOW_ALPHA2 = 0.01, 0.5  # forward_backward_mask's defaults.


def _finite(x):
  return bool(np.all(np.isfinite(np.asarray(x))))


def _np_log_softmax(z):
  z = z - z.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_contrastive(cost, mapping, mask, gamma):
  """-(1 / N) sum_i M(i) log softmax_j(cost(i, j) / gamma)[label(i)], N over
  the whole batch."""
  b, ha, wa, hb, wb = cost.shape
  logp = _np_log_softmax(
      np.asarray(cost, np.float64).reshape(b, ha, wa, hb * wb) / gamma)
  mapping = np.asarray(mapping)
  index = (mapping[..., 1] * wb + mapping[..., 0]).astype(int)
  picked = np.take_along_axis(logp, index[..., None], axis=-1)[..., 0]
  mask = np.asarray(mask, np.float64)
  return -(mask * picked).sum() / max(mask.sum(), 1.0)


# --- Eq. 1: winner-take-all pseudo labels -------------------------------------


def _wta_cost():
  """(1, 2, 3, 2, 3) with known argmaxes; source cell (x=2, y=1) has a tie."""
  # source (x, y) -> target (x, y) of the maximum.
  targets = {(0, 0): (2, 1), (1, 0): (0, 1), (2, 0): (1, 0),
             (0, 1): (0, 0), (1, 1): (2, 0), (2, 1): (1, 1)}
  cost = np.zeros((1, 2, 3, 2, 3), np.float32)
  for (xs, ys), (xt, yt) in targets.items():
    cost[0, ys, xs, yt, xt] = 2.0
  cost[0, 1, 2, 1, 2] = 2.0  # tie after (1, 1) in raster order: first wins.
  cost[0, 0, 0, 0, 0] = 1.5  # runner-up, not the maximum.
  return cost, targets


def test_wta_mapping_and_flow_are_argmax_in_xy_order():
  cost, targets = _wta_cost()
  mapping = np.asarray(losses.wta_mapping(jnp.asarray(cost)))
  flow = np.asarray(losses.wta_flow(jnp.asarray(cost)))
  assert mapping.shape == flow.shape == (1, 2, 3, 2)
  for (xs, ys), (xt, yt) in targets.items():
    npt.assert_array_equal(mapping[0, ys, xs], [xt, yt])
    npt.assert_array_equal(flow[0, ys, xs], [xt - xs, yt - ys])


def test_wta_labels_carry_no_gradient():
  cost = jnp.asarray(np.random.default_rng(0).normal(
      size=(1, 2, 3, 2, 3)).astype(np.float32))
  for fn in (losses.wta_mapping, losses.wta_flow):
    grad = jax.grad(lambda c, fn=fn: jnp.sum(jnp.square(fn(c))))(cost)
    assert _finite(grad)
    npt.assert_array_equal(grad, 0.0)


# --- Eq. 2: forward-backward consistency mask ---------------------------------


def _shift_pair():
  """a: 2 x 3 cells, b: 3 x 4 cells; mapping_ab = a shift by +1 in x (in
  b's bounds), mapping_ba = the inverse shift."""
  ya, xa = np.mgrid[0:2, 0:3].astype(np.float32)
  yb, xb = np.mgrid[0:3, 0:4].astype(np.float32)
  mapping_ab = np.stack([xa + 1, ya], -1)[None]
  mapping_ba = np.stack([xb - 1, yb], -1)[None]
  return mapping_ab, mapping_ba


def _boundary_e():
  """e with |f + g|^2 = alpha1 (|f|^2 + |g|^2) + alpha2 for f = (1, 0),
  g = (-1 + e, 0): 0.9 e^2 + 0.2 e - 0.25 = 0 (e* = 0.4275...)."""
  a = 1.0 - ALPHA1
  b = 2.0 * ALPHA1
  c = -(2.0 * ALPHA1 + ALPHA2)
  return (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)


def test_consistency_mask_consistent_shift_and_inverse():
  mapping_ab, mapping_ba = _shift_pair()
  mask = losses.consistency_mask(mapping_ab, mapping_ba, ALPHA1, ALPHA2)
  assert mask.shape == (1, 2, 3)
  npt.assert_array_equal(mask, 1.0)


@pytest.mark.parametrize('back_flow', [(1.0, 0.0), (-1.0, 1.0)])
def test_consistency_mask_inconsistent_pair(back_flow):
  # Round trip (2, 0): |.|^2 = 4 vs 0.1 (1 + 1) + 0.05; round trip (0, 1):
  # 1 vs 0.1 (1 + 2) + 0.05 (only the y part of the norm catches it).
  mapping_ab, _ = _shift_pair()
  yb, xb = np.mgrid[0:3, 0:4].astype(np.float32)
  mapping_ba = np.stack([xb + back_flow[0], yb + back_flow[1]], -1)[None]
  mask = losses.consistency_mask(mapping_ab, mapping_ba, ALPHA1, ALPHA2)
  npt.assert_array_equal(mask, 0.0)


def test_consistency_mask_at_the_alpha_boundary():
  """Cells just inside / outside |f + g|^2 < a1 (|f|^2 + |g|^2) + a2.

  a(0, 0) -> b(1, 0) with g = -1 + (e* - 0.01): kept only by the squared
  form with alpha1 = 0.1, alpha2 = 0.05 (swapped alphas: 0.1743 > 0.1670;
  norms: 0.4175 > 0.2082). a(1, 0) -> b(2, 0) with g = -1 + (e* + 0.01):
  rejected (UnFlow's 0.01 / 0.5 would keep it).
  """
  e_star = _boundary_e()
  npt.assert_allclose(0.9 * e_star ** 2 + 0.2 * e_star - 0.25, 0.0, atol=1e-12)
  mapping_ab, mapping_ba = _shift_pair()
  inside, outside = e_star - 0.01, e_star + 0.01
  mapping_ba[0, 0, 1, 0] = 1.0 + (-1.0 + inside)
  mapping_ba[0, 0, 2, 0] = 2.0 + (-1.0 + outside)
  expected = np.array([[[1, 0, 1], [1, 1, 1]]], np.float32)
  mask = losses.consistency_mask(mapping_ab, mapping_ba, ALPHA1, ALPHA2)
  npt.assert_array_equal(mask, expected)

  def by_hand(a1, a2, squared=True):
    out = []
    for e in (inside, outside):
      f, g = 1.0, -1.0 + e
      lhs, s = (f + g) ** 2, f * f + g * g
      if not squared:
        lhs, s = abs(f + g), abs(f) + abs(g)
      out.append(float(lhs < a1 * s + a2))
    return out

  assert by_hand(ALPHA1, ALPHA2) == [1.0, 0.0]
  # Each of these readings of Eq. 2 would give another mask.
  assert by_hand(ALPHA2, ALPHA1) != [1.0, 0.0]
  assert by_hand(ALPHA1, ALPHA2, squared=False) != [1.0, 0.0]
  assert by_hand(UNFLOW_ALPHA1, UNFLOW_ALPHA2) != [1.0, 0.0]
  swapped = losses.consistency_mask(mapping_ab, mapping_ba, ALPHA2, ALPHA1)
  default = losses.consistency_mask(mapping_ab, mapping_ba, UNFLOW_ALPHA1,
                                    UNFLOW_ALPHA2)
  npt.assert_array_equal(np.asarray(swapped)[0, 0, :2], [0, 0])
  npt.assert_array_equal(np.asarray(default)[0, 0, :2], [1, 1])


def _five_cell_cost():
  """(2, 1, 5, 1, 5); image 0: WTA a -> b = (3, 3, 0, 1, 4), b -> a =
  (2, 3, 0, 1, 2); image 1: the identity (every cell consistent).

  Image 0's source x-flows f and back-flows g: a0 (3, -2): |1|^2 < 0.1 * 13
  + 0.05 (JLFC keeps it, UnFlow's 0.01 * 13 + 0.5 does not); a1..a3 exact
  round trips; a4 (0, -2): 4 > 0.1 * 4 + 0.05, rejected.
  """
  rows = [[0, 0, 0, 5, 0],
          [0, 0, 0, 6, 0],
          [9, 0, 0, 0, 8],
          [0, 9, 0, 0, 0],
          [0, 0, 0, 0, 3]]
  return np.stack([np.asarray(rows, np.float32), np.eye(5, dtype=np.float32)]
                  ).reshape(2, 1, 5, 1, 5)


def test_consistency_of_wta_labels_uses_jlfc_alphas_not_the_defaults():
  cost = jnp.asarray(_five_cell_cost())
  m_st = losses.wta_mapping(cost)
  m_ts = losses.wta_mapping(geometry.transpose_4d(cost))
  npt.assert_array_equal(np.asarray(m_st)[:, 0, :, 0],
                         [[3, 3, 0, 1, 4], [0, 1, 2, 3, 4]])
  npt.assert_array_equal(np.asarray(m_ts)[0, 0, :, 0], [2, 3, 0, 1, 2])
  mask = losses.consistency_mask(m_st, m_ts, ALPHA1, ALPHA2)
  npt.assert_array_equal(mask[:, 0], [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
  default = geometry.forward_backward_mask(m_st, m_ts)
  npt.assert_array_equal(default[:, 0], [[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
  # joint_loss threads JLFC's alphas through: 9 of 10 cells kept, and its
  # loss is the contrastive loss under that mask.
  loss, metrics = losses.joint_loss(
      cost, cost, terms=('raw',), raw_weight=1.0, agg_weight=1.0,
      temperature=1.0, agg_temperature=1.0, alpha1=ALPHA1, alpha2=ALPHA2)
  npt.assert_allclose(metrics['consistent_raw'], 0.9, rtol=1e-6)
  npt.assert_allclose(
      loss, _np_contrastive(_five_cell_cost(), m_st, mask, 1.0), rtol=1e-5)


# --- Eq. 3: confidence-aware contrastive loss ---------------------------------

# B = 1, 1 x 2 source cells, 2 x 3 target cells (x before y in the labels).
_COST = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 0.25],
                  [0.3, -1.0, 2.5], [1.5, 0.2, -0.4]],
                 np.float32).reshape(1, 1, 2, 2, 3)
_LABELS = np.array([[[[0.0, 0.0], [0.0, 1.0]]]], np.float32)  # (x, y)


def test_contrastive_loss_hand_computed_with_temperature():
  mask = np.ones((1, 1, 2), np.float32)
  # By hand: cell 0 scores target (x=0, y=0) = 1.0 of its row
  # [1, 2, .5, 0, -1, .25]; cell 1 scores (x=0, y=1) = 1.5 of
  # [.3, -1, 2.5, 1.5, .2, -.4] ((x=1, y=0) would read -1).
  rows = _COST.reshape(2, 6)
  values = {}
  for gamma in (0.5, 1.0):
    by_hand = -0.5 * sum(
        row[k] / gamma - np.log(np.sum(np.exp(row / gamma)))
        for row, k in zip(rows, (0, 3)))
    loss, count = losses.contrastive_loss(jnp.asarray(_COST), _LABELS, mask,
                                          gamma)
    npt.assert_allclose(loss, by_hand, rtol=1e-5)
    npt.assert_allclose(loss, _np_contrastive(_COST, _LABELS, mask, gamma),
                        rtol=1e-5)
    assert float(count) == 2.0
    values[gamma] = float(loss)
  # Both labels are below their rows' maxima: a sharper softmax costs more.
  assert values[0.5] > values[1.0] + 0.5


def test_contrastive_loss_labels_and_mask_get_no_gradient():
  mask = jnp.ones((1, 1, 2), jnp.float32)
  grads = jax.grad(
      lambda c, m, k: losses.contrastive_loss(c, m, k, 0.5)[0],
      argnums=(0, 1, 2))(jnp.asarray(_COST), jnp.asarray(_LABELS), mask)
  npt.assert_array_equal(grads[1], 0.0)
  npt.assert_array_equal(grads[2], 0.0)
  # d/dc of -log softmax(c / g)[k] = (softmax - onehot) / g / N.
  rows = _COST.reshape(2, 6) / 0.5
  p = np.exp(_np_log_softmax(rows))
  onehot = np.zeros_like(p)
  onehot[0, 0] = onehot[1, 3] = 1.0
  npt.assert_allclose(np.asarray(grads[0]).reshape(2, 6),
                      (p - onehot) / 0.5 / 2.0, atol=1e-6)


def _batch_case():
  rng = np.random.default_rng(1)
  cost = rng.normal(size=(2, 2, 2, 2, 3)).astype(np.float32)
  labels = np.stack([rng.integers(0, 3, (2, 2, 2)),
                     rng.integers(0, 2, (2, 2, 2))], -1).astype(np.float32)
  mask = np.array([[[1, 0], [0, 0]], [[1, 1], [0, 1]]], np.float32)
  return cost, labels, mask


def test_masked_cells_contribute_nothing_and_get_zero_gradient():
  cost, labels, mask = _batch_case()
  fn = lambda c: losses.contrastive_loss(c, labels, mask, 0.5)[0]
  loss, grad = jax.value_and_grad(fn)(jnp.asarray(cost))
  changed = cost.copy()
  masked = mask == 0
  changed[masked] = np.random.default_rng(2).normal(
      scale=1e3, size=changed[masked].shape)
  npt.assert_allclose(fn(jnp.asarray(changed)), loss, rtol=1e-6)
  grad = np.asarray(grad)
  npt.assert_array_equal(grad[masked], 0.0)
  assert np.all(np.abs(grad[~masked]).sum(axis=(-2, -1)) > 0)


def test_normalisation_counts_unmasked_cells_over_the_whole_batch():
  cost, labels, mask = _batch_case()
  loss, count = losses.contrastive_loss(jnp.asarray(cost), labels, mask, 0.5)
  assert float(count) == 4.0
  npt.assert_allclose(loss, _np_contrastive(cost, labels, mask, 0.5),
                      rtol=1e-5)
  per_image = np.mean([_np_contrastive(cost[i:i + 1], labels[i:i + 1],
                                       mask[i:i + 1], 0.5) for i in range(2)])
  assert abs(float(loss) - per_image) > 1e-2  # 1 vs 3 cells: they differ.


def test_all_masked_batch_is_a_finite_zero_with_zero_gradient():
  cost, labels, _ = _batch_case()
  mask = np.zeros((2, 2, 2), np.float32)
  fn = lambda c: losses.contrastive_loss(c, labels, mask, 0.5)[0]
  loss, grad = jax.value_and_grad(fn)(jnp.asarray(cost))
  assert float(loss) == 0.0
  assert _finite(grad)
  npt.assert_array_equal(grad, 0.0)
  assert float(losses.contrastive_loss(cost, labels, mask, 0.5)[1]) == 0.0


# --- Eqs. 4-5: cross terms and the total --------------------------------------


def _two_costs():
  """Raw and aggregated costs (2, 1, 5, 1, 5) with different WTA labels,
  each with consistent and inconsistent cells."""
  rng = np.random.default_rng(3)
  raw = rng.normal(size=(2, 1, 5, 1, 5)).astype(np.float32)
  agg = rng.normal(size=(2, 1, 5, 1, 5)).astype(np.float32)
  eye = np.eye(5, dtype=np.float32).reshape(1, 1, 5, 1, 5)
  agg = agg + 2.5 * eye  # A mostly agrees with the identity, C does not.
  return jnp.asarray(raw), jnp.asarray(agg)


def _labels_and_masks(cost):
  m_st = losses.wta_mapping(cost)
  m_ts = losses.wta_mapping(geometry.transpose_4d(cost))
  return ({'st': m_st, 'ts': m_ts},
          {'st': losses.consistency_mask(m_st, m_ts, ALPHA1, ALPHA2),
           'ts': losses.consistency_mask(m_ts, m_st, ALPHA1, ALPHA2)})


def _joint(raw, agg, terms, **kw):
  args = dict(terms=terms, raw_weight=0.3, agg_weight=0.7, temperature=0.5,
              agg_temperature=0.2, alpha1=ALPHA1, alpha2=ALPHA2)
  args.update(kw)
  return losses.joint_loss(raw, agg, **args)


def test_two_costs_case_is_informative():
  raw, agg = _two_costs()
  (l_raw, k_raw), (l_agg, k_agg) = map(_labels_and_masks, (raw, agg))
  for k in (k_raw, k_agg):
    assert 0.0 < float(jnp.mean(k['st'])) < 1.0
  assert not np.array_equal(l_raw['st'], l_agg['st'])
  assert not np.array_equal(k_raw['st'], k_agg['st'])


@pytest.mark.parametrize('term,scored,source,gamma,weight', [
    ('agg_to_raw', 'raw', 'agg', 0.5, 0.3),
    ('raw_to_agg', 'agg', 'raw', 0.2, 0.7),
    ('raw', 'raw', 'raw', 0.5, 0.3),
    ('agg', 'agg', 'agg', 0.2, 0.7),
])
def test_each_term_scores_one_cost_at_the_others_labels(term, scored, source,
                                                        gamma, weight):
  raw, agg = _two_costs()
  costs = {'raw': raw, 'agg': agg}
  labels, masks = _labels_and_masks(costs[source])
  expected, _ = losses.contrastive_loss(costs[scored], labels['st'],
                                        masks['st'], gamma)
  npt.assert_allclose(
      expected, _np_contrastive(costs[scored], labels['st'], masks['st'],
                                gamma), rtol=1e-5)
  fn = lambda r, a: _joint(r, a, (term,))
  (loss, metrics), grads = jax.value_and_grad(fn, argnums=(0, 1),
                                              has_aux=True)(raw, agg)
  npt.assert_allclose(metrics[f'loss_{term}'], expected, rtol=1e-5)
  npt.assert_allclose(loss, weight * expected, rtol=1e-5)
  grad = dict(zip(('raw', 'agg'), grads))
  assert float(jnp.abs(grad[scored]).sum()) > 0
  other = 'agg' if scored == 'raw' else 'raw'
  npt.assert_array_equal(grad[other], 0.0)


def test_total_is_eq5_weighted_sum_of_the_four_terms():
  raw, agg = _two_costs()
  loss, m = _joint(raw, agg, losses.TERMS)
  npt.assert_allclose(
      loss, 0.3 * (m['loss_raw'] + m['loss_agg_to_raw'])
      + 0.7 * (m['loss_agg'] + m['loss_raw_to_agg']), rtol=1e-5)
  for term in losses.TERMS:
    single, _ = _joint(raw, agg, (term,))
    weight = 0.3 if losses.TERM_COSTS[term][0] == 'raw' else 0.7
    npt.assert_allclose(single, weight * m[f'loss_{term}'], rtol=1e-5)
  # A subset drops the other terms (Table 3).
  sub, _ = _joint(raw, agg, ('raw', 'agg'))
  npt.assert_allclose(sub, 0.3 * m['loss_raw'] + 0.7 * m['loss_agg'],
                      rtol=1e-5)


def test_confidence_mask_off_equals_all_ones_masks():
  raw, agg = _two_costs()
  _, m = _joint(raw, agg, losses.TERMS, confidence_mask=False)
  _, m_on = _joint(raw, agg, losses.TERMS)
  costs = {'raw': raw, 'agg': agg}
  gammas = {'raw': 0.5, 'agg': 0.2}
  for term, (scored, source) in losses.TERM_COSTS.items():
    labels, _ = _labels_and_masks(costs[source])
    ones = jnp.ones(labels['st'].shape[:-1])
    expected, _ = losses.contrastive_loss(costs[scored], labels['st'], ones,
                                          gammas[scored])
    npt.assert_allclose(m[f'loss_{term}'], expected, rtol=1e-5)
    assert abs(float(m[f'loss_{term}']) - float(m_on[f'loss_{term}'])) > 1e-4


def test_both_directions_is_the_mean_of_st_and_ts():
  raw, agg = _two_costs()
  _, m = _joint(raw, agg, losses.TERMS, directions='both')
  costs = {'raw': raw, 'agg': agg}
  gammas = {'raw': 0.5, 'agg': 0.2}
  for term, (scored, source) in losses.TERM_COSTS.items():
    labels, masks = _labels_and_masks(costs[source])
    st, _ = losses.contrastive_loss(costs[scored], labels['st'], masks['st'],
                                    gammas[scored])
    ts, _ = losses.contrastive_loss(geometry.transpose_4d(costs[scored]),
                                    labels['ts'], masks['ts'], gammas[scored])
    npt.assert_allclose(m[f'loss_{term}'], 0.5 * (st + ts), rtol=1e-5)
    assert abs(float(st) - float(ts)) > 1e-4


# --- alpha2 units and argument checks -----------------------------------------


def test_alpha2_in_cells_units():
  assert losses.alpha2_in_cells(ALPHA2, 'cells', (16, 16), (256, 256)) == ALPHA2
  npt.assert_allclose(
      losses.alpha2_in_cells(ALPHA2, 'normalized', (16, 16), (256, 256)),
      ALPHA2 * (15 / 2) ** 2, rtol=1e-12)
  npt.assert_allclose(
      losses.alpha2_in_cells(ALPHA2, 'pixels', (16, 16), (256, 256)),
      ALPHA2 / 16 ** 2, rtol=1e-12)
  # Non-square cells: the longer side (the tighter tolerance in cells).
  npt.assert_allclose(
      losses.alpha2_in_cells(ALPHA2, 'pixels', (16, 12), (256, 240)),
      ALPHA2 / 20 ** 2, rtol=1e-12)
  npt.assert_allclose(
      losses.alpha2_in_cells(ALPHA2, 'normalized', (16, 12), (256, 240)),
      ALPHA2 * (11 / 2) ** 2, rtol=1e-12)
  with pytest.raises(SemcorrError, match='alpha_unit'):
    losses.alpha2_in_cells(ALPHA2, 'inches', (16, 16), (256, 256))


def test_check_terms_and_directions_reject_bad_values():
  assert losses.check_terms(['raw', 'agg']) == ('raw', 'agg')
  for bad in ((), ('raw', 'feature'), ('C',)):
    with pytest.raises(SemcorrError, match='loss.terms'):
      losses.check_terms(bad)
  raw, agg = _two_costs()
  with pytest.raises(SemcorrError, match='loss.directions'):
    _joint(raw, agg, ('raw',), directions='ts')
