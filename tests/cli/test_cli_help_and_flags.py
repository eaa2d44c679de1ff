"""The tools' help, choice flags, packaged configs and one-line flag errors.

`--help` of every console script shows the tool's docstring examples and its
own flags (absl alone showed the flags of the console-script wrapper: none),
and exits 0. Flag errors are one line with the closest right answer.
`semcorr-match` runs without TensorFlow, TFDS, TensorBoard or CLU.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import pathlib
import subprocess
import sys
import types

from absl import flags
from ml_collections import config_flags
import numpy as np
import pytest

from semcorr_jax import config_files
from semcorr_jax.cli import common
from semcorr_jax.cli import convert_weights
from semcorr_jax.cli import fetch_weights
from semcorr_jax.cli import flag_parsing
from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import fetch
from semcorr_jax.weights import read_state_dict

from helpers import paths
import test_api_cli as api_cli

BIN = os.path.dirname(sys.executable)
SFNET = str(paths.CONFIGS / 'sfnet.py')
# Each tool: (an argument asking for help, its own flags (`verbose` is
# common's), a line of its docstring's examples), from the tools' sources.
TOOLS = {
    'semcorr-train': ('--help', [
        'config', 'workdir', 'distributed', 'coordinator_address',
        'num_processes', 'process_id', 'verbose'],
        'semcorr-train --config=sfnet:quick --workdir=runs/sfnet_quick'),
    'semcorr-eval': ('-h', [
        'workdir', 'evals', 'benchmark', 'step', 'best', 'num_pairs',
        'num_pictures', 'data_dir', 'tfds_dir', 'split', 'protocol',
        'input_size', 'direction', 'threshold', 'frame', 'alphas',
        'kps_padding_bug', 'eval_batch_size', 'untrained', 'num_worst',
        'verbose'],
        'semcorr-eval --workdir=runs/sfnet --benchmark=tss '
        '--data_dir=~/data/tss'),
    'semcorr-match': ('--helpshort', [
        'workdir', 'source', 'target', 'keypoints', 'output', 'step', 'best',
        'verbose'],
        'semcorr-match --workdir=runs/sfnet_quick --source=a.jpg '
        '--target=b.jpg \\'),
    'semcorr-fetch-weights': ('--help', [
        'model', 'output', 'input', 'keep_download', 'timeout'],
        'semcorr-fetch-weights resnet101 --output ~/weights/resnet101.npz'),
    'semcorr-convert-weights': ('--help', ['input', 'output'],
                                'semcorr-convert-weights model.npz '
                                'model.safetensors'),
    'semcorr-import-sfnet': ('--help', ['config', 'workdir', 'verbose'],
                             'semcorr-import-sfnet best_checkpoint.pt \\'),
    'semcorr-import-ncnet': ('--help', ['config', 'workdir', 'verbose'],
                             'semcorr-import-ncnet ncnet_pfpascal.pth.tar \\'),
    'semcorr-import-cats': ('--help', ['config', 'workdir', 'verbose'],
                            'semcorr-import-cats '
                            'snapshots/spair/model_best.pth \\'),
}
# The enum flags of semcorr-eval and their values, as the help shows them.
EVAL_CHOICES = {
    'benchmark': 'synthetic|pf_pascal|pf_willow|spair71k|tss|caltech101|pairs',
    'split': 'train|validation|test', 'protocol': 'resize|padded|sfnet',
    'direction': 'ts|st', 'threshold': 'img|bbox|kps',
    'frame': 'square|original'}


def _env():
  """A user's environment: no TF_CPP_MIN_LOG_LEVEL; TF_ENABLE_ONEDNN_OPTS=1
  makes TensorFlow log its oneDNN banner at import on any CPU, as it does
  on CPUs with AVX512-VNNI or AMX (Intel Xeons)."""
  env = {k: v for k, v in os.environ.items()
         if k not in ('TF_CPP_MIN_LOG_LEVEL', common.VERBOSE_ENV)}
  env.update(JAX_PLATFORMS='cpu', TF_ENABLE_ONEDNN_OPTS='1')
  return env


def _tool(name, *args, cwd=paths.REPO):
  return subprocess.run([os.path.join(BIN, name), *args], capture_output=True,
                        text=True, cwd=cwd, env=_env(), timeout=300)


def _listed_flags(help_out: str) -> list[str]:
  """Names of the flags the help lists (`  --name:` / `  --[no]name:`)."""
  names = []
  for line in help_out.splitlines():
    if line.startswith('  --'):
      names.append(line[4:].split(':')[0].replace('[no]', ''))
  return names


# --- help: one process per console script -------------------------------------
@pytest.mark.parametrize('tool', sorted(TOOLS))
def test_help_shows_the_docstring_and_the_tools_own_flags(tool):
  arg, own, example = TOOLS[tool]
  proc = _tool(tool, arg)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stderr == ''  # no TensorFlow / absl banner either
  assert example in [l.strip() for l in proc.stdout.splitlines()], proc.stdout
  listed = _listed_flags(proc.stdout)
  # Every flag of the tool, and no library's (absl's logging flags, ...).
  assert set(own) <= set(listed), listed
  assert 'logtostderr' not in listed and 'helpfull' not in listed
  assert 'Try --helpfull' in proc.stdout
  if tool == 'semcorr-eval':
    for name, values in EVAL_CHOICES.items():
      assert f'  --{name}: <{values}' in proc.stdout, name


# --- flag errors: in-process -------------------------------------------------
def _parse(*args):
  """common.parse_flags on a fresh FlagValues: a config file flag, a string
  flag and an enum flag."""
  argv = ['semcorr-train', *args]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=values,
                                  sys_argv=argv, lock_config=True)
  flags.DEFINE_string('workdir', None, 'workdir', flag_values=values)
  flags.DEFINE_enum('benchmark', None, ['synthetic', 'pf_pascal', 'pf_willow'],
                    'benchmark', flag_values=values)
  return common.parse_flags(argv, values), values


@pytest.mark.parametrize('args, line', [
    (['--config=sfnet:test', '--config.batchsize=3'],
     "--config: config has no field 'batchsize'; did you mean 'batch_size'? "
     'the config has: backbone, batch_size, checkpoint_every, data, evals, '
     'image_every, init_from, keep_checkpoints, log_every, loss, method, '
     'model, num_epochs, num_train_steps, optimizer, profile_steps, seed'),
    (['--config=sfnet:test', '--config.optimizer.lrr=1'],
     "--config: config has no field 'optimizer.lrr'; did you mean "
     "'optimizer.lr'? 'optimizer' has: b1, b2, decay_at, decay_factor, "
     'grad_clip_norm, groups, lr, momentum, name, weight_decay'),
    (['--config=sfnet:tst'],
     "--config: config 'sfnet:tst': unknown variant 'tst': test, quick or "
     "paper; did you mean 'test'?"),
    (['--config=sfnet:test', '--config.batch_size=abc'],
     "--config.batch_size=abc: invalid literal for int() with base 10: 'abc'; "
     'config.batch_size takes int values, e.g. --config.batch_size=8 (its '
     'value in sfnet:test)'),
    (['--config=sfnet:test', '--config.optimizer.lr=x'],
     "--config.optimizer.lr=x: could not convert string to float: 'x'; "
     'config.optimizer.lr takes float values, e.g. --config.optimizer.lr=0.001'
     ' (its value in sfnet:test)'),
    (['--config=sfnet:test', '--benchmark=pf_pascl'],
     "--benchmark=pf_pascl: not one of synthetic, pf_pascal, pf_willow; did "
     "you mean 'pf_pascal'?"),
    (['--config=sfnet:test', '--benchmark=PF_WILLOW'],
     '--benchmark=PF_WILLOW: not one of synthetic, pf_pascal, pf_willow; did '
     "you mean 'pf_willow'?"),
    (['--config=sfnet:test', '--workdri=w'],
     "Unknown command line flag 'workdri'; did you mean '--workdir'?"),
    (['--config=sfnt:test'],
     "--config: config file 'sfnt': no such file; did you mean 'sfnet'? "
     '(packaged configs: camnet, cats, gsf, jlfc, ncnet, sfnet)'),
])
def test_flag_errors_are_one_line_with_the_closest_answer(args, line):
  with pytest.raises(SemcorrError) as e:
    _parse(*args)
  assert str(e.value) == line


def test_packaged_config_flag_loads_from_any_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no configs/ here
  for spec in ('sfnet:test', 'sfnet.py:test', 'configs/sfnet.py:test'):
    _, values = _parse(f'--config={spec}', '--config.batch_size=3',
                       '--benchmark=pf_willow')
    assert values.config.batch_size == 3
    assert values.config.data.image_size == (64, 64)  # the test variant's
    assert values.benchmark == 'pf_willow'
  _, values = _parse('--config', 'sfnet:quick')  # `--config SPEC` too
  assert values.config.num_train_steps == 300


def test_help_arguments_are_recognised_before_a_double_dash():
  assert flag_parsing.help_requested(['t', '--workdir=w', '-h']) == 'short'
  assert flag_parsing.help_requested(['t', '--helpshort']) == 'short'
  assert flag_parsing.help_requested(['t', '--helpfull']) == 'full'
  assert flag_parsing.help_requested(['t', '--', '--help']) is None
  assert flag_parsing.help_requested(['t', '--workdir=h']) is None


def test_help_text_lists_a_tools_own_flag_values():
  values = flags.FlagValues()
  module = types.ModuleType('semcorr_jax_fake_tool', 'fake-tool: does X.\n\n'
                            '  fake-tool --size=big\n')
  flags.DEFINE_enum('size', 'big', ['big', 'small'], 'how big',
                    flag_values=values, module_name=module.__name__)
  flags.DEFINE_string('other', None, 'a library flag', flag_values=values,
                      module_name='some_library')
  text = flag_parsing.help_text(module, values)
  assert text == ('fake-tool: does X.\n\n  fake-tool --size=big\n\nflags:\n'
                  '  --size: <big|small>: how big\n'
                  "    (default: 'big')\n\n"
                  'Try --helpfull to get a list of all flags.\n')
  assert '--other' in flag_parsing.help_text(module, values, full=True)


# --- config_files: packaged configs, suggestions --------------------------------
def test_a_spec_naming_a_packaged_config_loads_its_file(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no configs/ here
  expected = config_files.load(f'{SFNET}:test').to_dict()
  packaged = os.path.join(config_files.configs_dir(), 'sfnet.py')
  assert os.path.isfile(packaged)
  for spec in ('sfnet:test', 'sfnet.py:test', 'configs/sfnet.py:test'):
    assert config_files.resolve(spec) == f'{packaged}:test'
    assert config_files.load(spec).to_dict() == expected
  # camnet.py builds on sfnet.py, and gsf.py names it 'configs/sfnet.py'.
  assert config_files.load('camnet:test').method == 'camnet'
  assert config_files.load('gsf:test,stage1').method == 'gsf'
  # A file on disk wins over the packaged config of that name.
  (tmp_path / 'sfnet.py').write_text(
      'import ml_collections\n'
      'def get_config(variant):\n'
      '  return ml_collections.ConfigDict({"mine": variant})\n')
  assert config_files.resolve('sfnet.py:x') == 'sfnet.py:x'
  assert config_files.load('sfnet.py:x').mine == 'x'
  assert config_files.resolve('elsewhere/sfnet.py') == 'elsewhere/sfnet.py'


def test_configs_dir_is_the_subpackage_else_the_repository_folder(
    tmp_path, monkeypatch):
  real_find_spec = importlib.util.find_spec

  def finding(found):
    def find_spec(name, *args):
      return found if name == config_files.PACKAGE else real_find_spec(
          name, *args)
    return find_spec

  monkeypatch.setattr(importlib.util, 'find_spec', finding(None))
  beside_the_package = pathlib.Path(config_files.__file__).parents[1]
  assert config_files.configs_dir() == str(beside_the_package / 'configs')
  installed = importlib.machinery.ModuleSpec(config_files.PACKAGE, None,
                                             is_package=True)
  installed.submodule_search_locations.append(str(tmp_path))
  monkeypatch.setattr(importlib.util, 'find_spec', finding(installed))
  assert config_files.configs_dir() == str(tmp_path)
  assert config_files.packaged_names() == []
  (tmp_path / 'mine.py').write_text('')
  (tmp_path / '__init__.py').write_text('')
  assert config_files.packaged_names() == ['mine']


@pytest.mark.parametrize('spec, overrides, line', [
    ('cats:quik,frozen', None, "did you mean 'quick,frozen'?"),
    ('cats:paper,spar', None, "did you mean 'paper,spair'?"),
    ('camnet:quik,confidence', None,  # the error of sfnet.py, within
     "unknown variant 'quik': test, quick or paper; did you mean "
     "'quick,confidence'?"),
    ('ncnet:inlco', None, "did you mean 'inloc'?"),  # ncnet.VARIANTS
    ('sfnet:test', {'num': 1},
     "config has no field 'num'; did you mean 'num_epochs' or "
     "'num_train_steps'?"),
    ('sfnet:test', {'batch_size': 'abc'},
     "config field 'batch_size' cannot be set to 'abc': it takes int values, "
     'like its 8'),
])
def test_config_errors_name_the_closest_answer(spec, overrides, line):
  with pytest.raises(SemcorrError) as e:
    config_files.load(spec, overrides)
  assert line in str(e.value)
  assert str(e.value).count('did you mean') <= 1 and '\n' not in str(e.value)


# --- the console scripts: exit status and one line ----------------------------
@pytest.mark.slow  # two tool processes (the parse is tested in-process above)
def test_tools_print_one_error_line_with_the_suggestion(tmp_path):
  # From a folder without configs/: the packaged config is loaded (its
  # fields are listed), the typo is one line, nothing is created.
  proc = _tool('semcorr-train', '--config=sfnet:test',
               '--config.batchsize=3', '--workdir=w', cwd=tmp_path)
  assert proc.returncode == 1
  assert proc.stderr.count('\n') == 1, proc.stderr
  assert proc.stderr.startswith("error: --config: config has no field "
                                "'batchsize'; did you mean 'batch_size'?")
  assert 'num_train_steps' in proc.stderr
  assert not os.listdir(tmp_path)
  proc = _tool('semcorr-eval', '--workdir=w', '--benchmark=spair',
               cwd=tmp_path)
  assert proc.returncode == 1
  assert proc.stderr.count('\n') == 1, proc.stderr
  assert proc.stderr.startswith('error: --benchmark=spair: not one of '
                                'synthetic, pf_pascal, pf_willow, spair71k')
  assert proc.stderr.endswith("; did you mean 'spair71k'?\n")  # begins it


def test_fetch_weights_uses_the_shared_flags(tmp_path, capsys):
  assert fetch_weights.main(['resnet10', '--output', str(tmp_path / 'w.npz')]) == 1
  assert capsys.readouterr().err == (
      "error: model 'resnet10': not one of resnet101, resnet50; did you mean "
      "'resnet101'?\n")
  assert fetch_weights.main(['--model=resnet5']) == 1
  assert capsys.readouterr().err == (
      "error: --model=resnet5: not one of resnet101, resnet50; did you mean "
      "'resnet50'?\n")
  assert fetch_weights.main(['--help']) == 0
  out = capsys.readouterr().out
  assert fetch.MODELS['resnet101'].url in out
  assert {'model', 'output', 'input', 'keep_download', 'timeout'} == set(
      _listed_flags(out))
  assert not os.listdir(tmp_path)


# --- semcorr-match without the training stack --------------------------------
BLOCKED = ('tensorflow', 'tensorflow_datasets', 'tensorboard', 'clu')
# Runs semcorr-match as if the packages in BLOCKED were not installed: every
# finder on sys.meta_path is wrapped so that it does not find them.
NO_TRAINING_STACK = f'''
import sys
BLOCKED = {BLOCKED!r}

class Hide:
  def __init__(self, finder):
    self.finder = finder

  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in BLOCKED:
      return None
    return self.finder.find_spec(name, path, target)

  def __getattr__(self, name):
    return getattr(self.finder, name)

sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
from semcorr_jax.cli import match
sys.argv = ['semcorr-match'] + sys.argv[1:]
try:
  match.run()
finally:
  print('imported:', sorted(m for m in sys.modules
                            if m.split('.')[0] in BLOCKED))
'''


def test_match_runs_without_tensorflow_tfds_tensorboard_or_clu(tmp_path):
  # pylint: disable-next=protected-access
  config = api_cli._config('sfnet')
  # pylint: disable-next=protected-access
  workdir = api_cli._make_workdir(tmp_path / 'w', config)
  out = tmp_path / 'out' / 'm.png'
  proc = subprocess.run(
      [sys.executable, '-c', NO_TRAINING_STACK, f'--workdir={workdir}',
       '--source=skimage:chelsea', '--target=skimage:chelsea_warped',
       f'--output={out}'], capture_output=True, text=True, cwd=paths.REPO,
      env=_env(), timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'imported: []' in proc.stdout
  # chelsea is 300 x 451: one (x, y) target point per source pixel.
  assert np.load(tmp_path / 'out' / 'm_mapping.npy').shape == (300, 451, 2)


def test_convert_weights_round_trips_and_refuses_in_one_line(tmp_path, capsys):
  state = {'conv.weight': np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
           'bn.num_batches_tracked': np.array(7, dtype=np.int64)}
  np.savez(tmp_path / 'a.npz', **state)
  for suffix in ('safetensors', 'pth', 'npz'):
    out = tmp_path / f'b.{suffix}'
    assert convert_weights.main([str(tmp_path / 'a.npz'), str(out)]) == 0
    back = read_state_dict(str(out))
    assert back.keys() == state.keys()
    for key, value in state.items():
      np.testing.assert_array_equal(back[key], value)
      assert back[key].dtype == value.dtype
  capsys.readouterr()
  assert convert_weights.main([str(tmp_path / 'missing.pth'),
                               str(tmp_path / 'c.npz')]) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1, err
  assert 'missing.pth' in err
  assert convert_weights.main([str(tmp_path / 'a.npz')]) == 1
  assert 'give INPUT and OUTPUT' in capsys.readouterr().err
  assert not (tmp_path / 'c.npz').exists()
