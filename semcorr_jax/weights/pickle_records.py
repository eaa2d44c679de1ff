"""Inert records: objects of a pickle kept as data, never built.

Training checkpoints hold more than tensors: an `argparse.Namespace` of the
run's flags, numpy scalars and arrays (losses), optimiser and scheduler state
(a `collections.Counter` of milestones). Building those objects means
calling whatever the pickle names, so the restricted unpickler
(`torch_pickle`) refuses them by default. In its opt-in inert mode
(`inert_globals=True`) every global outside its allowlist instead resolves to
a fresh stand-in class that records how the pickle uses it:

* called (REDUCE, NEWOBJ, INST/OBJ) -> an `InertRecord` with the global's
  dotted name and the arguments, as data;
* given state (BUILD), items (SETITEMS) or list items (APPENDS) -> stored on
  the record;
* only referenced -> an `InertRecord` with `called=False`.

Nothing the pickle names is imported, looked up or called, and no
`__reduce__`, `__setstate__` or constructor of any real class runs; a
malicious pickle (`os.system` via REDUCE, `builtins.eval`, ...) yields
records holding its arguments as strings. Stand-in classes refuse to be
modified (BUILD or attribute writes on a class raise `UnsafePickleError`).

Helpers read records as values without calling anything:

  ckpt = read_torch_checkpoint('ncnet_pfpascal.pth.tar', inert_globals=True)
  ckpt['args'].name                 # 'argparse.Namespace'
  ckpt['args'].fields()['ncons_channels']   # [16, 16, 1]
  numpy_value(ckpt['best_test_loss'])       # np.float64(...)

and `record_of` makes records from real objects, which `save_torch_file`
writes as the pickle of the original object (for tests of importers).
"""

from __future__ import annotations

import argparse
import collections
import math
import re
from typing import Any

import numpy as np

from semcorr_jax.errors import SemcorrError

# numpy modules that hold `scalar` and `_reconstruct` (numpy < 2, numpy 2),
# and `_frombuffer` (arrays under pickle protocol 5).
NUMPY_MULTIARRAY = ('numpy.core.multiarray', 'numpy._core.multiarray')
NUMPY_NUMERIC = ('numpy.core.numeric', 'numpy._core.numeric')
# Plain numeric dtypes (bool, int, uint, float, complex) with their size.
_NUMERIC = re.compile(r'[biufc]\d{1,2}')


class UnsafePickleError(SemcorrError):
  """The file's pickle refers to a global outside the tensor allowlist."""


class InertRecord:
  """A pickled object that was not built: its global's name and data.

  Attributes:
    name: the global's dotted name, e.g. 'argparse.Namespace'.
    args: positional arguments the pickle called it with (a tuple).
    kwargs: keyword arguments (NEWOBJ_EX), a dict.
    state: what BUILD would have passed to `__setstate__` (None: no BUILD).
    items: {key: value} the pickle set (SETITEMS), or None.
    list_items: values the pickle appended (APPENDS), or None.
    called: False for a bare reference to the global (e.g. a class passed as
      an argument).
    newobj: created by NEWOBJ (`cls.__new__(cls, *args)`), not by a call.
  """
  __slots__ = ('name', 'args', 'kwargs', 'state', 'items', 'list_items',
               'called', 'newobj')

  def __init__(self, name: str, args: tuple = (), kwargs=None, *,
               state=None, items=None, list_items=None, called: bool = True,
               newobj: bool = False):
    self.name, self.args, self.kwargs = name, tuple(args), dict(kwargs or {})
    self.state, self.items, self.list_items = state, items, list_items
    self.called, self.newobj = called, newobj

  # Pickle protocol hooks: they only store data.
  def __setstate__(self, state) -> None:
    self.state = state

  def __setitem__(self, key, value) -> None:
    if self.items is None:
      self.items = {}
    self.items[key] = value

  def append(self, value) -> None:
    if self.list_items is None:
      self.list_items = []
    self.list_items.append(value)

  def extend(self, values) -> None:
    for value in values:
      self.append(value)

  add = append  # ADDITEMS (sets)

  def fields(self) -> dict:
    """The attributes a BUILD would have set: `state` as a dict.

    E.g. an `argparse.Namespace`'s flags. `state` may be a dict, or a
    (dict, slots dict) pair; anything else gives {}.
    """
    state = self.state
    if isinstance(state, dict):
      return dict(state)
    if isinstance(state, tuple) and len(state) == 2:
      out = {}
      for part in state:
        if isinstance(part, dict):
          out.update(part)
      return out
    return {}

  def _key(self):
    return (self.name, self.args, self.kwargs, self.state, self.items,
            self.list_items, self.called, self.newobj)

  def __eq__(self, other):
    if not isinstance(other, InertRecord):
      return NotImplemented
    return _equal(self._key(), other._key())

  __hash__ = object.__hash__

  def __repr__(self) -> str:
    if not self.called:
      return f'InertRecord({self.name!r}, called=False)'
    parts = [repr(self.name)]
    if self.args:
      parts.append(f'args={_short(self.args)}')
    for field in ('kwargs', 'state', 'items', 'list_items'):
      value = getattr(self, field)
      if value:
        parts.append(f'{field}={_short(value)}')
    return f'InertRecord({", ".join(parts)})'


