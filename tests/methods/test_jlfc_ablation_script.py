"""benchmarks/jlfc_ablation.py: rows to configs, the table, resume.

The row-to-config mapping is checked without training; one seed of `full`
and `baseline` on the `test` configs, run in-process, gives a table naming
both rows with the runs' own figures, and a second call trains nothing.
"""

import importlib.util
import json

import pytest
from helpers import benchmark_scripts
from helpers import paths

from semcorr_jax.errors import SemcorrError


def _config_module():
  spec = importlib.util.spec_from_file_location(
      '_jlfc_config_for_test', paths.CONFIGS / 'jlfc.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_rows_map_to_their_configs(tmp_path):
  script = benchmark_scripts.load('jlfc_ablation')
  root = str(tmp_path)
  assert script.ALL_ROWS == (*_config_module().ABLATIONS, 'baseline')
  terms = {'full': ('raw', 'agg_to_raw', 'agg', 'raw_to_agg'),
           'no_joint': ('raw', 'agg'), 'no_confidence': None,
           'agg_only': ('agg',), 'agg_cross': ('agg', 'raw_to_agg')}
  for row, want in terms.items():
    workdir, c = script.run_of(row, 'test', 'cats', 2, root,
                               {'batch_size': 4})
    assert workdir == str(tmp_path / f'{row}_s2')
    assert (c.method, c.model.aggregator, c.seed, c.batch_size) == (
        'jlfc', 'cats', 2, 4)
    assert tuple(c.loss.terms) == (want or terms['full'])
    assert c.loss.confidence_mask == (row != 'no_confidence')
  # The baseline: the aggregator's own method, the same budget, and only
  # the overrides its config has (loss.alpha1 is JLFC's alone).
  _, full = script.run_of('full', 'test', 'ncnet', 1, root)
  for aggregator in ('ncnet', 'cats'):
    workdir, c = script.run_of('baseline', 'test', aggregator, 1, root,
                               {'loss.alpha1': 0.3, 'num_train_steps': 3})
    assert workdir == str(tmp_path / 'baseline_s1')
    assert (c.method, c.seed, c.num_train_steps) == (aggregator, 1, 3)
    assert (c.batch_size, tuple(c.data.image_size)) == (
        full.batch_size, tuple(full.data.image_size))
  # At paper size the rows are scored on PF-PASCAL test (with the untrained
  # model) and keep only PF-PASCAL's evaluators, so PF-WILLOW and TSS need
  # no folders.
  assert script.SCORED_BY['paper'] == 'pf_pascal'
  for row, aggregator in (('agg_only', 'ncnet'), ('baseline', 'ncnet'),
                          ('baseline', 'cats')):
    _, c = script.run_of(row, 'paper', aggregator, 0, root)
    assert set(c.evals) == {'pf_pascal', 'pf_pascal_val'}, (row, aggregator)
    assert c.evals.pf_pascal.untrained_baseline and c.is_locked
  # A key of neither config is an error, for the baseline too.
  with pytest.raises(SemcorrError, match='no_such'):
    script.run_of('baseline', 'test', 'ncnet', 0, root, {'loss.no_such': 1})


def test_a_folder_of_another_method_is_refused(tmp_path):
  script = benchmark_scripts.load('jlfc_ablation')
  (tmp_path / 'baseline_s0').mkdir()
  (tmp_path / 'baseline_s0' / 'config.json').write_text(
      json.dumps({'method': 'cats'}))
  with pytest.raises(SemcorrError, match="method='cats'"):
    benchmark_scripts.run_main(script, f'--root={tmp_path}', '--seeds=0', '--variant=test',
         '--rows=baseline')
  assert not (tmp_path / 'table.md').exists()


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  script = benchmark_scripts.load('jlfc_ablation')
  root = tmp_path_factory.mktemp('jlfc_ablation')
  args = (f'--root={root}', '--seeds=0', '--variant=test',
          '--rows=full,baseline')
  return script, root, args, benchmark_scripts.run_main(script, *args)


def _cells(text, start):
  line = next(l for l in text.splitlines() if l.startswith(start))
  return [c.strip() for c in line.split('|')[2:-1]]


@pytest.mark.slow
def test_table_has_the_rows_with_the_runs_figures(sweep):
  _, root, _, text = sweep
  assert (root / 'table.md').read_text() == text
  assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
      'baseline_s0', 'full_s0']
  full = json.loads((root / 'full_s0' / 'eval' / 'synthetic.json'
                     ).read_text())
  base = json.loads((root / 'baseline_s0' / 'eval' / 'synthetic.json'
                     ).read_text())
  assert full['step'] == base['step'] == 4
  keys = ('pck@0.05', 'pck@0.1', 'pck_bbox@0.05', 'pck_bbox@0.1',
          'raw_pck@0.1', 'raw_pck_bbox@0.1')
  # Paper figure, 6 trained columns and the untrained PCK@0.1.
  cells = _cells(text, '| T3 (d) = T2 (a): L^C + L^{A->C} + L^A + L^{C->A} '
                        '(`full`) |')
  assert cells[0] == '80.0'
  assert cells[1:] == [f"{full['trained'][k]:.3f}" for k in keys] + [
      f"{full['untrained']['pck@0.1']:.3f}"]
  # NCNet alone: no raw flow.
  cells = _cells(text, '| NCNet alone')
  assert cells[0] == '78.9' and '(`baseline`)' in text
  assert cells[1:] == [f"{base['trained'][k]:.3f}" for k in keys[:4]] + [
      '-', '-', f"{base['untrained']['pck@0.1']:.3f}"]
  assert _cells(text, '| `baseline` 0 |') == cells[1:]
  assert json.loads((root / 'baseline_s0' / 'config.json').read_text()
                    )['method'] == 'ncnet'


@pytest.mark.slow
def test_a_second_call_trains_nothing(sweep, monkeypatch):
  script, root, args, text = sweep

  def refuse(*unused_args, **unused_kwargs):
    raise AssertionError('a finished run was trained again')

  monkeypatch.setattr(script.train, 'train_and_evaluate', refuse)
  report = root / 'full_s0' / 'eval' / 'synthetic.json'
  before = report.stat().st_mtime_ns
  assert benchmark_scripts.run_main(script, *args) == text
  assert report.stat().st_mtime_ns == before
