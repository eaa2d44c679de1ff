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
that a pickle cannot modify (`torch_unpickler`). Any other global
(`os.system`, `builtins.eval`, a `torch.nn.Module` class, ...) raises
`UnsafePickleError` naming it, before anything it names can run. Tensor
views are checked against their storage's bounds.

Training checkpoints also hold an `argparse.Namespace`, numpy scalars or
optimiser/scheduler state. With `inert_globals=True` every global outside
the allowlist becomes an `InertRecord` instead (`pickle_records`: the
global's name, arguments and state kept as data; nothing is imported or
called), so such a file can be read while its state dicts still have to be
plain tensors (`flatten_state_dict` refuses a record). `read_pickle_file`
reads a plain pickle (e.g. a run's `args.pkl`) the same way.

Memory is capped (`torch_limits`): a tensor, a storage or a zip record
declared larger than the caps, a stride-0 or overlapping view larger than
its storage, or a deflated record inflating far beyond its size is refused
before it is allocated; keyword arguments or environment variables raise
the caps for a trusted file.

  state = read_torch_file('resnet101-63fe2227.pth')   # {key: np.ndarray}
  ckpt = read_torch_checkpoint('best_checkpoint.pt')  # nested, as saved
  ckpt = read_torch_checkpoint('model_best.pth', inert_globals=True)
  args = read_pickle_file('args.pkl', inert_globals=True).fields()
"""

from __future__ import annotations

from collections.abc import Mapping
import io
import os
import struct
import zipfile

import numpy as np

from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import torch_limits
from semcorr_jax.weights import torch_unpickler
from semcorr_jax.weights.pickle_records import InertRecord
from semcorr_jax.weights.pickle_records import UnsafePickleError

__all__ = ['UnsafePickleError', 'flatten_state_dict', 'read_pickle_file',
           'read_torch_checkpoint', 'read_torch_file']

_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
_PROTOCOL_VERSION = 1001
_WRAPPERS = ('state_dict', 'model')  # {'state_dict': {...}, 'epoch': ...}


def _read_zip(path: str, budget: torch_limits.Budget, inert: bool):
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
    obj = torch_unpickler.unpickle(io.BytesIO(pickled), storages, inert)
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


def _read_legacy(path: str, budget: torch_limits.Budget, inert: bool):
  with open(path, 'rb') as f:
    head = f.read(512)
    if len(head) >= 262 and head[257:262] == b'ustar':
      raise SemcorrError('a tar-format torch file (PyTorch < 0.4); '
                         'not supported, re-save it with a newer torch')
    f.seek(0)
    if torch_unpickler.unpickle(f) != _MAGIC_NUMBER:
      raise SemcorrError('not a torch.save file (bad magic number)')
    version = torch_unpickler.unpickle(f)
    if version != _PROTOCOL_VERSION:
      raise SemcorrError(f'unknown torch protocol version {version!r}')
    sys_info = torch_unpickler.unpickle(f)
    big_endian = (isinstance(sys_info, Mapping) and
                  not sys_info.get('little_endian', True))
    storages = {}
    obj = torch_unpickler.unpickle(f, storages, inert)
    keys = torch_unpickler.unpickle(f)
    if not isinstance(keys, list):
      raise SemcorrError('malformed storage key list')
    buffers = {}
    for key in keys:
      key = torch_unpickler.ascii_text(key)
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


def read_torch_checkpoint(path, *, inert_globals=False,
                          max_tensor_bytes=None, max_total_bytes=None,
                          max_zip_ratio=None):
  """Reads a `torch.save` file (either format) as nested containers.

  Args:
    path: the file.
    inert_globals: keep objects of globals outside the allowlist (an
      `argparse.Namespace`, numpy scalars, a `collections.Counter`, ...) as
      `InertRecord`s instead of refusing the file; nothing is called either
      way.
    max_tensor_bytes, max_total_bytes, max_zip_ratio: the memory caps (see
      `torch_limits`); None: SEMCORR_TORCH_MAX_* or the defaults.

  Returns:
    What was saved, every tensor/parameter a C-contiguous numpy array in its
    own dtype (bfloat16, float8: `ml_dtypes`), mappings as dicts in file
    order; e.g. SFNet's release: {'state_dict1': {...}, 'state_dict2': ...}.
    With `inert_globals`, other objects are `InertRecord`s (tensors inside
    them arrays too).

  Raises:
    UnsafePickleError: the pickle names a global outside the allowlist (not
      with `inert_globals`), or tries to modify a stand-in.
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
    obj, buffers, big_endian = reader(path, budget, inert_globals)
    return torch_unpickler.resolve(obj, buffers, big_endian, budget)
  except SemcorrError as e:
    raise _with_path(path, e) from None
  except Exception as e:  # pylint: disable=broad-except
    raise _unreadable(path, e, 'torch.save file') from e


def _with_path(path: str, e: SemcorrError) -> SemcorrError:
  return e if str(e).startswith(path) else type(e)(f'{path}: {e}')


def _unreadable(path: str, e: Exception, what: str) -> SemcorrError:
  # Corrupt files surface as pickle, zipfile, struct, EOF, type or recursion
  # errors.
  first_line = (str(e).splitlines() or [''])[0][:200]
  return SemcorrError(f'{path}: not a readable {what} '
                      f'({type(e).__name__}: {first_line})')


def read_pickle_file(path, *, inert_globals=False, max_bytes=None):
  """Reads a plain pickle (e.g. a run's `args.pkl`) with the same allowlist.

  Args:
    path: the file (any pickle protocol; not a `torch.save` file).
    inert_globals: keep objects of other globals as `InertRecord`s (an
      `argparse.Namespace` -> a record whose `fields()` are its flags).
    max_bytes: largest file read; None: the total cap of `torch_limits`.

  Returns:
    The unpickled object; nothing the pickle names was called.

  Raises:
    UnsafePickleError: a global outside the allowlist (without
      `inert_globals`), or a reference to tensor storage.
    SemcorrError: a missing, oversized or unreadable file.
  """
  path = os.fspath(path)
  limits = torch_limits.Limits.resolve(max_total_bytes=max_bytes)
  if not os.path.isfile(path):
    raise SemcorrError(f'{path}: no such file')
  try:
    size = os.path.getsize(path)
    if size > limits.max_total_bytes:
      raise SemcorrError(
          f'{torch_limits.format_bytes(size)}, over the cap of '
          f'{torch_limits.format_bytes(limits.max_total_bytes)} for a pickle')
    with open(path, 'rb') as f:
      if zipfile.is_zipfile(f):
        raise SemcorrError('a zip (torch.save) file, not a plain pickle')
      f.seek(0)
      obj = torch_unpickler.Unpickler(f, None, inert_globals).load()
      if f.read(1):
        raise SemcorrError('data after the end of the pickle')
    return torch_unpickler.resolve(obj, {}, False,
                                   torch_limits.Budget(limits))
  except SemcorrError as e:
    raise _with_path(path, e) from None
  except Exception as e:  # pylint: disable=broad-except
    raise _unreadable(path, e, 'pickle file') from e


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
    elif isinstance(value, InertRecord):
      raise SemcorrError(f'{path}: entry {name!r} is a pickled {value.name} '
                         'object (kept inert, not built), not a tensor: a '
                         'state dict must hold tensors only')
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
