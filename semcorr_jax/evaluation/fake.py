"""Fake models with known mappings, for end-to-end tests of the metrics.

Both functions have the `predict_pairs` signature
`predict_fn(source (B, Hm, Wm, 3), target (B, Hm', Wm', 3)) ->
{'mapping_st': (B, Hm, Wm, 2), 'mapping_ts': (B, Hm', Wm', 2)}`, in
model-input pixels, float64 numpy (so analytic checks hold to ~1e-12); the
image values are ignored, any batch size works.

They act on align-corners NORMALISED coordinates of the model inputs
(`x_n = 2 x / (W - 1) - 1`, docs/architecture.md):

* `identity_predict_fn`: `target_n = source_n`.
* `affine_predict_fn(A)`: `target_n = A @ [source_n, 1]` with A (2, 3), and
  `mapping_ts` its inverse `source_n = M^-1 (target_n - b)` (A = [M | b]).

With `pad = 0` the normalised coordinates of the model input equal those of
the original image (the resize is align-corners), so a transfer through
`PairPrediction` is exactly the affine map between the ORIGINAL images'
normalised coordinates, whatever the image and model sizes (the mapping is
affine in pixels, so its bilinear read-out is exact). With padding only the
identity stays exact (an affine map of the padded frame is another affine
map of the content, not A).

`flows_predict_fn(flows, matrices, confidences)` is a model of several
named flows (`semcorr_jax.outputs`): each flow's mappings are affine with
its own matrix, and flows declaring a confidence get confidence maps given
as functions of each grid's normalised (x, y) (`tent_confidence`).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from semcorr_jax import outputs
from semcorr_jax.errors import SemcorrError

_IDENTITY = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def _pixel_grid(h: int, w: int) -> np.ndarray:
  xs, ys = np.meshgrid(np.arange(w, dtype=np.float64),
                       np.arange(h, dtype=np.float64), indexing='xy')
  return np.stack([xs, ys], axis=-1)


def _spans(h: int, w: int) -> np.ndarray:
  return np.array([max(w - 1, 1e-6), max(h - 1, 1e-6)], np.float64)


def _affine_mapping(matrix: np.ndarray, from_hw, to_hw) -> np.ndarray:
  """(H_a, W_a, 2) pixels of b for `b_n = M a_n + t` on a's pixel grid."""
  grid_n = 2.0 * _pixel_grid(*from_hw) / _spans(*from_hw) - 1.0
  out_n = grid_n @ matrix[:, :2].T + matrix[:, 2]
  return (out_n + 1.0) * 0.5 * _spans(*to_hw)


def _shapes(source: Any, target: Any):
  source, target = np.shape(source), np.shape(target)
  if len(source) != 4 or len(target) != 4 or source[0] != target[0]:
    raise SemcorrError(f'expected two (B, H, W, 3) batches, got {source} and '
                       f'{target}')
  return source[0], tuple(source[1:3]), tuple(target[1:3])


def affine_predict_fn(matrix: Any):
  """A fake model whose `mapping_st` is `target_n = A @ [source_n, 1]`.

  Args:
    matrix: (2, 3) affine map of align-corners normalised (x, y); its 2 x 2
      part must be invertible.

  Returns:
    `predict_fn(source, target) -> {'mapping_st', 'mapping_ts'}` float64
    numpy, (B, Hs, Ws, 2) and (B, Ht, Wt, 2) absolute model-input pixels.

  Raises:
    SemcorrError: wrong shape or a singular 2 x 2 part.
  """
  forward = np.asarray(matrix, np.float64)
  if forward.shape != (2, 3):
    raise SemcorrError(f'affine matrix must be (2, 3), got {forward.shape}')
  lin = forward[:, :2]
  if abs(np.linalg.det(lin)) < 1e-12:
    raise SemcorrError('affine matrix has a singular 2 x 2 part')
  inv_lin = np.linalg.inv(lin)
  backward = np.concatenate([inv_lin, -inv_lin @ forward[:, 2:]], axis=1)

  def predict_fn(source: Any, target: Any) -> dict[str, np.ndarray]:
    batch, src_hw, tgt_hw = _shapes(source, target)
    st = _affine_mapping(forward, src_hw, tgt_hw)
    ts = _affine_mapping(backward, tgt_hw, src_hw)
    return {'mapping_st': np.broadcast_to(st, (batch,) + st.shape).copy(),
            'mapping_ts': np.broadcast_to(ts, (batch,) + ts.shape).copy()}

  return predict_fn


