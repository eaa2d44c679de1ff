"""The `ncnet` method: configs, parameter groups, the weak loss under the
data mesh, and a short run of the real trainer followed by matching."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax import api
from semcorr_jax import config_files
from semcorr_jax import methods
from semcorr_jax import parallel
from semcorr_jax import train
from semcorr_jax.data import pipeline
from semcorr_jax.errors import SemcorrError
from semcorr_jax.methods import ncnet as ncnet_method
from helpers import paths

CONFIG = str(paths.CONFIGS / 'ncnet.py')


def _config(variant='test', **overrides):
  return config_files.load(f'{CONFIG}:{variant}', overrides or None)


def _batch(config, size=8):
  batch = {k: jnp.asarray(v)
           for k, v in pipeline.dummy_batch(config.data, size).items()}
  images = jax.random.uniform(jax.random.key(0), batch['source_image'].shape)
  batch['source_image'] = images
  batch['target_image'] = jnp.roll(images, 8, axis=2)
  return batch


def _flat(tree):
  return flax.traverse_util.flatten_dict(jax.device_get(tree), sep='/')


def test_paper_and_inloc_settings():
  paper = _config('paper')
  assert paper.method == 'ncnet'
  assert (paper.backbone.name, paper.backbone.depth) == ('resnet', 101)
  assert tuple(paper.backbone.features) == ('layer3',)
  assert tuple(paper.data.image_size) == (400, 400)
  assert paper.data.source == 'pf_pascal'
  assert tuple(paper.model.kernel_sizes) == (5, 5, 5)
  assert tuple(paper.model.channels) == (16, 16, 1)
  assert paper.model.symmetric and paper.model.finetune_blocks == 1
  assert (paper.optimizer.name, paper.optimizer.lr) == ('adam', 5e-4)
  assert (paper.batch_size, paper.num_epochs) == (16, 5)
  assert paper.optimizer.groups.backbone.frozen
  assert not paper.optimizer.groups.backbone_finetune.frozen
  assert set(paper.evals) == {'pf_pascal', 'pf_pascal_val'}
  assert paper.evals.pf_pascal.protocol == 'resize'
  assert (paper.evals.pf_pascal.threshold,
          paper.evals.pf_pascal.frame) == ('img', 'square')
  inloc = _config('inloc')
  assert tuple(inloc.model.kernel_sizes) == (3, 3)
  assert tuple(inloc.model.channels) == (16, 1)
  assert inloc.model.finetune_blocks == 0
  with pytest.raises(Exception, match='unknown variant'):
    _config('nope')


def test_param_groups_and_what_trains():
  """finetune_blocks=1 on the test ResNet (one block per stage): layer3_0
  is 'backbone_finetune' and trains with the consensus; the rest of the
  backbone stays bit-identical. With 0 blocks it is all 'backbone'."""
  config = _config(**{'model.finetune_blocks': 1})
  method = methods.get('ncnet')(config, 10)
  batch = _batch(config, size=2)
  state = jax.jit(method.init_state)(jax.random.key(0), batch)
  labels = _flat(method.param_groups(state.params))
  for key, label in labels.items():
    if key.startswith('backbone/layer3_0/'):
      assert label == 'backbone_finetune', key
    elif key.startswith('backbone/'):
      assert label == 'backbone', key
    else:
      assert key.startswith('consensus/conv_') and label == 'model', key
  after, metrics = jax.jit(method.train_step)(state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics['loss']))
  before, now = _flat(state.params), _flat(after.params)
  changed = {k for k in before if not np.array_equal(before[k], now[k])}
  assert changed == {k for k in before if k.startswith(
      ('consensus/', 'backbone/layer3_0/'))}
  frozen = methods.get('ncnet')(_config(), 10)
  assert set(_flat(frozen.param_groups(state.params)).values()) == {
      'backbone', 'model'}


def test_too_many_finetuned_blocks_is_one_line():
  with pytest.raises(SemcorrError, match='finetune_blocks=2'):
    methods.get('ncnet')(_config(**{'model.finetune_blocks': 2}), 10)


def test_negatives_span_the_whole_batch_under_the_mesh():
  """The trainer shards the batch over 8 devices (one pair each): the
  loss sees the global batch, so pair i's negative is source i + 1 from
  another device; rolling within each one-pair shard would make the
  negatives the positives (loss 0)."""
  config = _config()
  method = methods.get('ncnet')(config, 10)
  batch = {k: v for k, v in _batch(config).items()
           if k in ('source_image', 'target_image')}
  state = jax.jit(method.init_state)(jax.random.key(0), batch)
  mesh = parallel.make_mesh()
  assert mesh.devices.size == 8
  sharded = jax.device_put(batch, parallel.data_sharded(mesh))
  loss = jax.jit(method.loss)
  args = (state.params, state.model_state)
  on_mesh, (metrics, _) = loss(*args, sharded, jax.random.key(0))
  single, _ = loss(*args, jax.device_put(batch, jax.devices()[0]),
                   jax.random.key(0))
  np.testing.assert_allclose(on_mesh, single, rtol=1e-5, atol=1e-7)
  assert abs(float(metrics['score_neg'] - metrics['score_pos'])) > 0


@pytest.mark.slow  # compiles the sharded step, the evaluation and matching
def test_real_trainer_then_match(tmp_path):
  """Two steps of `train.train_and_evaluate` on synthetic pairs (the
  method reads the images only), then `semcorr_jax.load` matches."""
  config = _config(**{'evals.synthetic.untrained_baseline': False,
                      'num_train_steps': 2})
  assert set(ncnet_method.NCNetMethod.batch_keys) == {'source_image',
                                                      'target_image'}
  results = train.train_and_evaluate(config, str(tmp_path))
  assert results['step'] == config.num_train_steps
  scores = results['evals']['synthetic']['trained']
  assert 0.0 <= scores['pck@0.1'] <= 1.0 and 'soft_pck@0.1' in scores
  matcher = api.load(str(tmp_path))
  image = np.asarray(jax.random.uniform(jax.random.key(0), (48, 40, 3)))
  out = matcher.match(image, image[:, ::-1])
  assert out['mapping_st'].shape == (48, 40, 2)
  assert out['soft_mapping_ts'].shape == (48, 40, 2)
  confidence = out['confidence_st']
  assert confidence.shape == (48, 40)
  assert confidence.min() > 0 and confidence.max() <= 1.0
