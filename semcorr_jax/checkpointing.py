"""Checkpoints and run configs in a workdir.

Layout of a workdir::

  workdir/config.json              the full config of the run's latest
                                   checkpoints (written when this config
                                   saves its first checkpoint)
  workdir/config_history/<k>.json  every config.json it replaced, numbered
  workdir/checkpoints/<step>/      Orbax: `state` (the whole train state) and
                                   `meta` (JSON: step, data position, seed)
  workdir/best/<step>/             the best checkpoint of the selecting
                                   evaluator (Orbax `best_fn`), same items
  workdir/metrics.jsonl            one JSON line per logged step (train.py)
  workdir/eval/<name>.json         evaluation results
  workdir/corrupt_checkpoints/<step>/  checkpoints found damaged on resume,
                                   moved aside (never deleted)
  workdir/.lock                    held while a run trains (workdir_lock.py)

Everything that must survive a restart is one Orbax tree (`state`) plus a small
JSON item, so a resumed run continues exactly where the last save left off.

A workdir may be a URI (`gs://bucket/run`): every file here is read and
written through `etils.epath` (`output_paths`), the arrays by Orbax's
TensorStore. There Orbax writes a step under its final name and marks it
complete with a `commit_success.txt` inside (no rename on object stores):
a step counts as committed only with that file (`ocp.step`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from semcorr_jax import background_noise
from semcorr_jax import output_paths
from semcorr_jax.errors import CheckpointCorruptError
from semcorr_jax.errors import CheckpointMismatchError
from semcorr_jax.errors import SemcorrError

CONFIG_FILE = 'config.json'
CHECKPOINT_DIR = 'checkpoints'
CONFIG_HISTORY_DIR = 'config_history'
CORRUPT_DIR = 'corrupt_checkpoints'


def _tuplify(x: Any) -> Any:
  """JSON turns tuples into lists; configs use tuples (hashable module fields)."""
  if isinstance(x, dict):
    return {k: _tuplify(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuplify(v) for v in x)
  return x


def save_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes `workdir/config.json`; a different one there is kept first.

  The replaced file moves to `config_history/<k>.json` (k = 1, 2, ...), so
  no config a run has used is ever lost. Writing the same config again
  changes nothing.
  """
  output_paths.makedirs(workdir)
  path = os.path.join(workdir, CONFIG_FILE)
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  if output_paths.as_path(path).is_file():
    old = output_paths.as_path(path).read_bytes()
    if old == text.encode():
      return
    history = os.path.join(workdir, CONFIG_HISTORY_DIR)
    output_paths.makedirs(history)
    names = (output_paths.as_path(history).iterdir()
             if output_paths.as_path(history).is_dir() else ())
    numbers = [int(p.name[:-5]) for p in names
               if p.name.endswith('.json') and p.name[:-5].isdigit()]
    kept = os.path.join(history, f'{max(numbers, default=0) + 1}.json')
    with output_paths.atomic_write(kept) as f:
      f.write(old)
  with output_paths.atomic_write(path, 'w') as f:
    f.write(text)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, CONFIG_FILE)
  if not output_paths.as_path(path).is_file():
    raise SemcorrError(f'{path} not found: is {workdir!r} a semcorr-train '
                       'workdir?')
  try:
    raw = json.loads(output_paths.as_path(path).read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise SemcorrError(f'cannot read {path}: {e}') from e
  if not isinstance(raw, dict) or not isinstance(raw.get('method'), str):
    raise SemcorrError(
        f'{path} is not a run config (a JSON object naming its `method`); '
        f'an older one may be kept in {os.path.join(workdir, CONFIG_HISTORY_DIR)}')
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


# TensorStore's "Failed writing: "<file>": Failed to write N bytes to file 7:
# File too large [os_error_code='27'] [tensorstore_spec=...]".
_TENSORSTORE_OS_ERROR = re.compile(
    r'Failed (?:writing|reading): "([^"]+)": (?:[^:\[]*: )?([^:\[]+?) '
    r"\[os_error_code")


def describe_error(e: BaseException) -> str:
  """The most specific line of an error chain: the innermost error, and for
  a TensorStore file error the file and the OS reason alone."""
  chain = [e]
  while chain[-1].__cause__ is not None and len(chain) < 8:
    chain.append(chain[-1].__cause__)
  cause = chain[-1]
  text = ' '.join(str(cause).split())
  found = _TENSORSTORE_OS_ERROR.search(text)
  if found:
    return f'{found.group(2).strip()}: {found.group(1)}'
  text = text.split(' See full TensorStore')[0].split(' [tensorstore_spec=')[0]
  return f'{type(cause).__name__}: {text[:300] or "(no message)"}'


def move_step_aside(workdir: str, step: int,
                    folder: str = CHECKPOINT_DIR) -> str:
  """Moves `workdir/<folder>/<step>` to `workdir/corrupt_checkpoints/<step>`
  (`<step>_<k>` when taken); returns the new path. On an object store
  the move is a copy of every object, then their deletion."""
  target_dir = os.path.join(workdir, CORRUPT_DIR)
  output_paths.makedirs(target_dir)
  target, k = os.path.join(target_dir, str(step)), 1
  while output_paths.as_path(target).exists():
    target, k = os.path.join(target_dir, f'{step}_{k}'), k + 1
  source = os.path.join(workdir, folder, str(step))
  if output_paths.is_remote(source):
    output_paths.as_path(source).rename(output_paths.as_path(target))
  else:
    os.replace(source, target)
  return target


def committed_steps(directory: str) -> list[int]:
  """The steps in a checkpoint folder whose save is complete, read from
  disk: Orbax renames a save's temporary folder to the step when it is
  done; on an object store it writes `commit_success.txt` into the step's
  folder instead (`ocp.step.checkpoint_steps`)."""
  if output_paths.is_remote(directory):
    return sorted(ocp.step.checkpoint_steps(directory))
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit())


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
    self.directory = output_paths.absolute(os.path.join(workdir, folder))
    background_noise.drop_failed_io_noise()
    self._in_flight = None  # the step of a save not yet checked
    self.last_committed = None  # the last save of this object known done
    best = {}
    if best_metric:
      best = dict(best_fn=lambda metrics: float(metrics[best_metric]),
                  best_mode='max', keep_checkpoints_without_metrics=False)
    self.manager = ocp.CheckpointManager(
        self.directory,
        # Handlers named up front: metadata is then readable before any
        # restore (integrity and shape checks).
        item_handlers={'state': ocp.StandardCheckpointHandler(),
                       'meta': ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(
            # Reading never creates the folder. (Orbax's own read_only
            # option would print three warnings on every load.)
            # A writer removes the temporary folders of saves cut short
            # (a kill, a full disk) when it opens.
            max_to_keep=max_to_keep, create=not read_only,
            cleanup_tmp_directories=not read_only, **best))

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

  def reached_preemption(self, step: int) -> bool:
    """Whether all processes reached the step JAX's preemption service
    chose after a SIGTERM (`jax.distributed` runs; else False). Call it
    at every step on every process."""
    return self.manager.reached_preemption(step)

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any],
           force: bool = False, metrics: dict[str, float] | None = None
           ) -> None:
    self._in_flight = step
    self.manager.save(step,
                      args=ocp.args.Composite(
                          state=ocp.args.StandardSave(state),
                          meta=ocp.args.JsonSave(meta)),
                      metrics=metrics, force=force)

  def _saved_leaves(self, step: int) -> list[tuple[tuple[int, ...], str]]:
    """(shape, dtype) of every saved array of `state`, read from metadata.

    Raises:
      CheckpointCorruptError: the metadata cannot be read.
    """
    try:
      metadata = self.manager.item_metadata(step)['state']
      tree = metadata.tree if hasattr(metadata, 'tree') else metadata
      return [(tuple(m.shape), str(m.dtype)) for m in jax.tree.leaves(tree)]
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointCorruptError(
          f'checkpoint {self.directory}/{step} is corrupt: its metadata '
          f'cannot be read ({describe_error(e)})') from e

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores `state` into the structure/shardings of `abstract_state`.

    Raises:
      CheckpointMismatchError: the saved arrays (read from the metadata)
        are not those of `abstract_state`.
      CheckpointCorruptError: the metadata or the data cannot be read.
    """
    saved = self._saved_leaves(step)
    wanted = [(tuple(a.shape), str(a.dtype))
              for a in jax.tree.leaves(abstract_state)]
    if sorted(saved) != sorted(wanted):
      raise CheckpointMismatchError(
          f'checkpoint {self.directory}/{step} does not match the model of '
          f'this config ({len(saved)} saved arrays, the model has '
          f'{len(wanted)}, or their shapes differ)')
    # Same arrays in the metadata: a failure now means damaged files.
    return self._read(step, abstract_state)

  def _read(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """(state, meta) of `step`; any failure is CheckpointCorruptError."""
    try:
      restored = self.manager.restore(
          step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state),
              meta=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointCorruptError(
          f'checkpoint {self.directory}/{step} is corrupt: '
          f'{describe_error(e)}') from e
    return restored['state'], dict(restored['meta'])

  def restore_intact(self, abstract_state: Any
                     ) -> tuple[int, Any, dict, list[tuple[int, str]]]:
    """Restores the newest checkpoint that is not damaged.

    Returns:
      (step, state, meta, [(step, message)] of each damaged checkpoint
      skipped, newest first). Nothing is moved or deleted: a resuming run
      moves them aside (`move_step_aside`) once it may write.

    Raises:
      CheckpointMismatchError: the newest readable checkpoint does not fit.
      CheckpointCorruptError: every checkpoint is damaged.
    """
    damaged, last_error = [], None
    for step in sorted(self.all_steps(), reverse=True):
      try:
        state, meta = self.restore(step, abstract_state)
      except CheckpointCorruptError as e:
        damaged.append((step, str(e)))
        last_error = e
        continue
      return step, state, meta, damaged
    raise CheckpointCorruptError(
        f'no intact checkpoint in {self.directory}: '
        f'{"; ".join(m for _, m in damaged)}') from last_error

  def committed_steps(self) -> list[int]:
    """Steps whose folder is complete, read from disk (`committed_steps`)."""
    return committed_steps(self.directory)

  def remove_unfinished(self, attempts: int = 20) -> None:
    """Removes the temporary folders of saves that did not finish.

    TensorStore writes still pending when a save failed may create folders
    again for a moment: removal is retried until none is left (0.1 s apart).
    On an object store these are the step folders without
    `commit_success.txt` (`ocp.step.all_temporary_paths`).
    """
    if output_paths.is_remote(self.directory):
      for _ in range(attempts):
        if not output_paths.as_path(self.directory).is_dir():
          return
        left = [t.get() for t in ocp.step.all_temporary_paths(self.directory)]
        if not left:
          return
        for path in left:
          path.rmtree(missing_ok=True)
        time.sleep(0.1)
      return
    for _ in range(attempts):
      if not os.path.isdir(self.directory):
        return
      left = [n for n in os.listdir(self.directory)
              if 'orbax-checkpoint-tmp' in n]
      if not left:
        return
      for name in left:
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
      time.sleep(0.1)

  def restore_raw(self, step: int) -> tuple[Any, dict]:
    """Restores `state` as saved (nested dicts of arrays on one device),
    without a target structure: for reading another run's or an older
    version's checkpoint.

    Raises:
      CheckpointCorruptError: the checkpoint cannot be read.
    """
    try:
      metadata = self.manager.item_metadata(step)['state']
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointCorruptError(
          f'checkpoint {self.directory}/{step} is corrupt: its metadata '
          f'cannot be read ({describe_error(e)})') from e
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        metadata.tree if hasattr(metadata, 'tree') else metadata)
    return self._read(step, abstract)

  def abandon(self) -> None:
    """After a failure: waits for background saves, closes, and removes
    what they left half-written. Their own errors are not raised again:
    the error that stopped the run is the one to report."""
    for action in (self.manager.wait_until_finished, self.manager.close):
      try:
        action()
      except Exception:  # pylint: disable=broad-except
        pass
    self.remove_unfinished()

  def check_for_errors(self) -> None:
    """Raises the error of a finished background save (e.g. a full disk).

    A save that is no longer in progress but left no committed step folder
    failed: its error is raised now, not at the next save.
    """
    if self._in_flight is None or self.manager.is_saving_in_progress():
      return
    step, self._in_flight = self._in_flight, None
    if step not in self.committed_steps():
      self.manager.wait_until_finished()  # raises the save's error
    self.manager.check_for_errors()
    self.last_committed = step

  def wait(self) -> None:
    """Waits for background saves; raises the error of one that failed."""
    try:
      self.manager.wait_until_finished()
    finally:
      self.check_for_errors()

  def close(self) -> None:
    self.manager.close()


