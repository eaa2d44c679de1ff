"""Reading trained workdirs: their config, method and model variables.

Used by the API and CLIs (inference, evaluation) and by the trainer's
`init_from` (start a run from another run). Two checkpoint layouts load:

* the current one: the method's own train state, restored into its
  structure (`Method.init_state`) and read with `Method.state_variables` /
  `Method.inference_variables`;
* older ones, whose optimiser state or state class differ: the saved tree is
  read as is and its `params` / `model_state` are taken, if they match the
  model of the config (else one error saying what to do).

A workdir is a local folder or a URI (`gs://bucket/run`), read through
`etils.epath` and Orbax alike.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from semcorr_jax import checkpointing
from semcorr_jax import methods
from semcorr_jax import output_paths
from semcorr_jax.errors import CheckpointMismatchError
from semcorr_jax.errors import SemcorrError

PyTree = Any


@dataclasses.dataclass
class Restored:
  """A trained workdir, loaded.

  Attributes:
    config: the run's config (upgraded to the current layout).
    method: its method, built from `config`.
    variables: model variables ({'params', 'batch_stats', ...}) on one device:
      `method.inference_variables` or `method.state_variables` of the state.
    step: the checkpoint step.
  """
  config: ml_collections.ConfigDict
  method: methods.Method
  variables: PyTree
  step: int


def image_batch(config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """A zero pair at the config's input size: enough for `init_state`."""
  h, w = config.data.image_size
  zeros = jnp.zeros((1, h, w, 3), jnp.float32)
  return {'source_image': zeros, 'target_image': zeros}


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """A workdir's config.json in the current layout (generic upgrades in
  `checkpointing.upgrade_config`, then the method's `legacy_defaults`).

  Raises:
    SemcorrError: no or unreadable config.json, or an unknown method.
  """
  config = checkpointing.load_config(workdir)
  try:
    cls = methods.get(config.get('method', ''))
  except KeyError as e:
    raise SemcorrError(f'{workdir}/config.json: {e.args[0]}') from e
  for key, value in cls.legacy_defaults.items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      node[leaf] = value
  return config


def _choose_step(ckpt: checkpointing.Checkpointer, step: int | None,
                 workdir: str) -> int:
  steps = ckpt.all_steps()
  if not steps:
    raise SemcorrError(f'no checkpoints in {ckpt.directory!r}: train first '
                       f'with semcorr-train --workdir={workdir}')
  if step is None:
    return max(steps)
  if step not in steps:
    raise SemcorrError(f'no checkpoint for step {step} in '
                       f'{ckpt.directory!r}; available: {sorted(steps)}')
  return step


def _same_structure(a: PyTree, b: PyTree) -> bool:
  fa = flax.traverse_util.flatten_dict(flax.core.unfreeze(a))
  fb = flax.traverse_util.flatten_dict(flax.core.unfreeze(b))
  return (set(fa) == set(fb) and
          all(tuple(fa[k].shape) == tuple(fb[k].shape) for k in fa))


def _legacy_variables(raw: PyTree, expected: PyTree, where: str) -> PyTree:
  """Model variables from a saved tree of an older layout, checked."""
  if not (isinstance(raw, dict) and 'params' in raw):
    raise SemcorrError(
        f'checkpoint {where} does not match the model of its config.json and '
        'holds no `params` tree; it was written by an incompatible version: '
        'retrain, or start a new run from it with --config.init_from.workdir')
  variables = {'params': raw['params'], **dict(raw.get('model_state') or {})}
  if not _same_structure(variables, expected):
    raise SemcorrError(
        f'checkpoint {where} does not match the model of its config.json '
        '(parameter names or shapes differ); it was written by an '
        'incompatible version of the method: retrain it')
  return variables


