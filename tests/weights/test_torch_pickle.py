"""Tests for semcorr_jax/weights/torch_pickle.py and the torch-file writer.

Real torch files are committed fixtures (tests/fixtures/torch_pickle_*.pth,
written by tests/fixtures/make_torch_pickle_fixtures.py with torch 2.x); no
test here needs torch.
"""

import errno
import io
import os
import pathlib
import pickle
import subprocess
import zipfile

import numpy as np
import pytest

from semcorr_jax.cli import convert_weights
from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import read_state_dict
from semcorr_jax.weights import state_dict as state_dict_lib
from semcorr_jax.weights import torch_pickle
from semcorr_jax.weights import torch_unpickler
from semcorr_jax.weights.torch_pickle import UnsafePickleError
from helpers import paths

FIXTURES = paths.FIXTURES
LEGACY = FIXTURES / 'torch_pickle_legacy.pth'
ZIP = FIXTURES / 'torch_pickle_zip.pth'
NESTED = FIXTURES / 'torch_pickle_nested_legacy.pth'


@pytest.fixture(scope='module')
def expected():
  with np.load(FIXTURES / 'torch_pickle_expected.npz') as f:
    return {k: f[k] for k in f.files}


def _check_equal(read, expected):
  for key, value in read.items():
    if key + '@bfloat16' in expected:
      assert value.dtype.name == 'bfloat16'
      np.testing.assert_array_equal(value.astype(np.float32),
                                    expected[key + '@bfloat16'])
    else:
      assert value.dtype == expected[key].dtype, key
      assert value.shape == expected[key].shape, key
      np.testing.assert_array_equal(value, expected[key])
      assert value.flags['C_CONTIGUOUS']


@pytest.mark.parametrize('path', [LEGACY, ZIP], ids=['legacy', 'zip'])
def test_real_torch_files_read_exactly(path, expected):
  read = torch_pickle.read_torch_file(path)
  assert list(read) == [
      'conv.weight', 'conv.bias', 'half', 'bf16', 'long', 'mask',
      'bn.num_batches_tracked', 'transposed', 'strided', 'shared_row',
      'shared_col']
  _check_equal(read, expected)
  assert read['bn.num_batches_tracked'].shape == ()
  assert read['transposed'].shape == (5, 3)
  # Shared storage: the two views are independent copies.
  read['shared_row'][:] = 0
  assert read['shared_col'][2] == expected['shared_col'][2] != 0


def test_nested_checkpoint_keeps_structure(expected):
  # Module state dicts carry `_metadata`, set by the pickle's BUILD opcode.
  ckpt = torch_pickle.read_torch_checkpoint(NESTED)
  assert list(ckpt) == ['state_dict1', 'state_dict2', 'epoch']
  assert ckpt['epoch'] == 3
  assert ckpt['state_dict1']['conv1.0.weight'].shape == (2, 2, 5, 5)
  flat = torch_pickle.read_torch_file(NESTED)
  assert 'state_dict2.conv1.1.running_var' in flat
  _check_equal(flat, expected)


def test_read_state_dict_reads_torch_suffixes(expected, tmp_path):
  for suffix in ('.pth', '.pt', '.bin'):
    path = tmp_path / f'w{suffix}'
    path.write_bytes(ZIP.read_bytes())
    read = read_state_dict(path)
    assert read['bf16'].dtype == np.float32  # As before, bfloat16 -> f32.
    np.testing.assert_array_equal(read['strided'], expected['strided'])


def test_writer_round_trips_nested_and_converts(expected, tmp_path):
  tree = {'a': {'w': expected['conv.weight'], 'n': expected['long']},
          'h': expected['half'], 'mask': expected['mask'], 'epoch': 3}
  path = tmp_path / 'out.pth'
  state_dict_lib.save_torch_file(tree, path)
  assert zipfile.is_zipfile(path)
  read = torch_pickle.read_torch_checkpoint(path)
  assert read['epoch'] == 3
  np.testing.assert_array_equal(read['a']['w'], expected['conv.weight'])
  assert read['h'].dtype == np.float16 and read['mask'].dtype == np.bool_
  # The CLI converts between formats by output suffix.
  assert convert_weights.main([str(LEGACY), str(tmp_path / 'c.pth')]) == 0
  assert convert_weights.main([str(tmp_path / 'c.pth'),
                               str(tmp_path / 'c.npz')]) == 0
  np.testing.assert_array_equal(read_state_dict(tmp_path / 'c.npz')['strided'],
                                expected['strided'])
  with pytest.raises(SemcorrError, match='uint16'):
    state_dict_lib.save_torch_file({'u': np.zeros(2, np.uint16)},
                                   tmp_path / 'u.pth')


# --- Malicious pickles. ---


class _Exploit:
  """Pickles as a call of `func(*args)`, as an attacker's file would."""

  def __init__(self, func, *args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


def _legacy(obj_pickle: bytes, header_pickle: bytes | None = None) -> bytes:
  header = header_pickle or pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)
  return (header + pickle.dumps(1001, protocol=2) +
          pickle.dumps({'little_endian': True}, protocol=2) + obj_pickle +
          pickle.dumps([], protocol=2))


def _zip(obj_pickle: bytes) -> bytes:
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w') as z:
    z.writestr('archive/data.pkl', obj_pickle)
    z.writestr('archive/byteorder', 'little')
  return buffer.getvalue()


def _exploits(marker):
  touch = f'touch {marker}'
  return {
      'os.system': _Exploit(os.system, touch),
      'builtins.eval': _Exploit(eval, f'open({str(marker)!r}, "w")'),
      'subprocess.Popen': _Exploit(subprocess.Popen, ['touch', str(marker)]),
  }


