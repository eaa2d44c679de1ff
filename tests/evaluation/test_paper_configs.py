"""The `paper` variants evaluate as SFNet did: 288 + 16 px padding, model
selection by alpha_bbox PCK@0.1 on PF-PASCAL validation, PF-PASCAL and
PF-WILLOW test at the end (configs/sfnet.py, configs/camnet.py).

Data: the tiny PF-PASCAL / PF-WILLOW folders of `helpers.pf_fixture`; the
model is a numpy fake with a known shift, so nothing compiles.
"""

import numpy as np
import pytest

from semcorr_jax import methods
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import evaluators
from semcorr_jax.evaluation import fake

from helpers import pf_fixture

METHODS = ('sfnet', 'camnet')
# Every paper evaluator: (benchmark, split, every, select, threshold, frame).
EXPECTED = {
    'pf_pascal_val': ('pf_pascal', 'validation', 1000, 'pck@0.1', 'bbox',
                      'original'),
    'pf_pascal': ('pf_pascal', 'test', 0, '', 'img', 'square'),
    'pf_willow': ('pf_willow', 'test', 0, '', 'kps', 'original'),
}


@pytest.fixture(scope='module')
def data_dirs(tmp_path_factory):
  """{'pf_pascal': dir, 'pf_willow': dir} of the fixture datasets."""
  return {
      'pf_pascal': str(pf_fixture.write_pf_pascal(
          tmp_path_factory.mktemp('pf_pascal'))),
      'pf_willow': str(pf_fixture.write_pf_willow(
          tmp_path_factory.mktemp('pf_willow')))}


def _paper(load_config, method, data_dirs=None):
  overrides = {f'evals.{name}.data_dir': path
               for name, path in (data_dirs or {}).items()}
  return load_config(method, 'paper', **overrides)


def _build(config):
  flows = methods.get(config.method).flows
  return {ev.name: ev for ev in evaluators.build(config, flows)}


@pytest.mark.parametrize('method', METHODS)
def test_paper_evaluators_are_sfnets_protocol(load_config, data_dirs,
                                              method):
  config = _paper(load_config, method, data_dirs)
  # pf_pascal_val reads the PF-PASCAL folder given to pf_pascal.
  assert config.evals.pf_pascal_val.data_dir == data_dirs['pf_pascal']
  built = _build(config)
  assert set(EXPECTED) <= set(built)
  assert evaluators.selecting(list(built.values())) is built['pf_pascal_val']
  for name, (benchmark, split, every, select, threshold,
             frame) in EXPECTED.items():
    ev = built[name]
    ev.check()  # data, split, protocol and `select` accepted
    protocol = ev.protocol
    assert (ev.benchmark, ev.split, ev.every, ev.select) == (
        benchmark, split, every, select), name
    assert (protocol.direction, protocol.threshold, protocol.frame) == (
        'ts', threshold, frame), name
    # The 'padded' preset: 288 x 288 + 16 px on every side = 320 x 320.
    assert (tuple(protocol.input_size), protocol.pad) == ((288, 288), 16)
    assert ev.model_size == (320, 320) == tuple(config.data.image_size)
    assert not protocol.kps_padding_bug
  # Own folders still win over the shared one.
  config = _paper(load_config, method, {**data_dirs,
                                        'pf_pascal_val': '/elsewhere'})
  assert config.evals.pf_pascal.data_dir == data_dirs['pf_pascal']
  assert config.evals.pf_pascal_val.data_dir == '/elsewhere'


@pytest.mark.parametrize('method', METHODS)
def test_without_data_the_check_names_the_setting(load_config, method):
  built = _build(_paper(load_config, method))
  for name in ('pf_pascal', 'pf_willow'):
    with pytest.raises(SemcorrError, match=(
        f'{built[name].benchmark} needs --config.evals.{name}.data_dir')):
      built[name].check()


def test_selection_scores_alpha_bbox(load_config, data_dirs):
  """A constant 32 model-pixel error along x: in the source's original
  pixels 32 (W - 1) / 287, within 0.1 x the box's max side (H - 4 in the
  fixture) for every validation pair, beyond 0.1 x the squashed image side
  (alpha_img) for every one."""
  config = _paper(load_config, 'camnet', data_dirs)
  ev = _build(config)['pf_pascal_val']
  flows = ev.flows
  shift = np.array([[1.0, 0.0, 64.0 / 319.0], [0.0, 1.0, 0.0]])  # 32 px
  fn = fake.flows_predict_fn(flows, {f.name: shift for f in flows})

  def predict_fn(variables, source, target):
    del variables
    return fn(source, target)

  for source, _ in pf_fixture.PASCAL_VAL:
    width, height = pf_fixture.pascal_size(source)
    error = 32.0 * (width - 1) / 287.0
    assert error <= 0.1 * (max(width, height) - 4)
    assert error > 0.1 * width  # squashed: error * 224 / W > 0.1 * 224
  results = ev.run(predict_fn, {})
  assert results['num_pairs'] == len(pf_fixture.PASCAL_VAL)
  assert ev.select_value(results) == 1.0
  # The same pairs under alpha_img (what the selection used before).
  settings = dict(ev.settings, threshold='img', frame='square')
  as_img = evaluators.from_settings('img', settings, config, flows)
  assert as_img.run(predict_fn, {})['pck@0.1'] == 0.0
