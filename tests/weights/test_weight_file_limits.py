"""Memory bombs in torch files are refused by the reader's caps.

A torch file declares tensor shapes, strides and storage sizes in its pickle
and may deflate its zip members, so a tiny file can ask for gigabytes. The
files here are written by hand (pickle opcodes, zip records); no torch.
In-process bombs are small (tens of MiB, harmless if read); the issue's own
sizes (a 586-byte file asking for 1 GiB, a 1 MB file inflating to 1 GiB)
are read in a subprocess whose address space is capped.
"""

import io
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib

import numpy as np
import pytest

import semcorr_jax
from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import read_state_dict
from semcorr_jax.weights import torch_pickle
from helpers import paths

MiB = 1 << 20


def _str(text: str) -> bytes:
  data = text.encode()
  return b'X' + struct.pack('<I', len(data)) + data  # BINUNICODE


def _int(value: int) -> bytes:
  return b'\x8a\x08' + value.to_bytes(8, 'little', signed=True)  # LONG1


def _ints(values) -> bytes:
  return b'(' + b''.join(_int(v) for v in values) + b't'  # MARK ... TUPLE


def _tensor(key, numel, size, stride, offset=0, legacy=False,
            storage='FloatStorage') -> bytes:
  """`_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), ...)`."""
  pid = (b'((' + _str('storage') + f'ctorch\n{storage}\n'.encode() + _str(key)
         + _str('cpu') + _int(numel) + (b'N' if legacy else b'') + b'tQ')
  return (b'ctorch._utils\n_rebuild_tensor_v2\n' + pid + _int(offset)
          + _ints(size) + _ints(stride) + b'\x89'
          + b'ccollections\nOrderedDict\n)R' + b'tR')


def _state(tensors: dict[str, bytes]) -> bytes:
  """A pickled {name: tensor} dict (protocol 2)."""
  items = b''.join(_str(k) + v for k, v in tensors.items())
  return b'\x80\x02}(' + items + b'u.'


def _zip_file(path, pickled: bytes, storages: dict[str, bytes]) -> None:
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
    z.writestr('archive/data.pkl', pickled)
    z.writestr('archive/byteorder', 'little')
    for key, data in storages.items():
      z.writestr(f'archive/data/{key}', data)


def _legacy_file(path, pickled: bytes, storages: dict[str, bytes],
                 numel: int | None = None) -> None:
  """Float32 storages; `numel`: the element count written for each."""
  parts = [pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2),
           pickle.dumps(1001, protocol=2),
           pickle.dumps({'little_endian': True}, protocol=2), pickled,
           pickle.dumps(list(storages), protocol=2)]
  for data in storages.values():
    count = len(data) // 4 if numel is None else numel
    parts += [struct.pack('<q', count), data]
  path.write_bytes(b''.join(parts))


