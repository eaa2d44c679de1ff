"""What a method is, and the default single-optimiser implementation.

A *method* bundles a model, its losses, its optimiser(s), its train step and its
inference read-out, so that `semcorr_jax.train` stays generic (scenic's split
between model and trainer). Methods are registered by name
(`semcorr_jax.methods.get(config.method)`), so a config picks one with a string.

What a method declares (class attributes; the trainer, evaluators, API and
benchmark script read them and nothing else):

  flows              named outputs of `predict` (`semcorr_jax.outputs`)
  batch_keys         the batch keys its train step reads; the trainer checks
                     them against the data's batch spec before training
  param_group_names  the labels `param_groups` may give; each is configured
                     by `config.optimizer.groups.<name>` (frozen, or its own
                     optimiser settings such as `lr`)

The trainer only ever calls:

  state = method.init_state(rng, batch)                   # host-free, jittable
  state, metrics = method.train_step(state, batch, rng)   # pure, jittable
  outputs = method.predict(variables, source, target)     # pure, jittable
  variables = method.inference_variables(state)
  variables = method.state_variables(state)               # what init_from and
  state = method.with_state_variables(state, variables)   # pretrained loading edit

`TrainState` is a pytree; everything that must survive a restart lives in it.
Methods with several optimisers (the GAN of CAMNet) override
`init_state`/`train_step` with their own state class.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from semcorr_jax import outputs
from semcorr_jax.errors import SemcorrError

Array = jax.Array
PyTree = Any

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
      for f in config.decay_at
  }
  return optax.piecewise_constant_schedule(config.lr, boundaries)


def _optimizer(config: ml_collections.ConfigDict,
               schedule: optax.Schedule) -> optax.GradientTransformation:
  """One optax optimiser from flat settings (see `make_optimizer`)."""
  if config.name == 'adam':
    opt = optax.adam(schedule, b1=config.b1, b2=config.b2)
  elif config.name == 'adamw':
    opt = optax.adamw(schedule, b1=config.b1, b2=config.b2,
                      weight_decay=config.weight_decay)
  elif config.name == 'sgd':
    opt = optax.sgd(schedule, momentum=config.momentum)
  else:
    raise SemcorrError(f'unknown optimizer {config.name!r}; use adam, adamw '
                       'or sgd')
  if config.grad_clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), opt)
  return opt


def group_settings(config: ml_collections.ConfigDict, group: str
                   ) -> ml_collections.ConfigDict | None:
  """The optimiser settings of parameter group `group`, or None if frozen.

  `config` is a whole `config.optimizer`: its top-level fields are every
  group's defaults and `config.groups.<group>` overrides them (`frozen`,
  `lr`, `name`, `decay_at`, ...). A group it does not name uses the defaults.
  """
  settings = config.to_dict()
  groups = settings.pop('groups', None) or {}
  own = dict(groups.get(group) or {})
  if own.pop('frozen', False):
    return None
  settings.update({k: v for k, v in own.items() if v is not None})
  return ml_collections.ConfigDict(settings)


def check_groups(config: ml_collections.ConfigDict,
                 names: tuple[str, ...]) -> None:
  """Every group `config.groups` configures is one the method declares."""
  unknown = sorted(set(config.get('groups', None) or {}) - set(names))
  if unknown:
    raise SemcorrError(
        f'optimizer.groups names {unknown}, which this method does not '
        f'declare; its parameter groups are {list(names)}')


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int,
                   names: tuple[str, ...],
                   labels: Any) -> optax.GradientTransformation:
  """One optimiser per parameter group (optax.multi_transform).

  Args:
    config: `config.optimizer`: `name` ('adam' | 'adamw' | 'sgd'), `lr`,
      `decay_at`, `decay_factor`, `grad_clip_norm` (None: off; applied per
      group), `b1`, `b2` (adam, adamw), `weight_decay` (adamw), `momentum`
      (sgd; None: plain SGD), and `groups`:
      {group: {frozen: bool, or any of the fields above}}.
    total_steps: length of training, for the schedules.
    names: every group label `labels` may return.
    labels: params tree -> tree of group names (or that tree itself).
  """
  check_groups(config, names)
  transforms = {}
  for name in names:
    settings = group_settings(config, name)
    transforms[name] = (optax.set_to_zero() if settings is None else
                        _optimizer(settings, learning_rate_schedule(
                            settings, total_steps)))
  return optax.multi_transform(transforms, labels)


def learning_rates(config: ml_collections.ConfigDict, total_steps: int,
                   names: tuple[str, ...], step: Array) -> dict[str, Array]:
  """{'learning_rate/<group>': lr at `step`} for every trainable group."""
  out = {}
  for name in names:
    settings = group_settings(config, name)
    if settings is not None:
      out[f'learning_rate/{name}'] = learning_rate_schedule(
          settings, total_steps)(step)
  return out


def without_frozen_gradients(config: ml_collections.ConfigDict,
                              names: tuple[str, ...], params: PyTree,
                              labels: PyTree) -> PyTree:
  """`params` with every leaf of a frozen group under `stop_gradient`.

  Args:
    config: `config.optimizer` (`group_settings` says which groups freeze).
    names: the method's group names.
    params: the params tree.
    labels: its group label per leaf (`Method.param_groups(params)`).
  """
  frozen = {g for g in names if group_settings(config, g) is None}
  return jax.tree.map(
      lambda p, group: jax.lax.stop_gradient(p) if group in frozen else p,
      params, labels)


def labels_by_key(params: PyTree, rules: Mapping[str, str],
                  default: str) -> PyTree:
  """Group label per leaf: the rule of the first path key found in `rules`.

  E.g. `labels_by_key(params, {'backbone': 'backbone'}, 'model')` puts every
  leaf with a 'backbone' module anywhere in its path in group 'backbone'.
  """
  flat = flax.traverse_util.flatten_dict(params)

  def label(path):
    for k in path:
      if k in rules:
        return rules[k]
    return default
  return flax.traverse_util.unflatten_dict({k: label(k) for k in flat})


class Method(abc.ABC):
  """A model + losses + optimiser + step, built from a config."""

  # Declarations read by the generic code (see the module docstring).
  flows: tuple[outputs.Flow, ...] = outputs.DEFAULT_FLOWS
  batch_keys: tuple[str, ...] = ('source_image', 'target_image')
  param_group_names: tuple[str, ...] = ('model', 'backbone')
  # Config fields added to the method after runs were saved without them:
  # dotted key -> the value those older runs used (`workdirs.load_config`).
  legacy_defaults: Mapping[str, Any] = {}

  def __init__(self, config: ml_collections.ConfigDict, total_steps: int):
    self.config = config
    self.total_steps = total_steps
    outputs.check(self.flows)
    check_groups(config.optimizer, self.param_group_names)
    self.model = self.build_model()

  # --- what each method defines -------------------------------------------
  @abc.abstractmethod
  def build_model(self) -> nn.Module:
    """Returns the Linen module used for training and inference."""

  @abc.abstractmethod
  def loss(self, params: PyTree, model_state: PyTree, batch: Batch,
           rng: Array) -> tuple[Array, tuple[dict[str, Array], PyTree]]:
    """Scalar loss (mean over the global batch), its metrics, the model state.

    Returns:
      (loss, (metrics, model_state)): scalar metrics, and the non-param
      collections after the train-mode forward (e.g. updated BatchNorm
      statistics; the input `model_state` if nothing changes).
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
      Flat maps of every declared flow (`semcorr_jax.outputs`): at least the
      primary flow's `mapping_st` (B, H, W, 2), for every source pixel the
      matching (x, y) in the target image, and `mapping_ts` the other way,
      in input-image pixels; other flows' mappings and the extras they
      declare (e.g. `confidence_st` (B, H, W)) under their prefixes. More
      keys may follow (e.g. feature-grid mappings); generic code ignores them.
    """

  def param_groups(self, params: PyTree) -> PyTree:
    """Group label per leaf of `params`; default: 'backbone' for anything
    under a 'backbone' module, else 'model'."""
    return labels_by_key(params, {'backbone': 'backbone'}, 'model')

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
                          self.param_group_names, self.param_groups)

  def init_state(self, rng: Array, batch: Batch) -> TrainState:
    variables = dict(self.init_variables(rng, batch))
    params = variables.pop('params')
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      model_state=variables, opt_state=self.tx.init(params),
                      tx=self.tx)

  def apply_gradients(self, state: TrainState, grads: PyTree,
                      model_state: PyTree) -> tuple[TrainState, dict]:
    """One optimiser update; returns the state and the step's generic
    metrics (gradient norm, learning rate of every trainable group)."""
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {'grad_norm': optax.tree.norm(grads),
               **learning_rates(self.config.optimizer, self.total_steps,
                                self.param_group_names, state.step)}
    return state.replace(step=state.step + 1, params=params,
                         model_state=model_state,
                         opt_state=opt_state), metrics

  def train_step(self, state: TrainState, batch: Batch, rng: Array
                 ) -> tuple[TrainState, dict[str, Array]]:
    rng = jax.random.fold_in(rng, state.step)
    grad_fn = jax.value_and_grad(self.loss, has_aux=True)
    (loss, (metrics, model_state)), grads = grad_fn(
        state.params, state.model_state, batch, rng)
    state, step_metrics = self.apply_gradients(state, grads, model_state)
    return state, {**metrics, 'loss': loss, **step_metrics}

  def inference_variables(self, state: TrainState) -> PyTree:
    return state.variables()

  def state_variables(self, state: TrainState) -> PyTree:
    """The model variables ({'params', ...}) inside a train state."""
    return state.variables()

  def with_state_variables(self, state: TrainState, variables: PyTree
                           ) -> TrainState:
    """`state` with its model variables replaced (optimiser state kept)."""
    variables = dict(variables)
    params = variables.pop('params')
    return state.replace(params=params, model_state=variables)
