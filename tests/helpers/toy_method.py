"""The smallest complete method: a toy that learns one global translation.

Used by tests/training/test_two_stage_method.py to show that a method outside
the package trains and evaluates through the generic trainer and CLIs without
any edit to them, and quoted by docs/adding_a_method.md. Its config names it
as 'helpers.toy_method:ToyMethod' (tests/ must be on PYTHONPATH).

Model: a 3x3 conv 'features' module shared by both images and a 'head' with
one learnable translation t (pixels, x first). Flows: 'final' maps every
source pixel p to p + t, 'identity' to p (a second, named flow for the
evaluators to score). Loss (weak supervision: images only, no ground truth):
1 - mean cosine similarity between the source features and the target
features sampled at p + t.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from semcorr_jax import geometry
from semcorr_jax import outputs
from semcorr_jax.methods import base


class ToyNet(nn.Module):
  """Features (B, H, W, 4) of both images and a global translation (2,)."""

  @nn.compact
  def __call__(self, source, target):
    features = nn.Conv(4, (3, 3), name='features')
    translation = self.param('translation', nn.initializers.zeros, (2,))
    return features(source), features(target), translation


def _normalised(x):
  return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + 1e-6)


class ToyMethod(base.Method):
  """Weakly supervised global translation on image pairs."""

  flows = (outputs.Flow('final', description='learned translation'),
           outputs.Flow('identity', description='no motion'))
  batch_keys = ('source_image', 'target_image')
  param_group_names = ('features', 'head')

  def build_model(self):
    return ToyNet()

  def param_groups(self, params):
    return base.labels_by_key(params, {'features': 'features'}, 'head')

  def loss(self, params, model_state, batch, rng):
    del rng
    fs, ft, t = self.model.apply({'params': params, **model_state},
                                 batch['source_image'], batch['target_image'])
    b, h, w = fs.shape[:3]
    grid = jnp.broadcast_to(geometry.pixel_grid(h, w), (b, h, w, 2))
    warped = geometry.bilinear_sample(ft, grid + t, padding_mode='border')
    cosine = jnp.sum(_normalised(fs) * _normalised(warped), axis=-1)
    loss = 1.0 - jnp.mean(cosine)
    return loss, ({'translation_x': t[0], 'translation_y': t[1]},
                  model_state)

  def predict(self, variables, source, target):
    _, _, t = self.model.apply(variables, source, target)
    b, h, w = source.shape[:3]
    grid = jnp.broadcast_to(geometry.pixel_grid(h, w), (b, h, w, 2))
    return {'mapping_st': grid + t, 'mapping_ts': grid - t,
            'identity_mapping_st': grid, 'identity_mapping_ts': grid}


def get_config(variant: str = 'test') -> ml_collections.ConfigDict:
  """Stage 1 ('test') or stage 2 ('stage2', started from stage 1).

  Both train on real image pairs (data.source='pf_pascal'; the test sets the
  folders) and score both flows on the PF-PASCAL validation split.
  """
  c = ml_collections.ConfigDict()
  c.method = 'helpers.toy_method:ToyMethod'
  c.seed = 0
  c.batch_size = 8
  c.num_epochs = 1
  c.num_train_steps = 4
  c.log_every = 1
  c.checkpoint_every = 2
  c.keep_checkpoints = 3
  c.optimizer = ml_collections.ConfigDict(dict(
      name='sgd', lr=0.1, decay_at=(), decay_factor=1.0,
      momentum=ml_collections.config_dict.placeholder(float),
      grad_clip_norm=ml_collections.config_dict.placeholder(float),
      groups=dict(features=dict(lr=0.01), head=dict(lr=0.5))))
  c.init_from = ml_collections.ConfigDict(dict(
      workdir=ml_collections.config_dict.placeholder(str),
      step=ml_collections.config_dict.placeholder(int),
      folder='checkpoints', subtrees=()))
  c.data = ml_collections.ConfigDict(dict(
      source='pf_pascal', image_size=(24, 32), flip_prob=0.5,
      data_dir=ml_collections.config_dict.placeholder(str),
      manual_dir=ml_collections.config_dict.placeholder(str),
      max_keypoints=20))
  c.evals = ml_collections.ConfigDict(dict(
      pf_val=dict(type='benchmark', benchmark='pf_pascal',
                  split='validation',
                  data_dir=ml_collections.config_dict.placeholder(str),
                  num_pairs=ml_collections.config_dict.placeholder(int),
                  every=2, untrained_baseline=True, select='pck@0.1')))
  if variant == 'stage2':
    # Stage 2: the features of stage 1, frozen; the head trains on.
    c.optimizer.groups.features = dict(frozen=True)
    c.optimizer.groups.head.lr = 0.2
    c.num_train_steps = 4
  elif variant != 'test':
    raise ValueError(f'unknown variant {variant!r}: test or stage2')
  c.lock()
  return c