def restore(workdir: str, step: int | None = None, *,
            for_inference: bool = True,
            folder: str = checkpointing.CHECKPOINT_DIR) -> Restored:
  """Loads a trained workdir's config, method and variables on one device.

  Args:
    workdir: a `semcorr-train` workdir.
    step: checkpoint step; None = the latest.
    for_inference: `method.inference_variables` (True) or
      `method.state_variables` (False: everything the train state holds
      for the model, e.g. to start another run from it).
    folder: `checkpoints` or `best` (the selected model).

  With `step=None`, damaged checkpoints are skipped (each named in a
  warning on stderr) and the newest intact one is read.

  Raises:
    SemcorrError: no config or checkpoint, a checkpoint that does not match
      its config's model, or (CheckpointCorruptError) a damaged checkpoint.
  """
  config = load_config(workdir)
  ckpt_dir = os.path.join(workdir, folder)
  if not output_paths.as_path(ckpt_dir).is_dir():
    raise SemcorrError(f'no checkpoints in {ckpt_dir!r}: train first with '
                       f'semcorr-train --workdir={workdir}')
  method = methods.get(config.method)(config, total_steps=1)
  batch = image_batch(config)
  abstract = jax.eval_shape(
      lambda: method.init_state(jax.random.key(0), batch))
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
      abstract)
  ckpt = checkpointing.Checkpointer(workdir, folder=folder, read_only=True)
  read = (method.inference_variables if for_inference
          else method.state_variables)
  try:
    chosen = _choose_step(ckpt, step, workdir)
    try:
      if step is None:  # the latest: damaged ones are skipped, and named
        chosen, state, _, damaged = ckpt.restore_intact(abstract)
        for _, message in damaged:
          print(f'warning: {message}; using step {chosen}', file=sys.stderr,
                flush=True)
      else:
        state, _ = ckpt.restore(chosen, abstract)
      variables = read(state)
    except CheckpointMismatchError:
      raw, _ = ckpt.restore_raw(chosen)
      expected = jax.eval_shape(
          lambda: method.init_variables(jax.random.key(0), batch))
      variables = _legacy_variables(raw, expected,
                                    f'{ckpt.directory}/{chosen}')
  finally:
    ckpt.close()
  step = chosen
  return Restored(config, method, variables, step)


def copy_subtrees(dst: PyTree, src: PyTree, subtrees: tuple[str, ...] = ()
                  ) -> tuple[PyTree, int]:
  """`dst` variables with subtrees of `src` copied in.

  Args:
    dst: model variables ({'params': ..., 'batch_stats': ...}), host arrays.
    src: variables of another run, same layout.
    subtrees: '/'-separated paths into the variables, each 'path' (the same
      path on both sides) or 'src_path:dst_path' (e.g.
      'params:params/base' puts a whole SFNet under CAMNet's `base`). Empty:
      every variable of `src`, at the same path.

  Returns:
    (variables, number of arrays copied). Arrays of `dst` that no subtree
    names stay as they are.

  Raises:
    SemcorrError: a path that names nothing in `src`, or a source array
      without a same-shaped counterpart in `dst`.
  """
  dst_flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(dst), sep='/')
  src_flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(src), sep='/')
  specs = subtrees or ('',)
  out, copied = dict(dst_flat), 0
  for spec in specs:
    src_path, _, dst_path = spec.partition(':')
    src_path, dst_path = src_path.strip('/'), (dst_path or src_path).strip('/')
    under = {k: v for k, v in src_flat.items()
             if not src_path or k == src_path or k.startswith(src_path + '/')}
    if not under:
      raise SemcorrError(
          f'init_from.subtrees: {src_path!r} names no variables of the run '
          f'started from; its top-level paths: '
          f'{sorted({k.split("/")[0] + "/" + k.split("/")[1] for k in src_flat if "/" in k})[:12]}')
    for key, value in under.items():
      rest = key[len(src_path):].lstrip('/')
      target = '/'.join(p for p in (dst_path, rest) if p)
      if target not in dst_flat:
        raise SemcorrError(f'init_from: {key!r} of the run started from has '
                           f'no counterpart {target!r} in this model')
      want = dst_flat[target]
      if tuple(value.shape) != tuple(want.shape):
        raise SemcorrError(f'init_from: {key!r} has shape {tuple(value.shape)}'
                           f' but {target!r} here has {tuple(want.shape)}')
      out[target] = jnp.asarray(value, want.dtype)
      copied += 1
  return flax.traverse_util.unflatten_dict(out, sep='/'), copied