def _short(value, limit: int = 200) -> str:
  text = repr(value)
  return text if len(text) <= limit else text[:limit - 3] + '...'


def _equal(a, b) -> bool:
  """Equality that compares numpy arrays by value (in nested containers)."""
  if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
            and a.dtype == b.dtype and np.array_equal(a, b))
  if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
    return (type(a) is type(b) and len(a) == len(b)
            and all(_equal(x, y) for x, y in zip(a, b)))
  if isinstance(a, dict) and isinstance(b, dict):
    return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
  return a == b


class _InertMeta(type):
  """Metaclass of the stand-in classes: calling one makes a record."""

  def __call__(cls, *args, **kwargs):  # REDUCE, INST, OBJ
    return InertRecord(cls.inert_name, args, kwargs)

  def __setattr__(cls, name, value):
    raise UnsafePickleError(f'its pickle modifies {cls.inert_name}')

  def __setstate__(cls, state):  # BUILD on a class
    raise UnsafePickleError(f'its pickle sets the state of {cls.inert_name}')


class _InertClass(metaclass=_InertMeta):
  """Base of the stand-ins; `cls.__new__` is what NEWOBJ calls."""
  __slots__ = ()
  inert_name = ''

  def __new__(cls, *args, **kwargs):
    return InertRecord(cls.inert_name, args, kwargs, newobj=True)


def inert_global(module: str, name: str) -> type:
  """A fresh stand-in for the global `module.name` (nothing is imported)."""
  return _InertMeta('InertGlobal', (_InertClass,),
                    {'__slots__': (), 'inert_name': f'{module}.{name}'})


def is_inert_global(obj) -> bool:
  return isinstance(obj, _InertMeta)


def as_record(obj):
  """A stand-in class as an uncalled `InertRecord`; anything else as is."""
  if isinstance(obj, _InertMeta):
    return InertRecord(obj.inert_name, called=False)
  return obj


# --- numpy scalars and arrays, read and written as data. ---


def _numpy_name(record, name: str, modules=NUMPY_MULTIARRAY) -> bool:
  return (isinstance(record, InertRecord) and record.called and
          record.name in {f'{m}.{name}' for m in modules})


def _array(data, shape, dtype_record, order: str) -> np.ndarray:
  dtype = _dtype(dtype_record)
  if isinstance(data, bytearray):
    data = bytes(data)
  if (not isinstance(shape, tuple) or not all(
      isinstance(n, int) and n >= 0 for n in shape)
      or not isinstance(data, bytes)
      or len(data) != math.prod(shape) * dtype.itemsize):
    raise SemcorrError(f'a numpy array record of shape {shape!r} with '
                       'inconsistent data')
  array = np.frombuffer(data, dtype).reshape(shape, order=order)
  return np.ascontiguousarray(array, dtype.newbyteorder('='))


