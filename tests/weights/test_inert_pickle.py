"""The inert mode of semcorr_jax/weights/torch_pickle.py (pickle_records.py)
and the writer of whole training checkpoints (state_dict.save_torch_file).

Every malicious pickle would create a marker file if anything in it ran;
the tests assert the file does not exist, in both modes.
"""

import argparse
import collections
import io
import os
import pickle
import subprocess
import zipfile

import numpy as np
import pytest

from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import pickle_records
from semcorr_jax.weights import state_dict
from semcorr_jax.weights import torch_pickle
from semcorr_jax.weights.pickle_records import InertRecord
from semcorr_jax.weights.torch_pickle import UnsafePickleError
from helpers import release_files as rf

CHECKPOINT_OBJECTS = {
    'args': argparse.Namespace(hyperpixel='[0,8,20]', depth=1,
                               ncons_channels=[16, 16, 1], freeze=True),
    'milestones': collections.Counter({70: 1, 80: 1, 90: 1}),
    'best': np.float64(-0.625),
    'losses': np.linspace(0, 1, 6).reshape(2, 3),
    'counts': collections.defaultdict(list, {'a': [1, 2]}),
}


def _zip(obj_pickle: bytes) -> bytes:
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w') as z:
    z.writestr('archive/data.pkl', obj_pickle)
    z.writestr('archive/byteorder', 'little')
  return buffer.getvalue()


def _write(tmp_path, payload: bytes, container: str):
  """`payload` as a torch zip file or as a plain pickle; the reader."""
  if container == 'torch':
    path = tmp_path / 'evil.pth'
    path.write_bytes(_zip(payload))
    return path, torch_pickle.read_torch_checkpoint
  path = tmp_path / 'args.pkl'
  path.write_bytes(payload)
  return path, torch_pickle.read_pickle_file


def _check_objects(read):
  args = read['args']
  assert isinstance(args, InertRecord) and args.name == 'argparse.Namespace'
  assert args.fields() == vars(CHECKPOINT_OBJECTS['args'])
  assert read['milestones'].name == 'collections.Counter'
  assert read['milestones'].args == ({70: 1, 80: 1, 90: 1},)
  best = pickle_records.numpy_value(read['best'])
  assert best.dtype == np.float64 and best == -0.625
  np.testing.assert_array_equal(pickle_records.numpy_value(read['losses']),
                                CHECKPOINT_OBJECTS['losses'])
  assert read['counts'].items == {'a': [1, 2]}
  assert read['counts'].args[0] == InertRecord(
      read['counts'].args[0].name, called=False)


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_plain_pickle_objects_become_records(tmp_path, protocol):
  path = tmp_path / 'args.pkl'
  path.write_bytes(pickle.dumps(CHECKPOINT_OBJECTS, protocol=protocol))
  _check_objects(torch_pickle.read_pickle_file(path, inert_globals=True))
  with pytest.raises(UnsafePickleError, match='argparse.Namespace'):
    torch_pickle.read_pickle_file(path)


def test_checkpoint_objects_in_a_torch_file(tmp_path):
  path = tmp_path / 'ckpt.pth'
  tree = {'state_dict': {'w': np.ones((2, 3), np.float32)},
          'args': CHECKPOINT_OBJECTS['args'],
          'milestones': CHECKPOINT_OBJECTS['milestones'],
          'best': pickle_records.numpy_record(CHECKPOINT_OBJECTS['best']),
          'losses': pickle_records.numpy_record(CHECKPOINT_OBJECTS['losses']),
          'counts': InertRecord('collections.defaultdict', (
              InertRecord('builtins.list', called=False),), items={
                  'a': [1, 2]})}
  state_dict.save_torch_file(tree, path)
  read = torch_pickle.read_torch_checkpoint(path, inert_globals=True)
  _check_objects(read)
  np.testing.assert_array_equal(read['state_dict']['w'], np.ones((2, 3)))
  with pytest.raises(UnsafePickleError, match='refusing.*argparse.Namespace'):
    torch_pickle.read_torch_checkpoint(path)
  # The state-dict readers stay strict, and a record is no tensor.
  with pytest.raises(UnsafePickleError):
    torch_pickle.read_torch_file(path)
  with pytest.raises(SemcorrError, match=r"'args' is a pickled argparse\."
                     r'Namespace object \(kept inert') as info:
    torch_pickle.flatten_state_dict(read, str(path))
  assert '\n' not in str(info.value)