@pytest.mark.parametrize('layout', ['legacy', 'legacy_header', 'zip'])
@pytest.mark.parametrize('name', ['os.system', 'builtins.eval',
                                  'subprocess.Popen'])
def test_malicious_pickle_refused_before_running(tmp_path, layout, name):
  marker = tmp_path / 'pwned'
  exploit = _exploits(marker)[name]
  # The exploit hides inside an otherwise plain state dict.
  payload = pickle.dumps({'weight': 1.0, 'bias': exploit}, protocol=2)
  data = {'legacy': lambda: _legacy(payload),
          'legacy_header': lambda: _legacy(pickle.dumps([]), payload),
          'zip': lambda: _zip(payload)}[layout]()
  path = tmp_path / 'evil.pth'
  path.write_bytes(data)
  func = name.split('.')[-1]
  for read in (torch_pickle.read_torch_file, read_state_dict):
    with pytest.raises(UnsafePickleError, match=rf'refusing.*\.{func}\b'):
      read(path)
  assert not marker.exists()


@pytest.mark.parametrize('target', [b'ctorch\nFloatStorage\n',
                                    b'ccollections\nOrderedDict\n'])
def test_build_on_allowlisted_globals_is_refused(tmp_path, target):
  # GLOBAL target; {'keys': 1}; BUILD: would set attributes on the global.
  payload = b'\x80\x02' + target + b'}X\x04\x00\x00\x00keysK\x01sb.'
  path = tmp_path / 'build.pth'
  path.write_bytes(_zip(payload))
  with pytest.raises(UnsafePickleError, match='sets the state'):
    torch_pickle.read_torch_file(path)


def test_unsafe_error_is_a_semcorr_error_and_names_global(tmp_path):
  path = tmp_path / 'evil.pt'
  path.write_bytes(_zip(pickle.dumps(_Exploit(os.system, 'true'))))
  with pytest.raises(SemcorrError) as info:
    torch_pickle.read_torch_file(path)
  message = str(info.value)
  assert '\n' not in message and str(path) in message
  assert f'{os.system.__module__}.system' in message  # posix.system


# --- Bad input. ---


@pytest.mark.parametrize('content,match', [
    (b'', 'not a readable torch.save file'),
    (b'garbage bytes', 'not a readable torch.save file'),
    (pickle.dumps(12345), 'bad magic number'),
])
def test_corrupt_files_are_one_line_errors(tmp_path, content, match):
  path = tmp_path / 'bad.pth'
  path.write_bytes(content)
  with pytest.raises(SemcorrError, match=match) as info:
    torch_pickle.read_torch_file(path)
  assert '\n' not in str(info.value)


def test_truncated_files(tmp_path):
  data = LEGACY.read_bytes()
  path = tmp_path / 'cut.pth'
  path.write_bytes(data[:-10])
  with pytest.raises(SemcorrError, match='truncated'):
    torch_pickle.read_torch_file(path)
  # A zip whose storage record is shorter than the pickle says.
  with zipfile.ZipFile(ZIP) as src, zipfile.ZipFile(path, 'w') as dst:
    for info in src.infolist():
      content = src.read(info)
      if info.filename.endswith('/data/0'):
        content = content[:4]
      dst.writestr(info.filename, content)
  with pytest.raises(SemcorrError, match='truncated'):
    torch_pickle.read_torch_file(path)
  with pytest.raises(SemcorrError, match='no such file'):
    torch_pickle.read_torch_file(tmp_path / 'missing.pth')


def test_views_are_bounds_checked():
  storage = torch_unpickler.Storage('0', np.dtype(np.float32), 4 * 6)
  buffers = {'0': np.arange(6, dtype=np.float32).tobytes()}
  ok = torch_unpickler.Tensor(storage, 1, (2, 2), (3, 1))
  np.testing.assert_array_equal(
      torch_unpickler.tensor_array(ok, buffers, False), [[1, 2], [4, 5]])
  for offset, size, stride in [(3, (2, 2), (3, 1)), (0, (7,), (1,)),
                               (0, (2,), (-1,))]:
    bad = torch_unpickler.Tensor(storage, offset, size, stride)
    with pytest.raises(SemcorrError):
      torch_unpickler.tensor_array(bad, buffers, False)


def test_non_tensor_entries_are_named(tmp_path):
  path = tmp_path / 'meta.pth'
  state_dict_lib.save_torch_file({'w': np.ones(2), 'arch': 'resnet'}, path)
  with pytest.raises(SemcorrError, match="'arch' is a str"):
    torch_pickle.read_torch_file(path)
  assert torch_pickle.read_torch_checkpoint(path)['arch'] == 'resnet'


def test_failed_write_leaves_nothing(tmp_path, monkeypatch, capsys):
  real_writestr = zipfile.ZipFile.writestr

  def full(self, name, data, *args, **kwargs):
    if '/data/' in str(getattr(name, 'filename', name)):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_writestr(self, name, data, *args, **kwargs)
  monkeypatch.setattr(zipfile.ZipFile, 'writestr', full)
  with pytest.raises(OSError, match='No space left'):
    state_dict_lib.save_torch_file({'w': np.ones(2)}, tmp_path / 'w.pth')
  assert not list(tmp_path.iterdir())
  # The converter says so in one line.
  assert convert_weights.main([str(ZIP), str(tmp_path / 'c.pth')]) == 1
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and 'No space left' in err
  assert not list(tmp_path.iterdir())
  real_savez = np.savez

  def half_then_full(file, **arrays):
    real_savez(file, **arrays)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(np, 'savez', half_then_full)
  assert convert_weights.main([str(ZIP), str(tmp_path / 'c.npz')]) == 1
  assert 'No space left' in capsys.readouterr().err
  assert not list(tmp_path.iterdir())
