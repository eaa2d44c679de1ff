"""Every failure of the tools and of `semcorr_jax.load` is one line.

`main_wrapper` turns any exception into `error: <one line>` and exit status 1
(the traceback with `--verbose` or SEMCORR_VERBOSE=1); config flag errors are
one line too, raised while the flags parse; output locations and benchmark
folders are checked before any work, and nothing is left half-written.

The workdirs hold the tiny SFNet of configs/sfnet.py:test (initialised, not
trained), so the console scripts can read them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
import pytest

import semcorr_jax
from semcorr_jax import api
from semcorr_jax import config_files
from semcorr_jax import output_paths
from semcorr_jax import workdirs
from semcorr_jax.cli import common
from semcorr_jax.cli import evaluate
from semcorr_jax.cli import match
from semcorr_jax.data import benchmarks
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import runner

from helpers import paths
import test_api_cli as api_cli

SFNET = str(paths.CONFIGS / 'sfnet.py')
BIN = os.path.dirname(sys.executable)
HINT = '(set SEMCORR_VERBOSE=1 or pass --verbose for the traceback)'


# --- workdirs -----------------------------------------------------------------
@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  """A readable SFNet workdir with one checkpoint (step 3)."""
  # pylint: disable-next=protected-access
  config = api_cli._config('sfnet')
  # pylint: disable-next=protected-access
  return api_cli._make_workdir(tmp_path_factory.mktemp('sfnet'), config)


def _copy(workdir, tmp_path, name):
  copy = tmp_path / name
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns('eval'))
  return copy


def _cut_in_half(path) -> None:
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.truncate(size // 2)


def truncated(workdir, tmp_path):
  """The largest file of the checkpoint cut in half."""
  copy = _copy(workdir, tmp_path, 'truncated')
  files = [os.path.join(d, f) for d, _, fs in os.walk(copy / 'checkpoints')
           for f in fs]
  _cut_in_half(max(files, key=os.path.getsize))
  return copy


def truncated_manifest(workdir, tmp_path):
  """The state's OCDBT manifest cut in half: every array read fails."""
  copy = _copy(workdir, tmp_path, 'manifest')
  _cut_in_half(copy / 'checkpoints' / '3' / 'state' / 'manifest.ocdbt')
  return copy


def config_without_fields(workdir, tmp_path):
  """config.json names the method and nothing else."""
  copy = _copy(workdir, tmp_path, 'bare_config')
  (copy / 'config.json').write_text(json.dumps({'method': 'sfnet'}))
  return copy


def config_not_a_dict(workdir, tmp_path):
  copy = _copy(workdir, tmp_path, 'list_config')
  (copy / 'config.json').write_text('[]')
  return copy


# --- main_wrapper, in-process -------------------------------------------------
def _wrapped_exit(fn, capsys, argv=('tool',)):
  """(exit status, stderr) of `main_wrapper(fn)`."""
  with pytest.raises(SystemExit) as e:
    common.main_wrapper(fn)(list(argv))
  return e.value.code, capsys.readouterr().err


def _raise(error):
  def main(argv):
    del argv
    raise error
  return main


@pytest.mark.parametrize('error, line', [
    (ValueError('bad value\nsecond line'),
     f'error: ValueError: bad value {HINT}\n'),
    (Exception('Encountered error while reading array'),
     f'error: Exception: Encountered error while reading array {HINT}\n'),
    (KeyError('nosuchkey'), f"error: KeyError: 'nosuchkey' {HINT}\n"),
    (SemcorrError('two\n  lines'), 'error: two lines\n'),
    (app.UsageError('unexpected arguments: x'),
     'error: unexpected arguments: x\n'),
    (OSError(28, 'No space left on device', '/w/f'),
     'error: /w/f: No space left on device\n'),
])
def test_main_wrapper_turns_any_exception_into_one_line(
    error, line, capsys, monkeypatch):
  monkeypatch.delenv(common.VERBOSE_ENV, raising=False)
  code, err = _wrapped_exit(_raise(error), capsys)
  assert code == 1
  assert err == line


def test_main_wrapper_keeps_130_for_an_interrupt(capsys):
  code, err = _wrapped_exit(_raise(KeyboardInterrupt()), capsys)
  assert code == 130 and err == 'interrupted\n'


