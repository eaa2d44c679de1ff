"""colabs/quickstart.ipynb: committed without outputs, and runs headless.

The run uses the `test` variant (SEMCORR_COLAB_VARIANT) in a temporary folder
and checks the match picture the notebook draws.
"""

import os
import pathlib

import pytest
from helpers import paths

nbformat = pytest.importorskip('nbformat')

REPO = paths.REPO
NOTEBOOK = REPO / 'colabs' / 'quickstart.ipynb'


def _code_cells(nb):
  return [c for c in nb.cells if c.cell_type == 'code']


def test_committed_notebook_is_stripped_and_thin():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  cells = _code_cells(nb)
  assert cells
  for cell in cells:
    assert cell.outputs == [], cell.source[:60]
    assert cell.execution_count is None, cell.source[:60]
    assert cell.source.startswith('# @title'), cell.source[:60]
    # The notebook calls the package; it never defines a model.
    assert 'nn.Module' not in cell.source and 'class ' not in cell.source
  source = '\n'.join(c.source for c in cells)
  for needle in ('# @param', 'SEMCORR_COLAB_VARIANT',
                 'train.train_and_evaluate(', 'semcorr_jax.load(',
                 'draw_match('):
    assert needle in source, needle


@pytest.mark.slow  # executes the notebook
@pytest.mark.timeout(300)
def test_notebook_runs_on_test_variant(tmp_path, monkeypatch):
  nbclient = pytest.importorskip('nbclient')
  pytest.importorskip('ipykernel')
  workdir = tmp_path / 'workdir'
  # The kernel inherits this environment.
  monkeypatch.setenv('SEMCORR_COLAB_VARIANT', 'test')
  monkeypatch.setenv('SEMCORR_COLAB_WORKDIR', str(workdir))
  monkeypatch.setenv('SEMCORR_REPO', str(REPO))
  # The install cell prints its pip command instead of running it
  # (tests/packaging/test_colab_install.py checks the command).
  monkeypatch.setenv('SEMCORR_COLAB_DRY_RUN', '1')
  # This checkout's package, whatever the venv's install (a stale editable
  # install can resolve `semcorr_jax` to a namespace package outside REPO).
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
      p for p in (str(REPO), os.environ.get('PYTHONPATH')) if p))
  monkeypatch.setenv('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
  # One CPU device, as a user's machine has (conftest simulates eight).
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
      nb, timeout=240, kernel_name='python3',
      resources={'metadata': {'path': str(tmp_path)}})
  client.execute()  # raises CellExecutionError on any failing cell

  errors = [o for c in _code_cells(nb) for o in c.outputs
            if o.output_type == 'error']
  assert not errors
  picture = workdir / 'match_chelsea.png'
  assert picture.is_file()
  assert picture.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  shown = [o for c in _code_cells(nb) for o in c.outputs
           if 'image/png' in o.get('data', {})]
  assert len(shown) >= 2  # the two photos, then the match panel
  text = ''.join(o.get('text', '') for c in _code_cells(nb)
                 for o in c.outputs)
  assert 'PCK@0.1' in text and 'untrained' in text
  assert f"--editable '{REPO}[" in text  # the install cell's command
  assert os.path.isdir(workdir / 'checkpoints')
