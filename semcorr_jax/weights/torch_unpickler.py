"""The restricted unpickler behind `torch_pickle`: stand-ins, not objects.

Only these globals resolve, each to a fresh inert stand-in that a pickle
cannot modify (its BUILD opcode raises): `collections.OrderedDict`, the
tensor/parameter rebuild functions of `torch._utils`, the `torch.*Storage`
classes, torch dtypes, `torch.Size` and `_codecs.encode` (bytes under
protocol 2). Any other global raises `UnsafePickleError` naming it, before
anything it names can run; with `inert=True` it becomes a
`pickle_records` stand-in instead (an `InertRecord` once called). Storages
are persistent ids ('storage', <torch.XStorage>, key, location, numel[,
view]) collected while unpickling; `resolve` then turns every `Tensor` into
a bounds-checked numpy array.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
import functools
import math
import pickle

import ml_dtypes  # bfloat16 / float8 numpy dtypes (installed with jax)
import numpy as np

from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import pickle_records
from semcorr_jax.weights import torch_limits
from semcorr_jax.weights.pickle_records import InertRecord
from semcorr_jax.weights.pickle_records import UnsafePickleError

# Legacy typed-storage class -> numpy dtype name (ml_dtypes for bfloat16).
_STORAGE_DTYPES = {
    'DoubleStorage': 'float64', 'FloatStorage': 'float32',
    'HalfStorage': 'float16', 'BFloat16Storage': 'bfloat16',
    'LongStorage': 'int64', 'IntStorage': 'int32', 'ShortStorage': 'int16',
    'CharStorage': 'int8', 'ByteStorage': 'uint8', 'BoolStorage': 'bool',
    'ComplexFloatStorage': 'complex64', 'ComplexDoubleStorage': 'complex128',
    'UntypedStorage': 'uint8',
}
# torch dtype globals (as `_rebuild_tensor_v3` writes them), numpy names.
_TORCH_DTYPES = (
    'float64', 'float32', 'float16', 'bfloat16', 'int64', 'int32', 'int16',
    'int8', 'uint8', 'uint16', 'uint32', 'uint64', 'bool', 'complex64',
    'complex128', 'float8_e4m3fn', 'float8_e5m2', 'float8_e4m3fnuz',
    'float8_e5m2fnuz')


def _np_dtype(name: str) -> np.dtype:
  if name == 'bfloat16' or name.startswith('float8'):
    return np.dtype(getattr(ml_dtypes, name))
  return np.dtype(name)


class _Inert:
  """Base of the stand-ins: a pickle's BUILD opcode may not modify them."""
  __slots__ = ()

  def __setstate__(self, state):
    raise UnsafePickleError('its pickle sets the state of a '
                            f'{type(self).__name__[1:]}')


class _Call(_Inert):
  """An allowlisted callable, fresh per reference (nothing shared)."""
  __slots__ = ('fn',)

  def __init__(self, fn):
    self.fn = fn

  def __call__(self, *args):
    return self.fn(*args)


class _StorageType(_Inert):
  """Stand-in for a `torch.XStorage` class: only carries the dtype."""
  __slots__ = ('dtype',)

  def __init__(self, name: str):
    self.dtype = _np_dtype(_STORAGE_DTYPES[name])


class _DType(_Inert):
  """Stand-in for a torch dtype global such as `torch.uint16`."""
  __slots__ = ('dtype',)

  def __init__(self, name: str):
    self.dtype = _np_dtype(name)


class Storage(_Inert):
  """A storage: `nbytes` bytes at `offset` of the root storage `key`."""
  __slots__ = ('key', 'dtype', 'nbytes', 'offset')

  def __init__(self, key: str, dtype: np.dtype, nbytes: int, offset: int = 0):
    self.key, self.dtype, self.nbytes, self.offset = key, dtype, nbytes, offset


class Tensor(_Inert):
  """A tensor waiting for its storage's bytes."""
  __slots__ = ('storage', 'dtype', 'offset', 'size', 'stride')

  def __init__(self, storage, offset, size, stride, dtype=None, metadata=None):
    if not isinstance(storage, Storage):
      raise SemcorrError('a tensor in the pickle has no storage')
    if metadata and any(metadata.values()):
      raise SemcorrError(f'tensors with conj/neg bits ({metadata}) are not '
                         'supported; save .resolve_conj().resolve_neg()')
    self.storage = storage
    self.dtype = storage.dtype if dtype is None else dtype.dtype
    self.offset, self.size, self.stride = offset, tuple(size), tuple(stride)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None):
  """`_rebuild_tensor` and `_rebuild_tensor_v2` (which adds the rest)."""
  del requires_grad, backward_hooks  # Autograd state; not weights.
  return Tensor(storage, offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks,
                       dtype, metadata=None):
  del requires_grad, hooks
  if not isinstance(dtype, _DType):
    raise SemcorrError('_rebuild_tensor_v3 without a torch dtype')
  return Tensor(storage, offset, size, stride, dtype, metadata)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None,
                       state=None):
  del requires_grad, backward_hooks, state  # A Parameter is its tensor here.
  return data


def _encode(text, encoding='latin1'):
  """`_codecs.encode` as protocol 2 uses it for bytes objects."""
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
    raise SemcorrError('unexpected _codecs.encode call in the pickle')
  return text.encode('latin1')


# (module, name) -> factory of a fresh stand-in, so that nothing a pickle
# gets hold of is shared between references or files.
_GLOBALS = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v3'): _rebuild_tensor_v3,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('torch', 'Size'): tuple,
    ('_codecs', 'encode'): _encode,
}
_GLOBALS = {k: functools.partial(_Call, fn) for k, fn in _GLOBALS.items()}
_GLOBALS.update({(m, n): functools.partial(_StorageType, n)
                 for n in _STORAGE_DTYPES for m in ('torch', 'torch.storage')})
