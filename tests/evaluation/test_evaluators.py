"""Evaluators from `config.evals`: registry, checks, flows, files.

Predict functions are fakes with known mappings (`evaluation.fake` and an
identity-plus-shift numpy model), so no model compiles.
"""

import json
import os

import ml_collections
import numpy as np
import pytest

from semcorr_jax import outputs
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import evaluators
from semcorr_jax.evaluation import fake
from semcorr_jax.evaluation import reports
from semcorr_jax.evaluation import selection

from helpers import pf_fixture

IDENTITY = [[1, 0, 0], [0, 1, 0]]
SCALE = [[0.8, 0, 0], [0, 0.8, 0]]
# A primary flow without a confidence, a second one with it.
FLOWS = (outputs.Flow('final'), outputs.Flow('guide', ('confidence',)))


@pytest.fixture(scope='module')
def pf_pascal_dir(tmp_path_factory):
  return str(pf_fixture.write_pf_pascal(tmp_path_factory.mktemp('pf')))


def _config(load_config, **evals):
  """sfnet:test with extra evaluators {name: settings}."""
  config = load_config('sfnet', 'test')
  with config.unlocked():
    for name, settings in evals.items():
      config.evals[name] = ml_collections.ConfigDict(settings)
  return config


def _pf_val(data_dir, **settings):
  return {**dict(type='benchmark', benchmark='pf_pascal', split='validation',
                 data_dir=data_dir, every=2, untrained_baseline=False,
                 select='pck@0.1'), **settings}


def _affine_predict_fn(flows, matrices, confidences=None):
  """`(variables, source, target)` form of `fake.flows_predict_fn`."""
  fn = fake.flows_predict_fn(flows, matrices, confidences)
  return lambda variables, source, target: fn(source, target)


def _shift_predict_fn(flows):
  """Every flow: identity + variables['shift'][flow] (pixels), both ways;
  confidence 1 on the flows that declare one."""

  def predict_fn(variables, source, target):
    b, h, w, _ = source.shape
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32),
                         np.arange(h, dtype=np.float32), indexing='xy')
    grid = np.broadcast_to(np.stack([xs, ys], -1), (b, h, w, 2))
    per_flow = {}
    for flow in flows:
      shift = np.asarray(variables['shift'][flow.name], np.float32)
      per_flow[flow.name] = {'mapping_st': grid + shift,
                             'mapping_ts': grid - shift}
      if 'confidence' in flow.extras:
        per_flow[flow.name].update(confidence_st=np.ones((b, h, w)),
                                   confidence_ts=np.ones((b, h, w)))
    return outputs.join(flows, per_flow)

  return predict_fn


# --- registry and build -------------------------------------------------------
def test_build_from_the_config_in_order(load_config, pf_pascal_dir):
  config = _config(load_config, pf_val=_pf_val(pf_pascal_dir))
  evals = evaluators.build(config, outputs.DEFAULT_FLOWS)
  # ConfigDict keeps its keys sorted.
  assert [(ev.name, type(ev)) for ev in evals] == [
      ('pf_val', evaluators.BenchmarkEvaluator),
      ('synthetic', evaluators.SyntheticEvaluator)]
  pf_val, synthetic = evals
  assert (synthetic.every, synthetic.untrained_baseline, synthetic.select) == (
      0, True, '')
  assert synthetic.settings['num_pairs'] == config.evals.synthetic.num_pairs
  assert (pf_val.every, pf_val.untrained_baseline, pf_val.select) == (
      2, False, 'pck@0.1')
  assert pf_val.settings['num_worst'] == 6  # a default filled in
  assert evaluators.selecting(evals) is pf_val
  # A subset, and settings given to every type that has them.
  only = evaluators.build(config, outputs.DEFAULT_FLOWS, ['pf_val'],
                          overrides={'num_pairs': 2, 'num_pictures': 1})
  assert [ev.name for ev in only] == ['pf_val']
  assert only[0].settings['num_pairs'] == 2
  assert 'num_pictures' not in only[0].settings
  with pytest.raises(SemcorrError, match="no evaluator 'nope' in the config; "
                     'it has: pf_val, synthetic'):
    evaluators.build(config, outputs.DEFAULT_FLOWS, ['nope'])


