"""Calling a model's predict function from numpy, in fixed-size batches.

Evaluators receive `predict_fn(variables, source, target) -> flat dict`
(a method's `predict`, usually jitted; `semcorr_jax.outputs` names the
keys). Padding a short batch up to the size already compiled keeps one
compilation per evaluation. Nothing here knows a method: `jitted_predict`
only needs an object with a `predict` attribute.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import numpy as np

PredictFn = Callable[[Any, np.ndarray, np.ndarray], Mapping[str, Any]]
PairsFn = Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]


def jitted_predict(method: Any) -> PredictFn:
  """`jax.jit(method.predict)`, kept on the object (compiled once per shape)."""
  fn = getattr(method, '_semcorr_jitted_predict', None)
  if fn is None:
    fn = jax.jit(method.predict)
    try:
      method._semcorr_jitted_predict = fn  # pylint: disable=protected-access
    except AttributeError:  # slots or frozen: just do not cache
      pass
  return fn


def to_one_device(tree: Any) -> Any:
  """Copies fully addressable arrays of `tree` onto the first local device."""
  device = jax.local_devices()[0]
  leaves = jax.tree.leaves(tree)
  if all(getattr(x, 'is_fully_addressable', True) for x in leaves):
    return jax.device_put(tree, device)
  return tree


def _fill(x: np.ndarray, pad: int) -> np.ndarray:
  """`x` with its last entry repeated `pad` times along the batch axis."""
  return np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x


def _batch_outputs(out: Mapping[str, Any], n: int, full: int
                   ) -> dict[str, np.ndarray]:
  """Numpy outputs with a batch axis of `full`, cut back to `n`."""
  out = jax.device_get(dict(out))
  return {k: np.asarray(v)[:n] for k, v in out.items()
          if np.ndim(v) > 0 and np.shape(v)[0] == full}


def predict_padded(predict_fn: PredictFn, variables: Any,
                   batch: Mapping[str, np.ndarray], batch_size: int
                   ) -> dict[str, np.ndarray]:
  """Runs `predict_fn` on a batch filled up to `batch_size` (one compilation).

  Returns:
    The batched outputs as numpy arrays, cut back to the batch's own size
    (scalars and outputs without the batch axis are left out).
  """
  n = len(batch['source_image'])
  pad = max(batch_size - n, 0)
  out = predict_fn(variables, _fill(batch['source_image'], pad),
                   _fill(batch['target_image'], pad))
  return _batch_outputs(out, n, n + pad)


def bind(predict_fn: PredictFn, variables: Any) -> PairsFn:
  """`(source, target) -> outputs` of one model, for `protocol.predict_pairs`.

  A batch smaller than the largest seen so far is filled up by repeating its
  last pair, so a final partial batch does not recompile.

  Args:
    predict_fn: `(variables, source, target) -> flat outputs`.
    variables: the model variables (on one device).

  Returns:
    `(source (B, Hm, Wm, 3) float32 in [0, 1], target) -> outputs`, numpy
    arrays (B, ...) (outputs without the batch axis are left out).
  """
  largest = [0]

  def pairs_fn(source, target):
    n = len(source)
    largest[0] = max(largest[0], n)
    pad = largest[0] - n
    out = predict_fn(variables, _fill(np.asarray(source, np.float32), pad),
                     _fill(np.asarray(target, np.float32), pad))
    return _batch_outputs(out, n, n + pad)

  return pairs_fn
