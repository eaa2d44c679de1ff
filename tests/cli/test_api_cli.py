"""Python API (`semcorr_jax.load` -> Matcher) and the semcorr-eval/-match CLIs.

Most tests use `ShiftMethod`, a one-parameter method whose mapping is a known
shift, so lifted mappings can be checked exactly and compile times stay
small; `TwoFlowMethod` adds a second declared flow with confidence maps; one
test runs the real tiny SFNet through the API.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

import semcorr_jax
from semcorr_jax import api
from semcorr_jax import checkpointing
from semcorr_jax import config_files
from semcorr_jax import geometry
from semcorr_jax import methods
from semcorr_jax import outputs
from semcorr_jax import workdirs
from semcorr_jax.cli import match
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import visualize
from semcorr_jax.methods import base
from helpers import paths

REPO = str(paths.REPO)
TESTS = str(paths.TESTS)
HERE = os.path.dirname(os.path.abspath(__file__))
SHIFT = (1.5, -2.0)


class ShiftModel(nn.Module):
  """mapping_st = identity + shift, mapping_ts = identity - shift."""
  dims: int = 2

  @nn.compact
  def __call__(self, source, target, train=False):
    shift = self.param('shift', nn.initializers.zeros, (self.dims,))[:2]
    grid = jnp.broadcast_to(geometry.pixel_grid(*source.shape[1:3]),
                            (source.shape[0], *source.shape[1:3], 2))
    return {'mapping_st': grid + shift, 'mapping_ts': grid - shift,
            'confidence_st': jnp.mean(source, axis=-1),
            'feature_mapping_st': grid[:, ::8, ::8]}


class ShiftMethod(base.Method):
  """A registered fake method (name 'shift_test')."""

  flows = (outputs.Flow('final', (outputs.CONFIDENCE,)),)

  def build_model(self):
    return ShiftModel(dims=self.config.model.get('shift_dims', 2))

  def loss(self, params, model_state, batch, rng):
    out = self.model.apply({'params': params}, batch['source_image'],
                           batch['target_image'])
    return jnp.mean(jnp.square(out['mapping_st'])), ({}, model_state)

  def predict(self, variables, source, target):
    return self.model.apply(variables, source, target)


class TwoFlowModel(nn.Module):
  """Primary flow = identity + shift; flow 'guide' = identity + 2 shift, with
  confidences that are ramps of x (lifted exactly by an align-corners
  resize)."""

  @nn.compact
  def __call__(self, source, target, train=False):
    shift = self.param('shift', nn.initializers.zeros, (2,))
    b, h, w = source.shape[:3]
    grid = jnp.broadcast_to(geometry.pixel_grid(h, w), (b, h, w, 2))
    ramp = grid[..., 0] / (w - 1)
    return {'mapping_st': grid + shift, 'mapping_ts': grid - shift,
            'guide_mapping_st': grid + 2 * shift,
            'guide_mapping_ts': grid - 2 * shift,
            'guide_confidence_st': ramp, 'guide_confidence_ts': 1 - ramp,
            'feature_mapping_st': grid[:, ::8, ::8]}


class TwoFlowMethod(ShiftMethod):
  """A registered fake method with two flows (name 'two_flow_test')."""

  flows = (outputs.Flow('final', description='the shift'),
           outputs.Flow('guide', (outputs.CONFIDENCE,), 'twice the shift'))

  def build_model(self):
    return TwoFlowModel()


def _config(method='shift_test'):
  return config_files.load(os.path.join(REPO, 'configs', 'sfnet.py:test'),
                           {'method': method})


def _make_workdir(workdir, config, params=None, folder='checkpoints'):
  """What semcorr-train leaves behind: config.json + one checkpoint."""
  method = methods.get(config.method)(config, total_steps=1)
  state = jax.jit(method.init_state)(jax.random.key(0),
                                     workdirs.image_batch(config))
  if params is not None:
    state = state.replace(params=params)
  checkpointing.save_config(str(workdir), config)
  ckpt = checkpointing.Checkpointer(str(workdir), folder=folder)
  ckpt.save(3, state, {'step': 3, 'data_index': 0, 'seed': 0}, force=True)
  ckpt.wait()
  ckpt.close()
  return str(workdir)


@pytest.fixture(scope='module')
def shift_workdir(tmp_path_factory):
  methods.register('shift_test', f'{__name__}:ShiftMethod')
  return _make_workdir(tmp_path_factory.mktemp('shift'), _config(),
                       {'shift': jnp.asarray(SHIFT)})


@pytest.fixture(scope='module')
def two_flow_workdir(tmp_path_factory):
  methods.register('two_flow_test', f'{__name__}:TwoFlowMethod')
  return _make_workdir(tmp_path_factory.mktemp('two_flow'),
                       _config('two_flow_test'),
                       {'shift': jnp.asarray(SHIFT)})


def _expected_mapping(src_hw, tgt_hw, model_hw, shift):
  """Source pixel -> model pixel -> + shift -> target pixel (align corners)."""
  gx, gy = np.meshgrid(np.arange(src_hw[1]), np.arange(src_hw[0]),
                       indexing='xy')
  x = (gx * (model_hw[1] - 1) / (src_hw[1] - 1) + shift[0]) * (
      (tgt_hw[1] - 1) / (model_hw[1] - 1))
  y = (gy * (model_hw[0] - 1) / (src_hw[0] - 1) + shift[1]) * (
      (tgt_hw[0] - 1) / (model_hw[0] - 1))
  return np.stack([x, y], -1)


def _grid(h, w):
  gx, gy = np.meshgrid(np.arange(w), np.arange(h), indexing='xy')
  return np.stack([gx, gy], -1)


# --- API ----------------------------------------------------------------------
def test_matcher_lifts_mappings_to_original_sizes(shift_workdir):
  matcher = semcorr_jax.load(shift_workdir)
  assert matcher.step == 3 and matcher.image_size == (64, 64)
  rng = np.random.default_rng(0)
  source = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
  target = rng.random((30, 70, 3)).astype(np.float32)
  out = matcher.match(source, target)
  assert out['mapping_st'].shape == (40, 56, 2)
  assert out['mapping_ts'].shape == (30, 70, 2)
  assert out['flow_st'].shape == (40, 56, 2)
  assert out['confidence_st'].shape == (40, 56)
  assert 'feature_mapping_st' not in out  # coarse coordinates are not lifted
  np.testing.assert_allclose(
      out['mapping_st'], _expected_mapping((40, 56), (30, 70), (64, 64), SHIFT),
      atol=1e-3)
  np.testing.assert_allclose(
      out['mapping_ts'],
      _expected_mapping((30, 70), (40, 56), (64, 64), [-s for s in SHIFT]),
      atol=1e-3)
  points = np.array([[0., 0.], [55., 39.], [10.5, 20.25]])
  moved = matcher.transfer_keypoints(source, target, points)
  want = [(p[0] * 63 / 55 + SHIFT[0]) * 69 / 63 for p in points]
  np.testing.assert_allclose(moved[:, 0], want, atol=1e-3)
  warped = matcher.warp_source_to_target(source, target)
  assert warped.shape == (30, 70, 3) and warped.dtype == np.float32


def test_matcher_lifts_and_pictures_draw_every_declared_flow(
    two_flow_workdir, shift_workdir, tmp_path):
  matcher = semcorr_jax.load(two_flow_workdir)
  assert [f.name for f in matcher.flows] == ['final', 'guide']
  rng = np.random.default_rng(3)
  source = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
  target = rng.random((30, 70, 3)).astype(np.float32)
  out = matcher.match(source, target)
  # Every declared map, lifted; nothing undeclared (feature_mapping_st).
  assert set(out) == {
      'mapping_st', 'mapping_ts', 'flow_st', 'flow_ts', 'guide_mapping_st',
      'guide_mapping_ts', 'guide_flow_st', 'guide_flow_ts',
      'guide_confidence_st', 'guide_confidence_ts'}
  double = [2 * s for s in SHIFT]
  np.testing.assert_allclose(
      out['mapping_st'],
      _expected_mapping((40, 56), (30, 70), (64, 64), SHIFT), atol=1e-3)
  np.testing.assert_allclose(
      out['guide_mapping_st'],
      _expected_mapping((40, 56), (30, 70), (64, 64), double), atol=1e-3)
  np.testing.assert_allclose(
      out['guide_mapping_ts'],
      _expected_mapping((30, 70), (40, 56), (64, 64), [-s for s in double]),
      atol=1e-3)
  np.testing.assert_allclose(out['guide_flow_st'],
                             out['guide_mapping_st'] - _grid(40, 56),
                             atol=1e-4)
  # Confidences on the grid their direction starts from (x ramps).
  np.testing.assert_allclose(out['guide_confidence_st'],
                             np.broadcast_to(np.arange(56) / 55, (40, 56)),
                             atol=1e-5)
  np.testing.assert_allclose(out['guide_confidence_ts'],
                             1 - np.broadcast_to(np.arange(70) / 69, (30, 70)),
                             atol=1e-5)

  rows = visualize.match_rows(matcher.flows, out)
  assert [r.flow for r in rows] == ['final', 'guide']  # primary first
  assert rows[0].panels == ()
  assert [(p[0], p[3], p[4]) for p in rows[1].panels] == [
      ('guide_confidence_st', 0.0, 1.0), ('guide_confidence_ts', 0.0, 1.0)]
  np.testing.assert_array_equal(rows[1].mapping_ts, out['guide_mapping_ts'])
  figure = visualize.match_figure(source, target, matcher.flows, out,
                                  points_s=np.array([[3., 4.], [20., 10.]]))
  # One row per flow; 4 panels + the guide flow's two confidence maps.
  grid = figure.axes[0].get_subplotspec().get_gridspec()
  assert grid.get_geometry() == (2, 6)
  titles = {ax.get_title() for ax in figure.axes}
  assert {'flow source -> target', 'guide flow source -> target',
          'guide confidence (source -> target)',
          'guide confidence (target -> source)'} <= titles

  # semcorr-match writes the picture and every declared extra (st) by key.
  written = match.match_files(two_flow_workdir, 'skimage:chelsea',
                              'skimage:chelsea_warped',
                              str(tmp_path / 'm.png'))
  assert set(written) == {'png', 'npy', 'guide_confidence_st'}
  assert written['guide_confidence_st'] == str(
      tmp_path / 'm_guide_confidence.npy')
  assert np.load(written['guide_confidence_st']).shape == (300, 451)
  assert not (tmp_path / 'm_confidence.npy').exists()
  one_flow = Image.open(match.match_files(
      shift_workdir, 'skimage:chelsea',
      'skimage:chelsea_warped', str(tmp_path / 'one.png'))['png'])
  assert Image.open(written['png']).size[1] > 1.7 * one_flow.size[1]


@pytest.mark.parametrize('bad, match', [
    (np.zeros((10, 10)), r'\(H, W, 3\)'),
    (np.zeros((10, 10, 4), np.uint8), r'\(H, W, 3\)'),
    (np.zeros((10, 10, 3), np.int32), 'dtype'),
    (np.full((10, 10, 3), 2.0, np.float32), r'\[0, 1\]'),
    (np.full((10, 10, 3), np.nan, np.float32), 'NaN'),
    (np.zeros((1, 10, 3), np.uint8), '2x2'),
])
def test_matcher_rejects_bad_images(shift_workdir, bad, match):
  matcher = api.load(shift_workdir)
  good = np.zeros((10, 10, 3), np.uint8)
  with pytest.raises(SemcorrError, match=match):
    matcher.match(bad, good)
  with pytest.raises(SemcorrError, match='points_s'):
    matcher.transfer_keypoints(good, good, np.zeros((3, 3)))


def test_load_errors(tmp_path, shift_workdir):
  with pytest.raises(SemcorrError, match='config.json not found'):
    api.load(str(tmp_path))
  with pytest.raises(SemcorrError, match='no checkpoint for step 5'):
    api.load(shift_workdir, step=5)
  with pytest.raises(SemcorrError, match='no checkpoints in'):
    api.load(shift_workdir, best=True)  # no best/ folder


def test_load_best_reads_the_selected_model(tmp_path):
  methods.register('shift_test', f'{__name__}:ShiftMethod')
  workdir = _make_workdir(tmp_path, _config(), {'shift': jnp.asarray(SHIFT)})
  _make_workdir(tmp_path, _config(), {'shift': jnp.asarray([4.0, 0.0])},
                folder='best')
  image = np.zeros((16, 16, 3), np.uint8)
  latest = semcorr_jax.load(workdir).match(image, image)['flow_st']
  best = semcorr_jax.load(workdir, best=True).match(image, image)['flow_st']
  # 16-pixel images, 64-pixel model: a shift s moves s * 15 / 63 pixels.
  np.testing.assert_allclose(latest[8, 8], np.asarray(SHIFT) * 15 / 63,
                             atol=1e-4)
  np.testing.assert_allclose(best[8, 8], [4.0 * 15 / 63, 0.0], atol=1e-4)


def test_sfnet_matcher_on_images_of_different_sizes(tmp_path):
  """The real (tiny) SFNet through a workdir, as semcorr-train writes it."""
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    matcher = api.load(_make_workdir(tmp_path, _config('sfnet')))
    rng = np.random.default_rng(1)
    out = matcher.match((rng.random((48, 40, 3)) * 255).astype(np.uint8),
                        rng.random((36, 72, 3)).astype(np.float32))
  finally:
    jax.config.update('jax_disable_most_optimizations', False)
  assert out['mapping_st'].shape == (48, 40, 2)
  assert out['mapping_ts'].shape == (36, 72, 2)
  assert np.all(np.isfinite(out['mapping_st']))
  # Soft-argmax mappings stay inside the other image.
  assert out['mapping_st'][..., 0].min() >= -1e-3
  assert out['mapping_st'][..., 0].max() <= 71 + 1e-3


# --- semcorr-eval -------------------------------------------------------------
def test_evaluate_workdir_writes_trained_and_untrained(shift_workdir):
  from semcorr_jax.cli import evaluate  # pylint: disable=g-import-not-at-top
  results = evaluate.evaluate_workdir(shift_workdir, num_pairs=4,
                                      num_pictures=2)
  assert results['step'] == 3
  # Untrained = shift 0 = identity; trained = the known shift. Both scored.
  for key in ('pck@0.05', 'pck@0.1', 'pck@0.15', 'pck_bbox@0.1', 'epe'):
    assert np.isfinite(results['trained'][key])
    assert np.isfinite(results['untrained'][key])
  assert results['trained']['pck@0.1'] != results['untrained']['pck@0.1']
  out = os.path.join(shift_workdir, 'eval')
  saved = json.load(open(os.path.join(out, 'synthetic.json')))
  assert set(saved) >= {'trained', 'untrained', 'step'}
  assert saved['trained']['num_pairs'] == 4
  assert 'untrained' in open(os.path.join(out, 'synthetic.md')).read()
  assert Image.open(os.path.join(out, 'synthetic_pairs.png')).size[0] > 200
  for i in range(2):
    for side in ('source', 'target'):
      image = Image.open(os.path.join(out, 'pairs', f'pair_00{i}_{side}.png'))
      assert image.size == (64, 64)


def _cli(tool, *args, fake=False):
  """Runs a CLI in a fresh process; `fake` registers ShiftMethod first."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='2')
  if fake:
    code = (f'import sys; sys.path[:0] = [{HERE!r}, {TESTS!r}]; '
            'from semcorr_jax import methods; '
            "methods.register('shift_test', 'test_api_cli:ShiftMethod'); "
            f'from semcorr_jax.cli import {tool}; '
            f'sys.argv = [{tool!r}] + sys.argv[1:]; {tool}.run()')
    cmd = [sys.executable, '-c', code, *args]
  else:
    cmd = [sys.executable, '-m', f'semcorr_jax.cli.{tool}', *args]
  return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                        env=env, timeout=300)


