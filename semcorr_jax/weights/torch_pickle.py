"""Reads PyTorch `torch.save` files into numpy without torch, safely.

Both on-disk formats:

* zip (torch >= 1.6): `<name>/data.pkl` (the object pickle) plus one raw
  storage per `<name>/data/<key>`, little-endian unless `<name>/byteorder`
  says 'big';
* legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): pickles
  of the magic number, the protocol version (1001) and a sys-info dict
  (byte order), the object pickle, the list of storage keys, then per key
  an int64 element count and the raw storage.

The object pickle refers to storages by persistent id `('storage',
<torch.XStorage>, key, location, numel)` (legacy: plus a view tuple or
None; numel counts bytes for `torch.storage.UntypedStorage`). Tensors are
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` (v3
adds the dtype, for e.g. uint16 or float8); parameters wrap a tensor.

The unpickler is restricted, like `torch.load(weights_only=True)`: it
resolves only `collections.OrderedDict`, the tensor/parameter rebuild
functions, the `torch.*Storage` classes, torch dtypes, `torch.Size` and
`_codecs.encode` (bytes under protocol 2), each to a fresh inert stand-in
that a pickle cannot modify. Any other global (`os.system`,
`builtins.eval`, a `torch.nn.Module` class, ...) raises
`UnsafePickleError` naming it, before anything it names can run. Tensor
views are checked against their storage's bounds.

Memory is capped (`torch_limits`): a tensor, a storage or a zip record
declared larger than the caps, a stride-0 or overlapping view larger than
its storage, or a deflated record inflating far beyond its size is refused
before it is allocated; keyword arguments or environment variables raise
the caps for a trusted file.

  state = read_torch_file('resnet101-63fe2227.pth')   # {key: np.ndarray}
  ckpt = read_torch_checkpoint('best_checkpoint.pt')  # nested, as saved
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
import functools
import io
import math
import os
import pickle
import struct
import zipfile

import ml_dtypes  # bfloat16 / float8 numpy dtypes (installed with jax)
import numpy as np

from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import torch_limits

_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
_PROTOCOL_VERSION = 1001
_WRAPPERS = ('state_dict', 'model')  # {'state_dict': {...}, 'epoch': ...}

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


class UnsafePickleError(SemcorrError):
  """The file's pickle refers to a global outside the tensor allowlist."""


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


class _Storage(_Inert):
  """A storage: `nbytes` bytes at `offset` of the root storage `key`."""
  __slots__ = ('key', 'dtype', 'nbytes', 'offset')

  def __init__(self, key: str, dtype: np.dtype, nbytes: int, offset: int = 0):
    self.key, self.dtype, self.nbytes, self.offset = key, dtype, nbytes, offset


class _Tensor(_Inert):
  """A tensor waiting for its storage's bytes."""
  __slots__ = ('storage', 'dtype', 'offset', 'size', 'stride')

  def __init__(self, storage, offset, size, stride, dtype=None, metadata=None):
    if not isinstance(storage, _Storage):
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
  return _Tensor(storage, offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks,
                       dtype, metadata=None):
  del requires_grad, hooks
  if not isinstance(dtype, _DType):
    raise SemcorrError('_rebuild_tensor_v3 without a torch dtype')
  return _Tensor(storage, offset, size, stride, dtype, metadata)


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


def _ascii(value) -> str:
  return value.decode('ascii') if isinstance(value, bytes) else str(value)


class _Unpickler(pickle.Unpickler):
  """Resolves only allowlisted globals; collects the storages it meets."""

  def __init__(self, file, storages: dict[str, _Storage]):
    super().__init__(file, encoding='utf-8')
    self.storages = storages

  def find_class(self, module: str, name: str):
    try:
      return _GLOBALS[module, name]()
    except KeyError:
      raise UnsafePickleError(
          f'refusing to load: its pickle calls {module}.{name}, '
          'which is not a tensor, storage or plain container (only state '
          'dicts are read; nothing from the file was run)') from None

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or not pid or _ascii(pid[0]) != 'storage':
      kind = _ascii(pid[0]) if isinstance(pid, tuple) and pid else pid
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
    key, size = _ascii(key), stype.dtype.itemsize
    if key not in self.storages:
      self.storages[key] = _Storage(key, stype.dtype, numel * size)
    root = self.storages[key]
    if view is None:
      return root
    _, offset, view_numel = view  # In elements of the storage type.
    return _Storage(root.key, root.dtype, view_numel * size, offset * size)


