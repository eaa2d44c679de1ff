"""Reads and writes PyTorch-style state dicts as `{name: np.ndarray}`.

Formats by suffix:

* `.npz`: numpy archive, one array per key (what `save_npz` writes);
* `.safetensors`: read with `safetensors.numpy` (no torch needed);
* `.pth` / `.pt` / `.bin`: files from `torch.save`, either format (zip, torch
  >= 1.6, or legacy), always read by `torch_pickle.read_torch_file`: no
  torch needed, and with `torch.load(weights_only=True)` semantics: a
  pickle that refers to anything but tensors and plain containers is
  refused (`torch_pickle.UnsafePickleError`) before any of it runs. The
  result does not depend on whether torch is installed. Checkpoints that
  wrap the weights ({'state_dict': ...} or {'model': ...}) are unwrapped.

Writers: `save_safetensors` (`safetensors.numpy`; the format to export
weights in: a flat `{name: array}` that any framework reads without
unpickling), `save_npz`, and `save_torch_file`, a zip-format `.pth` that
`torch.load` reads (also with weights_only=True).

`save_torch_file` emits the pickle opcodes itself (pickling references to
`torch._utils` with the `pickle` module would need torch importable). It
stays, although safetensors covers plain weights, because the importers of
the official releases (`sfnet_release`, `ncnet_release`, `cats_release`)
read whole `torch.save` training checkpoints: nested dicts, optimiser
states, `argparse.Namespace`, `collections.Counter`, numpy scalars.
safetensors holds only a flat mapping of tensors, so the tests build those
release containers (tests/helpers/release_files.py) with this writer, and
`state_dict` converts to `.pth` for users who feed PyTorch code.

To get torchvision's ImageNet ResNet as `.npz`:

    semcorr-fetch-weights resnet101 --output resnet101.npz

and to convert between formats (the output suffix picks the format):

    semcorr-convert-weights IN.pth OUT.safetensors

Every failure (missing file, corrupt or unsafe file, unknown format) raises a
`SemcorrError` with one line.
"""

from collections.abc import Mapping
import os
import pathlib
import zipfile

import numpy as np
from safetensors import numpy as safetensors_numpy

from semcorr_jax import output_paths
from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import pickle_records
from semcorr_jax.weights import torch_pickle
from semcorr_jax.weights.pickle_records import InertRecord

TORCH_SUFFIXES = ('.pth', '.pt', '.bin')
SUFFIXES = ('.npz', '.safetensors') + TORCH_SUFFIXES


def _to_numpy(value, key, path):
  """A tensor or array as a numpy array (bfloat16 tensors become float32)."""
  if hasattr(value, 'detach'):  # A torch tensor; no torch import needed here.
    value = value.detach().cpu()
    if str(value.dtype) == 'torch.bfloat16':
      value = value.float()
    return value.numpy()
  if isinstance(value, (np.ndarray, np.generic, int, float)):
    value = np.asarray(value)
    # ml_dtypes' bfloat16/float8 (from torch_pickle): float32, as for torch.
    return value.astype(np.float32) if value.dtype.kind == 'V' else value
  raise SemcorrError(f'{path}: entry {key!r} is a {type(value).__name__}, '
                     'not a tensor; expected a flat state dict')


def _read_npz(path):
  with np.load(path, allow_pickle=False) as archive:
    return {k: archive[k] for k in archive.files}


def _read_safetensors(path):
  return safetensors_numpy.load_file(path)


def _read_torch(path):
  return torch_pickle.read_torch_file(path)


_READERS = {'.npz': _read_npz, '.safetensors': _read_safetensors}
_READERS.update({s: _read_torch for s in TORCH_SUFFIXES})


