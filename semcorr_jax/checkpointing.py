"""Checkpoints and run configs in a workdir.

Layout of a workdir::

  workdir/config.json              the full config of the run (written at start)
  workdir/checkpoints/<step>/      Orbax: `state` (the whole train state) and
                                   `meta` (JSON: step, data position, seed)
  workdir/best/<step>/             the best checkpoint of the selecting
                                   evaluator (Orbax `best_fn`), same items
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
  return ml_collections.ConfigDict(upgrade_config(_tuplify(raw)))


# What versions before these fields existed did (their code defaults).
LEGACY_OPTIMIZER_FIELDS = {'b1': 0.9, 'b2': 0.999, 'weight_decay': 0.0,
                           'momentum': None, 'grad_clip_norm': None}
LEGACY_DATA_FIELDS = {'scene_seed': 0, 'void_as': 'foreground',
                      'max_keypoints': 20, 'occluders': 0}


def upgrade_config(raw: dict[str, Any]) -> dict[str, Any]:
  """A config.json of an older version in the current layout.

  Data fields added since (`LEGACY_DATA_FIELDS`) get the values older
  versions used, in any layout. Older layouts are recognised by `eval` (and
  no `evals`); a config in the current layout is otherwise returned as is.
  The changes:
  * `eval` + `eval_every` (one synthetic held-out evaluation and optional
    model selection on a benchmark) -> `evals` (named evaluators);
  * an optimiser without `groups` froze the backbone -> `groups.backbone`;
  * optimiser and `init_from` fields added since, with the values older
    versions used.
  """
  if 'data' in raw and not LEGACY_DATA_FIELDS.keys() <= raw['data'].keys():
    raw = dict(raw, data={**LEGACY_DATA_FIELDS, **raw['data']})
  if 'evals' in raw or 'eval' not in raw:
    return raw
  raw = dict(raw)
  old = dict(raw.pop('eval'))
  every = int(raw.pop('eval_every', 0) or 0)
  evals = {'synthetic': {
      'type': 'synthetic', 'every': every,
      'untrained_baseline': bool(old.get('untrained', True)), 'select': '',
      **{k: old[k] for k in ('num_pairs', 'batch_size', 'seed', 'alphas',
                             'keypoint_stride') if k in old}}}
  if old.get('select_benchmark'):
    split = old.get('select_split', 'validation')
    evals[f"{old['select_benchmark']}_{split}"] = {
        'type': 'benchmark', 'benchmark': old['select_benchmark'],
        'split': split, 'data_dir': old.get('select_data_dir'),
        'every': every, 'num_pairs': old.get('select_num_pairs'),
        'untrained_baseline': False,
        'select': old.get('select_metric', 'pck@0.1')}
  raw['evals'] = evals
  if 'optimizer' in raw:
    raw['optimizer'] = {**LEGACY_OPTIMIZER_FIELDS,
                        'groups': {'backbone': {'frozen': True}},
                        **raw['optimizer']}
  raw.setdefault('init_from', {'workdir': None, 'step': None,
                               'folder': 'checkpoints', 'subtrees': ()})
  return raw


class Checkpointer:
  """Orbax manager for one folder of a workdir: `save`, `latest_step`,
  `restore`, `restore_raw`.

  With `best_metric`, checkpoints are saved with their metrics and Orbax
  keeps the `max_to_keep` with the highest `best_metric` (`best_fn`); a
  checkpoint saved without metrics is not kept.
  """

  def __init__(self, workdir: str, max_to_keep: int | None = 3,
               folder: str = CHECKPOINT_DIR, best_metric: str | None = None,
               read_only: bool = False):
    self.directory = os.path.abspath(os.path.join(workdir, folder))
    best = {}
    if best_metric:
      best = dict(best_fn=lambda metrics: float(metrics[best_metric]),
                  best_mode='max', keep_checkpoints_without_metrics=False)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            # Reading never creates the folder. (Orbax's own read_only
            # option would print three warnings on every load.)
            max_to_keep=max_to_keep, create=not read_only, **best))

  def best_step(self) -> int | None:
    return self.manager.best_step()

  def best_value(self, metric: str) -> float | None:
    """`metric` of the best checkpoint kept, or None when none is."""
    step = self.manager.best_step()
    if step is None:
      return None
    metrics = self.manager.metrics(step) or {}
    return float(metrics[metric]) if metric in metrics else None

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any],
           force: bool = False, metrics: dict[str, float] | None = None
           ) -> None:
    self.manager.save(step,
                      args=ocp.args.Composite(
                          state=ocp.args.StandardSave(state),
                          meta=ocp.args.JsonSave(meta)),
                      metrics=metrics, force=force)

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

  def restore_raw(self, step: int) -> tuple[Any, dict]:
    """Restores `state` as saved (nested dicts of arrays on one device),
    without a target structure: for reading another run's or an older
    version's checkpoint."""
    metadata = self.manager.item_metadata(step)['state']
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        metadata.tree if hasattr(metadata, 'tree') else metadata)
    restored = self.manager.restore(
        step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            meta=ocp.args.JsonRestore()))
    return restored['state'], dict(restored['meta'])

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