def test_build_errors(load_config, pf_pascal_dir):
  config = _config(load_config, odd=dict(type='odd'))
  with pytest.raises(SemcorrError, match="evals.odd.type='odd': unknown "
                     'evaluator type; known: benchmark, pairs, synthetic'):
    evaluators.build(config, outputs.DEFAULT_FLOWS)
  config = _config(load_config, a=_pf_val(pf_pascal_dir),
                   b=_pf_val(pf_pascal_dir))
  with pytest.raises(SemcorrError, match='only one evaluator may select'):
    evaluators.build(config, outputs.DEFAULT_FLOWS)
  with pytest.raises(SemcorrError, match='it names the files'):
    evaluators.from_settings('a/b', dict(type='synthetic'), config,
                             outputs.DEFAULT_FLOWS)


class ConstantEvaluator(evaluators.Evaluator):
  """A type of a method's own: reports `value` as 'score'."""

  SETTINGS = {'value': 0.0}

  def metric_names(self):
    return {'score'}

  def run(self, predict_fn, variables, progress=False):
    return {'score': float(self.settings['value']), 'note': 'constant'}

  def markdown(self, results, untrained=None, step=None, label=''):
    return f"# {self.name}\n\nscore {results['score']}\n"


def test_a_registered_type_is_built_and_written(load_config, tmp_path):
  evaluators.register('constant_test', ConstantEvaluator)
  evaluators.register('constant_test', ConstantEvaluator)  # same: fine
  with pytest.raises(SemcorrError, match='already registered'):
    evaluators.register('constant_test', evaluators.SyntheticEvaluator)
  config = _config(load_config, const=dict(
      type='constant_test', value=0.25, every=1, select='score'))
  ev = evaluators.build(config, outputs.DEFAULT_FLOWS, ['const'])[0]
  ev.check()
  results = ev.run(None, None)
  assert ev.scalars(results) == {'score': 0.25}  # strings left out
  paths = ev.write(str(tmp_path), results, step=3)
  assert [os.path.basename(p) for p in paths] == ['const.json', 'const.md']
  saved = json.load(open(tmp_path / 'eval' / 'const.json'))
  assert saved == {'evaluator': 'const', 'type': 'constant_test', 'step': 3,
                   'trained': {'score': 0.25, 'note': 'constant'}}
  data = evaluators.record_selection(str(tmp_path), ev, 3,
                                    ev.select_value(results))
  assert (data['evaluator'], data['metric'], data['best_step']) == (
      'const', 'score', 3)


def test_a_type_named_module_colon_class_needs_no_registration(load_config):
  config = _config(load_config, const=dict(
      type=f'{__name__}:ConstantEvaluator', value=0.5))
  ev = evaluators.build(config, outputs.DEFAULT_FLOWS, ['const'])[0]
  assert isinstance(ev, ConstantEvaluator)
  assert ev.scalars(ev.run(None, None)) == {'score': 0.5}
  for bad, match in ((f'{__name__}:NoSuchClass', 'does not import'),
                     (f'{__name__}:pytest', 'not an Evaluator')):
    config = _config(load_config, const=dict(type=bad))
    with pytest.raises(SemcorrError, match=match):
      evaluators.build(config, outputs.DEFAULT_FLOWS, ['const'])


# --- check() ------------------------------------------------------------------
@pytest.mark.parametrize('settings, match', [
    (dict(data_dir=None),
     'pf_pascal needs --config.evals.pf_val.data_dir'),
    (dict(data_dir='/no/such/folder'), 'does not exist'),
    (dict(benchmark='pf'), "evals.pf_val.benchmark='pf': unknown benchmark"),
    (dict(split='train2'), "evals.pf_val.split='train2': pf_pascal has"),
    (dict(select='pck@0.2'), "evals.pf_val.select='pck@0.2' is not a metric "
     'this evaluator reports'),
    (dict(every=0), "select='pck@0.1' needs every > 0"),
    (dict(threshhold='img'), r"unknown settings \['threshhold'\]"),
    (dict(direction='up'), 'direction must be one of ts, st'),
    (dict(num_pairs=0), 'num_pairs must be >= 1'),
])
def test_check_fails_with_one_clear_error(load_config, pf_pascal_dir,
                                          settings, match):
  config = _config(load_config, pf_val={**_pf_val(pf_pascal_dir),
                                        **settings})
  ev = evaluators.build(config, outputs.DEFAULT_FLOWS, ['pf_val'])[0]
  with pytest.raises(SemcorrError, match=match):
    ev.check()


