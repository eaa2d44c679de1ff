"""Checkpoints and run configs in a workdir.

Layout of a workdir::

  workdir/config.json              the full config of the run (written at start)
  workdir/checkpoints/<step>/      Orbax: `state` (the whole train state) and
                                   `meta` (JSON: step, data position, seed)
  workdir/metrics.jsonl            one JSON line per logged step (train.py)
  workdir/eval/<name>.json         evaluation results

Everything that must survive a restart is one Orbax tree (`state`) plus a small
JSON item, so a resumed run continues exactly where the last save left off.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from semcorr_jax.errors import SemcorrError

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'


def _tuplify(x: Any) -> Any:
  """JSON turns tuples into lists; configs use tuples (hashable module fields)."""
  if isinstance(x, dict):
    return {k: _tuplify(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuplify(v) for v in x)
  return x


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, CONFIG_FILE)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(tmp, path)  # atomic: a crash never leaves half a config


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise SemcorrError(f'{path} not found: is {workdir!r} a semcorr-train '
                       'workdir?')
  try:
    with open(path) as f:
      raw = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise SemcorrError(f'cannot read {path}: {e}') from e
  return ml_collections.ConfigDict(_tuplify(raw))


class Checkpointer:
  """Orbax manager for one workdir: `save`, `latest_step`, `restore`."""

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any],
           force: bool = False) -> None:
    self.manager.save(step,
                      args=ocp.args.Composite(
                          state=ocp.args.StandardSave(state),
                          meta=ocp.args.JsonSave(meta)),
                      force=force)

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores `state` into the structure/shardings of `abstract_state`."""
    try:
      restored = self.manager.restore(
          step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state),
              meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise SemcorrError(
          f'checkpoint {self.directory}/{step} does not match the model of '
          f'this config ({type(e).__name__}: {str(e).splitlines()[0][:300]})'
      ) from e
    return restored['state'], dict(restored['meta'])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def abstract_like(tree: Any) -> Any:
  """Shape/dtype/sharding structs of `tree`, the restore target for Orbax."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def dummy_batch(config: ml_collections.ConfigDict, batch_size: int = 1
                ) -> dict[str, np.ndarray]:
  """A zero batch in the pipeline's format, for shapes (init, eval_shape)."""
  h, w = config.data.image_size
  z = lambda *s: np.zeros((batch_size, *s), np.float32)
  return {
      'source_image': z(h, w, 3), 'target_image': z(h, w, 3),
      'source_mask': z(h, w), 'target_mask': z(h, w),
      'mapping_st': z(h, w, 2), 'mapping_ts': z(h, w, 2),
      'valid_st': z(h, w), 'valid_ts': z(h, w),
      'index': np.zeros((batch_size,), np.int64),
  }


def restore_for_inference(workdir: str, step: int | None = None):
  """Loads config, method and inference variables of a trained workdir.

  Args:
    workdir: a `semcorr-train` workdir.
    step: checkpoint step; None = the latest.

  Returns:
    (config, method, variables, step).
  """
  from semcorr_jax import methods  # pylint: disable=g-import-not-at-top
  config = load_config(workdir)
  ckpt_dir = os.path.join(workdir, CHECKPOINT_DIR)
  if not os.path.isdir(ckpt_dir):
    raise SemcorrError(f'no checkpoints in {workdir!r}: train first with '
                       f'semcorr-train --workdir={workdir}')
  ckpt = Checkpointer(workdir)
  try:
    if step is None:
      step = ckpt.latest_step()
      if step is None:
        raise SemcorrError(f'no checkpoints in {ckpt_dir!r}')
    elif step not in ckpt.all_steps():
      raise SemcorrError(f'no checkpoint for step {step} in {ckpt_dir!r}; '
                         f'available: {ckpt.all_steps()}')
    method = methods.get(config.method)(config, total_steps=1)
    batch = jax.tree.map(jnp.asarray, dummy_batch(config))
    abstract = jax.eval_shape(
        lambda: method.init_state(jax.random.key(0), batch))
    # Inference runs on one device; restore everything there.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device),
        abstract)
    state, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  return config, method, method.inference_variables(state), step
