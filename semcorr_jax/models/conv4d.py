"""4-D convolution on channels-last volumes, with selectable implementations.

`conv4d(x, kernel, bias)` is a stride-1 cross-correlation with "same" zero
padding (k // 2 on each side of each spatial axis):

  out[b, i, j, k, l, o] = bias[o] + sum_{p, q, r, s, c}
      x[b, i+p-k1//2, j+q-k2//2, k+r-k3//2, l+s-k4//2, c]
      * kernel[p, q, r, s, c, o]

with x (B, I, J, K, L, Cin), kernel (k1, k2, k3, k4, Cin, Cout) (odd sizes),
bias (Cout,) and out (B, I, J, K, L, Cout). It is the layer of NCNet's
neighbourhood consensus on a correlation volume (B, Ha, Wa, Hb, Wb, C).

Implementations (`impl`), equal in value and gradient:

  'planes'      (the default) out[:, i, j] = sum_{p, q} conv2d(x[:, i + p - c1,
                j + q - c2], kernel[p, q]): a `lax.scan` over the k1 * k2
                pairs (p, q) in which each step convolves the (B * I * J)-batch
                of (K, L) planes with kernel[p, q] and adds the result, shifted
                along I and J, into a padded accumulator. A hand-written
                backward (one scan sharing each shifted output-gradient slice
                between the input and kernel gradients) keeps only x and the
                kernel. 2-D convolutions are what CPU and GPU libraries run
                fastest: on a 2-core CPU at (1, 12^4, 16), k = 5, forward +
                backward take 0.72 s against 4.0 s (custom_vjp), 16 s (native)
                and 18 s (sequential).
  'native'      one `lax.conv_general_dilated` with four spatial dimensions;
                XLA's backward is two more 4-D convolutions. The least
                memory; slow on CPU, and GPU libraries (cuDNN) have no 4-D
                convolution.
  'sequential'  out[:, i] = sum_p conv3d(x[:, i + p - k1 // 2], kernel[p]): a
                `lax.scan` over p in which each step convolves the whole input
                (B and I folded into the batch of one 3-D convolution) with
                kernel[p] and adds the result, shifted along I, into an
                accumulator padded by k1 // 2; the body is rematerialised
                (`jax.checkpoint`) and autodiff gives the backward pass. No
                shifted copy of the input is made or kept for the backward.
  'custom_vjp'  the same forward with a hand-written backward that keeps only
                x and the kernel: one scan over p takes the p-th shifted slice
                of the output gradient g, adds its 3-D correlation with
                kernel[p] (flipped over k2..k4, in/out swapped) to the input
                gradient and forms the p-th kernel slice's gradient from it and
                x. Memory beyond inputs, outputs and g: a copy of g padded
                along I and one slice of it.

An unrolled Python loop over k1 (as in NCNet's PyTorch code) keeps every
shifted slice for the backward pass; it is deliberately not offered.

Dtypes: x and kernel are promoted to a common dtype and the convolutions run
in it (bfloat16 allowed); products are accumulated in at least float32
(`preferred_element_type`), the result is returned in the common dtype.

Memory
------
Compiled temporary memory (`memory_analysis().temp_size_in_bytes`) of
`jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))` with
loss = sum(conv4d(x, kernel, bias, impl=impl) ** 2), float32,
x (B, 25, 25, 25, 25, 16), kernel (5, 5, 5, 5, 16, 16); x and the output are
25.6 MB each at B = 1. CPU (XLA, jax 0.10.2):

                B = 1       B = 16
  native        100.0 MB    1600.0 MB
  sequential    108.1 MB    1728.1 MB
  custom_vjp    108.6 MB    1728.6 MB
  planes        117.9 MB    1877.1 MB
  (unrolled     325.6 MB    5200.6 MB: five 3-D convolutions of shifted
                slices written as a Python loop, for comparison only)

Produced by `python -m semcorr_jax.models.conv4d [B]`, which prints the
rows for the three implementations.
"""

from __future__ import annotations

