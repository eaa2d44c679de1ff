"""The input files of benchmarks/bad_inputs.py: pictures and torch files.

Written without torch: the torch files are hand-made pickles (protocol 2)
in either `torch.save` format, shaped like SFNet's release
(`{'state_dict1': {'conv1.0.weight': tensor}}`).
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 64, 48  # of the photo
_TORCH_MAGIC = 0x1950a86a20f9469cfc6c


def _photo() -> np.ndarray:
  y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
  rgb = [128 + 100 * np.sin(x / 5) * np.cos(y / 7), 255 * x / (WIDTH - 1),
         255 * y / (HEIGHT - 1)]
  return np.stack(rgb, -1).round().clip(0, 255).astype(np.uint8)


def _chunk(tag: bytes, data: bytes) -> bytes:
  return (struct.pack('>I', len(data)) + tag + data +
          struct.pack('>I', zlib.crc32(tag + data)))


def _png_bomb(side: int = 20000) -> bytes:
  """A 1 KB PNG declaring side x side gray pixels (rows of zeros follow)."""
  header = struct.pack('>IIBBBBB', side, side, 8, 0, 0, 0, 0)
  rows = zlib.compress(b'\0' * (side + 1) * 16)
  return (b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', header) +
          _chunk(b'IDAT', rows) + _chunk(b'IEND', b''))


def _p_str(text: str) -> bytes:  # pickle opcodes, protocol 2
  data = text.encode()
  return b'X' + struct.pack('<I', len(data)) + data


def _p_int(value: int) -> bytes:
  return b'\x8a\x09' + int(value).to_bytes(9, 'little', signed=True)


def _p_global(module: str, name: str) -> bytes:
  return b'c' + f'{module}\n{name}\n'.encode()


def _p_tensor(key: str, numel: int, size, stride, legacy: bool) -> bytes:
  """torch._utils._rebuild_tensor_v2 of a float32 storage."""
  pid = (b'(' + _p_str('storage') + _p_global('torch', 'FloatStorage') +
         _p_str(key) + _p_str('cpu') + _p_int(numel) +
         (b'N' if legacy else b'') + b't')
  ints = lambda vs: b'(' + b''.join(_p_int(v) for v in vs) + b't'
  return (_p_global('torch._utils', '_rebuild_tensor_v2') + b'(' + pid +
          b'Q' + _p_int(0) + ints(size) + ints(stride) + b'\x89' +
          _p_global('collections', 'OrderedDict') + b')RtR')


def _p_release(tensor: bytes) -> bytes:
  """{'state_dict1': {'conv1.0.weight': tensor}}, as SFNet's release."""
  return (b'\x80\x02}(' + _p_str('state_dict1') + b'}(' +
          _p_str('conv1.0.weight') + tensor + b'uu.')


def _legacy_file(obj: bytes, storages=()) -> bytes:
  """A pre-1.6 torch.save file: storages are (key, numel, bytes)."""
  head = b''.join(pickle.dumps(v, protocol=2) for v in
                  (_TORCH_MAGIC, 1001, {'little_endian': True}))
  keys = pickle.dumps([k for k, _, _ in storages], protocol=2)
  return head + obj + keys + b''.join(struct.pack('<q', n) + data
                                      for _, n, data in storages)


def _zip_bomb(path: str, numel: int = 1 << 28) -> None:
  """~1 MB zip-format torch file whose one float32 storage inflates to 1 GiB."""
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as z:
    z.writestr('archive/data.pkl', _p_release(
        _p_tensor('0', numel, (numel,), (1,), legacy=False)))
    z.writestr('archive/byteorder', 'little')
    with z.open('archive/data/0', 'w', force_zip64=True) as f:
      zeros = bytes(1 << 20)
      for _ in range(numel * 4 >> 20):
        f.write(zeros)


def os_system_pickle(command: str) -> bytes:
  """A legacy torch file whose pickle calls os.system(command)."""
  return _legacy_file(b'\x80\x02' + _p_global('os', 'system') + b'(' +
                      _p_str(command) + b'tR.')


def make_inputs(folder: str, code: str) -> dict[str, str]:
  """Writes the shared input files once; {name: path}."""
  os.makedirs(folder, exist_ok=True)
  paths = {n: os.path.join(folder, f) for n, f in (
      ('photo', 'photo.png'), ('gray8', 'gray8.png'),
      ('gray16', 'gray16.png'), ('exif', 'exif.png'),
      ('bomb_png', 'bomb.png'), ('truncated_png', 'truncated.png'),
      ('text_png', 'text.png'), ('legacy_bomb', 'legacy_bomb.pth'),
      ('zip_bomb', 'zip_bomb.pth'), ('truncated_pth', 'truncated.pth'),
      ('not_torch', 'resnet50-0676ba61.pth'))}
  photo = _photo()
  Image.fromarray(photo).save(paths['photo'])
  gray = photo.mean(-1).round().astype(np.uint8)
  Image.fromarray(gray).save(paths['gray8'])
  Image.fromarray(gray.astype(np.uint16) * 257).save(paths['gray16'])
  exif = Image.Exif()
  exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the photo upright
  Image.fromarray(photo).transpose(Image.Transpose.ROTATE_90).save(
      paths['exif'], exif=exif)
  with open(paths['bomb_png'], 'wb') as f:
    f.write(_png_bomb())
  with open(paths['photo'], 'rb') as f:
    data = f.read()
  with open(paths['truncated_png'], 'wb') as f:
    f.write(data[:len(data) // 2])
  for name in ('text_png', 'not_torch'):
    with open(paths[name], 'w') as f:
      f.write('not what the name says\n')
  with open(paths['legacy_bomb'], 'wb') as f:  # 1 GiB from a 4-byte storage
    f.write(_legacy_file(
        _p_release(_p_tensor('0', 1, (16384, 16384), (0, 0), legacy=True)),
        [('0', 1, struct.pack('<f', 1.0))]))
  if not os.path.isfile(paths['zip_bomb']):
    _zip_bomb(paths['zip_bomb'])
  fixture = os.path.join(code, 'tests', 'fixtures',
                         'torch_pickle_nested_legacy.pth')
  with open(fixture, 'rb') as f:
    data = f.read()
  with open(paths['truncated_pth'], 'wb') as f:
    f.write(data[:len(data) // 2])
  paths['release'] = fixture
  return paths
