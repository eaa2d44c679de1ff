"""NCNet's weak loss (reference-facts §C.1, `train.py: weak_loss`), pure.

Only image pairs are needed: a batch of matching pairs (positives) and the
same batch with the source images rolled by one (negatives: pair i becomes
(source i + 1, target i), the reference's `np.roll(arange(b), -1)`). For each
volume the matching score is

  score = 1/2 mean_{b cells} max_{a} softmax_a(c)
        + 1/2 mean_{a cells} max_{b} softmax_b(c),

averaged over the batch (softmax at temperature 1 over all cells of the other
image), and

  loss = score(negatives) - score(positives).

Data parallelism: the functions act on whole global-batch arrays. Under the
trainer's `jax.jit` over a 'data' mesh (semcorr_jax/parallel.py) the roll is
a global one (XLA moves the one shard across devices), so the negatives are
the same pairs as on one device. A per-device loss (pmap / shard_map) would
roll within each shard instead and must not call these.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from semcorr_jax.models import ncnet as ncnet_model

Array = jax.Array


def negative_sources(x: Array) -> Array:
  """Rolls a batch by one: element i becomes element (i + 1) mod B.

  Args:
    x: (B, ...) source images or source features.

  Returns:
    (B, ...), `x[(i + 1) % B]` at i (pair i of the negatives is (source
    i + 1, target i)). With B = 1 the negatives are the positives.
  """
  return jnp.roll(x, -1, axis=0)


def matching_score(corr: Array) -> Array:
  """Mean over cells, both directions and the batch of the max softmax.

  Args:
    corr: (B, Ha, Wa, Hb, Wb).

  Returns:
    Scalar in (0, 1]: 1/2 mean_b max_a softmax_a + 1/2 mean_a max_b
    softmax_b (equal to the reference's `mean(scores_A + scores_B) / 2`
    when both grids have the same size).
  """
  over_a = ncnet_model.max_softmax(corr, 'a')  # (B, Hb, Wb)
  over_b = ncnet_model.max_softmax(corr, 'b')  # (B, Ha, Wa)
  return 0.5 * (jnp.mean(over_a) + jnp.mean(over_b))


def weak_loss(corr_pos: Array, corr_neg: Array
              ) -> tuple[Array, dict[str, Array]]:
  """score(negatives) - score(positives).

  Args:
    corr_pos: (B, Ha, Wa, Hb, Wb) volumes of the matching pairs.
    corr_neg: (B, Ha, Wa, Hb, Wb) volumes of the rolled pairs
      (`negative_sources`).

  Returns:
    (loss, {'score_pos', 'score_neg'}), scalars; loss in (-1, 1).
  """
  score_pos = matching_score(corr_pos)
  score_neg = matching_score(corr_neg)
  return score_neg - score_pos, {'score_pos': score_pos,
                                 'score_neg': score_neg}
