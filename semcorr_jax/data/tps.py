"""Thin-plate-spline warps on normalised coordinates, as TensorFlow ops.

weakalign's TPS (reference-facts.md §A.6): a 3x3 regular control grid P on
[-1, 1]^2 whose points move to targets P', kernel U(r) = r^2 log r^2, no
regularisation, solved exactly. S maps OUTPUT normalised coordinates to INPUT
sampling coordinates (S(P_i) = P'_i), like `affine_grid` (see warps.py).

Coefficients c (12, 2): rows 0-8 kernel weights W, row 9 the constant, rows
10-11 the linear part, so S(p) = U(|p - P|^2) @ W + c[9] + p @ c[10:], with
U written on d = r^2 as d log d.

The inverse has no closed form: `inverse` solves it by Newton's method,
coarse to fine (accuracy in its docstring).
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

# weakalign's 3x3 regular control grid on [-1, 1]^2 (x varies fastest).
CONTROL_POINTS = np.stack(np.meshgrid(*[np.linspace(-1.0, 1.0, 3)] * 2),
                          -1).reshape(9, 2)
_SCALES = (1.0, 0.75, 0.5, 0.25)  # Tried in turn to avoid folds.
_MIN_JACOBIAN_DET = 0.2
NEWTON_ITERATIONS = 6  # On the coarse grid; two more at full resolution.


def _system_inverse() -> np.ndarray:
  """(12, 12) float64 inverse of the TPS system [[K, P], [P^T, 0]]."""
  p = CONTROL_POINTS
  d = ((p[:, None, :] - p[None, :, :])**2).sum(-1)
  p1 = np.concatenate([np.ones((9, 1)), p], axis=1)
  system = np.zeros((12, 12))
  system[:9, :9] = d * np.log(np.where(d > 0, d, 1.0))
  system[:9, 9:], system[9:, :9] = p1, p1.T
  return np.linalg.inv(system)


# The control points are fixed, so the exact solve is one matrix product.
_SOLVE = _system_inverse()[:, :9]  # (12, 9): targets -> coefficients.
_IDENTITY = (_SOLVE @ CONTROL_POINTS).astype(np.float32)
# d_i = |p|^2 - 2 p.P_i + |P_i|^2 as one matmul of [x, y, |p|^2, 1] by _LIFT.
_LIFT = np.concatenate([-2.0 * CONTROL_POINTS.T, np.ones((1, 9)),
                        (CONTROL_POINTS.T**2).sum(0, keepdims=True)
                       ]).astype(np.float32)
_DET_GRID = np.stack(np.meshgrid(*[np.linspace(-1, 1, 9)] * 2),
                     -1).reshape(-1, 2).astype(np.float32)
_COARSE_SIZE, _COARSE_EXTENT = 65, 1.6
_COARSE_GRID = np.stack(np.meshgrid(
    *[np.linspace(-_COARSE_EXTENT, _COARSE_EXTENT, _COARSE_SIZE)] * 2),
                        -1).reshape(-1, 2).astype(np.float32)


@functools.lru_cache(maxsize=4)
def grid_kernel(height: int, width: int) -> np.ndarray:
  """(H * W, 9) float32 kernel terms U(d) = d log d of the pixel grid.

  The output grid is fixed, so S on it is one small matmul with this numpy
  constant (see `apply`).
  """
  ys, xs = np.mgrid[:height, :width].astype(np.float64)
  grid = np.stack([2.0 * xs / max(width - 1, 1) - 1.0,
                   2.0 * ys / max(height - 1, 1) - 1.0], -1).reshape(-1, 1, 2)
  d = ((grid - CONTROL_POINTS)**2).sum(-1)
  return (d * np.log(np.maximum(d, 1e-20))).astype(np.float32)


# Coefficients c (12, 2): rows 0-8 kernel weights W, 9 constant, 10-11 linear,
# so S(p) = U(|p - P|^2) @ W + c[9] + p @ c[10:], with U(d) = d log d (= r^2
# log r^2, weakalign's kernel).


def coefficients_for(target_points) -> tf.Tensor:
  """Exact TPS through the control grid: S(P_i) = target_points[i], (12, 2)."""
  return tf.cast(tf.matmul(_SOLVE, tf.cast(target_points, tf.float64)),
                 tf.float32)


def _features(points):
  """Kernel terms at points (N, 2): d log d (N, 9) and log d (N, 9)."""
  feats = tf.concat([points, tf.reduce_sum(tf.square(points), -1, True),
                     tf.ones_like(points[:, :1])], axis=-1)
  sq_dist = tf.maximum(tf.matmul(feats, _LIFT), 1e-20)
  log_d = tf.math.log(sq_dist)
  return sq_dist * log_d, log_d


def apply(coefficients, points, kernel=None) -> tf.Tensor:
  """S(points) for points (N, 2) normalised -> (N, 2).

  Args:
    coefficients: (12, 2) TPS coefficients.
    points: (N, 2) normalised points.
    kernel: optional precomputed U(|points - P|^2) (N, 9), e.g. for a fixed
      pixel grid, which turns S into one small matmul.
  """
  weights, const, linear = tf.split(coefficients, [9, 1, 2])
  if kernel is None:
    kernel, _ = _features(points)
  return tf.matmul(kernel, weights) + const + tf.matmul(points, linear)


def _jacobian_block(weights):
  """(18, 8) B: [d log d, log d + 1] @ B = [U @ W, L @ W, L @ (W * P)]."""
  # Column 2 c + k of `right` is W[:, c] * P[:, k].
  right = tf.reshape(weights[:, :, None] *
                     CONTROL_POINTS[:, None, :].astype(np.float32), (9, 4))
  return (tf.pad(weights, [[0, 9], [0, 6]]) +
          tf.pad(tf.concat([weights, right], 1), [[9, 0], [2, 0]]))


def value_and_jacobian(coefficients, points, block=None):
  """S(points) (N, 2) and its Jacobian (N, 2, 2), [n, c, k] = dS_c/dp_k.

  dU_i/dp = 2 (p - P_i)(log d_i + 1), so with L = log d + 1:
  dS_c/dp_k = c[10 + k, c] + 2 (p_k (L @ W)_c - (L @ (W_c * P_k))), one matmul.
  """
  weights, const, linear = tf.split(coefficients, [9, 1, 2])
  if block is None:
    block = _jacobian_block(weights)
  kernel, log_d = _features(points)
  out = tf.matmul(tf.concat([kernel, log_d + 1.0], -1), block)  # (N, 8)
  parts = tf.split(out, [2, 2, 4], axis=1)
  value = parts[0] + const + tf.matmul(points, linear)
  jac = tf.transpose(linear) + 2.0 * (parts[1][:, :, None] * points[:, None, :]
                                      - tf.reshape(parts[2], (-1, 2, 2)))
  return value, jac


def _det2(jac):
  a, b, c, d = tf.unstack(tf.reshape(jac, (-1, 4)), axis=1)
  return a * d - b * c


def min_jacobian_det(coefficients) -> tf.Tensor:
  """Smallest Jacobian determinant of S on a 9x9 grid over [-1, 1]^2."""
  return tf.reduce_min(_det2(value_and_jacobian(coefficients,
                                                     _DET_GRID)[1]))


def from_offsets(offsets) -> tf.Tensor:
  """TPS moving the control points by offsets (9, 2), fold-free (see below)."""
  # Coefficients and Jacobians are linear in the offsets: J(s) = I + s J_step.
  step = tf.matmul(_SOLVE.astype(np.float32), offsets)
  _, jac = value_and_jacobian(step, _DET_GRID)
  scales = np.float32(_SCALES)
  dets = _det2(np.eye(2, dtype=np.float32) + scales[:, None, None, None] * jac)
  ok = tf.reduce_min(tf.reshape(dets, (len(scales), -1)), 1) > (
      _MIN_JACOBIAN_DET)
  return _IDENTITY + tf.reduce_max(tf.where(ok, scales, 0.0)) * step


def random_tps(seed, std: float) -> tf.Tensor:
  """weakalign's random TPS: control grid targets P + U(-std, std).

  To avoid folded (non-invertible) warps the offsets are scaled by the largest
  of 1, 0.75, 0.5, 0.25 whose Jacobian determinant stays > 0.2 on [-1, 1]^2
  (identity if none does); at std 0.4 about 1 draw in 5 is scaled.

  Returns:
    (12, 2) float32 coefficients (see the module docstring).
  """
  return from_offsets(tf.random.stateless_uniform(
      (9, 2), seed, minval=-std, maxval=std, alg='philox'))


def _interpolate(values, at):
  """Bilinear lookup of values (S, S, C) at grid coords (N, 2) in [0, S-1]."""
  size = values.shape[0]
  corner = tf.minimum(tf.floor(at), size - 2.0)
  wx, wy = tf.unstack(at - corner, axis=1)
  base = tf.reduce_sum(tf.cast(corner, tf.int32) * [1, size], axis=1)
  taps = tf.gather(tf.reshape(values, (size * size, -1)),
                   base[:, None] + np.int32([0, 1, size, size + 1]))
  weight = tf.stack([(1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy,
                     wx * wy], axis=-1)
  return tf.reduce_sum(weight[:, :, None] * taps, axis=1)


def _newton(coefficients, targets, x, iterations: int):
  """`iterations` Newton steps on S(x) = targets from x; (N, 2) each."""
  block = _jacobian_block(coefficients[:9])

  def step(i, x):
    value, jac = value_and_jacobian(coefficients, x, block)
    r0, r1 = tf.unstack(targets - value, axis=1)
    a, b, c, d = tf.unstack(tf.reshape(jac, (-1, 4)), axis=1)
    det = a * d - b * c
    det = tf.where(tf.abs(det) < 1e-6, 1e-6, det)
    dx = tf.stack([d * r0 - b * r1, a * r1 - c * r0], -1) / det[:, None]
    # Capped steps and a bounded x: points with no pre-image cannot blow up.
    dx = tf.clip_by_norm(dx, 0.5, axes=[1])
    return i + 1, tf.clip_by_value(x + dx, -4.0, 4.0)

  return tf.while_loop(lambda i, _: i < iterations, step, (0, x))[1]


def inverse(coefficients, targets, iterations: int = NEWTON_ITERATIONS):
  """Solves S(x) = targets, coarse to fine.

  S^-1 is first solved on a 65x65 grid over [-1.6, 1.6]^2 (which holds
  S([-1, 1]^2) for std <= 0.4) by `iterations` Newton steps from the inverse
  of the affine part; its bilinear interpolation starts two Newton steps at
  the targets (measured at 320 px: max error 7e-4 px over 100 draws, and
  every point of [-1, 1]^2 solved to a residual of 0.01 px).

  Args:
    coefficients: (12, 2) TPS coefficients.
    targets: (N, 2) normalised points q.
    iterations: Newton steps on the coarse grid.

  Returns:
    x (N, 2) and the residual max-norm |S(x) - q| (N,), both normalised.
  """
  _, const, linear = tf.split(coefficients, [9, 1, 2])
  start = tf.matmul(_COARSE_GRID - const, tf.linalg.inv(linear))
  coarse = _newton(coefficients, _COARSE_GRID, start, iterations)
  at = tf.clip_by_value(
      (targets + _COARSE_EXTENT) * ((_COARSE_SIZE - 1) / (2 * _COARSE_EXTENT)),
      0.0, _COARSE_SIZE - 1.0)
  x = _interpolate(tf.reshape(coarse, (_COARSE_SIZE, _COARSE_SIZE, 2)), at)
  x = _newton(coefficients, targets, x, 2)
  residual = tf.reduce_max(tf.abs(apply(coefficients, x) - targets), -1)
  return x, residual