import functools
import math
import sys
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from semcorr_jax.errors import SemcorrError

Array = jax.Array

IMPLEMENTATIONS = ('planes', 'native', 'sequential', 'custom_vjp')

# Spatial letters for lax dimension numbers (any letters but N, C, I, O).
_DIMS_4D = ('NWXYZC', 'WXYZIO', 'NWXYZC')
_DIMS_3D = ('NXYZC', 'XYZIO', 'NXYZC')
_DIMS_2D = ('NHWC', 'HWIO', 'NHWC')


def _acc_dtype(dtype: Any) -> Any:
  """Accumulation dtype: at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def _same_padding(sizes) -> list[tuple[int, int]]:
  return [(k // 2, k // 2) for k in sizes]


def _conv3d(x: Array, kernel: Array, acc_dtype: Any) -> Array:
  """(N, J, K, L, Cin) * (k2, k3, k4, Cin, Cout) -> (N, J, K, L, Cout)."""
  return lax.conv_general_dilated(
      x, kernel, (1, 1, 1), _same_padding(kernel.shape[:3]),
      dimension_numbers=_DIMS_3D, preferred_element_type=acc_dtype)


def _conv3d_kernel_grad(x: Array, g: Array, sizes, acc_dtype: Any) -> Array:
  """Gradient of sum(g * conv3d(x, w)) wrt w: (k2, k3, k4, Cin, Cout).

  x (N, J, K, L, Cin), g (N, J, K, L, Cout); a standard-layout convolution
  between explicit transposes, as `_conv2d_kernel_grad`.
  """
  out = lax.conv_general_dilated(
      jnp.transpose(x, (4, 1, 2, 3, 0)), jnp.transpose(g, (1, 2, 3, 0, 4)),
      (1, 1, 1), _same_padding(sizes), dimension_numbers=_DIMS_3D,
      preferred_element_type=acc_dtype)
  return jnp.transpose(out, (1, 2, 3, 0, 4))


def _native(x: Array, kernel: Array) -> Array:
  """One 4-D convolution; result in the accumulation dtype."""
  return lax.conv_general_dilated(
      x, kernel, (1, 1, 1, 1), _same_padding(kernel.shape[:4]),
      dimension_numbers=_DIMS_4D,
      preferred_element_type=_acc_dtype(x.dtype))


def _fold(x: Array) -> Array:
  """(B, I, J, K, L, C) -> (B * I, J, K, L, C), a free reshape."""
  return x.reshape((-1,) + x.shape[2:])


def _pad_first(x: Array, pad: int) -> Array:
  """Zero-pads axis I of (B, I, J, K, L, C) by `pad` on each side."""
  pads = [(0, 0)] * x.ndim
  pads[1] = (pad, pad)
  return jnp.pad(x, pads)


def _sum_of_3d(x: Array, kernel: Array, remat: bool) -> Array:
  """out[:, i] = sum_p conv3d(x[:, i + p - c], kernel[p]), c = k1 // 2.

  A scan over p: each step convolves the whole batch-folded input with
  kernel[p] and adds the result into an accumulator padded by c on both ends
  of I, at offset 2c - p (so x[:, m] lands on out[:, m - p + c]); no shifted
  copy of the input is made. Result in the accumulation dtype.
  """
  b, i, j, k, l, _ = x.shape
  k1, cout = kernel.shape[0], kernel.shape[-1]
  c = k1 // 2
  acc_dtype = _acc_dtype(x.dtype)
  xf = _fold(x)

  def body(acc, p_and_w):
    p, w = p_and_w
    y = _conv3d(xf, w, acc_dtype).reshape(b, i, j, k, l, cout)
    cur = lax.dynamic_slice_in_dim(acc, 2 * c - p, i, axis=1)
    return lax.dynamic_update_slice_in_dim(acc, cur + y, 2 * c - p,
                                           axis=1), None

  if remat:
    body = jax.checkpoint(body)
  acc = jnp.zeros((b, i + 2 * c, j, k, l, cout), acc_dtype)
  acc, _ = lax.scan(body, acc, (jnp.arange(k1), kernel))
  return lax.slice_in_dim(acc, c, c + i, axis=1)


def _sequential(x: Array, kernel: Array) -> Array:
  return _sum_of_3d(x, kernel, remat=True)


def _conv2d(x: Array, kernel: Array, acc_dtype: Any) -> Array:
  """(N, K, L, Cin) * (k3, k4, Cin, Cout) -> (N, K, L, Cout)."""
  return lax.conv_general_dilated(
      x, kernel, (1, 1), _same_padding(kernel.shape[:2]),
      dimension_numbers=_DIMS_2D, preferred_element_type=acc_dtype)


def _conv2d_kernel_grad(x: Array, g: Array, sizes, acc_dtype: Any) -> Array:
  """Gradient of sum(g * conv2d(x, w)) wrt w: (k3, k4, Cin, Cout).

  x (N, K, L, Cin), g (N, K, L, Cout). Written as a standard-layout
  convolution between explicit transposes (Cin plays the batch, N the input
  features): XLA:CPU runs that form about 50x faster inside a loop than the
  same convolution expressed through dimension numbers.
  """
  out = lax.conv_general_dilated(
      jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)),
      (1, 1), _same_padding(sizes), dimension_numbers=_DIMS_2D,
      preferred_element_type=acc_dtype)
  return jnp.transpose(out, (1, 2, 0, 3))


def _plane_offsets(kernel: Array) -> tuple[Array, Array]:
  """(k1 * k2, 2) offsets (p, q) and the matching (k1 * k2, k3, k4, Cin,
  Cout) kernel slices."""
  k1, k2 = kernel.shape[:2]
  offsets = jnp.stack(jnp.meshgrid(jnp.arange(k1), jnp.arange(k2),
                                   indexing='ij'), -1).reshape(-1, 2)
  return offsets, kernel.reshape((k1 * k2,) + kernel.shape[2:])


@jax.custom_vjp
def _planes(x: Array, kernel: Array) -> Array:
  """out[:, i, j] = sum_{p, q} conv2d(x[:, i + p - c1, j + q - c2],
  kernel[p, q]), c = k // 2.

  A scan over the k1 * k2 pairs (p, q): each step convolves the
  (B * I * J)-batch of (K, L) planes with kernel[p, q] and adds the result
  into an accumulator padded along I and J, at offset (2 c1 - p, 2 c2 - q).
  No shifted copy of the input is made. Result in the accumulation dtype.
  """
  b, i, j, k, l, cin = x.shape
  k1, k2, cout = kernel.shape[0], kernel.shape[1], kernel.shape[-1]
  c1, c2 = k1 // 2, k2 // 2
  acc_dtype = _acc_dtype(x.dtype)
  planes = x.reshape(b * i * j, k, l, cin)

  def body(acc, offset_and_w):
    (p, q), w = offset_and_w
    y = _conv2d(planes, w, acc_dtype).reshape(b, i, j, k, l, cout)
    start = (0, 2 * c1 - p, 2 * c2 - q, 0, 0, 0)
    cur = lax.dynamic_slice(acc, start, y.shape)
    return lax.dynamic_update_slice(acc, cur + y, start), None

  acc = jnp.zeros((b, i + 2 * c1, j + 2 * c2, k, l, cout), acc_dtype)
  acc, _ = lax.scan(body, acc, _plane_offsets(kernel))
  return acc[:, c1:c1 + i, c2:c2 + j]


def _planes_fwd(x, kernel):
  return _planes(x, kernel), (x, kernel)


def _planes_bwd(res, g):
  """One scan over (p, q) sharing the shifted output-gradient planes.

  With gs = g[:, m - p + c1, n - q + c2] (zero outside), step (p, q) adds to
  dx the 2-D correlation of gs with kernel[p, q] flipped over (k3, k4) and
  in/out-swapped, and forms dkernel[p, q] from (x, gs).
  """
  x, kernel = res
  b, i, j, k, l, cin = x.shape
  k1, k2 = kernel.shape[:2]
  c1, c2 = k1 // 2, k2 // 2
  acc_dtype = _acc_dtype(x.dtype)
  pads = [(0, 0), (c1, c1), (c2, c2), (0, 0), (0, 0), (0, 0)]
  gp = jnp.pad(g.astype(x.dtype), pads)
  planes = x.reshape(b * i * j, k, l, cin)
  flipped = jnp.swapaxes(jnp.flip(kernel, axis=(2, 3)), 4, 5)

  def body(dx, offset_and_w):
    (p, q), w = offset_and_w
    gs = lax.dynamic_slice(gp, (0, 2 * c1 - p, 2 * c2 - q, 0, 0, 0),
                           g.shape).reshape((b * i * j, k, l, g.shape[-1]))
    dw = _conv2d_kernel_grad(planes, gs, kernel.shape[2:4], acc_dtype)
    return dx + _conv2d(gs, w, acc_dtype), dw.astype(kernel.dtype)

  dx = jnp.zeros(planes.shape, acc_dtype)
  dx, dkernel = lax.scan(body, dx, _plane_offsets(flipped))
  return (dx.reshape(x.shape).astype(x.dtype),
          dkernel.reshape(kernel.shape))


_planes.defvjp(_planes_fwd, _planes_bwd)


@jax.custom_vjp
def _recomputing(x: Array, kernel: Array) -> Array:
  return _sum_of_3d(x, kernel, remat=False)


def _recomputing_fwd(x, kernel):
  return _recomputing(x, kernel), (x, kernel)


def _recomputing_bwd(res, g):
  """One scan over p sharing the shifted output-gradient slice.

  With gs = g[:, m - p + c] (zero outside), the pairs (x[:, m], gs) are the
  3-D convolutions of step p: dkernel[p] is their 3-D kernel gradient and dx
  gains the correlation of gs with kernel[p] flipped over (k2, k3, k4) and
  in/out-swapped.
  """
  x, kernel = res
  i = x.shape[1]
  k1, ks = kernel.shape[0], kernel.shape[1:4]
  c = k1 // 2
  acc_dtype = _acc_dtype(x.dtype)
  gp = _pad_first(g.astype(x.dtype), c)
  xf = _fold(x)
  flipped = jnp.swapaxes(jnp.flip(kernel, axis=(1, 2, 3)), 4, 5)

  def body(dx, p_and_w):
    p, w = p_and_w
    gs = _fold(lax.dynamic_slice_in_dim(gp, 2 * c - p, i, axis=1))
    dw = _conv3d_kernel_grad(xf, gs, ks, acc_dtype).astype(kernel.dtype)
    return dx + _conv3d(gs, w, acc_dtype), dw

  dx = jnp.zeros(xf.shape, acc_dtype)
  dx, dkernel = lax.scan(body, dx, (jnp.arange(k1), flipped))
  return dx.reshape(x.shape).astype(x.dtype), dkernel


_recomputing.defvjp(_recomputing_fwd, _recomputing_bwd)


def _check(x: Array, kernel: Array, bias: Array | None, impl: str) -> None:
  if impl not in IMPLEMENTATIONS:
    raise SemcorrError(f'conv4d: unknown impl {impl!r}; use one of '
                       f'{", ".join(IMPLEMENTATIONS)}.')
  if x.ndim != 6:
    raise SemcorrError(f'conv4d: input must be (B, I, J, K, L, Cin), got shape '
                       f'{tuple(x.shape)}; add the batch and channel axes.')
  if kernel.ndim != 6:
    raise SemcorrError(f'conv4d: kernel must be (k1, k2, k3, k4, Cin, Cout), '
                       f'got shape {tuple(kernel.shape)}.')
  if any(k % 2 == 0 for k in kernel.shape[:4]):
    raise SemcorrError(f'conv4d: kernel sizes {tuple(kernel.shape[:4])} must '
                       f'be odd for "same" padding; use odd sizes such as 3 or '
                       f'5.')
  if kernel.shape[4] != x.shape[-1]:
    raise SemcorrError(f'conv4d: the kernel expects {kernel.shape[4]} input '
                       f'channels but the input has {x.shape[-1]}; make the '
                       f'kernel (k1, k2, k3, k4, {x.shape[-1]}, Cout).')
  if bias is not None and tuple(bias.shape) != (kernel.shape[5],):
    raise SemcorrError(f'conv4d: bias must have shape ({kernel.shape[5]},) '
                       f'(Cout), got {tuple(bias.shape)}.')


def conv4d(x: Array, kernel: Array, bias: Array | None = None, *,
           impl: str = 'planes') -> Array:
  """4-D "same" cross-correlation, stride 1, channels last.

  Args:
    x: (B, I, J, K, L, Cin).
    kernel: (k1, k2, k3, k4, Cin, Cout), odd sizes; padding k // 2.
    bias: optional (Cout,).
    impl: one of IMPLEMENTATIONS (see the module docstring).

  Returns:
    (B, I, J, K, L, Cout) in the common dtype of x and kernel.

  Raises:
    SemcorrError: unknown impl, even kernel size, wrong ranks, channel or
      bias mismatch.
  """
  _check(x, kernel, bias, impl)
  dtype = jnp.result_type(x, kernel)
  x, kernel = x.astype(dtype), kernel.astype(dtype)
  out = {'planes': _planes, 'native': _native, 'sequential': _sequential,
         'custom_vjp': _recomputing}[impl](x, kernel)
  if bias is not None:
    out = out + bias.astype(out.dtype)
  return out.astype(dtype)


class Conv4d(nn.Module):
  """4-D convolution layer (B, I, J, K, L, Cin) -> (B, I, J, K, L, features).

  Parameters 'kernel' (k, k, k, k, Cin, features) and 'bias' (features,), both
  initialised as PyTorch's convolutions: uniform(-1/sqrt(fan_in),
  1/sqrt(fan_in)) with fan_in = Cin * k^4. Parameters are float32; inputs and
  parameters are cast to `dtype` for the computation.
  """
  features: int
  kernel_size: int
  impl: str = 'planes'
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k = self.kernel_size
    if k % 2 == 0:
      raise SemcorrError(f'Conv4d: kernel_size {k} must be odd for "same" '
                         f'padding; use an odd size such as 3 or 5.')
    cin = x.shape[-1]
    bound = 1.0 / math.sqrt(cin * k ** 4)
    init = functools.partial(_uniform, bound=bound)
    kernel = self.param('kernel', init, (k, k, k, k, cin, self.features))
    bias = self.param('bias', init, (self.features,)) if self.use_bias else None
    dtype = jnp.dtype(self.dtype)
    return conv4d(x.astype(dtype), kernel.astype(dtype),
                  None if bias is None else bias.astype(dtype), impl=self.impl)


def _uniform(key: Array, shape, dtype=jnp.float32, *, bound: float) -> Array:
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def _memory_table(batch: int) -> str:
  """Compiled temp memory of value_and_grad at the NCNet PF-PASCAL size."""
  x = jax.ShapeDtypeStruct((batch, 25, 25, 25, 25, 16), jnp.float32)
  kernel = jax.ShapeDtypeStruct((5, 5, 5, 5, 16, 16), jnp.float32)
  bias = jax.ShapeDtypeStruct((16,), jnp.float32)
  lines = []
  for impl in IMPLEMENTATIONS:
    def loss(x, kernel, bias, impl=impl):
      return jnp.sum(conv4d(x, kernel, bias, impl=impl) ** 2)
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    mem = step.lower(x, kernel, bias).compile().memory_analysis()
    lines.append(f'  {impl:<12}  {mem.temp_size_in_bytes / 1e6:8.1f} MB temp')
  return '\n'.join(lines)


if __name__ == '__main__':
  print(_memory_table(int(sys.argv[1]) if len(sys.argv) > 1 else 1))
