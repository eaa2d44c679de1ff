"""What a method is, and the default single-optimiser implementation.

A *method* bundles a model, its losses, its optimiser(s), its train step and its
inference read-out, so that `semcorr_jax.train` stays generic (scenic's split
between model and trainer). Methods are registered by name
(`semcorr_jax.methods.get(config.method)`), so a config picks one with a string.

The trainer only ever calls:

  state = method.init_state(rng, batch)            # host-free, jittable
  state, metrics = method.train_step(state, batch, rng)   # pure, jittable
  outputs = method.predict(variables, source, target)     # pure, jittable
  variables = method.inference_variables(state)

`TrainState` is a pytree; everything that must survive a restart lives in it.
Methods with several optimisers (the GAN of CAMNet) subclass `Method` and
override `init_state`/`train_step` with their own state class.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

Array = jax.Array
PyTree = Any

# Key of the loss aux that carries updated non-param collections (e.g. train-
# mode BatchNorm statistics); `train_step` moves it into `state.model_state`.
MODEL_STATE = 'model_state'
Batch = Mapping[str, Array]


@flax.struct.dataclass
class TrainState:
  """Train state of a single-optimiser method.

  Attributes:
    step: number of optimiser updates applied so far (int32 scalar).
    params: the `params` collection (trainable and frozen parameters).
    model_state: every other variable collection (e.g. frozen `batch_stats`).
    opt_state: the optax state of `tx`.
    tx: the optimiser (static; rebuilt from the config, never serialised).
  """
  step: Array
  params: PyTree
  model_state: PyTree
  opt_state: optax.OptState
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  def variables(self) -> dict[str, PyTree]:
    return {'params': self.params, **self.model_state}


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           total_steps: int) -> optax.Schedule:
  """Piecewise-constant schedule: `lr`, times `decay_factor` at each boundary.

  `config.decay_at` holds fractions of training (SFNet: 0.2x at 75%, i.e. epoch
  30 of 40).
  """
  boundaries = {
      max(1, int(round(f * total_steps))): config.decay_factor
      for f in config.get('decay_at', ())
  }
  return optax.piecewise_constant_schedule(config.lr, boundaries)


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                   trainable: Callable[[PyTree], PyTree]
                   ) -> optax.GradientTransformation:
  """Builds the optimiser of `config` applied only where `trainable` is True.

  Args:
    config: `config.optimizer` with `name` ('adam' | 'adamw' | 'sgd'), `lr`,
      `decay_at`, `decay_factor`, optional `b1`, `b2`, `weight_decay`,
      `grad_clip_norm`.
    total_steps: length of training, for the schedule.
    trainable: maps the params tree to a tree of bools (True = update).
  """
  schedule = learning_rate_schedule(config, total_steps)
  b1, b2 = config.get('b1', 0.9), config.get('b2', 0.999)
  if config.name == 'adam':
    opt = optax.adam(schedule, b1=b1, b2=b2)
  elif config.name == 'adamw':
    opt = optax.adamw(schedule, b1=b1, b2=b2,
                      weight_decay=config.get('weight_decay', 0.0))
  elif config.name == 'sgd':
    opt = optax.sgd(schedule, momentum=config.get('momentum'))
  else:
    raise ValueError(f'unknown optimizer {config.name!r}; use adam, adamw '
                     'or sgd')
  chain = []
  if config.get('grad_clip_norm'):
    chain.append(optax.clip_by_global_norm(config.grad_clip_norm))
  chain.append(opt)
  opt = optax.chain(*chain)

  def labels(params):
    return jax.tree.map(lambda t: 'train' if t else 'freeze', trainable(params))

  return optax.multi_transform({'train': opt, 'freeze': optax.set_to_zero()},
                               labels)


class Method(abc.ABC):
  """A model + losses + optimiser + step, built from a config."""

  def __init__(self, config: ml_collections.ConfigDict, total_steps: int):
    self.config = config
    self.total_steps = total_steps
    self.model = self.build_model()

  # --- what each method defines -------------------------------------------
  @abc.abstractmethod
  def build_model(self) -> nn.Module:
    """Returns the Linen module used for training and inference."""

  @abc.abstractmethod
  def loss(self, params: PyTree, model_state: PyTree, batch: Batch,
           rng: Array) -> tuple[Array, dict[str, Any]]:
    """Scalar loss (mean over the global batch) and scalar metrics.

    The metrics may carry `MODEL_STATE`: the non-param collections after a
    train-mode forward; `train_step` stores them and drops them from metrics.
    """

  @abc.abstractmethod
  def predict(self, variables: PyTree, source: Array, target: Array
              ) -> dict[str, Array]:
    """Dense matches between images of the same size.

    Args:
      variables: `inference_variables(state)`.
      source: (B, H, W, 3) float32 in [0, 1].
      target: (B, H, W, 3) float32 in [0, 1].

    Returns:
      A dict with at least `mapping_st` (B, H, W, 2): for every source pixel
      the matching (x, y) in the target image, and `mapping_ts` (B, H, W, 2)
      the other way, both in input-image pixels. Methods may add more maps
      (for example `confidence_st`).
    """

  def trainable(self, params: PyTree) -> PyTree:
    """Tree of bools over `params`; default: everything but the backbone."""
    flat = flax.traverse_util.flatten_dict(params)
    return flax.traverse_util.unflatten_dict(
        {k: 'backbone' not in k for k in flat})

  def load_pretrained(self, variables: PyTree) -> PyTree:
    """Hook to load pretrained weights (e.g. the backbone) into `variables`."""
    return variables

  # --- generic single-optimiser machinery -----------------------------------
  def init_variables(self, rng: Array, batch: Batch) -> PyTree:
    return self.model.init(rng, batch['source_image'][:1],
                           batch['target_image'][:1])

  @functools.cached_property
  def tx(self) -> optax.GradientTransformation:
    # Built once: the optimiser is static metadata of the state pytree, and
    # states built or restored at different times must compare equal.
    return make_optimizer(self.config.optimizer, self.total_steps,
                          self.trainable)

  def init_state(self, rng: Array, batch: Batch) -> TrainState:
    variables = dict(self.init_variables(rng, batch))
    params = variables.pop('params')
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      model_state=variables, opt_state=self.tx.init(params),
                      tx=self.tx)

  def train_step(self, state: TrainState, batch: Batch, rng: Array
                 ) -> tuple[TrainState, dict[str, Array]]:
    rng = jax.random.fold_in(rng, state.step)
    grad_fn = jax.value_and_grad(self.loss, has_aux=True)
    (loss, metrics), grads = grad_fn(state.params, state.model_state, batch,
                                     rng)
    metrics = dict(metrics)
    model_state = metrics.pop(MODEL_STATE, state.model_state)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                   learning_rate=learning_rate_schedule(
                       self.config.optimizer, self.total_steps)(state.step))
    return state.replace(step=state.step + 1, params=params,
                         model_state=model_state,
                         opt_state=opt_state), metrics

  def inference_variables(self, state: TrainState) -> PyTree:
    return state.variables()
