"""JLFC: confidence-aware contrastive losses on two costs (paper 002).

Joint learning of feature extraction and cost aggregation (Kim et al.):
the raw cost C (correlation of the extracted features) and the aggregated
cost A (the aggregator's output) each give winner-take-all pseudo labels
(Eq. 1), masked by a forward-backward consistency check (Eq. 2); each cost
is trained to score its own labels (Eq. 3) and the other's (Eq. 4), and the
total weighs the four terms (Eq. 5). docs/jlfc.md has the choices.

Shapes: costs (B, Ha, Wa, Hb, Wb), a = source, b = target; mappings
(B, Ha, Wa, 2) absolute (x, y) in b's cells (docs/architecture.md). Pseudo
labels and masks carry no gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from semcorr_jax import geometry
from semcorr_jax.errors import SemcorrError

Array = jax.Array

# Eq. 5's four terms: the cost trained, and whose labels it scores.
#   raw:        L_ccl^C       C at C's labels
#   agg_to_raw: L_ccl^{A->C}  C at A's labels
#   agg:        L_ccl^A       A at A's labels
#   raw_to_agg: L_ccl^{C->A}  A at C's labels
TERMS = ('raw', 'agg_to_raw', 'agg', 'raw_to_agg')
# term -> (cost scored, cost whose labels and mask are used)
TERM_COSTS = {'raw': ('raw', 'raw'), 'agg_to_raw': ('raw', 'agg'),
              'agg': ('agg', 'agg'), 'raw_to_agg': ('agg', 'raw')}
ALPHA_UNITS = ('cells', 'normalized', 'pixels')
DIRECTIONS = ('st', 'both')


def wta_mapping(cost: Array) -> Array:
  """Eq. 1 as a mapping: `i + F(i) = argmax_j cost(i, j)`, no gradient.

  Args:
    cost: (B, Ha, Wa, Hb, Wb).

  Returns:
    (B, Ha, Wa, 2) integer-valued (x, y) in b's cells (first maximum on
    ties).
  """
  return geometry.hard_argmax(jax.lax.stop_gradient(cost))


def wta_flow(cost: Array) -> Array:
  """Eq. 1 as printed: the pseudo flow `F(i) = argmax_j cost(i, j) - i`.

  Args:
    cost: (B, Ha, Wa, Hb, Wb) with Ha, Wa = Hb, Wb (a flow needs one grid).

  Returns:
    (B, Ha, Wa, 2) displacement in cells, (x, y).
  """
  return geometry.mapping_to_flow(wta_mapping(cost))


def alpha2_in_cells(alpha2: float, unit: str, grid_hw: Sequence[int],
                    image_hw: Sequence[int]) -> float:
  """Eq. 2's absolute tolerance `alpha2` (squared length) in squared cells.

  Eq. 2 is quadratic in the flows, so flows measured in another unit (a
  cell = s units) give `lhs < alpha1 (...) + alpha2 / s^2` in cells.

  Args:
    alpha2: the tolerance in `unit` squared.
    unit: 'cells' (of the cost's grid), 'normalized' ([-1, 1] across the
      grid, align corners: a cell is 2 / (n - 1)) or 'pixels' (of the input
      image: a cell is image / grid pixels).
    grid_hw: (h, w) of the cost's grid.
    image_hw: (H, W) of the images.

  Returns:
    alpha2 in squared cells (on a non-square cell the longer side is used,
    so the tolerance is never looser than stated along either axis).
  """
  if unit == 'cells':
    return float(alpha2)
  if unit == 'normalized':
    cell = max(2.0 / max(n - 1, 1) for n in grid_hw)
  elif unit == 'pixels':
    cell = max(size / n for size, n in zip(image_hw, grid_hw))
  else:
    raise SemcorrError(f'loss.alpha_unit={unit!r}: use one of {ALPHA_UNITS}')
  return float(alpha2) / cell ** 2


def consistency_mask(mapping_ab: Array, mapping_ba: Array, alpha1: float,
                     alpha2: float) -> Array:
  """Eq. 2: forward-backward consistency of two WTA mappings, in cells.

  `|F_ab(i) + F_ba(i + F_ab(i))|^2 < alpha1 (|F_ab(i)|^2 +
  |F_ba(i + F_ab(i))|^2) + alpha2` (`geometry.forward_backward_mask`).

  Args:
    mapping_ab: (B, Ha, Wa, 2) in b's cells.
    mapping_ba: (B, Hb, Wb, 2) in a's cells.
    alpha1: relative tolerance (JLFC: 0.1).
    alpha2: absolute tolerance in squared cells (`alpha2_in_cells`).

  Returns:
    (B, Ha, Wa) float32 in {0, 1}, 1 = consistent (M(i)); no gradient.
  """
  return geometry.forward_backward_mask(mapping_ab, mapping_ba,
                                        alpha1=alpha1, alpha2=alpha2)


def contrastive_loss(cost: Array, mapping: Array, mask: Array,
                     temperature: float) -> tuple[Array, Array]:
  """Eqs. 3 and 4: masked cross-entropy of `cost / temperature` at labels.

  `-(1 / N) sum_i M(i) log softmax_j(cost(i, j) / gamma)[label(i)]` with
  N = sum_i M(i) over the whole batch; N = 0 (every pixel masked) gives 0
  with zero gradient. With labels and mask from `cost` itself this is
  L_ccl (Eq. 3); with the other module's it is a cross term (Eq. 4).

  Args:
    cost: (B, Ha, Wa, Hb, Wb) logits over b for every cell of a.
    mapping: (B, Ha, Wa, 2) integer-valued (x, y) labels in b's cells.
    mask: (B, Ha, Wa) in {0, 1}.
    temperature: gamma > 0.

  Returns:
    (loss, N): the scalar loss and the number of unmasked cells.
  """
  b, ha, wa, hb, wb = cost.shape
  mapping = jax.lax.stop_gradient(mapping)
  mask = jax.lax.stop_gradient(mask.astype(jnp.float32))
  log_prob = jax.nn.log_softmax(
      cost.astype(jnp.float32).reshape(b, ha, wa, hb * wb) / temperature,
      axis=-1)
  index = (jnp.round(mapping[..., 1]) * wb + jnp.round(mapping[..., 0]))
  picked = jnp.take_along_axis(log_prob, index.astype(jnp.int32)[..., None],
                               axis=-1)[..., 0]
  count = jnp.sum(mask)
  total = -jnp.sum(jnp.where(mask > 0, mask * picked, 0.0))
  return total / jnp.maximum(count, 1.0), count


def check_terms(terms: Sequence[str]) -> tuple[str, ...]:
  """The enabled terms, validated (at least one, each of `TERMS` once)."""
  terms = tuple(terms)
  unknown = sorted(set(terms) - set(TERMS))
  if unknown or not terms or len(set(terms)) != len(terms):
    raise SemcorrError(f'loss.terms={terms}: use a non-empty subset of '
                       f'{TERMS} (raw = L^C, agg_to_raw = L^(A->C), agg = '
                       'L^A, raw_to_agg = L^(C->A))')
  return terms


def check_loss_config(cfg: Any) -> None:
  """`config.loss` of a JLFC run, checked before anything is traced.

  Raises:
    SemcorrError: unknown terms, directions or unit; a temperature <= 0;
      a negative alpha or weight.
  """
  check_terms(cfg.terms)
  if cfg.directions not in DIRECTIONS:
    raise SemcorrError(f'loss.directions={cfg.directions!r}: use one of '
                       f'{DIRECTIONS}')
  if cfg.alpha_unit not in ALPHA_UNITS:
    raise SemcorrError(f'loss.alpha_unit={cfg.alpha_unit!r}: use one of '
                       f'{ALPHA_UNITS}')
  for name in ('temperature', 'agg_temperature'):
    value = cfg[name]
    if value is not None and value <= 0:
      raise SemcorrError(f'loss.{name} must be > 0, got {value}')
  for name in ('alpha1', 'alpha2', 'raw_weight', 'agg_weight'):
    if cfg[name] < 0:
      raise SemcorrError(f'loss.{name} must be >= 0, got {cfg[name]}')


def joint_loss(raw: Array, agg: Array, *, terms: Sequence[str],
               raw_weight: float, agg_weight: float, temperature: float,
               agg_temperature: float, alpha1: float, alpha2: float,
               confidence_mask: bool = True, directions: str = 'st'
               ) -> tuple[Array, dict[str, Array]]:
  """Eq. 5: `lambda_C (L^C + L^{A->C}) + lambda_A (L^A + L^{C->A})`.

  Args:
    raw: C (B, Ha, Wa, Hb, Wb), the features' correlation.
    agg: A (B, Ha, Wa, Hb, Wb), the aggregated cost.
    terms: the enabled subset of `TERMS` (the others weigh 0).
    raw_weight, agg_weight: lambda_C, lambda_A.
    temperature: gamma of the terms scoring C.
    agg_temperature: gamma of the terms scoring A.
    alpha1: Eq. 2's relative tolerance.
    alpha2: Eq. 2's absolute tolerance, squared cells.
    confidence_mask: False sets M = 1 everywhere (Table 2, row c).
    directions: 'st' (the paper: source cells scored over the target) or
      'both' (also target cells over the source; each term the mean of
      the two).

  Returns:
    (loss, metrics): metrics 'loss_<term>' for every enabled term,
    'consistent_raw' and 'consistent_agg' (fraction of cells Eq. 2 keeps,
    source -> target) and 'wta_agreement' (fraction of source cells where
    C and A pick the same target cell).
  """
  terms = check_terms(terms)
  if directions not in DIRECTIONS:
    raise SemcorrError(f'loss.directions={directions!r}: use one of '
                       f'{DIRECTIONS}')
  costs = {'raw': raw, 'agg': agg}
  gammas = {'raw': temperature, 'agg': agg_temperature}
  weights = {'raw': raw_weight, 'agg': agg_weight}
  labels, masks = {}, {}
  for name, cost in costs.items():
    m_st, m_ts = wta_mapping(cost), wta_mapping(geometry.transpose_4d(cost))
    mask_st = consistency_mask(m_st, m_ts, alpha1, alpha2)
    mask_ts = consistency_mask(m_ts, m_st, alpha1, alpha2)
    labels[name] = {'st': m_st, 'ts': m_ts}
    masks[name] = {'st': mask_st, 'ts': mask_ts}
  used = ('st', 'ts') if directions == 'both' else ('st',)
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  for term in terms:
    scored, source = TERM_COSTS[term]
    values = []
    for d in used:
      cost = costs[scored] if d == 'st' else geometry.transpose_4d(
          costs[scored])
      mask = masks[source][d]
      if not confidence_mask:
        mask = jnp.ones_like(mask)
      values.append(contrastive_loss(cost, labels[source][d], mask,
                                     gammas[scored])[0])
    value = sum(values) / len(values)
    metrics[f'loss_{term}'] = value
    total = total + weights[scored] * value
  metrics['consistent_raw'] = jnp.mean(masks['raw']['st'])
  metrics['consistent_agg'] = jnp.mean(masks['agg']['st'])
  metrics['wta_agreement'] = jnp.mean(jnp.all(
      labels['raw']['st'] == labels['agg']['st'], axis=-1).astype(
          jnp.float32))
  return total, metrics
