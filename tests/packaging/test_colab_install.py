"""colabs/quickstart.ipynb's first cell installs the package (live code, not comments).

The cell runs in a subprocess with SEMCORR_COLAB_DRY_RUN=1 (it prints each
command instead of running it) and a stubbed `importlib.metadata` that
says which distributions are installed, so the commands it would run in a
checkout, in Colab (TensorFlow and JAX's CUDA/TPU plugin preinstalled) and
with nothing to install from are checked exactly.
"""

import ast
import json
import os
import shlex
import subprocess
import sys
import textwrap
import tomllib

import pytest

from helpers import paths

REPO = paths.REPO
NOTEBOOK = REPO / 'colabs' / 'quickstart.ipynb'
GIT_URL = 'https://example.invalid/semcorr_jax.git'

# Runs the cell's source (argv[1]) with the distributions in argv[2]
# (JSON list) reported as installed, and semcorr_jax unfindable if argv[3].
RUNNER = textwrap.dedent('''
    import importlib.metadata, importlib.util, json, sys
    source = open(sys.argv[1]).read()
    present = set(json.loads(sys.argv[2]))

    def distribution(name):
      if name in present:
        return name
      raise importlib.metadata.PackageNotFoundError(name)

    importlib.metadata.distribution = distribution
    if sys.argv[3] == 'absent':
      real = importlib.util.find_spec
      importlib.util.find_spec = lambda name, package=None: (
          None if name == 'semcorr_jax' else real(name, package))
    exec(compile(source, 'install_cell', 'exec'), {'__name__': '__main__'})
''')


def _install_cell():
  notebook = json.loads(NOTEBOOK.read_text())
  first = next(c for c in notebook['cells'] if c['cell_type'] == 'code')
  return ''.join(first['source'])


def _run_cell(tmp_path, cwd, present, source=None, semcorr_jax='present'):
  cell = _install_cell()
  if source is not None:
    assert "SOURCE = ''  # @param" in cell
    cell = cell.replace("SOURCE = ''  # @param", f'SOURCE = {source!r}  #')
  (tmp_path / 'cell.py').write_text(cell)
  (tmp_path / 'runner.py').write_text(RUNNER)
  env = {k: v for k, v in os.environ.items() if k != 'SEMCORR_REPO'}
  env['SEMCORR_COLAB_DRY_RUN'] = '1'
  return subprocess.run(
      [sys.executable, str(tmp_path / 'runner.py'), str(tmp_path / 'cell.py'),
       json.dumps(sorted(present)), semcorr_jax],
      cwd=str(cwd), env=env, capture_output=True, text=True, timeout=120,
      check=False)


def _pip(target):
  return '$ ' + shlex.join([sys.executable, '-m', 'pip', 'install', '--quiet',
                            '--editable', target])


def test_first_code_cell_is_live_python_that_pip_installs():
  cell = _install_cell()
  assert cell.startswith('# @title Install')
  tree = ast.parse(cell)  # plain Python: no `!pip` shell magics
  live = [line for line in cell.splitlines()
          if line.strip() and not line.lstrip().startswith('#')]
  assert any("'pip', 'install'" in line for line in live), live
  # The pip call is a real call, not a string in a comment or docstring.
  calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
           and isinstance(n.func, ast.Name) and n.func.id == 'run']
  assert len(calls) == 2  # git clone, pip install


def test_checkout_installs_itself_editable_with_train_and_pretrained(tmp_path):
  result = _run_cell(tmp_path, REPO / 'colabs', {'tensorflow-cpu'})
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [_pip(f'{REPO}[train,pretrained]')]


def test_colab_clones_source_and_keeps_its_tensorflow_and_cuda(tmp_path):
  colab = tmp_path / 'content'
  colab.mkdir()
  result = _run_cell(tmp_path, colab, {'tensorflow', 'jax-cuda12-plugin'},
                     source=GIT_URL)
  assert result.returncode == 0, result.stderr
  clone = colab / 'semcorr_jax'
  assert result.stdout.splitlines() == [
      '$ ' + shlex.join(['git', 'clone', '--depth=1', GIT_URL, str(clone)]),
      _pip(f'{clone}[train-no-tf,pretrained,cuda12]'),
  ]


def test_source_folder_on_a_tpu_runtime(tmp_path):
  folder = tmp_path / 'drive' / 'semcorr_jax'
  folder.mkdir(parents=True)
  result = _run_cell(tmp_path, tmp_path, {'tensorflow', 'libtpu'},
                     source=str(folder))
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == [
      _pip(f'{folder}[train-no-tf,pretrained,tpu]')]


def test_nothing_to_install_from_says_to_set_source(tmp_path):
  result = _run_cell(tmp_path, tmp_path, set(), semcorr_jax='absent')
  assert result.returncode != 0
  assert 'set SOURCE above' in result.stderr
  assert result.stdout == ''


def test_extras_the_cell_names_exist():
  extras = tomllib.loads((REPO / 'pyproject.toml').read_text())[
      'project']['optional-dependencies']
  cell = _install_cell()
  for name in ('train', 'train-no-tf', 'pretrained', 'cuda12', 'tpu'):
    assert f"'{name}'" in cell, name
    assert name in extras, name


@pytest.mark.parametrize('name', ['README.md', 'docs/install.md'])
def test_install_docs_name_the_notebook(name):
  text = (REPO / name).read_text()
  assert 'colabs/quickstart.ipynb' in text
  assert 'colab.research.google.com/github/' in text
