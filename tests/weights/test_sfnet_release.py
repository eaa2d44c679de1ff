"""Tests for semcorr_jax/weights/sfnet_release.py and cli/import_sfnet.py.

The official key names and shapes come from tests/fixtures/sfnet_release_
keys.json (written by tests/fixtures/make_sfnet_release_keys.py from the
structure of SFNet's model.py). Full-size (ResNet-101) names and shapes are
checked against `jax.eval_shape` only; values are checked on a narrow
ResNet (width 4: layer3 64 channels, layer4 128), with the JSON's shapes
scaled down.
"""

import ast
import errno
import importlib
import json
import os
import pathlib
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax import checkpointing
from semcorr_jax import config_files
from semcorr_jax import workdirs
from semcorr_jax.cli import import_sfnet
from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import backbones
from semcorr_jax.models import sfnet
from semcorr_jax.weights import sfnet_release
from semcorr_jax.weights.state_dict import save_torch_file
from helpers import paths

ROOT = paths.REPO
KEYS = json.loads((ROOT / 'tests' / 'fixtures' /
                   'sfnet_release_keys.json').read_text())
TINY = {'backbone.width': 4}  # layer3: 64 channels, layer4: 128.
SCALE = {1024: 64, 2048: 128}


def _config(variant, overrides=None):
  return config_files.load(str(ROOT / 'configs' / f'sfnet.py:{variant}'),
                           overrides)


def _template(config):
  model = sfnet.SFNet.from_config(config.model,
                                  backbones.backbone_config(config))
  x = jnp.zeros((1, 64, 64, 3))
  return model, jax.eval_shape(model.init, jax.random.key(0), x, x)


def _release(scale=None, seed=0):
  """A random nested release from the JSON, channels mapped by `scale`."""
  rng = np.random.default_rng(seed)
  out = {}
  for name in sfnet_release.STATE_DICTS:
    out[name] = {}
    for key, shape in KEYS[name]:
      shape = [scale.get(d, d) for d in shape] if scale else shape
      if key.endswith('num_batches_tracked'):
        out[name][key] = np.array(1234, np.int64)
      else:
        out[name][key] = rng.standard_normal(shape).astype(np.float32)
  return out


def test_fixture_matches_reference_facts():
  assert len(KEYS['state_dict1']) == len(KEYS['state_dict2']) == 14
  counts = [sum(int(np.prod(s)) for k, s in KEYS[n]
                if not k.endswith(('running_mean', 'running_var',
                                   'num_batches_tracked')))
            for n in sfnet_release.STATE_DICTS]
  # reference-facts §A.2: adap3 ~ 52.4 M, adap4 ~ 75.5 M parameters.
  assert round(counts[0] / 1e6, 1) == 52.4
  assert round(counts[1] / 1e6, 1) == 75.5


def test_paper_config_names_and_shapes_match_release():
  model, template = _template(_config('paper'))
  table = sfnet_release.release_mapping(template, model.levels)
  release = {f'{n}.{k}': tuple(s) for n in sfnet_release.STATE_DICTS
             for k, s in KEYS[n] if not k.endswith('num_batches_tracked')}
  assert {k: shape for k, (_, shape) in table.items()} == release
  path, shape = table['state_dict1.conv2.0.weight']
  assert path == ('params', 'adapt_layer3', 'conv1', 'kernel')
  assert shape == (1024, 1024, 5, 5)
  assert table['state_dict2.conv1.1.running_var'][0] == (
      'batch_stats', 'adapt_layer4', 'bn0', 'var')


@pytest.fixture(scope='module')
def tiny():
  model, template = _template(_config('test', TINY))
  return model, template, _release(SCALE)