def _unpickle(file, storages=None):
  return _Unpickler(file, {} if storages is None else storages).load()


def _array(t: _Tensor, buffers: Mapping[str, bytes], big_endian: bool,
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


def _resolve(obj, buffers, big_endian, budget, name=''):
  """Replaces the `_Tensor`s in nested containers by numpy arrays."""
  if isinstance(obj, _Tensor):
    return _array(obj, buffers, big_endian, budget, name)
  prefix = f'{name}.' if name else ''
  if isinstance(obj, Mapping):
    return {k: _resolve(v, buffers, big_endian, budget, f'{prefix}{k}')
            for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_resolve(v, buffers, big_endian, budget, f'{prefix}{i}')
                     for i, v in enumerate(obj))
  if isinstance(obj, (_Storage, _StorageType, _DType)):
    raise SemcorrError('holds a bare storage or dtype, not tensors')
  return obj


def _read_zip(path: str, budget: torch_limits.Budget):
  with zipfile.ZipFile(path) as archive:
    names = archive.namelist()
    pickles = [n for n in names
               if n.endswith('/data.pkl') and n.count('/') == 1]
    if len(pickles) != 1:
      if any(n.endswith('constants.pkl') for n in names):
        raise SemcorrError('a TorchScript archive, not a state dict')
      raise SemcorrError('a zip file without one <name>/data.pkl; '
                         'not a torch.save file')
    prefix = pickles[0][:-len('data.pkl')]
    storages = {}
    pickled = torch_limits.read_member(archive, pickles[0], budget,
                                       storage=False)
    obj = _unpickle(io.BytesIO(pickled), storages)
    del pickled
    big_endian = False
    if prefix + 'byteorder' in names:
      order = torch_limits.read_member(archive, prefix + 'byteorder', budget,
                                       storage=False)
      order = order[:16].decode('ascii').strip()
      if order not in ('little', 'big'):
        raise SemcorrError(f'unknown byte order {order!r}')
      big_endian = order == 'big'
    buffers = {}
    for key in storages:
      record = f'{prefix}data/{key}'
      if record not in names:
        raise SemcorrError(f'storage record {record} is missing')
      buffers[key] = torch_limits.read_member(archive, record, budget)
  return obj, buffers, big_endian


def _read_legacy(path: str, budget: torch_limits.Budget):
  with open(path, 'rb') as f:
    head = f.read(512)
    if len(head) >= 262 and head[257:262] == b'ustar':
      raise SemcorrError('a tar-format torch file (PyTorch < 0.4); '
                         'not supported, re-save it with a newer torch')
    f.seek(0)
    if _unpickle(f) != _MAGIC_NUMBER:
      raise SemcorrError('not a torch.save file (bad magic number)')
    version = _unpickle(f)
    if version != _PROTOCOL_VERSION:
      raise SemcorrError(f'unknown torch protocol version {version!r}')
    sys_info = _unpickle(f)
    big_endian = (isinstance(sys_info, Mapping) and
                  not sys_info.get('little_endian', True))
    storages = {}
    obj = _unpickle(f, storages)
    keys = _unpickle(f)
    if not isinstance(keys, list):
      raise SemcorrError('malformed storage key list')
    buffers = {}
    for key in keys:
      key = _ascii(key)
      if key not in storages:
        raise SemcorrError(f'unknown storage key {key!r}')
      s = storages[key]
      count = f.read(8)
      if len(count) != 8:
        raise SemcorrError(f'truncated at storage {key!r}')
      numel, = struct.unpack('>q' if big_endian else '<q', count)
      if numel * s.dtype.itemsize != s.nbytes:
        raise SemcorrError(f'storage {key!r} holds {numel} elements, '
                           f'the pickle says {s.nbytes // s.dtype.itemsize}')
      left = os.fstat(f.fileno()).st_size - f.tell()
      if s.nbytes > left:
        raise SemcorrError(
            f'storage {key!r} declares {torch_limits.format_bytes(s.nbytes)} '
            f'but only {left} bytes of the file are left: truncated at '
            'storage or malformed')
      budget.storage(s.nbytes, f'storage {key!r}')
      buffers[key] = f.read(s.nbytes)
      if len(buffers[key]) != s.nbytes:
        raise SemcorrError(f'truncated at storage {key!r}')
  return obj, buffers, big_endian


def read_torch_checkpoint(path, *, max_tensor_bytes=None,
                          max_total_bytes=None, max_zip_ratio=None):
  """Reads a `torch.save` file (either format) as nested containers.

  Args:
    path: the file.
    max_tensor_bytes, max_total_bytes, max_zip_ratio: the memory caps (see
      `torch_limits`); None: SEMCORR_TORCH_MAX_* or the defaults.

  Returns:
    What was saved, every tensor/parameter a C-contiguous numpy array in its
    own dtype (bfloat16, float8: `ml_dtypes`), mappings as dicts in file
    order; e.g. SFNet's release: {'state_dict1': {...}, 'state_dict2': ...}.

  Raises:
    UnsafePickleError: the pickle names a global outside the allowlist.
    SemcorrError: missing, truncated, malformed or unsupported file, or one
      over a cap (a memory bomb), or a bad cap setting.
  """
  path = os.fspath(path)
  limits = torch_limits.Limits.resolve(
      max_tensor_bytes=max_tensor_bytes, max_total_bytes=max_total_bytes,
      max_zip_ratio=max_zip_ratio)
  if not os.path.isfile(path):
    raise SemcorrError(f'{path}: no such file')
  budget = torch_limits.Budget(limits)
  try:
    reader = _read_zip if zipfile.is_zipfile(path) else _read_legacy
    obj, buffers, big_endian = reader(path, budget)
    return _resolve(obj, buffers, big_endian, budget)
  except SemcorrError as e:
    if str(e).startswith(path):
      raise
    raise type(e)(f'{path}: {e}') from None
  except Exception as e:  # pylint: disable=broad-except
    # Corrupt files surface as pickle, zipfile, struct, EOF or type errors.
    first_line = (str(e).splitlines() or [''])[0][:200]
    raise SemcorrError(f'{path}: not a readable torch.save file '
                       f'({type(e).__name__}: {first_line})') from e


def flatten_state_dict(tree, path='', prefix='') -> dict[str, np.ndarray]:
  """Nested mappings of arrays -> {'a.b.key': array} (torch module naming).

  Numbers become 0-d arrays; any other leaf (string, None, list) raises a
  `SemcorrError` naming its key.
  """
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, Mapping):
      out.update(flatten_state_dict(value, path, name + '.'))
    elif isinstance(value, (np.ndarray, int, float)):
      out[name] = np.asarray(value)
    else:
      raise SemcorrError(f'{path}: entry {name!r} is a {type(value).__name__}'
                         ', not a tensor; read it with read_torch_checkpoint')
  return out


def read_torch_file(path, **caps) -> dict[str, np.ndarray]:
  """Reads a `torch.save` state dict (either format) as {key: np.ndarray}.

  Wrapped weights (`{'state_dict': {...}, 'epoch': 3}`, `{'model': ...}`)
  are unwrapped; nested state dicts are flattened with '.' (`{'state_dict1':
  {'conv1.0.weight': w}}` -> 'state_dict1.conv1.0.weight'); keys and arrays
  in file order and dtypes. `caps`: `read_torch_checkpoint`'s
  (`max_tensor_bytes`, `max_total_bytes`, `max_zip_ratio`). Errors as
  `read_torch_checkpoint`'s, and a `SemcorrError` for a non-tensor entry.
  """
  path = os.fspath(path)
  state = read_torch_checkpoint(path, **caps)
  for wrapper in _WRAPPERS:
    if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
      state = state[wrapper]
  if not isinstance(state, Mapping):
    raise SemcorrError(f'{path}: holds a {type(state).__name__}, not a state '
                       'dict')
  return flatten_state_dict(state, path)