def identity_predict_fn(source: Any, target: Any) -> dict[str, np.ndarray]:
  """A fake model matching every point to the same normalised place.

  Args:
    source: (B, Hs, Ws, 3) (values ignored).
    target: (B, Ht, Wt, 3).

  Returns:
    'mapping_st' (B, Hs, Ws, 2) float64 `x_t = x_s (Wt - 1) / (Ws - 1)`
    (the pixel grid when the sizes agree), 'mapping_ts' the other way.
  """
  return affine_predict_fn(_IDENTITY)(source, target)


ConfidenceFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def tent_confidence(x_n: np.ndarray, y_n: np.ndarray) -> np.ndarray:
  """`(1 - |x_n|) (1 - |y_n|)`: 1 at the centre, 0 on the border.

  Its bilinear read-out at a point is exact when the point is a pixel centre
  of the model grid, or when Wm and Hm are odd (the kinks at x_n = 0 and
  y_n = 0 then sit on pixel centres and the map is bilinear in between).
  """
  return np.clip((1.0 - np.abs(x_n)) * (1.0 - np.abs(y_n)), 0.0, 1.0)


def _confidence_map(fn: ConfidenceFn | float, hw) -> np.ndarray:
  """(H, W) values of `fn` at the pixels' normalised (x, y) (or constant)."""
  if not callable(fn):
    return np.full(tuple(hw), float(fn), np.float64)
  grid_n = 2.0 * _pixel_grid(*hw) / _spans(*hw) - 1.0
  return np.asarray(fn(grid_n[..., 0], grid_n[..., 1]), np.float64)


def flows_predict_fn(flows: Sequence[outputs.Flow],
                     matrices: Mapping[str, Any],
                     confidences: Mapping[str, ConfidenceFn | float] | None = (
                         None)):
  """A fake model of several named flows, with confidence maps.

  Args:
    flows: the declared flows (the first is the primary one).
    matrices: {flow name: (2, 3) affine map} of every flow's mappings (as
      `affine_predict_fn`).
    confidences: {flow name: map} for flows declaring a 'confidence' extra:
      'confidence_st' on the source grid and 'confidence_ts' on the target
      grid, a function of the grid's normalised `(x_n, y_n)` ((H, W) arrays
      -> (H, W) values in [0, 1]) or a constant; default `tent_confidence`.

  Returns:
    `predict_fn(source, target)` -> flat outputs (`outputs.join`), float64
    numpy: mappings (B, H, W, 2) in model-input pixels, confidences
    (B, H, W).
  """
  flows = outputs.check(flows)
  confidences = dict(confidences or {})
  mapping_fns = {f.name: affine_predict_fn(matrices[f.name]) for f in flows}

  def predict_fn(source: Any, target: Any) -> dict[str, np.ndarray]:
    batch, src_hw, tgt_hw = _shapes(source, target)
    per_flow = {}
    for flow in flows:
      maps = dict(mapping_fns[flow.name](source, target))
      if outputs.CONFIDENCE in flow.extras:
        fn = confidences.get(flow.name, tent_confidence)
        for d, hw in (('st', src_hw), ('ts', tgt_hw)):
          value = _confidence_map(fn, hw)
          maps[f'{outputs.CONFIDENCE}_{d}'] = np.broadcast_to(
              value, (batch,) + value.shape).copy()
      per_flow[flow.name] = maps
    return outputs.join(flows, per_flow)

  return predict_fn