def read_state_dict(path) -> dict[str, np.ndarray]:
  """Reads a state dict from `.npz`, `.safetensors` or `.pth`/`.pt`/`.bin`.

  Args:
    path: file path; the suffix picks the format.

  Returns:
    {key: array} in the file's order, arrays in the file's dtypes.

  Raises:
    SemcorrError: the file is missing, unreadable, of an unknown format, or
      not a flat mapping of arrays.
  """
  path = os.fspath(path)
  suffix = pathlib.Path(path).suffix.lower()
  if suffix not in _READERS:
    raise SemcorrError(f'{path}: unknown weights format {suffix!r}; expected '
                       f'one of {", ".join(SUFFIXES)}')
  if not os.path.isfile(path):
    raise SemcorrError(f'{path}: no such weights file')
  try:
    state = _READERS[suffix](path)
  except SemcorrError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Corrupt files surface as many exception types (zipfile, pickle,
    # safetensors' own); all mean the same thing to the user.
    first_line = (str(e).splitlines() or [''])[0][:200]
    raise SemcorrError(f'{path}: cannot read {suffix} weights '
                       f'({type(e).__name__}: {first_line})') from e
  return {str(k): _to_numpy(v, k, path) for k, v in state.items()}


def save_npz(state_dict: Mapping[str, object], path) -> None:
  """Writes `{key: tensor or array}` to an `.npz` that `read_state_dict` reads.

  Args:
    state_dict: e.g. `torchvision.models.resnet101(...).state_dict()` (torch
      tensors are moved to CPU; bfloat16 becomes float32) or numpy arrays.
    path: output path; '.npz' is appended when missing. Written to a
      temporary name and renamed: a failure leaves no file.
  """
  arrays = {str(k): _to_numpy(v, k, path) for k, v in state_dict.items()}
  path = os.fspath(path)
  if not path.endswith('.npz'):
    path += '.npz'
  with output_paths.atomic_write(path) as f:
    np.savez(f, **arrays)  # A file object: no '.npz' appended.


def save_safetensors(state_dict: Mapping[str, object], path,
                     metadata: Mapping[str, str] | None = None) -> None:
  """Writes a flat `{key: tensor or array}` as `.safetensors`.

  Args:
    state_dict: {key: numpy array or torch tensor} (bfloat16 becomes
      float32, as in `save_npz`); values must be arrays, not mappings.
    path: output path; '.safetensors' is appended when missing. Written to
      a temporary name and renamed: a failure leaves no file.
    metadata: optional {str: str} stored in the file's header.

  Raises:
    SemcorrError: a value is not an array (e.g. a nested mapping).
  """
  arrays = {str(k): np.ascontiguousarray(_to_numpy(v, k, path))
            for k, v in state_dict.items()}
  path = os.fspath(path)
  if not path.endswith('.safetensors'):
    path += '.safetensors'
  data = safetensors_numpy.save(
      arrays, metadata=None if metadata is None else dict(metadata))
  with output_paths.atomic_write(path) as f:
    f.write(data)


# numpy dtype -> legacy torch storage class, for `save_torch_file`.
_TORCH_STORAGES = {
    'float64': 'DoubleStorage', 'float32': 'FloatStorage',
    'float16': 'HalfStorage', 'int64': 'LongStorage', 'int32': 'IntStorage',
    'int16': 'ShortStorage', 'int8': 'CharStorage', 'uint8': 'ByteStorage',
    'bool': 'BoolStorage',
}


class _TorchPickle:
  """Emits the protocol-2 pickle of `torch.save` for nested dicts of arrays.

  Hand-written opcodes, since pickling a reference to `torch._utils`
  functions with the `pickle` module would need torch importable. Besides
  tensors and numbers: strings, bytes, None, lists, tuples, and other
  objects described by `pickle_records.InertRecord`s (argparse.Namespace
  and collections.Counter are converted to theirs), written as the opcodes
  pickling the object itself would emit.
  """

  def __init__(self):
    self.out = bytearray(b'\x80\x02')  # PROTO 2
    self.storages = []  # (key, little-endian bytes)

  def _global(self, module, name):
    self.out += b'c' + f'{module}\n{name}\n'.encode('ascii')

  def _str(self, text):
    data = text.encode('utf-8')
    self.out += b'X' + len(data).to_bytes(4, 'little') + data

  def _int(self, value):
    data = int(value).to_bytes(9, 'little', signed=True)
    self.out += b'\x8a\x09' + data  # LONG1, 9 bytes: any int64 fits.

  def _ints(self, values):
    self.out += b'('  # MARK
    for value in values:
      self._int(value)
    self.out += b't'  # TUPLE

  def _ordered_dict(self):
    self._global('collections', 'OrderedDict')
    self.out += b')R'  # EMPTY_TUPLE, REDUCE

  def _items(self, mapping, name):
    self.out += b'('  # MARK
    for k, v in mapping.items():
      if isinstance(k, int) and not isinstance(k, bool):
        self._int(k)  # e.g. optimizer state, keyed by parameter index.
      else:
        self._str(str(k))
      self.value(v, f'{name}{k}.')
    self.out += b'u'  # SETITEMS

  def _sequence(self, values, name):
    self.out += b'('  # MARK
    for i, v in enumerate(values):
      self.value(v, f'{name}{i}.')

  def _record(self, record: InertRecord, name):
    """GLOBAL, then the call (REDUCE or NEWOBJ), its state and items."""
    module, _, attr = record.name.rpartition('.')
    self._global(module, attr)
    if not record.called:
      return
    if record.kwargs:
      raise SemcorrError(f'{name.rstrip(".")}: records with keyword '
                         'arguments are not written')
    self._sequence(record.args, name)
    self.out += b't\x81' if record.newobj else b'tR'  # NEWOBJ / REDUCE
    if record.state is not None:
      if isinstance(record.state, Mapping):
        self.out += b'}'  # EMPTY_DICT: a plain dict, as pickle writes.
        self._items(record.state, name)
      else:
        self.value(record.state, name)
      self.out += b'b'  # BUILD
    if record.list_items:
      self._sequence(record.list_items, name)
      self.out += b'e'  # APPENDS
    if record.items:
      self._items(record.items, name)

  def _bytes(self, data: bytes):
    self._global('_codecs', 'encode')  # How protocol 2 writes bytes.
    self._str(data.decode('latin1'))
    self._str('latin1')
    self.out += b'\x86R'  # TUPLE2, REDUCE

  def _tensor(self, array, name):
    dtype = np.dtype(array.dtype)
    storage = _TORCH_STORAGES.get(dtype.name)
    if storage is None:
      raise SemcorrError(f'{name}: dtype {dtype} has no torch storage type')
    key = str(len(self.storages))
    data = np.ascontiguousarray(array, dtype.newbyteorder('<')).tobytes()
    self.storages.append((key, data))
    self._global('torch._utils', '_rebuild_tensor_v2')
    self.out += b'(('  # MARK the call's arguments, MARK the storage id.
    self._str('storage')
    self._global('torch', storage)
    self._str(key)
    self._str('cpu')
    self._int(array.size)
    self.out += b'tQ'  # TUPLE, BINPERSID
    self._int(0)  # storage offset
    self._ints(array.shape)
    strides = [int(np.prod(array.shape[i + 1:])) for i in range(array.ndim)]
    self._ints(strides)
    self.out += b'\x89'  # requires_grad=False
    self._ordered_dict()  # backward hooks
    self.out += b'tR'

  def value(self, value, name=''):
    value = pickle_records.record_of(value)
    if isinstance(value, InertRecord):
      self._record(value, name)
    elif isinstance(value, Mapping):
      self._ordered_dict()
      self._items(value, name)
    elif value is None:
      self.out += b'N'
    elif isinstance(value, bytes):
      self._bytes(value)
    elif isinstance(value, tuple):
      self._sequence(value, name)
      self.out += b't'  # TUPLE
    elif isinstance(value, list):
      self.out += b']'  # EMPTY_LIST
      if value:
        self._sequence(value, name)
        self.out += b'e'  # APPENDS
    elif isinstance(value, (bool, np.bool_)):
      self.out += b'\x88' if value else b'\x89'
    elif isinstance(value, int):
      self._int(value)
    elif isinstance(value, float):
      self.out += b'G' + np.array(value, '>f8').tobytes()
    elif isinstance(value, str):
      self._str(value)
    else:
      self._tensor(_to_numpy(value, name.rstrip('.'), 'save_torch_file'),
                   name.rstrip('.'))


def save_torch_file(state_dict: Mapping[str, object], path) -> None:
  """Writes (nested) `{key: array}` as a zip-format `torch.save` file.

  `torch.load(path, weights_only=True)` returns an OrderedDict of tensors
  (nested mappings stay nested, Python numbers stay numbers); no torch is
  needed to write it. The file is written to a temporary name and renamed
  (removed on failure).

  Whole training checkpoints can be written too: strings, None, bytes,
  lists, tuples (e.g. an optimiser's `state_dict()`), an
  `argparse.Namespace`, a `collections.Counter`, and any object described
  by a `pickle_records.InertRecord` (e.g. `numpy_record(np.float64(0.5))`,
  a numpy scalar as numpy pickles it). Such a file needs `torch.load(...,
  weights_only=False)` (or `read_torch_checkpoint(..., inert_globals=True)`).

  Args:
    state_dict: {key: numpy array, torch tensor, number, or nested mapping
      or any of the above}; int keys stay ints, other keys become strings.
    path: output path, e.g. 'weights.pth'.

  Raises:
    SemcorrError: a dtype without a torch storage type (e.g. uint16).
  """
  path = os.fspath(path)
  writer = _TorchPickle()
  writer.value(state_dict)
  writer.out += b'.'  # STOP
  archive = 'archive/'
  with output_paths.atomic_write(path) as f:
    with zipfile.ZipFile(f, 'w', zipfile.ZIP_STORED) as z:
      z.writestr(archive + 'data.pkl', bytes(writer.out))
      z.writestr(archive + 'byteorder', 'little')
      for key, data in writer.storages:
        z.writestr(f'{archive}data/{key}', data)
      z.writestr(archive + 'version', '3\n')


def save_state_dict(state: Mapping[str, np.ndarray], path) -> str:
  """Writes `state` in the format of `path`'s suffix: `.safetensors`,
  `.pth`/`.pt` (zip-format torch file) or anything else as `.npz`.

  Returns:
    `path`.
  """
  suffix = pathlib.Path(path).suffix.lower()
  if suffix in ('.pth', '.pt'):
    save_torch_file(state, path)
  elif suffix == '.safetensors':
    save_safetensors(state, path)
  else:
    save_npz(state, path)
  return path