def test_check_passes_and_knows_every_flows_metrics(load_config,
                                                    pf_pascal_dir):
  config = _config(load_config, pf_val=_pf_val(
      pf_pascal_dir, select='guide_confidence_auc@0.1'))
  ev = evaluators.build(config, FLOWS, ['pf_val'])[0]
  ev.check()  # also prepares the TFDS dataset
  names = ev.metric_names()
  assert {'pck@0.1', 'guide_pck@0.1', 'guide_mean_error_px',
          'guide_confidence_auc@0.1', 'confidence_split'} <= names
  assert 'confidence_auc@0.1' not in names  # 'final' declares none
  synthetic = evaluators.build(config, FLOWS, ['synthetic'])[0]
  synthetic.check()
  assert {'pck@0.1', 'guide_pck_bbox_st@0.05', 'guide_epe',
          'guide_confidence_pck_high@0.15'} <= synthetic.metric_names()
  assert 'guide_num_pairs' not in synthetic.metric_names()


def test_synthetic_needs_dense_ground_truth(load_config):
  config = load_config('sfnet', 'test')
  with config.unlocked():
    config.data.source = 'pf_pascal'
    config.data.max_keypoints = 20
  ev = evaluators.build(config, outputs.DEFAULT_FLOWS)[0]
  with pytest.raises(SemcorrError, match="data.source='pf_pascal' yields no "
                     'dense ground truth'):
    ev.check()


# --- every flow scored --------------------------------------------------------
def test_benchmark_scores_every_flow_and_declared_confidences(
    load_config, pf_pascal_dir):
  config = _config(load_config, pf_val=_pf_val(pf_pascal_dir))
  ev = evaluators.build(config, FLOWS, ['pf_val'])[0]
  # 'final' is exact on the fixture; 'guide' is the scale 0.8 of
  # test_evaluation_runner (PCK@0.1 9/16 on the test split) with a
  # confidence map. The primary flow predicts a confidence too, but does
  # not declare it: it is not scored.
  predict_fn = _affine_predict_fn(
      (outputs.Flow('final', ('confidence',)), FLOWS[1]),
      {'final': IDENTITY, 'guide': SCALE})
  results = ev.run(predict_fn, {})
  scalars = ev.scalars(results)
  assert set(scalars) == ev.metric_names()
  assert scalars['pck@0.1'] == 1.0 and scalars['mean_error_px'] < 1e-9
  assert 0.0 < scalars['guide_pck@0.1'] < 1.0
  assert scalars['guide_mean_error_px'] > 1.0
  assert 0.0 <= scalars['guide_confidence_auc@0.1'] <= 1.0
  assert not [k for k in scalars if k.startswith('confidence_')
              and k != 'confidence_split']
  for category in results['per_category'].values():
    assert category['pck@0.1'] == 1.0 and 'guide_pck@0.1' in category
  assert (results['benchmark'], results['split']) == ('pf_pascal',
                                                      'validation')
  assert [f['prefix'] for f in results['flows']] == ['', 'guide_']
  assert ev.select_value(results) == 1.0


def test_synthetic_scores_every_flow(load_config):
  config = load_config('sfnet', 'test')
  ev = evaluators.build(config, FLOWS)[0]
  predict_fn = _shift_predict_fn(FLOWS)
  both = ev.scalars(ev.run(predict_fn, {'shift': {'final': [0.0, 0.0],
                                                  'guide': [3.0, -1.0]}}))
  assert set(both) == ev.metric_names() | {'keypoint_stride'}
  assert both['num_pairs'] == config.evals.synthetic.num_pairs
  # The second flow's keys are exactly the primary flow's keys of a model
  # whose primary flow is that second flow.
  alone = ev.scalars(ev.run(predict_fn, {'shift': {'final': [3.0, -1.0],
                                                   'guide': [0.0, 0.0]}}))
  for key in ('pck@0.05', 'pck_bbox_ts@0.1', 'epe', 'epe_st'):
    assert both['guide_' + key] == alone[key], key
    assert both[key] == alone['guide_' + key], key
  assert both['epe'] != both['guide_epe']
  # Confidence 1 everywhere, on the declaring flow only: all keypoints high.
  assert both['guide_confidence_frac_high'] == 1.0
  assert 'confidence_frac_high' not in both


