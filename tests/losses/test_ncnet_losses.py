"""Hand-computed cases for NCNet's weak loss (semcorr_jax/losses/ncnet.py).

Volumes have source cells (Ha, Wa) = (1, 2) and target cells (Hb, Wb) =
(2, 1), so a reduction over the wrong pair of axes changes the numbers.
"""

import jax
import jax.numpy as jnp
import numpy as np

from semcorr_jax.losses import ncnet as losses

matching_score = jax.jit(losses.matching_score)
weak_loss = jax.jit(losses.weak_loss)

LN3 = float(np.log(3.0))


def _volume(matrix):
  """(a, b) matrices -> (B, 1, 2, 2, 1) volumes."""
  return jnp.asarray(matrix, jnp.float32).reshape(-1, 1, 2, 2, 1)


def test_matching_score_by_hand():
  """[[ln 3, ln 3], [0, 0]] over (a, b): softmax over b per source cell
  gives rows (1/2, 1/2) twice -> max 1/2, 1/2; softmax over a per target
  cell gives columns (3/4, 1/4) twice -> max 3/4, 3/4. Score = (mean 1/2 +
  mean 3/4) / 2 = 5/8. A zero volume scores (1/2 + 1/2) / 2 = 1/2, and a
  batch of both their mean 9/16."""
  peaked = [[LN3, LN3], [0.0, 0.0]]
  zero = [[0.0, 0.0], [0.0, 0.0]]
  np.testing.assert_allclose(matching_score(_volume([peaked])), 5 / 8,
                             rtol=1e-6)
  np.testing.assert_allclose(matching_score(_volume([zero])), 0.5,
                             rtol=1e-6)
  np.testing.assert_allclose(matching_score(_volume([peaked, zero])), 9 / 16,
                             rtol=1e-6)


def test_weak_loss_is_negative_minus_positive_score():
  """Positives [[ln 3, 0], [0, ln 3]]: every row and column max is 3/4 ->
  score 3/4. Negatives zero -> 1/2. Loss = 1/2 - 3/4 = -1/4."""
  pos = _volume([[[LN3, 0.0], [0.0, LN3]]])
  neg = _volume([[[0.0, 0.0], [0.0, 0.0]]])
  loss, metrics = weak_loss(pos, neg)
  np.testing.assert_allclose(loss, -0.25, rtol=1e-6)
  np.testing.assert_allclose(metrics['score_pos'], 0.75, rtol=1e-6)
  np.testing.assert_allclose(metrics['score_neg'], 0.5, rtol=1e-6)
  swapped, _ = weak_loss(neg, pos)
  np.testing.assert_allclose(swapped, 0.25, rtol=1e-6)


def test_matching_score_equals_the_reference_views():
  """train.py's weak_loss score with its (B, Ha*Wa, Hb, Wb) softmax over A
  and (B, Hb*Wb, Ha, Wa) softmax over B, on a random 3x3 volume."""
  corr = np.asarray(jax.random.normal(jax.random.key(0), (2, 3, 3, 3, 3)))
  b = corr.shape[0]

  def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)

  scores_b = softmax(corr.reshape(b, 9, 3, 3), 1).max(axis=1)
  scores_a = softmax(corr.reshape(b, 3, 3, 9).transpose(0, 3, 1, 2),
                     1).max(axis=1)
  expected = np.mean(scores_a + scores_b) / 2
  np.testing.assert_allclose(matching_score(jnp.asarray(corr)), expected,
                             rtol=1e-5)


def test_negatives_roll_the_sources_by_one():
  """Pair i of the negatives is (source i + 1, target i), as
  np.roll(arange(b), -1) indexes the source images."""
  x = jnp.arange(4.0)[:, None] * jnp.ones((4, 3))
  np.testing.assert_array_equal(losses.negative_sources(x)[:, 0],
                                np.roll(np.arange(4), -1))