def test_verbose_env_prints_the_traceback_then_the_line(capsys, monkeypatch):
  monkeypatch.setenv(common.VERBOSE_ENV, '1')
  code, err = _wrapped_exit(_raise(ZeroDivisionError('division by zero')),
                            capsys)
  assert code == 1
  assert 'Traceback (most recent call last)' in err
  assert err.endswith('error: ZeroDivisionError: division by zero\n')
  # A user error gets its traceback too when asked for.
  _, err = _wrapped_exit(_raise(SemcorrError('bad input')), capsys)
  assert 'Traceback' in err and err.endswith('error: bad input\n')


def test_verbose_flag_is_defined_once_beside_absl_verbosity():
  assert 'verbose' in flags.FLAGS and 'verbosity' in flags.FLAGS
  assert flags.FLAGS['verbose'].default is False


def test_background_thread_error_is_one_line(capsys, monkeypatch):
  monkeypatch.delenv(common.VERBOSE_ENV, raising=False)

  def fail():
    raise RuntimeError('orbax worker died\nmore detail')

  monkeypatch.setattr(threading, 'excepthook', common.thread_excepthook)
  thread = threading.Thread(target=fail, name='writer')
  thread.start()
  thread.join()
  err = capsys.readouterr().err
  assert err == ("error: in thread 'writer': RuntimeError: orbax worker "
                 f'died {HINT}\n')