_GLOBALS.update({('torch', n): functools.partial(_DType, n)
                 for n in _TORCH_DTYPES})


def ascii_text(value) -> str:
  return value.decode('ascii') if isinstance(value, bytes) else str(value)


class Unpickler(pickle.Unpickler):
  """Resolves only allowlisted globals; collects the storages it meets.

  `storages` None: a plain pickle, which may not refer to storages.
  `inert`: other globals become `pickle_records` stand-ins, not errors.
  """

  def __init__(self, file, storages: dict[str, Storage] | None,
               inert: bool = False):
    super().__init__(file, encoding='utf-8')
    self.storages = storages
    self.inert = inert

  def find_class(self, module: str, name: str):
    factory = _GLOBALS.get((module, name))
    if factory is not None:
      return factory()
    if self.inert:
      return pickle_records.inert_global(module, name)
    raise UnsafePickleError(
        f'refusing to load: its pickle calls {module}.{name}, '
        'which is not a tensor, storage or plain container (only state '
        'dicts are read; nothing from the file was run)')

  def persistent_load(self, pid):
    if self.storages is None:
      raise UnsafePickleError('refusing to load persistent object '
                              f'{ascii_text(pid)[:80]!r} in a plain pickle')
    if (not isinstance(pid, tuple) or not pid
        or ascii_text(pid[0]) != 'storage'):
      kind = ascii_text(pid[0]) if isinstance(pid, tuple) and pid else pid
      raise UnsafePickleError('refusing to load persistent '
                              f'object {kind!r} (a pickled module?)')
    if len(pid) == 5:  # zip format
      _, stype, key, _, numel = pid
      view = None
    elif len(pid) == 6:  # legacy format
      _, stype, key, _, numel, view = pid
    else:
      raise SemcorrError(f'malformed storage id {pid!r}')
    if (not isinstance(stype, _StorageType) or not isinstance(numel, int)
        or numel < 0):
      raise SemcorrError(f'malformed storage id {pid!r}')
    key, size = ascii_text(key), stype.dtype.itemsize
    if key not in self.storages:
      self.storages[key] = Storage(key, stype.dtype, numel * size)
    root = self.storages[key]
    if view is None:
      return root
    _, offset, view_numel = view  # In elements of the storage type.
    return Storage(root.key, root.dtype, view_numel * size, offset * size)


def unpickle(file, storages=None, inert=False):
  return Unpickler(file, {} if storages is None else storages, inert).load()


def tensor_array(t: Tensor, buffers: Mapping[str, bytes], big_endian: bool,
                 budget: torch_limits.Budget | None = None, name: str = ''
                 ) -> np.ndarray:
  """The tensor's values as a fresh C-contiguous array (bounds-checked).

  `budget` (default: the default caps) is charged before the copy; `name`
  names the tensor in its errors.
  """
  s = t.storage
  dtype = t.dtype.newbyteorder('>') if big_endian else t.dtype
  item = dtype.itemsize
  if s.key not in buffers:
    raise SemcorrError(f'storage {s.key!r} has no data')
  data = buffers[s.key]
  if s.offset + s.nbytes > len(data):
    raise SemcorrError(f'storage {s.key!r} is truncated')
  values = np.frombuffer(data, dtype, (s.nbytes // item), s.offset)
  ints = (t.offset,) + t.size + t.stride
  if (len(t.size) != len(t.stride) or
      not all(isinstance(v, int) and v >= 0 for v in ints)):
    raise SemcorrError(f'malformed tensor size {t.size} / stride '
                       f'{t.stride} / offset {t.offset}')
  budget = budget or torch_limits.Budget()
  if math.prod(t.size) == 0:
    return np.zeros(t.size, t.dtype)
  last = t.offset + sum((n - 1) * st for n, st in zip(t.size, t.stride))
  if last >= values.size:
    raise SemcorrError(f'a tensor of size {t.size} reads past the '
                       f'end of its storage ({values.size} elements)')
  budget.tensor(name or '?', t.size, t.dtype, t.stride, len(data))
  view = np.lib.stride_tricks.as_strided(
      values[t.offset:], t.size, [st * item for st in t.stride],
      writeable=False)
  return np.array(view, t.dtype, order='C')  # A copy; keeps 0-d.


def resolve(obj, buffers, big_endian, budget, name=''):
  """Replaces the `Tensor`s in nested containers by numpy arrays.

  Also in `InertRecord`s (rebuilt, not modified), and stand-in classes of
  the inert mode become uncalled records.
  """
  if isinstance(obj, Tensor):
    return tensor_array(obj, buffers, big_endian, budget, name)
  if pickle_records.is_inert_global(obj):
    return pickle_records.as_record(obj)
  prefix = f'{name}.' if name else ''
  if isinstance(obj, InertRecord):
    def sub(value, field):
      return resolve(value, buffers, big_endian, budget,
                      f'{prefix}<{obj.name} {field}>')
    return InertRecord(
        obj.name, sub(obj.args, 'args'), sub(obj.kwargs, 'kwargs'),
        state=sub(obj.state, 'state'), items=sub(obj.items, 'items'),
        list_items=sub(obj.list_items, 'list items'), called=obj.called,
        newobj=obj.newobj)
  if isinstance(obj, Mapping):
    return {pickle_records.as_record(k):
            resolve(v, buffers, big_endian, budget, f'{prefix}{k}')
            for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(resolve(v, buffers, big_endian, budget, f'{prefix}{i}')
                     for i, v in enumerate(obj))
  if isinstance(obj, (Storage, _StorageType, _DType)):
    raise SemcorrError('holds a bare storage or dtype, not tensors')
  return obj
