"""Tests for the 4-D convolution (models/conv4d.py).

The oracle is a direct float64 numpy loop over the kernel offsets: the value
as a sum of shifted slices, the gradients by scattering each offset's
contribution back (not by a flipped kernel), so it shares no code or
derivation with the implementations under test.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import conv4d as conv4d_lib

SHAPE = (2, 5, 4, 3, 6)  # (B, I, J, K, L), odd and non-square.
CIN, COUT = 2, 3


def _offsets(kernel_shape):
  return itertools.product(*(range(k) for k in kernel_shape[:4]))


def _pad(x, kernel_shape):
  pads = [(0, 0)] + [(k // 2, k // 2) for k in kernel_shape[:4]] + [(0, 0)]
  return np.pad(x, pads)


def _window(xp, offset, spatial):
  return xp[(slice(None),) + tuple(slice(o, o + n) for o, n in
                                   zip(offset, spatial))]


def _oracle(x, w, b, g):
  """Value and gradients (dx, dw, db) of sum(g * conv4d(x, w, b)), float64."""
  x, w, b, g = (np.asarray(a, np.float64) for a in (x, w, b, g))
  spatial = x.shape[1:5]
  xp = _pad(x, w.shape)
  out = np.zeros(x.shape[:5] + (w.shape[-1],)) + b
  dxp = np.zeros_like(xp)
  dw = np.zeros_like(w)
  for off in _offsets(w.shape):
    win = _window(xp, off, spatial)
    out += np.einsum('bijklc,co->bijklo', win, w[off])
    dw[off] = np.einsum('bijklc,bijklo->co', win, g)
    _window(dxp, off, spatial)[...] += np.einsum('bijklo,co->bijklc', g,
                                                 w[off])
    
  crop = (slice(None),) + tuple(slice(k // 2, k // 2 + n) for k, n in
                                zip(w.shape[:4], spatial))
  return out, dxp[crop], dw, g.sum(axis=(0, 1, 2, 3, 4))


def _data(kernel_shape, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(SHAPE + (CIN,)).astype(np.float32)
  w = rng.standard_normal(kernel_shape).astype(np.float32)
  w /= np.sqrt(np.prod(kernel_shape[:5]))
  b = rng.standard_normal(kernel_shape[-1]).astype(np.float32)
  g = rng.standard_normal(SHAPE + (kernel_shape[-1],)).astype(np.float32)
  return x, w, b, g


@pytest.mark.parametrize('impl', conv4d_lib.IMPLEMENTATIONS)
@pytest.mark.parametrize('kernel_shape', [
    (3, 3, 3, 3, CIN, COUT), (5, 5, 5, 5, CIN, COUT), (3, 1, 5, 3, CIN, COUT)])
def test_values_and_gradients_equal_the_loop(impl, kernel_shape):
  x, w, b, g = _data(kernel_shape)

  @jax.jit
  def value_and_vjp(x, w, b, g):
    out, vjp = jax.vjp(
        lambda x, w, b: conv4d_lib.conv4d(x, w, b, impl=impl), x, w, b)
    return (out,) + vjp(g)

  got = value_and_vjp(x, w, b, g)
  want = _oracle(x, w, b, g)
  for name, a, e in zip(('out', 'dx', 'dkernel', 'dbias'), got, want):
    assert a.shape == e.shape, name
    assert a.dtype == jnp.float32, name
    np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4, err_msg=name)


def test_without_bias_and_in_bfloat16():
  x, w, _, _ = _data((3, 3, 3, 3, CIN, COUT), seed=1)
  want = _oracle(x, w, np.zeros(COUT), np.zeros(SHAPE + (COUT,)))[0]
  for impl in conv4d_lib.IMPLEMENTATIONS:
    out = jax.jit(lambda x, w, impl=impl: conv4d_lib.conv4d(x, w, impl=impl))(
        x, w)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4, err_msg=impl)
    xb, wb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
    loss = lambda x, w, impl=impl: jnp.sum(
        conv4d_lib.conv4d(x, w, impl=impl).astype(jnp.float32))
    (dx, dw) = jax.jit(jax.grad(loss, argnums=(0, 1)))(xb, wb)
    out = conv4d_lib.conv4d(xb, wb, impl=impl)
    assert (out.dtype, dx.dtype, dw.dtype) == (jnp.bfloat16,) * 3, impl
    np.testing.assert_allclose(np.asarray(out, np.float32), want, rtol=0.05,
                               atol=0.05, err_msg=impl)


def test_module_init_and_call():
  k, cin, cout = 3, 4, 16
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 4, 3, 5, cin))
  module = conv4d_lib.Conv4d(features=cout, kernel_size=k, impl='sequential')
  params = module.init(jax.random.PRNGKey(1), x)['params']
  w, b = np.asarray(params['kernel']), np.asarray(params['bias'])
  assert w.shape == (k, k, k, k, cin, cout) and b.shape == (cout,)
  bound = 1 / np.sqrt(cin * k ** 4)
  # PyTorch's default: uniform(-bound, bound) for the weight and the bias.
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
  np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.05)
  assert np.abs(b).max() <= bound and np.abs(b).max() > 0.3 * bound
  assert not np.allclose(b, b[0])
  out = module.apply({'params': params}, x)
  np.testing.assert_allclose(out, conv4d_lib.conv4d(x, w, b), rtol=1e-5,
                             atol=1e-5)
  no_bias = conv4d_lib.Conv4d(features=cout, kernel_size=k, use_bias=False)
  assert set(no_bias.init(jax.random.PRNGKey(1), x)['params']) == {'kernel'}


@pytest.mark.parametrize('kernel_shape, bias_shape, impl, match', [
    ((3, 3, 3, 3, CIN, COUT), (COUT,), 'loop', 'unknown impl'),
    ((3, 4, 3, 3, CIN, COUT), (COUT,), 'native', 'must be odd'),
    ((3, 3, 3, 3, CIN + 1, COUT), (COUT,), 'native', 'input channels'),
    ((3, 3, 3, 3, CIN, COUT), (COUT + 1,), 'native', 'bias must have shape'),
    ((3, 3, 3, CIN, COUT), (COUT,), 'native', 'kernel must be'),
])
def test_errors(kernel_shape, bias_shape, impl, match):
  x = jnp.zeros(SHAPE + (CIN,))
  with pytest.raises(SemcorrError, match=match):
    conv4d_lib.conv4d(x, jnp.zeros(kernel_shape), jnp.zeros(bias_shape),
                      impl=impl)
  with pytest.raises(SemcorrError, match='input must be'):
    conv4d_lib.conv4d(x[0], jnp.zeros((3, 3, 3, 3, CIN, COUT)))
  with pytest.raises(SemcorrError, match='must be odd'):
    conv4d_lib.Conv4d(features=2, kernel_size=4).init(jax.random.PRNGKey(0), x)


def test_backward_keeps_no_stack_of_shifted_slices():
  # An unrolled loop over k1 = 5 shifted slices needs ~12.6x the input here.
  x = jax.ShapeDtypeStruct((2, 9, 9, 9, 9, 4), jnp.float32)
  w = jax.ShapeDtypeStruct((5, 5, 5, 5, 4, 4), jnp.float32)
  for impl in conv4d_lib.IMPLEMENTATIONS:
    loss = lambda x, w, impl=impl: jnp.sum(
        conv4d_lib.conv4d(x, w, impl=impl) ** 2)
    step = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile()
    temp = step.memory_analysis().temp_size_in_bytes
    assert temp < 7 * 2 * 9 ** 4 * 4 * 4, (impl, temp)
