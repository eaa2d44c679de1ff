"""Comparing two training runs that differ only in float summation order.

Runs on another number of devices or processes sum the same terms in another
order. A float32 reduction of n terms is then off by about sqrt(n) * 2^-24
(typically; n * 2^-24 at worst) of the sum of the terms' magnitudes, which
can be far larger than the result: a value that cancels to near 0 has no
scale of its own. Examples in SFNet: the bias of a conv followed by a
train-mode BatchNorm (true gradient exactly 0: its whole update is noise),
or a channel's running mean near 0 (on an Intel Xeon one such mean of 0.073
came out 6.1e-5, 8.4e-4 of itself, apart). So each quantity's noise is
bounded by the size of its kind, not by its own value:

* Parameters trained with SGD (update = -lr * gradient): by the largest
  update of the run. Steps feed the noise back through the next gradients
  (the train-mode batch statistics, the sharp soft-argmax), so it grows with
  the steps: measured on an AMD EPYC for the SFNet `test` config, 3e-6 of the
  largest update after one step and 1.7e-4 after four. `UPDATE_REL` = 1e-2
  leaves a factor of 50 for other CPUs. Adam divides every gradient by its
  own running magnitude, so an element of pure noise moves by a full lr
  either way: compare Adam runs only bit-exactly (same layout), or use SGD.
* Running statistics (BatchNorm mean / var, means over the global batch's
  activations): by the leaf's largest statistic. Measured after four steps:
  1.6e-5; `STATS_REL` = 1e-3.

The bugs these comparisons guard against (a process reading another's shard,
a sum where a mean belongs, statistics over one host's examples only) change
updates and statistics by tens of percent.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import numpy as np

UPDATE_REL = 1e-2
STATS_REL = 1e-3


# Relative size of the last-bit differences of a re-built init (float32).
INIT_REL = 1e-6


def _flat(tree: Any) -> dict[str, np.ndarray]:
  flat = flax.traverse_util.flatten_dict(
      flax.core.unfreeze(jax.device_get(tree)), sep='/')
  return {k: np.asarray(v, np.float64) for k, v in flat.items()}


def _max_abs(x: np.ndarray) -> float:
  return float(np.max(np.abs(x), initial=0.0))


def _unchanged(x: np.ndarray, x0: np.ndarray) -> bool:
  """`x` is `x0` up to float32 rounding: an init program compiled for another
  mesh can differ in the last bit (seen: 1.5e-8 on values of 0.1)."""
  return _max_abs(x - x0) <= INIT_REL * max(_max_abs(x0), 1e-30)


def update_differences(before: Any, after_a: Any, after_b: Any
                       ) -> tuple[dict[str, float], float]:
  """Per-leaf max |update_a - update_b| and the largest update of either run.

  Args:
    before: the parameters both runs started from.
    after_a, after_b: the parameters each run ended with (same tree).

  Returns:
    ({'path/of/leaf': max abs difference of the two updates}, max |update|).
  """
  b0, a, b = _flat(before), _flat(after_a), _flat(after_b)
  assert b0.keys() == a.keys() == b.keys()
  for k in b0:  # a leaf one run left as it was (frozen) the other did too
    assert _unchanged(a[k], b0[k]) == _unchanged(b[k], b0[k]), k
  diffs = {k: _max_abs(a[k] - b[k]) for k in b0}
  scale = max(_max_abs(x[k] - b0[k]) for x in (a, b) for k in b0)
  return diffs, scale


def assert_updates_close(before: Any, after_a: Any, after_b: Any,
                         rel: float = UPDATE_REL) -> None:
  """Asserts two SGD runs from `before` made the same updates up to noise.

  Every element of the two updates agrees within `rel` x the largest update
  of either run (module docstring); leaves that one run left unchanged
  (frozen) are unchanged in the other; at least one leaf moved.
  """
  diffs, scale = update_differences(before, after_a, after_b)
  assert scale > 0, 'neither run changed any parameter'
  worst = max(diffs, key=diffs.get)
  assert diffs[worst] <= rel * scale, (
      f'{worst}: updates differ by {diffs[worst]:.3g}, more than {rel} x the '
      f'largest update {scale:.3g}')


def assert_statistics_close(a: Any, b: Any, rel: float = STATS_REL) -> None:
  """Asserts running statistics agree within `rel` x each leaf's largest."""
  fa, fb = _flat(a), _flat(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    diff, scale = _max_abs(fa[k] - fb[k]), _max_abs(fa[k])
    assert diff <= rel * scale, (
        f'{k}: differs by {diff:.3g}, more than {rel} x its largest value '
        f'{scale:.3g}')