def _assert_user_error(proc, match):
  assert proc.returncode == 1, proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, proc.stderr
  assert match in errors[0], errors[0]


@pytest.mark.slow  # CLI subprocess
def test_eval_cli_unknown_benchmark(shift_workdir):
  proc = _cli('evaluate', f'--workdir={shift_workdir}', '--benchmark=spair')
  _assert_user_error(proc, '--benchmark=spair: not one of synthetic')


@pytest.fixture(scope='module')
def match_inputs(tmp_path_factory):
  d = tmp_path_factory.mktemp('inputs')
  rng = np.random.default_rng(2)
  Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8)).save(
      d / 'source.png')
  (d / 'points.csv').write_text('x,y\n0,0\n55,39\n10.5,20.25\n')
  (d / 'corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n not really a png')
  data = (d / 'source.png').read_bytes()
  (d / 'truncated.png').write_bytes(data[:len(data) // 2])
  (d / 'bad.csv').write_text('x,y\n1,2\n3,abc\n')
  return d


@pytest.mark.slow  # CLI subprocesses
def test_match_cli_writes_png_npy_csv_then_keeps_them_on_error(
    shift_workdir, match_inputs, tmp_path):
  output = tmp_path / 'out' / 'match.png'
  proc = _cli('match', f'--workdir={shift_workdir}',
              f'--source={match_inputs / "source.png"}',
              '--target=skimage:chelsea', f'--output={output}',
              f'--keypoints={match_inputs / "points.csv"}', fake=True)
  assert proc.returncode == 0, proc.stderr
  assert Image.open(output).size[0] > 300
  mapping = np.load(tmp_path / 'out' / 'match_mapping.npy')
  assert mapping.shape == (40, 56, 2) and mapping.dtype == np.float32
  # The primary flow's declared confidence, source grid (mean of source RGB).
  confidence = np.load(tmp_path / 'out' / 'match_confidence.npy')
  assert confidence.shape == (40, 56) and confidence.dtype == np.float32
  np.testing.assert_allclose(  # chelsea is 300 x 451
      mapping, _expected_mapping((40, 56), (300, 451), (64, 64), SHIFT),
      atol=1e-2)
  with open(tmp_path / 'out' / 'match_keypoints.csv') as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['x_source', 'y_source', 'x_target', 'y_target']
  assert len(rows) == 4
  assert float(rows[2][2]) == pytest.approx(
      (55 * 63 / 55 + SHIFT[0]) * 450 / 63, abs=1e-2)

  # A failing run with the same output leaves the earlier files alone.
  before = {p: os.path.getmtime(p) for p in tmp_path.glob('out/*')}
  proc = _cli('match', f'--workdir={shift_workdir}', '--source=nope.jpg',
              '--target=skimage:chelsea', f'--output={output}')
  _assert_user_error(proc, "source 'nope.jpg': no such file")
  assert {p: os.path.getmtime(p) for p in tmp_path.glob('out/*')} == before


@pytest.mark.parametrize('args, match', [
    (['--source=corrupt.png', '--target=skimage:chelsea'],
     'is corrupt or not an image'),
    (['--source=truncated.png', '--target=skimage:chelsea'],
     'is corrupt or unreadable'),
    (['--source=skimage:chelsea', '--target=skimage:nosuchphoto'],
     "no scikit-image photo 'nosuchphoto'"),
    (['--source=skimage:chelsea', '--target=skimage:chelsea',
      '--keypoints=bad.csv'], 'line 3: expected two numbers'),
    (['--source=skimage:chelsea', '--target=skimage:chelsea',
      '--keypoints=missing.csv'], 'no such file'),
])
@pytest.mark.slow  # a CLI subprocess per case
def test_match_cli_input_errors(match_inputs, tmp_path, args, match):
  for name in ('corrupt.png', 'truncated.png', 'bad.csv'):
    args = [a.replace(f'={name}', f'={match_inputs / name}') for a in args]
  proc = _cli('match', f'--workdir={tmp_path}', *args,
              f'--output={tmp_path / "o.png"}')
  _assert_user_error(proc, match)
  assert not os.listdir(tmp_path)


@pytest.mark.slow  # CLI subprocesses
def test_match_cli_workdir_errors(shift_workdir, tmp_path):
  common = ['--source=skimage:chelsea', '--target=skimage:chelsea_warped',
            f'--output={tmp_path / "o.png"}']
  proc = _cli('match', f'--workdir={tmp_path}', *common)
  _assert_user_error(proc, 'a semcorr-train workdir?')
  # A checkpoint whose shapes do not fit the model of the config.
  mismatched = tmp_path / 'mismatched'
  shutil.copytree(shift_workdir, mismatched,
                  ignore=shutil.ignore_patterns('eval'))
  config = json.load(open(mismatched / 'config.json'))
  config['model']['shift_dims'] = 3
  json.dump(config, open(mismatched / 'config.json', 'w'))
  proc = _cli('match', f'--workdir={mismatched}', *common, fake=True)
  _assert_user_error(proc, 'does not match the model')
  assert not (tmp_path / 'o.png').exists()
