"""Checks a training config and its workdir before anything is written.

Each failure is one `SemcorrError` line that names the field (or the file)
and what to do. `train.train_and_evaluate` runs these before it builds the
model, so a bad value costs milliseconds, not a compilation.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import ml_collections

from semcorr_jax import checkpointing
from semcorr_jax import output_paths
from semcorr_jax.errors import SemcorrError


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


# (field, test, what a valid value is). Fields a config lacks are skipped.
_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ('batch_size', lambda v: _is_int(v) and v > 0, 'a whole number > 0'),
    ('log_every', lambda v: _is_int(v) and v > 0, 'a whole number > 0'),
    ('checkpoint_every', lambda v: _is_int(v) and v > 0,
     'a whole number > 0'),
    ('keep_checkpoints', lambda v: v is None or (_is_int(v) and v > 0),
     'a whole number > 0 (or None: keep every checkpoint)'),
    ('num_train_steps', lambda v: _is_int(v) and (v > 0 or v == -1),
     'a whole number > 0, or -1 to train for num_epochs'),
    ('seed', _is_int, 'a whole number'),
)


def _get(config: ml_collections.ConfigDict, dotted: str) -> tuple[bool, Any]:
  node = config
  for part in dotted.split('.'):
    if not isinstance(node, (ml_collections.ConfigDict, dict)) or (
        part not in node):
      return False, None
    node = node[part]
  return True, node


def check_config_values(config: ml_collections.ConfigDict) -> None:
  """The trainer's own fields hold values it can run with.

  Raises:
    SemcorrError: the first field that does not, e.g.
      `config.log_every=0: must be a whole number > 0`.
  """
  for field, valid, what in _RULES:
    present, value = _get(config, field)
    if present and not valid(value):
      raise SemcorrError(f'config.{field}={value!r}: must be {what}')
  present, steps = _get(config, 'num_train_steps')
  if present and steps == -1:
    _, epochs = _get(config, 'num_epochs')
    if not isinstance(epochs, (int, float)) or epochs <= 0:
      raise SemcorrError(
          f'config.num_epochs={epochs!r}: must be > 0 when '
          'config.num_train_steps=-1 (or set num_train_steps > 0)')
  present, size = _get(config, 'data.image_size')
  if present and not (isinstance(size, (tuple, list)) and len(size) == 2 and
                      all(_is_int(s) and s > 0 for s in size)):
    raise SemcorrError(f'config.data.image_size={size!r}: must be two whole '
                       'numbers > 0, (height, width)')


def check_same_method(config: ml_collections.ConfigDict, workdir: str) -> None:
  """A workdir that holds a run of another method is not resumed by this one.

  Raises:
    SemcorrError: `workdir/config.json` names another method (or cannot be
      read: then nothing in the workdir is touched either).
  """
  path = os.path.join(workdir, checkpointing.CONFIG_FILE)
  if not output_paths.as_path(path).is_file():
    return
  try:
    old = json.loads(output_paths.as_path(path).read_text())
  except (OSError, ValueError) as e:
    raise SemcorrError(
        f'{path} cannot be read ({type(e).__name__}); the workdir is left '
        'as it is: restore the file, or train in another --workdir') from e
  old_method = old.get('method') if isinstance(old, dict) else None
  if old_method != config.method:
    raise SemcorrError(
        f'workdir {workdir} holds a {old_method!r} run but this config trains '
        f'{config.method!r}: use another --workdir (to start from that run: '
        f'--config.init_from.workdir={workdir})')
