"""Workdirs written by the previous layout still load for inference.

The config.json files in tests/fixtures/old_workdirs/ were written by the
version before named evaluators (`eval` + `eval_every`, optimisers without
`groups`, fewer data and CAMNet fields). Their checkpoints had a different
optimiser-state tree (labels 'train'/'freeze') and, for the CAMNet GAN, flat
`disc_params`/`disc_opt_state` fields; the tests write checkpoints in exactly
that layout, with known parameters, and load them back. Resuming training from
such a checkpoint is refused with one line saying how to start from it.
"""

import json
import shutil

import flax
import jax
import numpy as np
import optax
import pytest

import semcorr_jax
from helpers import paths
from semcorr_jax import checkpointing
from semcorr_jax import config_files
from semcorr_jax import train
from semcorr_jax import workdirs
from semcorr_jax.errors import SemcorrError

OLD = paths.FIXTURES / 'old_workdirs'


def _old_optimizer(params):
  """The previous `make_optimizer`: Adam on 'train' leaves, zero on 'freeze'."""
  labels = flax.traverse_util.unflatten_dict({
      k: 'freeze' if 'backbone' in k else 'train'
      for k in flax.traverse_util.flatten_dict(params)})
  return optax.multi_transform(
      {'train': optax.chain(optax.adam(1e-3)), 'freeze': optax.set_to_zero()},
      labels)


def _write_old_workdir(tmp_path, name, gan=False):
  workdir = tmp_path / name
  workdir.mkdir()
  shutil.copy(OLD / f'{name}_config.json', workdir / 'config.json')
  config = workdirs.load_config(str(workdir))
  method = semcorr_jax.methods.get(config.method)(config, 1)
  variables = dict(method.init_variables(jax.random.key(7),
                                         workdirs.image_batch(config)))
  # Known, non-initial values: every parameter shifted by 0.25.
  params = jax.tree.map(lambda x: x + 0.25, variables.pop('params'))
  state = {'step': np.int32(4), 'params': params, 'model_state': variables,
           'opt_state': _old_optimizer(params).init(params)}
  if gan:
    disc = {'conv0': {'kernel': np.ones((4, 4, 6, 4), np.float32)}}
    state.update(disc_params=disc,
                 disc_opt_state=optax.adam(1e-3).init(disc))
  ckpt = checkpointing.Checkpointer(str(workdir))
  ckpt.save(4, state, {'step': 4, 'data_index': 32, 'seed': 0})
  ckpt.wait()
  ckpt.close()
  return workdir, {'params': params, **variables}


def _assert_same(a, b):
  fa = flax.traverse_util.flatten_dict(jax.device_get(a), sep='/')
  fb = flax.traverse_util.flatten_dict(jax.device_get(b), sep='/')
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)


def test_old_config_is_upgraded():
  raw = json.loads((OLD / 'camnet_config.json').read_text())
  assert 'eval' in raw and 'evals' not in raw
  upgraded = checkpointing.upgrade_config(raw)
  synthetic = upgraded['evals']['synthetic']
  assert synthetic['type'] == 'synthetic'
  assert synthetic['num_pairs'] == raw['eval']['num_pairs']
  assert synthetic['every'] == raw['eval_every']
  assert upgraded['optimizer']['groups'] == {'backbone': {'frozen': True}}
  assert upgraded['data']['scene_seed'] == 0


def test_old_selection_settings_become_a_benchmark_evaluator():
  raw = json.loads((OLD / 'sfnet_config.json').read_text())
  raw['eval'] = dict(raw['eval'], select_benchmark='pf_pascal',
                     select_data_dir='/data/pf')
  raw['eval_every'] = 500
  evals = checkpointing.upgrade_config(raw)['evals']
  bench = evals['pf_pascal_validation']
  assert bench['benchmark'] == 'pf_pascal' and bench['every'] == 500
  assert bench['select'] == 'pck@0.1' and bench['data_dir'] == '/data/pf'


@pytest.mark.parametrize('name,gan', [('sfnet', False), ('camnet', True)])
def test_old_checkpoint_loads_for_inference(tmp_path, name, gan):
  workdir, expected = _write_old_workdir(tmp_path, name, gan)
  restored = workdirs.restore(str(workdir))
  assert restored.step == 4
  _assert_same(restored.variables, expected)
  # The public API matches with it.
  matcher = semcorr_jax.load(str(workdir))
  image = np.zeros((40, 30, 3), np.uint8)
  out = matcher.match(image, image)
  assert out['mapping_st'].shape == (40, 30, 2)


def test_old_checkpoint_refuses_resume_with_one_clear_line(tmp_path):
  workdir, _ = _write_old_workdir(tmp_path, 'sfnet')
  before = (workdir / 'config.json').read_bytes()
  config = config_files.load(f'{paths.CONFIGS}/sfnet.py:test')
  with pytest.raises(SemcorrError, match='init_from.workdir') as e:
    train.train_and_evaluate(config, str(workdir))
  assert '\n' not in str(e.value)
  # The old run's config is kept: it still loads for inference.
  assert (workdir / 'config.json').read_bytes() == before
  workdirs.restore(str(workdir))
