"""Caps on the memory a torch file may make `torch_pickle` allocate.

A `torch.save` file declares its tensors' shapes, strides and storage sizes
in its pickle, and a zip-format file may deflate its records, so a file of a
few hundred bytes can ask for gigabytes (a stride-0 view of one float
expanded to (16384, 16384); a megabyte of deflated zeros inflating to a
gigabyte). The reader refuses, with one `SemcorrError` line, before
allocating:

* a tensor larger than `max_tensor_bytes` (default 2 GiB);
* storage data (read from the file, inflated) over `max_total_bytes` in
  total (default 4 GiB), and tensors over `max_total_bytes` in total, so the
  reader holds at most twice that;
* a tensor larger than the storage it views (a stride-0 or overlapping view,
  which torch keeps as a view but numpy would copy), beyond 1 MiB;
* a deflated zip record inflating more than `max_zip_ratio` times its
  compressed size (default 100; torch.save stores records uncompressed, so
  real files have ratio 1), beyond 1 MiB;
* a record or storage larger than the file declares or holds.

The defaults sit far above real checkpoints: torchvision's ResNet-101 is 171
MB in all, its largest tensor 9.4 MB (a 3x3x512x512 float32 kernel); ViT-L
is 1.2 GB. Raise a cap for a trusted file with keyword arguments of
`read_torch_file`/`read_torch_checkpoint`, or the environment variables
SEMCORR_TORCH_MAX_TENSOR_BYTES, SEMCORR_TORCH_MAX_TOTAL_BYTES (bytes, or
with a K/M/G/T suffix: '8G') and SEMCORR_TORCH_MAX_ZIP_RATIO; arguments win.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import zipfile

import numpy as np

from semcorr_jax.errors import SemcorrError

MAX_TENSOR_BYTES = 2 << 30
MAX_TOTAL_BYTES = 4 << 30
MAX_ZIP_RATIO = 100.0
SMALL_BYTES = 1 << 20  # Never refused as a view or a compressed record.

ENV = {'max_tensor_bytes': 'SEMCORR_TORCH_MAX_TENSOR_BYTES',
       'max_total_bytes': 'SEMCORR_TORCH_MAX_TOTAL_BYTES',
       'max_zip_ratio': 'SEMCORR_TORCH_MAX_ZIP_RATIO'}
_DEFAULTS = {'max_tensor_bytes': MAX_TENSOR_BYTES,
             'max_total_bytes': MAX_TOTAL_BYTES,
             'max_zip_ratio': MAX_ZIP_RATIO}
_SIZE = re.compile(r'(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?', re.IGNORECASE)
_CHUNK = 1 << 20


def format_bytes(n: int) -> str:
  """'4 bytes', '64.0 KiB', '1.0 GiB'."""
  if n < 1024:
    return f'{n} bytes'
  for unit in ('KiB', 'MiB', 'GiB', 'TiB', 'PiB'):
    n /= 1024
    if n < 1024 or unit == 'PiB':
      return f'{n:.1f} {unit}'


def _raise_hint(name: str) -> str:
  return (f'if the file is trusted, raise the cap with {ENV[name]}=... '
          f'(or {name}=...)')


def _parse(name: str, text: str) -> float:
  """The value of environment variable `ENV[name]`."""
  match = _SIZE.fullmatch(text.strip())
  if name == 'max_zip_ratio':
    try:
      value = float(text)
    except ValueError:
      value = math.nan
  elif match:
    value = float(match[1]) * 1024 ** ' kmgt'.index(match[2].lower() or ' ')
  else:
    value = math.nan
  if not value > 0:  # Also NaN.
    kind = ('a number > 0' if name == 'max_zip_ratio' else
            'a size > 0 in bytes, optionally with K, M, G or T (e.g. 8G)')
    raise SemcorrError(f'{ENV[name]}={text!r} is not {kind}')
  return value


@dataclasses.dataclass(frozen=True)
class Limits:
  """The caps of one read (see the module docstring)."""
  max_tensor_bytes: int = MAX_TENSOR_BYTES
  max_total_bytes: int = MAX_TOTAL_BYTES
  max_zip_ratio: float = MAX_ZIP_RATIO

  @classmethod
  def resolve(cls, **given) -> Limits:
    """Arguments not None, else the environment, else the defaults."""
    values = {}
    for name, default in _DEFAULTS.items():
      value = given.get(name)
      if value is None:
        text = os.environ.get(ENV[name])
        value = default if text is None else _parse(name, text)
      elif not value > 0:
        raise SemcorrError(f'{name}={value!r} must be > 0')
      values[name] = value if name == 'max_zip_ratio' else int(value)
    return cls(**values)


class Budget:
  """Counts what one read allocates against its `Limits`."""

  def __init__(self, limits: Limits | None = None):
    self.limits = limits or Limits.resolve()
    self.storage_bytes = 0
    self.tensor_bytes = 0

  def storage(self, nbytes: int, what: str) -> None:
    """Charges `nbytes` of storage data (`what`: where) before reading it."""
    cap = self.limits.max_total_bytes
    if self.storage_bytes + nbytes > cap:
      raise SemcorrError(
          f'storage data would total {format_bytes(self.storage_bytes + nbytes)}'
          f' at {what} ({format_bytes(nbytes)}), over the cap of '
          f'{format_bytes(cap)}; {_raise_hint("max_total_bytes")}')
    self.storage_bytes += nbytes

  def zip_member(self, info: zipfile.ZipInfo) -> None:
    """Refuses a record that inflates far beyond its compressed size."""
    if info.compress_type == zipfile.ZIP_STORED:
      return
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > SMALL_BYTES and ratio > self.limits.max_zip_ratio:
      raise SemcorrError(
          f'zip member {info.filename} inflates '
          f'{format_bytes(info.compress_size)} to '
          f'{format_bytes(info.file_size)} ({ratio:.0f}:1), over the cap of '
          f'{self.limits.max_zip_ratio:g}:1 for compressed members (torch.save'
          f' stores them uncompressed); {_raise_hint("max_zip_ratio")}')

  def tensor(self, name: str, shape: tuple[int, ...], dtype: np.dtype,
             strides: tuple[int, ...], storage_bytes: int) -> None:
    """Charges a tensor of `shape` viewing `storage_bytes`, before copying."""
    nbytes = math.prod(shape) * dtype.itemsize
    what = f'tensor {name!r} ({shape} {dtype})'
    cap = self.limits.max_tensor_bytes
    if nbytes > cap:
      raise SemcorrError(
          f'{what} takes {format_bytes(nbytes)}, over the cap of '
          f'{format_bytes(cap)} per tensor; {_raise_hint("max_tensor_bytes")}')
    if nbytes > max(storage_bytes, SMALL_BYTES):
      raise SemcorrError(
          f'{what} would take {format_bytes(nbytes)} from '
          f'{format_bytes(storage_bytes)} of storage: a stride-0 or '
          f'overlapping view (strides {strides}); refusing to expand it (if '
          'the expansion is meant, save the tensor .contiguous())')
    cap = self.limits.max_total_bytes
    if self.tensor_bytes + nbytes > cap:
      raise SemcorrError(
          f'tensors would total {format_bytes(self.tensor_bytes + nbytes)} at '
          f'{what}, over the cap of {format_bytes(cap)}; '
          f'{_raise_hint("max_total_bytes")}')
    self.tensor_bytes += nbytes


def read_member(archive: zipfile.ZipFile, name: str, budget: Budget,
                storage: bool = True) -> bytearray:
  """A zip record's bytes, read in bounded chunks.

  The declared (inflated) size is checked, and with `storage` charged,
  before reading; reading stops with an error at any byte beyond it.
  """
  info = archive.getinfo(name)
  budget.zip_member(info)
  if storage:
    budget.storage(info.file_size, f'zip member {name}')
  elif info.file_size > budget.limits.max_total_bytes:
    raise SemcorrError(
        f'zip member {name} declares {format_bytes(info.file_size)}, over the '
        f'cap of {format_bytes(budget.limits.max_total_bytes)}; '
        f'{_raise_hint("max_total_bytes")}')
  data = bytearray(info.file_size)
  view, filled = memoryview(data), 0
  with archive.open(info) as f:
    while filled < len(data):
      n = f.readinto(view[filled:filled + _CHUNK])
      if not n:
        break
      filled += n
    if f.read(1):
      raise SemcorrError(f'zip member {name} holds more than the '
                         f'{info.file_size} bytes it declares')
  view.release()
  del data[filled:]  # Short: reported as truncated where it is used.
  return data