def _deflated_zeros_zip(path, nbytes: int) -> int:
  """A zip whose storage '0' deflates `nbytes` of zeros; returns its size.

  Built from identical fully flushed deflate blocks (1 MiB of zeros each,
  about 1 KB compressed), so no gigabyte is ever compressed or held.
  """
  zeros = bytes(MiB)
  compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
  block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
  deflated = block * (nbytes // MiB) + compressor.flush()
  crc = 0
  for _ in range(nbytes // MiB):
    crc = zlib.crc32(zeros, crc)
  pickled = _state({'w': _tensor('0', nbytes // 4, (nbytes // 4,), (1,))})
  members = [('archive/data.pkl', 0, pickled, zlib.crc32(pickled),
              len(pickled)),
             ('archive/data/0', 8, deflated, crc, nbytes)]
  out, central = io.BytesIO(), io.BytesIO()
  for name, method, data, crc, size in members:
    fields = (20, 0, method, 0, 0x21, crc, len(data), size, len(name), 0)
    central.write(struct.pack('<IH', 0x02014b50, 20)
                  + struct.pack('<HHHHHIIIHH', *fields)
                  + struct.pack('<HHHII', 0, 0, 0, 0, out.tell())
                  + name.encode())
    out.write(struct.pack('<I', 0x04034b50) + struct.pack('<HHHHHIIIHH',
                                                          *fields)
              + name.encode() + data)
  offset = out.tell()
  out.write(central.getvalue())
  out.write(struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, len(members),
                        len(members), len(central.getvalue()), offset, 0))
  path.write_bytes(out.getvalue())
  return len(out.getvalue())


def _one_line(info) -> str:
  message = str(info.value)
  assert '\n' not in message
  return message


# --- Bombs refused with the default caps. ---


@pytest.mark.parametrize('layout', ['zip', 'legacy'])
def test_stride0_view_of_tiny_storage_is_refused(tmp_path, layout):
  # 4 bytes of storage declared as a (4096, 4096) float32 tensor (64 MiB).
  path = tmp_path / 'bomb.pth'
  legacy = layout == 'legacy'
  pickled = _state({'w': _tensor('0', 1, (4096, 4096), (0, 0),
                                 legacy=legacy)})
  (_legacy_file if legacy else _zip_file)(path, pickled, {'0': bytes(4)})
  with pytest.raises(SemcorrError, match=r"tensor 'w'.*64\.0 MiB.*4 bytes"
                     ) as info:
    torch_pickle.read_torch_file(path)
  assert str(path) in _one_line(info)
  with pytest.raises(SemcorrError, match='stride'):
    read_state_dict(path)


def test_overlapping_view_is_refused(tmp_path):
  # Rows overlap (stride 1 per row): 32 KiB of storage, 64 MiB of tensor.
  path = tmp_path / 'overlap.pth'
  n = 4096
  _zip_file(path, _state({'w': _tensor('0', 2 * n, (n, n), (1, 1))}),
            {'0': bytes(8 * n)})
  with pytest.raises(SemcorrError, match=r"'w'.*64\.0 MiB.*32\.0 KiB"):
    torch_pickle.read_torch_file(path)


def test_deflated_storage_bomb_is_refused(tmp_path):
  # 64 KB of file inflating to 64 MiB: torch.save never compresses.
  path = tmp_path / 'zipbomb.pth'
  size = _deflated_zeros_zip(path, 64 * MiB)
  assert size < 100_000
  with pytest.raises(SemcorrError, match=r'archive/data/0.*64\.0 MiB.*'
                     r'100:1.*SEMCORR_TORCH_MAX_ZIP_RATIO') as info:
    torch_pickle.read_torch_file(path)
  _one_line(info)
  # A trusted file reads with a higher ratio.
  read = torch_pickle.read_torch_file(path, max_zip_ratio=100_000)
  assert read['w'].shape == (16 * MiB,) and not read['w'].any()


def test_legacy_storage_larger_than_file_is_refused(tmp_path):
  # A 16 GiB storage declared in a file of a few hundred bytes.
  path = tmp_path / 'huge.pth'
  numel = 4 << 30
  pickled = _state({'w': _tensor('0', numel, (numel,), (1,), legacy=True)})
  _legacy_file(path, pickled, {'0': bytes(4)}, numel)
  with pytest.raises(SemcorrError, match=r"storage '0' declares 16\.0 GiB"):
    torch_pickle.read_torch_file(path)


# --- Configurable caps. ---


def _plain_file(path, tensors=1, kib=256, same_storage=False):
  """`tensors` float32 tensors of `kib` KiB each (optionally one storage)."""
  n = kib * 256
  entries = {f't{i}': _tensor('0' if same_storage else str(i), n, (n,), (1,))
             for i in range(tensors)}
  keys = ['0'] if same_storage else [str(i) for i in range(tensors)]
  _zip_file(path, _state(entries), {k: bytes(4 * n) for k in keys})


def test_tensor_cap(tmp_path, monkeypatch):
  path = tmp_path / 'big.pth'
  _plain_file(path)
  assert torch_pickle.read_torch_file(path)['t0'].nbytes == 256 << 10
  with pytest.raises(SemcorrError, match=r"tensor 't0' \(\(65536,\) float32"
                     r"\) takes 256\.0 KiB.*cap of 100\.0 KiB.*"
                     r'SEMCORR_TORCH_MAX_TENSOR_BYTES') as info:
    torch_pickle.read_torch_file(path, max_tensor_bytes=100 << 10)
  _one_line(info)
  monkeypatch.setenv('SEMCORR_TORCH_MAX_TENSOR_BYTES', '100K')
  with pytest.raises(SemcorrError, match='cap of 100.0 KiB'):
    read_state_dict(path)
  monkeypatch.setenv('SEMCORR_TORCH_MAX_TENSOR_BYTES', '1GiB')
  assert read_state_dict(path)['t0'].shape == (65536,)
  # An argument wins over the environment.
  with pytest.raises(SemcorrError, match='cap of 1.0 KiB'):
    torch_pickle.read_torch_file(path, max_tensor_bytes=1024)


def test_total_caps(tmp_path, monkeypatch):
  # Storage data: 4 storages of 256 KiB.
  path = tmp_path / 'many.pth'
  _plain_file(path, tensors=4)
  with pytest.raises(SemcorrError, match=r'storage data would total 1\.0 MiB '
                     r'at zip member archive/data/3.*cap of 900\.0 KiB.*'
                     r'SEMCORR_TORCH_MAX_TOTAL_BYTES'):
    torch_pickle.read_torch_file(path, max_total_bytes=900 << 10)
  assert len(torch_pickle.read_torch_file(path, max_total_bytes=MiB)) == 4
  # Tensors: 40 views of one 256 KiB storage make 10 MiB.
  _plain_file(path, tensors=40, same_storage=True)
  monkeypatch.setenv('SEMCORR_TORCH_MAX_TOTAL_BYTES', '4M')
  with pytest.raises(SemcorrError, match=r"tensors.*'t16'.*cap of 4\.0 MiB"
                     ) as info:
    torch_pickle.read_torch_checkpoint(path)
  _one_line(info)


def test_declared_member_size_checked_before_reading(tmp_path, monkeypatch):
  path = tmp_path / 'big.pth'
  _plain_file(path, kib=1024)

  opened = []
  real_open = zipfile.ZipFile.open

  def open_member(self, name, *args, **kwargs):
    opened.append(getattr(name, 'filename', name))
    return real_open(self, name, *args, **kwargs)
  monkeypatch.setattr(zipfile.ZipFile, 'open', open_member)
  with pytest.raises(SemcorrError, match=r'archive/data/0.*1\.0 MiB'):
    torch_pickle.read_torch_file(path, max_total_bytes=512 << 10)
  assert 'archive/data.pkl' in opened and 'archive/data/0' not in opened


@pytest.mark.parametrize('value', ['lots', '-1', '0', '1X'])
def test_bad_cap_settings_are_one_line(tmp_path, monkeypatch, value):
  path = tmp_path / 'w.pth'
  _plain_file(path, kib=1)
  monkeypatch.setenv('SEMCORR_TORCH_MAX_TOTAL_BYTES', value)
  with pytest.raises(SemcorrError, match='SEMCORR_TORCH_MAX_TOTAL_BYTES'
                     ) as info:
    torch_pickle.read_torch_file(path)
  _one_line(info)


def test_real_files_read_under_default_caps():
  for name in ('zip', 'legacy', 'nested_legacy'):
    assert torch_pickle.read_torch_file(
        paths.FIXTURES / f'torch_pickle_{name}.pth')


# --- The issue's sizes, with the default caps, in a capped subprocess. ---

_CHILD = textwrap.dedent('''
    import os, resource, sys, time
    from semcorr_jax.errors import SemcorrError
    from semcorr_jax.weights import torch_pickle
    size = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0])
    limit = size * 1024 + (768 << 20)  # The bombs ask for 1 GiB and more.
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for path in sys.argv[1:]:
      start = time.perf_counter()
      rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
      try:
        torch_pickle.read_torch_file(path)
        print('READ', path)
      except SemcorrError as e:
        grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss
        print(f'{time.perf_counter() - start:.2f}s {grew // 1024}MiB {e}')
''')


def test_issue_bombs_refused_fast_and_small(tmp_path):
  stride0 = tmp_path / 'stride0.pth'
  _zip_file(stride0, _state({'w': _tensor('0', 1, (16384, 16384), (0, 0))}),
            {'0': bytes(4)})
  assert stride0.stat().st_size < 1000
  deflated = tmp_path / 'deflated.pth'
  assert _deflated_zeros_zip(deflated, 1 << 30) < 1.1e6
  out = subprocess.run(
      [sys.executable, '-c', _CHILD, str(stride0), str(deflated)],
      capture_output=True, text=True, timeout=120, check=True,
      env=dict(os.environ, PYTHONPATH=str(  # The package under test.
          pathlib.Path(semcorr_jax.__file__).parents[1])))
  lines = out.stdout.splitlines()
  assert len(lines) == 2, out.stdout + out.stderr
  for line, match in zip(lines, ['stride', 'compressed']):
    seconds, grew, message = line.split(' ', 2)
    assert match in message and 'MemoryError' not in message, line
    assert float(seconds[:-1]) < 5 and int(grew[:-3]) < 64, line