# --- Malicious pickles: nothing runs, in either mode. ---


class _Exploit:
  """Pickles as a call of `func(*args)`, as an attacker's file would."""

  def __init__(self, func, *args):
    self.func, self.args = func, args

  def __reduce__(self):
    return self.func, self.args


def _str(text: str) -> bytes:
  """BINUNICODE opcode."""
  data = text.encode()
  return b'X' + len(data).to_bytes(4, 'little') + data


def _payloads(marker):
  touch = f'touch {marker}'
  code = f'open({str(marker)!r}, "w")'
  return {
      'os.system': pickle.dumps({'w': _Exploit(os.system, touch)}, 2),
      'builtins.eval': pickle.dumps([_Exploit(eval, code)], 4),
      'builtins.exec': pickle.dumps((_Exploit(exec, code),), 2),
      'subprocess.Popen': pickle.dumps(
          _Exploit(subprocess.Popen, ['touch', str(marker)]), 2),
      # NEWOBJ: Popen.__new__(Popen, ['touch', marker]), then BUILD.
      'newobj Popen': (b'\x80\x02csubprocess\nPopen\n](' + _str('touch') +
                       _str(str(marker)) + b'e\x85\x81}b.'),
      # Protocol 0 INST: MARK, the argument, `ios\nsystem\n`.
      'inst os.system': f"(S'{touch}'\nios\nsystem\n.".encode(),
      # getattr(object, 'eval'), then a call of what it returned.
      'getattr eval': (b'\x80\x02cbuiltins\ngetattr\ncbuiltins\nobject\n' +
                       _str('eval') + b'\x86R' + _str(code) + b'\x85R.'),
  }


def _strings(obj):
  """Every string inside nested containers and records."""
  if isinstance(obj, str):
    yield obj
  elif isinstance(obj, InertRecord):
    for part in (obj.args, obj.kwargs, obj.state, obj.items,
                 obj.list_items):
      yield from _strings(part)
  elif isinstance(obj, dict):
    for k, v in obj.items():
      yield from _strings(k)
      yield from _strings(v)
  elif isinstance(obj, (list, tuple)):
    for v in obj:
      yield from _strings(v)


@pytest.mark.parametrize('name', ['os.system', 'builtins.eval',
                                  'inst os.system'])
def test_payloads_do_run_when_unrestricted(tmp_path, name):
  # What the tests below guard against: Python's own unpickler runs them.
  marker = tmp_path / 'pwned'
  pickle.loads(_payloads(marker)[name])
  assert marker.exists()


@pytest.mark.parametrize('container', ['torch', 'plain'])
@pytest.mark.parametrize('name', ['os.system', 'builtins.eval',
                                  'builtins.exec', 'subprocess.Popen',
                                  'newobj Popen', 'inst os.system',
                                  'getattr eval'])
def test_malicious_pickles_run_nothing_in_both_modes(tmp_path, container,
                                                     name):
  marker = tmp_path / 'pwned'
  path, read = _write(tmp_path, _payloads(marker)[name], container)
  with pytest.raises(UnsafePickleError, match='refusing'):
    read(path)
  assert not marker.exists()
  # Inert mode reads it as data, or fails: either way nothing ran.
  try:
    result = read(path, inert_globals=True)
  except SemcorrError as e:
    assert '\n' not in str(e)
  else:  # The command, kept as a string.
    assert any(str(marker) in text for text in _strings(result))
  assert not marker.exists()


def test_inert_records_keep_the_call_as_data(tmp_path):
  marker = tmp_path / 'pwned'
  path, read = _write(tmp_path, _payloads(marker)['os.system'], 'torch')
  record = read(path, inert_globals=True)['w']
  assert record.name == f'{os.system.__module__}.system'
  assert record.args == (f'touch {marker}',) and record.called
  assert not marker.exists()


