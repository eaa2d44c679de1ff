"""The state a training run starts from.

A fresh state (`create_state`), with pretrained weights
(`method.load_pretrained`) and the variables of another run
(`config.init_from`) applied (`initial_state`); or the newest intact
checkpoint of the workdir (`restore_or_init`). Nothing here writes.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from semcorr_jax import checkpointing
from semcorr_jax import methods
from semcorr_jax import output_paths
from semcorr_jax import parallel
from semcorr_jax import workdirs
from semcorr_jax.data import pipeline
from semcorr_jax.errors import CheckpointMismatchError
from semcorr_jax.errors import SemcorrError


def create_state(method: methods.Method, config: ml_collections.ConfigDict,
                 mesh: jax.sharding.Mesh, rng: jax.Array):
  """Initialises the train state replicated over `mesh`, without a host copy.

  Returns:
    (state, abstract_state) where `abstract_state` carries the shardings and is
    the restore target for checkpoints.
  """
  batch = jax.tree.map(jnp.asarray, pipeline.dummy_batch(config.data, 1))
  abstract = jax.eval_shape(method.init_state, rng, batch)
  replicated = parallel.replicated(mesh)
  abstract = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
      abstract)
  state = jax.jit(method.init_state, out_shardings=replicated)(rng, batch)
  return state, abstract


def load_pretrained(method: methods.Method, state: Any,
                    mesh: jax.sharding.Mesh) -> Any:
  """Applies `method.load_pretrained` (e.g. backbone weights) to a state."""
  variables = parallel.to_host(method.state_variables(state))
  loaded = method.load_pretrained(variables)
  if loaded is variables:
    return state
  return method.with_state_variables(state, parallel.replicate(loaded, mesh))


def check_init_from(config: ml_collections.ConfigDict) -> None:
  """One clear error for `init_from.subtrees` without a run to read them.

  A config that names subtrees is a later stage (e.g. configs/camnet.py:
  quick on a trained SFNet); training it from scratch would be a silent
  mistake.
  """
  init = config.get('init_from')
  if init is not None and init.subtrees and not init.workdir:
    raise SemcorrError(
        f'init_from.subtrees={tuple(init.subtrees)} names what to copy from '
        'another run, but init_from.workdir is not set: pass '
        '--config.init_from.workdir=<a trained run> (or '
        "--config.init_from.subtrees='()' to start from scratch).")


def apply_init_from(method: methods.Method, state: Any,
                    config: ml_collections.ConfigDict,
                    mesh: jax.sharding.Mesh) -> Any:
  """Copies `config.init_from`'s variables (another run) into a fresh state."""
  check_init_from(config)
  init = config.init_from
  if not init.workdir:
    return state
  source = workdirs.restore(init.workdir, init.step, for_inference=False,
                            folder=init.folder)
  variables = parallel.to_host(method.state_variables(state))
  variables, copied = workdirs.copy_subtrees(
      variables, parallel.to_host(source.variables),
      tuple(init.subtrees))
  if jax.process_index() == 0:
    print(f'Initialised {copied} arrays from {init.workdir} (step '
          f'{source.step}, method {source.config.method})', flush=True)
  return method.with_state_variables(state, parallel.replicate(variables,
                                                               mesh))


def initial_state(method, config, mesh, rng):
  """A fresh state with pretrained weights and `init_from` applied."""
  state, abstract = create_state(method, config, mesh, rng)
  state = load_pretrained(method, state, mesh)
  return apply_init_from(method, state, config, mesh), abstract


def restore_or_init(method, config, mesh, init_rng, workdir):
  """The state the run starts from: its newest intact checkpoint, else a
  fresh one. Reads only.

  Returns:
    (state, start step, data index, [(step, message)] of damaged
    checkpoints skipped).
  """
  folder = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
  reader = None
  if output_paths.as_path(folder).is_dir():
    reader = checkpointing.Checkpointer(workdir, read_only=True)
  if reader is None or not reader.all_steps():
    if reader is not None:
      reader.close()
    state, _ = initial_state(method, config, mesh, init_rng)
    return state, 0, 0, []
  _, abstract = create_state(method, config, mesh, init_rng)
  try:
    step, state, meta, damaged = reader.restore_intact(abstract)
  except CheckpointMismatchError as e:
    raise SemcorrError(
        f'{e}. A run saved by an older version or with another model '
        f'cannot resume here; start a new run from it: --workdir=<new '
        f'folder> --config.init_from.workdir={workdir}') from e
  finally:
    reader.close()
  return state, step, int(meta['data_index']), damaged
