"""benchmarks/gsf_ablation.py on the `test` config: rows, stages, resume.

One seed of `full` (stage 1, then stage 2 from it) and `sil_only` (stage 1
only), run in-process: the table names both rows with numbers, stage 2 really
started from stage 1, and a second call trains nothing.
"""

import json

import pytest
from helpers import benchmark_scripts


def _synthetic(root, run):
  with open(root / run / 'eval' / 'synthetic.json') as f:
    return json.load(f)


def test_rows_map_to_their_runs(tmp_path):
  script = benchmark_scripts.load('gsf_ablation')
  root = str(tmp_path)
  # Stage 2 without matching starts from full's stage 1, all but matching.
  (s1, c1), (s2, c2) = script.runs_of('no_matching', 'test', 1, root,
                                      {'batch_size': 4})
  assert s1 == str(tmp_path / 'full_stage1_s1')
  assert s2 == str(tmp_path / 'no_matching_stage2_s1')
  assert (c1.stage, c1.model.matching, c1.seed, c1.batch_size) == (
      1, True, 1, 4)
  assert (c2.stage, c2.model.matching, c2.seed) == (2, False, 1)
  assert c2.init_from.workdir == s1
  assert 'params/matching' not in c2.init_from.subtrees
  # From scratch: no stage 1 and nothing to start from.
  (only, c), = script.runs_of('only_stage2', 'test', 0, root)
  assert only == str(tmp_path / 'only_stage2_stage2_s0')
  assert c.stage == 2 and c.init_from.workdir is None and c.model.pruning
  (_, c), = script.runs_of('no_pruning', 'test', 0, root)
  assert c.stage == 2 and not c.model.pruning
  (geo, c), = script.runs_of('geo_only', 'test', 0, root)
  assert geo == str(tmp_path / 'geo_only_stage1_s0')
  assert c.stage == 1 and c.loss.sil_weight == 0.0 and c.loss.geo_weight == 1
  assert script.parse_overrides(['a.b=3', 'c=/x/y', 'd=(1, 2)']) == {
      'a.b': 3, 'c': '/x/y', 'd': (1, 2)}


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  script = benchmark_scripts.load('gsf_ablation')
  root = tmp_path_factory.mktemp('gsf_ablation')
  args = (f'--root={root}', '--seeds=0', '--variant=test',
          '--rows=full,sil_only')
  return script, root, args, benchmark_scripts.run_main(script, *args)


@pytest.mark.slow
def test_table_has_the_rows_with_numbers(sweep):
  _, root, _, text = sweep
  assert (root / 'table.md').read_text() == text
  lines = text.splitlines()
  for row, title in (('full', 'Full (1st & 2nd stage)'),
                     ('sil_only', 'L_sil only (1st stage)')):
    line = next(l for l in lines if l.startswith(f'| {title} (`{row}`) |'))
    cells = [c.strip() for c in line.split('|')[2:-1]]
    # Paper figure, 4 trained and 4 untrained columns, every one a number.
    assert len(cells) == 9, line
    assert all(float(c) >= 0 for c in cells), line
    assert f'| `{row}` 0 |' in text
  assert '| Full (1st & 2nd stage) (`full`) | 33.5 |' in text
  # The table's figures are the last run's own report.
  full = _synthetic(root, 'full_stage2_s0')['trained']
  line = next(l for l in lines if l.startswith('| Full'))
  assert line.split('|')[3].strip() == f"{full['pck_bbox@0.05']:.3f}"
  assert line.split('|')[5].strip() == (
      f"{full['guidance_pck_bbox@0.05']:.3f}")


@pytest.mark.slow
def test_stage2_starts_from_stage1_and_rows_have_their_runs(sweep):
  _, root, _, _ = sweep
  assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
      'full_stage1_s0', 'full_stage2_s0', 'sil_only_stage1_s0']
  stage1 = _synthetic(root, 'full_stage1_s0')
  stage2 = _synthetic(root, 'full_stage2_s0')
  assert stage1['step'] == 4 and stage2['step'] == 4
  # Before its own training, the stage-2 model is the trained stage-1 model.
  for key in ('guidance_pck_bbox@0.1', 'pck_bbox@0.1', 'guidance_epe'):
    assert stage2['untrained'][key] == pytest.approx(
        stage1['trained'][key], rel=1e-5, abs=1e-6), key
  config = json.loads((root / 'full_stage2_s0' / 'config.json').read_text())
  assert config['stage'] == 2
  assert config['init_from']['workdir'] == str(root / 'full_stage1_s0')
  sil = json.loads(
      (root / 'sil_only_stage1_s0' / 'config.json').read_text())
  assert sil['stage'] == 1 and sil['loss']['geo_weight'] == 0.0


@pytest.mark.slow
def test_a_second_call_trains_nothing(sweep, monkeypatch):
  script, root, args, text = sweep

  def refuse(*unused_args, **unused_kwargs):
    raise AssertionError('a finished run was trained again')

  monkeypatch.setattr(script.train, 'train_and_evaluate', refuse)
  before = (root / 'full_stage1_s0' / 'eval' / 'synthetic.json'
            ).stat().st_mtime_ns
  assert benchmark_scripts.run_main(script, *args) == text
  assert (root / 'full_stage1_s0' / 'eval' / 'synthetic.json'
          ).stat().st_mtime_ns == before