@pytest.mark.parametrize('state', [
    b'}' + _str('inert_name') + b'K\x01s',  # {'inert_name': 1}
    b'(N}' + _str('__new__') + b'K\x01st',  # (None, {'__new__': 1}): slots
])
def test_stand_ins_cannot_be_modified(tmp_path, state):
  # GLOBAL argparse.Namespace (the class, not called), state, BUILD.
  payload = b'\x80\x02cargparse\nNamespace\n' + state + b'b.'
  path, read = _write(tmp_path, payload, 'plain')
  with pytest.raises(UnsafePickleError,
                     match='sets the state of argparse.Namespace'):
    read(path, inert_globals=True)
  stand_in = pickle_records.inert_global('os', 'system')
  with pytest.raises(UnsafePickleError, match='modifies os.system'):
    stand_in.inert_name = 'builtins.print'


@pytest.mark.parametrize('content,match', [
    (None, 'no such file'),
    (b'', 'not a readable pickle file'),
    (b'garbage', 'not a readable pickle file'),
    (_zip(pickle.dumps({}, 2)), 'a zip .torch.save. file, not a plain'),
    (pickle.dumps(1, 2) + b'extra', 'data after the end'),
    # A persistent id (tensor storage) in a plain pickle.
    (b'\x80\x02X\x07\x00\x00\x00storageQ.', 'persistent object'),
])
def test_plain_pickle_errors_are_one_line(tmp_path, content, match):
  path = tmp_path / 'args.pkl'
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(SemcorrError, match=match) as info:
    torch_pickle.read_pickle_file(path, inert_globals=True)
  assert '\n' not in str(info.value) and str(path) in str(info.value)


# --- Whole checkpoints written by us and by torch. ---


def test_our_checkpoint_is_what_torch_save_writes(tmp_path):
  torch = pytest.importorskip('torch')
  checkpoint = rf.ncnet_checkpoint(seed=3)
  ours, theirs = tmp_path / 'ours.pth.tar', tmp_path / 'torch.pth.tar'
  rf.write_ours(checkpoint, ours)
  rf.write_torch(checkpoint, theirs, torch)
  loaded = torch.load(ours, weights_only=False)
  assert isinstance(loaded['args'], argparse.Namespace)
  assert loaded['args'] == checkpoint['args']
  assert type(loaded['best_test_loss']) is np.float64
  assert loaded['best_test_loss'] == checkpoint['best_test_loss'].value
  np.testing.assert_array_equal(loaded['train_loss'],
                                checkpoint['train_loss'].value)
  key = 'NeighConsensus.conv.2.weight'
  np.testing.assert_array_equal(loaded['state_dict'][key].numpy(),
                                checkpoint['state_dict'][key])
  assert loaded['optimizer']['param_groups'][0]['betas'] == (0.9, 0.999)
  assert list(loaded['optimizer']['state']) == [0, 1, 2, 3]
  # Read back by us, both files say the same.
  a = torch_pickle.read_torch_checkpoint(ours, inert_globals=True)
  b = torch_pickle.read_torch_checkpoint(theirs, inert_globals=True)
  assert a['args'].fields() == b['args'].fields() == vars(checkpoint['args'])
  assert (pickle_records.numpy_value(a['best_test_loss']) ==
          pickle_records.numpy_value(b['best_test_loss']))
  flat_a = torch_pickle.flatten_state_dict(a['state_dict'])
  flat_b = torch_pickle.flatten_state_dict(b['state_dict'])
  assert flat_a.keys() == flat_b.keys()
  for k in flat_a:
    np.testing.assert_array_equal(flat_a[k], flat_b[k])


def test_cats_scheduler_counter_round_trips(tmp_path):
  checkpoint, args = rf.cats_checkpoint()
  path, args_path = tmp_path / 'model_best.pth', tmp_path / 'args.pkl'
  rf.write_ours(checkpoint, path)
  rf.write_args(args, args_path)
  read = torch_pickle.read_torch_checkpoint(path, inert_globals=True)
  assert read['scheduler']['milestones'] == InertRecord(
      'collections.Counter', ({70: 1, 80: 1, 90: 1},))
  assert read['optimizer']['param_groups'][1]['lr'] == 3e-6
  assert read['best_loss'] == 41.25
  flags = torch_pickle.read_pickle_file(args_path, inert_globals=True)
  assert flags.fields()['hyperpixel'] == '[0,2,3]'