def test_values_land_in_place(tiny):
  model, template, release = tiny
  out = sfnet_release.import_sfnet_release(release, template, model.levels)
  assert jax.tree.structure(out) == jax.tree.structure(template)
  p3, p4 = out['params']['adapt_layer3'], out['params']['adapt_layer4']
  s3 = out['batch_stats']['adapt_layer3']
  sd1, sd2 = release['state_dict1'], release['state_dict2']
  assert p3['conv0']['kernel'].shape == (5, 5, 64, 64)
  np.testing.assert_array_equal(p3['conv0']['kernel'],
                                sd1['conv1.0.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(p3['conv1']['kernel'][1, 4, 7, 3],
                                sd1['conv2.0.weight'][3, 7, 1, 4])
  np.testing.assert_array_equal(p4['conv1']['bias'], sd2['conv2.0.bias'])
  np.testing.assert_array_equal(p3['bn0']['scale'], sd1['conv1.1.weight'])
  np.testing.assert_array_equal(p4['bn1']['bias'], sd2['conv2.1.bias'])
  np.testing.assert_array_equal(s3['bn1']['mean'], sd1['conv2.1.running_mean'])
  np.testing.assert_array_equal(out['batch_stats']['adapt_layer4']['bn0']
                                ['var'], sd2['conv1.1.running_var'])
  # The backbone is untouched (still the abstract template here).
  assert isinstance(jax.tree.leaves(out['params']['backbone'])[0],
                    jax.ShapeDtypeStruct)


def test_reads_torch_file_and_flat_form(tiny, tmp_path):
  model, template, release = tiny
  path = tmp_path / 'best_checkpoint.pt'
  save_torch_file(release, path)
  from_file = sfnet_release.import_sfnet_release(path, template, model.levels)
  flat = {f'{n}.{k}': v for n in release for k, v in release[n].items()}
  from_flat = sfnet_release.import_sfnet_release(flat, template, model.levels)
  for a, b in zip(jax.tree.leaves(from_file['params']['adapt_layer4']),
                  jax.tree.leaves(from_flat['params']['adapt_layer4'])):
    np.testing.assert_array_equal(a, b)


def _error(release, template, levels):
  with pytest.raises(SemcorrError) as info:
    sfnet_release.import_sfnet_release(release, template, levels)
  assert '\n' not in str(info.value)
  return str(info.value)


def test_strict_keys_and_shapes(tiny):
  model, template, release = tiny
  levels = model.levels
  bad = _release(SCALE)
  del bad['state_dict2']['conv2.1.running_mean']
  bad['state_dict1']['conv3.0.weight'] = np.zeros(3)
  bad['state_dict1']['conv1.0.weight'] = np.zeros((64, 64, 3, 3), np.float32)
  message = _error(bad, template, levels)
  assert '1 missing (state_dict2.conv2.1.running_mean)' in message
  assert '1 unexpected (state_dict1.conv3.0.weight)' in message
  assert ('state_dict1.conv1.0.weight: got (64, 64, 3, 3), expected '
          '(64, 64, 5, 5)') in message
  assert 'missing (state_dict2.' in _error(
      {'state_dict1': release['state_dict1']}, template, levels)
  assert 'unexpected (epoch)' in _error(dict(release, epoch=3), template,
                                        levels)
  assert 'no params/adapt_stage3' in _error(release, template,
                                            ('stage3', 'stage5'))
  # Files without num_batches_tracked (torch < 0.4.1) are fine.
  old = {n: {k: v for k, v in sd.items() if 'num_batches' not in k}
         for n, sd in release.items()}
  sfnet_release.import_sfnet_release(old, template, levels)


def test_workdir_is_evaluable(tiny, tmp_path, capsys):
  _, _, release = tiny
  path = tmp_path / 'best_checkpoint.pt'
  save_torch_file(release, path)
  config = _config('test', TINY)
  workdir = import_sfnet.import_to_workdir(path, config, tmp_path / 'run')
  assert 'backbone.weights is not set' in capsys.readouterr().err
  restored = workdirs.restore(workdir)
  config2, method, variables, step = (restored.config, restored.method,
                                      restored.variables, restored.step)
  assert step == 0 and config2.backbone.width == 4
  np.testing.assert_array_equal(
      variables['params']['adapt_layer3']['conv1']['kernel'],
      release['state_dict1']['conv2.0.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      variables['batch_stats']['adapt_layer4']['bn1']['var'],
      release['state_dict2']['conv2.1.running_var'])
  x = jnp.zeros((1, 64, 64, 3))
  out = jax.jit(method.predict)(variables, x, x)
  assert out['mapping_st'].shape == (1, 64, 64, 2)
  with pytest.raises(SemcorrError, match='already has checkpoints'):
    import_sfnet.import_to_workdir(path, config, workdir)


@pytest.mark.parametrize('case', ['a_file', 'under_a_file', 'read_only'])
def test_unwritable_workdir_is_refused_before_reading(tmp_path, monkeypatch,
                                                      case):
  def read(*args, **kwargs):
    raise AssertionError('read the release before checking --workdir')
  monkeypatch.setattr(sfnet_release, 'read_release', read)
  (tmp_path / 'file').write_text('x')
  workdir = {'a_file': tmp_path / 'file',
             'under_a_file': tmp_path / 'file' / 'run',
             'read_only': tmp_path / 'ro' / 'run'}[case]
  if case == 'read_only':
    (tmp_path / 'ro').mkdir()
    os.chmod(tmp_path / 'ro', 0o555)
    real_access = os.access
    # As root, permissions do not bind: emulate them.
    monkeypatch.setattr(os, 'access', lambda p, mode, **kw: (
        not (os.path.samefile(p, tmp_path / 'ro') and mode & os.W_OK)
        and real_access(p, mode, **kw)))
  before = sorted(tmp_path.rglob('*'))
  with pytest.raises(SemcorrError, match=f'--workdir {workdir}') as info:
    import_sfnet.import_to_workdir('best_checkpoint.pt', _config('test', TINY),
                                   workdir)
  if case == 'read_only':
    os.chmod(tmp_path / 'ro', 0o755)
  assert '\n' not in str(info.value)
  assert sorted(tmp_path.rglob('*')) == before


def test_failed_import_leaves_no_workdir(tiny, tmp_path, monkeypatch):
  _, _, release = tiny
  path = tmp_path / 'best_checkpoint.pt'
  save_torch_file(release, path)

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(checkpointing.Checkpointer, 'save', full)
  with pytest.raises(OSError, match='No space left'):
    import_sfnet.import_to_workdir(path, _config('test', TINY),
                                   tmp_path / 'run')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['best_checkpoint.pt']


def test_weights_import_no_higher_layer():
  # Readers and converters sit under the methods, the trainer and the CLI;
  # writing workdirs is the CLI's (semcorr_jax/cli/import_sfnet.py).
  # semcorr_jax.output_paths (path checks) sits beside errors, under all.
  allowed = ('semcorr_jax.errors', 'semcorr_jax.output_paths',
             'semcorr_jax.models.', 'semcorr_jax.weights')
  for path in (ROOT / 'semcorr_jax' / 'weights').glob('*.py'):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ImportFrom) and node.module:
        names = [f'{node.module}.{a.name}' for a in node.names]
      elif isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      else:
        continue
      for name in names:
        if name.startswith('semcorr_jax'):
          assert name.startswith(allowed), f'{path.name}: {name}'


def test_console_script_and_usage_error(capsys):
  scripts = tomllib.loads((ROOT / 'pyproject.toml').read_text())[
      'project']['scripts']
  module, _, function = scripts['semcorr-import-sfnet'].partition(':')
  assert (module, function) == ('semcorr_jax.cli.import_sfnet', 'run')
  assert callable(getattr(importlib.import_module(module), function))
  with pytest.raises(SystemExit) as exit_info:
    import_sfnet.main(['semcorr-import-sfnet'])
  assert exit_info.value.code == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith('error: usage: semcorr-import-sfnet') and (
      '\n' not in err)