# --- files --------------------------------------------------------------------
def test_synthetic_writes_todays_file_names(load_config, tmp_path):
  config = load_config('sfnet', 'test')
  ev = evaluators.build(config, outputs.DEFAULT_FLOWS)[0]
  predict_fn = _shift_predict_fn(outputs.DEFAULT_FLOWS)
  trained = ev.run(predict_fn, {'shift': {'final': [1.0, 0.0]}})
  untrained = ev.run(predict_fn, {'shift': {'final': [6.0, 0.0]}})
  workdir = str(tmp_path)
  assert ev.read_untrained(workdir) is None
  assert [os.path.basename(p) for p in ev.write_untrained(
      workdir, untrained)] == ['synthetic_untrained.json',
                               'synthetic_untrained.md']
  back = ev.read_untrained(workdir)
  assert back['pck@0.05'] == untrained['pck@0.05']
  assert reports.ARTEFACTS not in back
  written = ev.write(workdir, trained, back, step=4)
  out = tmp_path / 'eval'
  assert sorted(os.listdir(out)) == [
      'pairs', 'synthetic.json', 'synthetic.md', 'synthetic_pairs.png',
      'synthetic_untrained.json', 'synthetic_untrained.md']
  assert sorted(os.listdir(out / 'pairs')) == [
      'pair_000_source.png', 'pair_000_target.png', 'pair_001_source.png',
      'pair_001_target.png']
  assert sorted(os.path.relpath(p, out) for p in written) == sorted(
      ['synthetic.json', 'synthetic.md', 'synthetic_pairs.png',
       'synthetic_untrained.json', 'synthetic_untrained.md'] +
      [os.path.join('pairs', f) for f in os.listdir(out / 'pairs')])
  saved = json.load(open(out / 'synthetic.json'))
  assert set(saved) == {'evaluator', 'type', 'step', 'trained', 'untrained'}
  assert saved['step'] == 4 and saved['type'] == 'synthetic'
  assert saved['trained']['pck@0.05'] == trained['pck@0.05']
  assert saved['untrained']['epe'] == untrained['epe'] != trained['epe']
  flat = json.load(open(out / 'synthetic_untrained.json'))
  assert flat['epe'] == untrained['epe'] and 'trained' not in flat
  markdown = open(out / 'synthetic.md').read()
  assert '| metric | trained | untrained |' in markdown
  assert 'Checkpoint step 4.' in markdown


def test_benchmark_writes_trained_and_untrained_files(load_config,
                                                      pf_pascal_dir,
                                                      tmp_path):
  config = _config(load_config, pf_val=_pf_val(pf_pascal_dir, num_pairs=2))
  ev = evaluators.build(config, FLOWS, ['pf_val'])[0]
  predict_fn = _affine_predict_fn(FLOWS, {'final': IDENTITY,
                                          'guide': SCALE})
  trained = ev.run(predict_fn, {})
  untrained = ev.run(_affine_predict_fn(FLOWS, {'final': SCALE,
                                                'guide': SCALE}), {})
  ev.write(str(tmp_path), trained, untrained, step=2)
  out = tmp_path / 'eval'
  assert sorted(os.listdir(out)) == sorted(
      f'pf_val{u}{s}' for u in ('', '_untrained')
      for s in ('.json', '.md', '_pairs.csv', '_worst.png'))
  saved = json.load(open(out / 'pf_val.json'))
  assert saved['trained']['pck@0.1'] == 1.0
  assert saved['untrained']['pck@0.1'] < 1.0
  with open(out / 'pf_val_pairs.csv') as f:
    header = f.readline().strip().split(',')
  assert 'guide_pck@0.1' in header and 'guide_keypoint_confidence' in header
  markdown = open(out / 'pf_val.md').read()
  assert markdown.startswith('# pf_val: pf_pascal (validation)')
  summary = ev.summary(trained, untrained).splitlines()
  assert summary[0] == '| metric | trained | untrained |'
  assert [line.split(' | ')[0] for line in summary[2:]] == [
      f'| {p}{k}' for p in ('', 'guide_')
      for k in ('mean_error_px', 'pck@0.05', 'pck@0.1', 'pck@0.15')]
  assert summary[4] == '| pck@0.1 | 1.0000 | 0.7500 |'
  assert 'Untrained model' in markdown and 'Every flow' in markdown
  data = evaluators.record_selection(str(tmp_path), ev, 2,
                                    ev.select_value(trained))
  assert {k: data[k] for k in ('evaluator', 'type', 'benchmark', 'split',
                               'metric', 'best_step', 'best_value')} == {
      'evaluator': 'pf_val', 'type': 'benchmark', 'benchmark': 'pf_pascal',
      'split': 'validation', 'metric': 'pck@0.1', 'best_step': 2,
      'best_value': 1.0}
  assert os.path.exists(selection.path(str(tmp_path)))