def _dtype(record) -> np.dtype:
  """The dtype of a pickled `numpy.dtype(code, False, True)` record."""
  if (not isinstance(record, InertRecord) or record.name != 'numpy.dtype'
      or not record.args or not isinstance(record.args[0], str)
      or not _NUMERIC.fullmatch(record.args[0])):
    raise SemcorrError(f'not a plain numeric numpy dtype: {record!r}')
  dtype = np.dtype(record.args[0])
  state = record.state
  if isinstance(state, tuple) and len(state) > 1 and state[1] in '<>':
    dtype = dtype.newbyteorder(state[1])
  if isinstance(state, tuple) and len(state) > 3 and state[3] is not None:
    raise SemcorrError('structured numpy dtypes are not supported')
  return dtype


def numpy_value(record):
  """A pickled numpy scalar or array (an `InertRecord`) as its value.

  Decoded from the recorded dtype code, shape and bytes; nothing is called.

  Returns:
    A numpy scalar (e.g. `np.float64`) or a C-contiguous array, native byte
    order.

  Raises:
    SemcorrError: not a numpy scalar/array record of a plain numeric dtype,
      or inconsistent sizes.
  """
  if _numpy_name(record, 'scalar') and len(record.args) == 2:
    dtype = _dtype(record.args[0])
    data = record.args[1]
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
      raise SemcorrError(f'a numpy {dtype} scalar with {len(data)} bytes')
    return np.frombuffer(data, dtype)[0].astype(dtype.newbyteorder('='))
  if _numpy_name(record, '_reconstruct'):
    state = record.state
    if not (isinstance(state, tuple) and len(state) == 5):
      raise SemcorrError(f'not a pickled numpy array: {record!r}')
    _, shape, dtype, fortran, data = state
    return _array(data, shape, dtype, 'F' if fortran else 'C')
  if _numpy_name(record, '_frombuffer', NUMPY_NUMERIC) and len(
      record.args) == 4 and record.args[3] in ('C', 'F'):
    data, dtype, shape, order = record.args
    return _array(data, shape, dtype, order)
  raise SemcorrError(f'not a pickled numpy scalar or array: {record!r}')


def _dtype_record(dtype: np.dtype) -> InertRecord:
  if dtype.kind not in 'biufc':
    raise SemcorrError(f'numpy dtype {dtype} is not a plain numeric dtype')
  order = dtype.byteorder if dtype.itemsize > 1 else '|'
  order = {'=': '<', '|': '|'}.get(order, order)
  code = f'{dtype.kind}{dtype.itemsize}'
  return InertRecord('numpy.dtype', (code, False, True),
                     state=(3, order, None, None, None, -1, -1, 0))


def numpy_record(value, module: str = 'numpy.core.multiarray'
                 ) -> InertRecord:
  """The record numpy's own pickling makes of a scalar or an array.

  Args:
    value: a numpy scalar (`np.float64(0.5)`) or array of a plain numeric
      dtype.
    module: where `scalar` / `_reconstruct` live in the pickle ('numpy.core.
      multiarray' as numpy < 2 wrote, or 'numpy._core.multiarray').
  """
  if isinstance(value, np.generic):
    dtype = value.dtype
    return InertRecord(f'{module}.scalar',
                       (_dtype_record(dtype), value.tobytes()))
  array = np.ascontiguousarray(value)
  dtype = array.dtype
  ndarray = InertRecord(module.split('.')[0] + '.ndarray', called=False)
  return InertRecord(
      f'{module}._reconstruct', (ndarray, (0,), b'b'),
      state=(1, array.shape, _dtype_record(dtype), False,
             array.tobytes()))


def record_of(value: Any):
  """The record pickling `value` makes, for the non-tensor objects training
  checkpoints hold; other values are returned unchanged.

  * `argparse.Namespace` -> NEWOBJ of 'argparse.Namespace' with its
    attributes as state;
  * `collections.Counter` -> 'collections.Counter' called with a dict.

  (numpy scalars and arrays: `numpy_record`, explicitly, since writers
  take numpy values for tensors.)
  """
  if isinstance(value, argparse.Namespace):
    return InertRecord('argparse.Namespace', newobj=True, state=vars(value))
  if isinstance(value, collections.Counter):
    return InertRecord('collections.Counter', (dict(value),))
  return value
