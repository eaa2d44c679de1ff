"""`semcorr-import-ncnet` and `semcorr-import-cats`: failures are one line.

A missing file, a file that is not the release, or a config that does not
match the release: `error: <one line>`, exit status 1, no workdir. The tools'
`main` runs in-process with the flags given directly; one run of each
console script checks the installed entry points.
"""

import importlib
import os
import re
import subprocess
import sys
import tomllib
import types

import pytest

from semcorr_jax import config_files
from semcorr_jax.cli import import_cats
from semcorr_jax.cli import import_ncnet
from helpers import paths
from helpers import release_files as rf

BIN = os.path.dirname(sys.executable)
TOOLS = {'ncnet': import_ncnet, 'cats': import_cats}


def _config(method):
  return config_files.load(str(paths.CONFIGS / f'{method}.py:test'))


def _release(method, tmp_path, **kwargs):
  """A release for the `test` config (or `kwargs`), written by us."""
  folder = tmp_path / 'release'
  folder.mkdir(exist_ok=True)
  if method == 'ncnet':
    path = folder / 'ncnet_pfpascal.pth.tar'
    rf.write_ours(rf.ncnet_checkpoint(**kwargs), path)
  else:
    path = folder / 'model_best.pth'
    checkpoint, args = rf.cats_checkpoint(**{'hyperpixel_ids': (0, 2, 4),
                                             **kwargs})
    rf.write_ours(checkpoint, path)
    rf.write_args(args, folder / 'args.pkl')
  return path


def _main(method, args, workdir, monkeypatch, capsys):
  """(exit status, stderr) of the tool's main."""
  module = TOOLS[method]
  monkeypatch.setattr(module, 'FLAGS', types.SimpleNamespace(
      config=_config(method), workdir=str(workdir)))
  capsys.readouterr()
  with pytest.raises(SystemExit) as info:
    module.main([f'semcorr-import-{method}', *map(str, args)])
  return info.value.code, capsys.readouterr().err


def _other(method):
  return 'cats' if method == 'ncnet' else 'ncnet'


@pytest.mark.parametrize('method', ['ncnet', 'cats'])
@pytest.mark.parametrize('case', ['missing', 'text', 'other_release',
                                  'paper_release', 'usage'])
def test_failures_are_one_line_and_write_nothing(tmp_path, monkeypatch,
                                                 capsys, method, case):
  workdir = tmp_path / 'run'
  if case == 'missing':
    args, match = [tmp_path / 'nope.pth'], 'nope.pth: no such file'
  elif case == 'text':
    path = tmp_path / 'release' / 'notes.pth'
    path.parent.mkdir()
    path.write_text('not a checkpoint\n')
    (tmp_path / 'release' / 'args.pkl').write_text('not a pickle\n')
    args, match = [path], 'notes.pth: not a readable torch.save file'
  elif case == 'other_release':  # The other method's file.
    other = _release(_other(method), tmp_path)
    if method == 'cats':  # NCNet's folder has no args.pkl: pass one.
      rf.write_args(rf.cats_args('[0,2,4]', feature_size=4, proj_dim=8),
                    tmp_path / 'args.pkl')
      args = [other, tmp_path / 'args.pkl']
    else:
      args = [other]
    match = 'release does not fit the model: .* missing'
  elif case == 'paper_release':  # The paper's architecture, test config.
    if method == 'ncnet':
      path = _release(method, tmp_path, kernel_sizes=(5, 5, 5),
                      channels=(16, 16, 1))
      match = r'kernel sizes \[5, 5, 5\].*config.model.kernel_sizes='
    else:
      path = _release(method, tmp_path, feature_size=16)
      match = 'does not match the config; set config.model.feature_size=16'
    args = [path]
  else:
    args, match = [], f'usage: semcorr-import-{method}'
  status, err = _main(method, args, workdir, monkeypatch, capsys)
  assert status == 1
  assert err.count('\n') == 1 and err.startswith('error: '), err
  assert re.search(match, err), err
  assert not workdir.exists()


def test_cats_needs_its_args_pkl(tmp_path, monkeypatch, capsys):
  path = _release('cats', tmp_path)
  os.unlink(path.parent / 'args.pkl')
  status, err = _main('cats', [path], tmp_path / 'run', monkeypatch, capsys)
  assert status == 1 and 'no args.pkl beside' in err
  assert 'as the second argument' in err and err.count('\n') == 1
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('method', ['ncnet', 'cats'])
def test_console_scripts(tmp_path, method):
  scripts = tomllib.loads((paths.REPO / 'pyproject.toml').read_text())[
      'project']['scripts']
  module, _, function = scripts[f'semcorr-import-{method}'].partition(':')
  assert module == f'semcorr_jax.cli.import_{method}' and function == 'run'
  assert callable(getattr(importlib.import_module(module), function))
  proc = subprocess.run(
      [os.path.join(BIN, f'semcorr-import-{method}'),
       str(tmp_path / 'missing.pth'), f'--workdir={tmp_path / "run"}',
       f'--config={paths.CONFIGS / method}.py:test'],
      capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 1
  assert proc.stderr.strip() == (f'error: {tmp_path / "missing.pth"}: no '
                                 'such file'), proc.stderr
  assert not (tmp_path / 'run').exists()
