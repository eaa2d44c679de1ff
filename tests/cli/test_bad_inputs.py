"""benchmarks/bad_input_checks.py: outcomes and workdir comparisons."""

import json
import sys

from helpers import paths

sys.path.insert(0, str(paths.REPO / 'benchmarks'))

import bad_input_checks as checks  # noqa: E402


def test_classify_and_verdict():
  tb = 'Traceback (most recent call last):\n  x\nValueError: y\n'
  assert checks.classify(1, 'warning: w\nerror: bad value\n\n') == 'one_line'
  assert checks.classify(1, tb + 'error: bad value\n') == 'traceback'
  assert checks.classify(0, tb) == 'traceback'
  assert checks.classify(1, 'error: bad\nmore noise\n') == 'noisy'
  assert checks.classify(1, 'FATAL Flags parsing error: x\n') == 'silent'
  assert checks.classify(1, '') == 'silent'
  assert checks.classify(0, 'a warning\n') == 'accepted'
  assert checks.classify(None, '', timed_out=True) == 'timeout'
  assert checks.verdict('error', 'one_line') == 'as expected'
  assert checks.verdict('error', 'accepted') == 'wrong_ok'
  assert checks.verdict('ok', 'one_line') == 'wrong_error'
  assert checks.verdict('any', 'accepted') == 'as expected'
  assert checks.verdict('ok', 'silent') == 'silent'


def _workdir(root, config, lines):
  (root / 'checkpoints' / '2').mkdir(parents=True)
  (root / 'checkpoints' / '4').mkdir()
  (root / 'checkpoints' / '2' / 'data').write_bytes(b'two')
  (root / 'checkpoints' / '4' / 'data').write_bytes(b'four')
  (root / 'config.json').write_text(json.dumps(config))
  (root / 'metrics.jsonl').write_text(
      ''.join(json.dumps({'step': s, 'split': p}) + '\n' for s, p in lines))


def _lost(root, config, unprotected=()):
  before = checks.snapshot(str(root))
  metrics = checks.metric_keys(str(root / 'metrics.jsonl'))
  return lambda: checks.lost_data(str(root), before, metrics, config,
                                  list(unprotected))


def test_lost_data_and_leftovers(tmp_path):
  config = {'method': 'sfnet', 'lr': 0.001}
  _workdir(tmp_path, config, [(2, 'train'), (4, 'train')])
  lost = _lost(tmp_path, config)
  assert not lost()
  # The previous config kept beside, re-formatted: not lost.
  (tmp_path / 'config.json').write_text(json.dumps({**config, 'lr': 1e30}))
  (tmp_path / 'config.1.json').write_text(json.dumps(config, indent=2))
  assert not lost()
  (tmp_path / 'config.1.json').unlink()
  (tmp_path / 'checkpoints' / '2' / 'data').write_bytes(b'tw')
  (tmp_path / 'metrics.jsonl').write_text('{"step": 2, "split": "train"}\n')
  found = ' '.join(lost())
  assert 'config.json' in found and 'checkpoints/2/data' in found
  assert '(4, ' in found

  before = checks.snapshot(str(tmp_path))
  (tmp_path / 'checkpoints' / '6.orbax-checkpoint-tmp' / 'x').mkdir(
      parents=True)
  (tmp_path / 'checkpoints' / '8').mkdir()
  (tmp_path / '.m.png.tmp').write_bytes(b'')
  left = checks.new_leftovers(str(tmp_path), before, True, False, False)
  assert left == ['.m.png.tmp', 'checkpoints/6.orbax-checkpoint-tmp/',
                  'checkpoints/8/ (no commit marker)']
  assert checks.new_leftovers(str(tmp_path), before, True, True, False)[0] \
      == 'created .m.png.tmp'

  (tmp_path / 'metrics.jsonl').write_text(
      '{"step": 2, "split": "train"}\n{"step": 2, "split": "train"}\n')
  assert '(2, ' in checks.duplicate_steps(str(tmp_path))[0]


def test_damaged_checkpoint_is_not_lost(tmp_path):
  config = {'method': 'sfnet'}
  _workdir(tmp_path, config, [(2, 'train'), (4, 'train'), (4, 'synthetic')])
  lost = _lost(tmp_path, config, ['checkpoints/4/data'])
  # Fell back to step 2: the damaged step 4 moved aside, trained again, and
  # its metrics may go.
  (tmp_path / 'corrupt_checkpoints').mkdir()
  (tmp_path / 'checkpoints' / '4').rename(
      tmp_path / 'corrupt_checkpoints' / '4')
  (tmp_path / 'checkpoints' / '4').mkdir()
  (tmp_path / 'checkpoints' / '4' / 'data').write_bytes(b'new four')
  (tmp_path / 'metrics.jsonl').write_text('{"step": 2, "split": "train"}\n')
  assert not lost()


def test_config_kept_in_history_is_not_lost(tmp_path):
  config = {'method': 'sfnet', 'lr': 0.001}
  _workdir(tmp_path, config, [(2, 'train')])
  lost = _lost(tmp_path, config)
  (tmp_path / 'config.json').write_text(json.dumps({**config, 'lr': 0.5}))
  assert 'config.json' in ' '.join(lost())
  (tmp_path / 'config_history').mkdir()
  (tmp_path / 'config_history' / '1.json').write_text(
      json.dumps(config, indent=2, sort_keys=True))
  assert not lost()


def test_damaged_checkpoint_moved_aside_not_deleted(tmp_path):
  _workdir(tmp_path, {'method': 'sfnet'}, [(2, 'train')])
  lost = _lost(tmp_path, {'method': 'sfnet'}, ['checkpoints/4/data'])
  aside = tmp_path / 'corrupt_checkpoints' / '4'
  aside.mkdir(parents=True)
  (tmp_path / 'checkpoints' / '4').rename(aside)
  assert not lost()
  (aside / 'data').unlink()
  assert 'damaged checkpoint was deleted' in ' '.join(lost())


def test_changes(tmp_path):
  _workdir(tmp_path, {'method': 'sfnet'}, [(2, 'train')])
  before = checks.snapshot(str(tmp_path))
  assert not checks.changes(str(tmp_path), before)
  (tmp_path / 'tensorboard' / 'x').mkdir(parents=True)
  (tmp_path / 'checkpoints' / '2' / 'data').unlink()
  (tmp_path / 'metrics.jsonl').write_text('')
  assert checks.changes(str(tmp_path), before) == [
      'created tensorboard/', 'removed checkpoints/2/data',
      'rewrote metrics.jsonl']