# --- config flags, in-process -------------------------------------------------
def _parse(argv):
  """common.parse_flags on a fresh FlagValues with a config file flag."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=values,
                                  sys_argv=argv, lock_config=True)
  flags.DEFINE_string('workdir', None, 'workdir', flag_values=values)
  return common.parse_flags(argv, values), values


@pytest.mark.parametrize('args, parts', [
    ([f'--config={SFNET}:test', '--config.nosuchkey=1'],
     ["--config: config has no field 'nosuchkey'", 'batch_size']),
    ([f'--config={SFNET}:test', '--config.data.nosuch.x=1'],
     ["config has no field 'data.nosuch.x'", "'data' has", 'image_size']),
    ([f'--config={SFNET}:nosuch'],
     ["unknown variant 'nosuch': test, quick or paper"]),
    (['--config=/nonexistent/c.py:test'],
     ["config file '/nonexistent/c.py': no such file"]),
    (['--config=/nonexistent/c.py:test', '--config.batch_size=2'],
     ["config file '/nonexistent/c.py': no such file"]),
    ([f'--config={SFNET}:test', '--config.batch_size=abc'],
     ['--config.batch_size=abc', "invalid literal for int()"]),
    (['--nosuchflag=1'], ["Unknown command line flag 'nosuchflag'"]),
])
def test_config_flag_errors_are_one_line(args, parts):
  with pytest.raises(SemcorrError) as e:
    _parse(['semcorr-train', *args, '--workdir=w'])
  message = str(e.value)
  assert '\n' not in message and 'Traceback' not in message, message
  for part in parts:
    assert part in message, message


def test_config_file_that_does_not_run_is_one_line(tmp_path):
  bad = tmp_path / 'bad.py'
  bad.write_text('def get_config(:\n')
  with pytest.raises(SemcorrError, match=r'bad.py.*SyntaxError') as e:
    _parse(['semcorr-train', f'--config={bad}', '--workdir=w'])
  assert '\n' not in str(e.value)


def test_good_flags_parse():
  rest, values = _parse(['semcorr-train', f'--config={SFNET}:test',
                         '--config.batch_size=3', '--workdir=w', 'extra'])
  assert rest == ['semcorr-train', 'extra']
  assert values.config.batch_size == 3 and values.workdir == 'w'


def test_config_files_load_names_the_variant_and_missing_parents():
  with pytest.raises(SemcorrError, match="unknown variant 'nosuch'"):
    config_files.load(f'{SFNET}:nosuch')
  with pytest.raises(SemcorrError, match="no field 'data.nosuch.x'"):
    config_files.load(f'{SFNET}:test', {'data.nosuch.x': 1})


# --- semcorr_jax.load ---------------------------------------------------------
@pytest.mark.parametrize('damage', [
    truncated, truncated_manifest, config_without_fields, config_not_a_dict])
def test_load_raises_one_semcorr_error_line(workdir, tmp_path, damage):
  damaged = damage(workdir, tmp_path)
  with pytest.raises(SemcorrError) as e:
    semcorr_jax.load(str(damaged))
  message = str(e.value)
  assert '\n' not in message and str(damaged) in message, message
  assert len(message) < 600, message
  if damage is config_without_fields:
    # Not recognised as a user error: the original is kept for --verbose.
    assert isinstance(e.value.__cause__, (KeyError, AttributeError,
                                          TypeError)), e.value.__cause__
  if damage is config_not_a_dict:
    assert 'is not a run config' in message, message


@pytest.mark.slow  # a Python process, to see what background threads print
def test_load_of_a_damaged_checkpoint_prints_nothing_afterwards(
    workdir, tmp_path):
  damaged = truncated_manifest(workdir, tmp_path)
  code = ('import sys, time, semcorr_jax\n'
          'from semcorr_jax.errors import SemcorrError\n'
          'for _ in range(3):\n'
          '  try:\n'
          f'    semcorr_jax.load({str(damaged)!r})\n'
          '  except SemcorrError as e:\n'
          "    print('caught', type(e.__cause__).__name__)\n"
          'time.sleep(2)\n'
          'import gc; gc.collect()\n')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, timeout=300, env=_env())
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.count('caught') == 3, proc.stdout
  assert proc.stderr == '', proc.stderr[-3000:]


@pytest.mark.slow  # a Python process, to see what background threads print
def test_a_skipped_damaged_checkpoint_leaves_only_its_warning(workdir,
                                                              tmp_path):
  copy = _copy(workdir, tmp_path, 'newest_damaged')
  shutil.copytree(copy / 'checkpoints' / '3', copy / 'checkpoints' / '5')
  files = [os.path.join(d, f) for d, _, fs in
           os.walk(copy / 'checkpoints' / '5') for f in fs]
  _cut_in_half(max(files, key=os.path.getsize))
  code = ('import time, gc, semcorr_jax\n'
          'for _ in range(3):\n'
          f'  print(semcorr_jax.load({str(copy)!r}).step)\n'
          '  gc.collect()\n'
          'time.sleep(2)\n'
          'gc.collect()\n')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, timeout=300, env=_env())
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == ['3', '3', '3'], proc.stdout
  lines = proc.stderr.splitlines()
  assert len(lines) == 3, proc.stderr[-3000:]
  assert all(l.startswith('warning: ') and 'checkpoints/5 is corrupt' in l
             and l.endswith('using step 3') for l in lines), lines


# --- outputs and data, checked before the work --------------------------------
def _no_loading(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError('loaded a model before checking the outputs')
  monkeypatch.setattr(api, 'load', refuse)
  monkeypatch.setattr(workdirs, 'restore', refuse)
  monkeypatch.setattr(api, 'restore_workdir', refuse)


def test_match_checks_output_before_loading(workdir, tmp_path, monkeypatch):
  _no_loading(monkeypatch)
  folder_png = tmp_path / 'dir.png'
  folder_png.mkdir()
  a_file = tmp_path / 'file'
  a_file.write_text('x')
  cases = [(folder_png, 'is a folder'), (a_file / 'm.png', 'is a file')]
  for output, message in cases:
    with pytest.raises(SemcorrError, match=message):
      match.match_files(workdir, 'skimage:chelsea', 'skimage:chelsea',
                        str(output))
  monkeypatch.setattr(output_paths, '_writable', lambda d: False)
  with pytest.raises(SemcorrError, match='not writable'):
    match.match_files(workdir, 'skimage:chelsea', 'skimage:chelsea',
                      str(tmp_path / 'new' / 'm.png'))
  assert sorted(os.listdir(tmp_path)) == ['dir.png', 'file']


def test_eval_checks_its_results_folder_before_loading(workdir, monkeypatch):
  _no_loading(monkeypatch)
  monkeypatch.setattr(output_paths, '_writable', lambda d: False)
  with pytest.raises(SemcorrError, match=r'eval.*not writable'):
    evaluate.evaluate_workdir(workdir, num_pairs=2)


def test_atomic_writes_leave_no_temporary_file(tmp_path):
  target = tmp_path / 'x.npy'
  target.mkdir()  # os.replace onto a folder fails after the write
  with pytest.raises(OSError):
    common.save_npy(str(target), np.zeros(3))
  with pytest.raises(OSError):
    common.write_keypoints_csv(str(target), np.zeros((1, 2)),
                               np.zeros((1, 2)))
  assert os.listdir(tmp_path) == ['x.npy']


@pytest.mark.parametrize('benchmark', sorted(benchmarks.DATASETS))
def test_empty_data_dir_fails_before_anything_is_created(benchmark,
                                                          tmp_path):
  with pytest.raises(SemcorrError, match=str(tmp_path)):
    runner.prepare_dataset(benchmark, data_dir=str(tmp_path))
  assert not os.listdir(tmp_path)


# --- the console scripts ------------------------------------------------------
def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k != common.VERBOSE_ENV}
  env.update(JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2', **extra)
  return env


def _tool(name, *args, **env):
  return subprocess.run([os.path.join(BIN, name), *args], capture_output=True,
                        text=True, cwd=paths.REPO, env=_env(**env),
                        timeout=300)


def _one_line(proc, *parts):
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
  lines = proc.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
  for part in parts:
    assert part in lines[0], lines[0]
  return lines[0]


@pytest.mark.slow  # semcorr-match and semcorr-eval processes
def test_tools_on_damaged_workdirs_say_one_line(workdir, tmp_path):
  match_args = ['--source=skimage:chelsea', '--target=skimage:chelsea_warped',
                f'--output={tmp_path / "out" / "m.png"}']
  damaged = truncated(workdir, tmp_path)
  _one_line(_tool('semcorr-match', f'--workdir={damaged}', *match_args),
            str(damaged))
  proc = _tool('semcorr-match', f'--workdir={damaged}', *match_args,
               SEMCORR_VERBOSE='1')
  assert proc.returncode == 1
  assert 'Traceback (most recent call last)' in proc.stderr
  # Verbose keeps everything: background threads may still print after the
  # error line, so it need not be the last one.
  assert any(line.startswith('error: ') and str(damaged) in line
             for line in proc.stderr.splitlines()), proc.stderr[-2000:]
  bare = config_without_fields(workdir, tmp_path)
  _one_line(_tool('semcorr-eval', f'--workdir={bare}', '--verbose=false'),
            str(bare))
  not_a_dict = config_not_a_dict(workdir, tmp_path)
  _one_line(_tool('semcorr-eval', f'--workdir={not_a_dict}'), str(not_a_dict))
  assert not (tmp_path / 'out').exists()


@pytest.mark.slow  # semcorr-train processes (flag errors, before any work)
def test_train_config_flag_errors_are_one_line(tmp_path):
  workdir = f'--workdir={tmp_path / "w"}'
  _one_line(_tool('semcorr-train', '--config=configs/sfnet.py:test',
                  '--config.nosuchkey=1', workdir), "no field 'nosuchkey'")
  _one_line(_tool('semcorr-train', '--config=configs/sfnet.py:nosuch',
                  workdir), "unknown variant 'nosuch': test, quick or paper")
  assert not (tmp_path / 'w').exists()


@pytest.mark.slow  # a semcorr-eval process
def test_eval_with_an_empty_data_dir_creates_nothing(workdir, tmp_path):
  data = tmp_path / 'data'
  data.mkdir()
  _one_line(_tool('semcorr-eval', f'--workdir={workdir}',
                  '--benchmark=pf_pascal', f'--data_dir={data}'),
            'PF-PASCAL', str(data))
  assert not os.listdir(data)


@pytest.mark.slow  # a semcorr-match process
def test_match_output_that_is_a_folder_leaves_nothing(workdir, tmp_path):
  (tmp_path / 'm.png').mkdir()
  _one_line(_tool('semcorr-match', f'--workdir={workdir}',
                  '--source=skimage:chelsea', '--target=skimage:chelsea',
                  f'--output={tmp_path / "m.png"}'), 'is a folder')
  assert os.listdir(tmp_path) == ['m.png']
  assert not os.listdir(tmp_path / 'm.png')
