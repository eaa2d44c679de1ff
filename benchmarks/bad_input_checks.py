"""Pure checks of benchmarks/bad_inputs.py: outcomes, workdir snapshots.

`classify` names what a finished subprocess did, `verdict` compares it with
what the case expects; `snapshot`, `lost_data`, `new_leftovers`, `changes`
and `duplicate_steps` compare a folder before and after a run.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
from typing import Any, Sequence

OUTCOMES = ('one_line', 'traceback', 'noisy', 'silent', 'timeout', 'accepted',
            'not_run')
_TEMPORARY = re.compile(r'\.(tmp|part)(/|$)|orbax-checkpoint-tmp|\.tmp[.-]')
_COMMIT_MARKERS = ('commit_success.txt', '_CHECKPOINT_METADATA')


def classify(returncode: int | None, stderr: str,
             timed_out: bool = False) -> str:
  """One of OUTCOMES for a finished subprocess."""
  if timed_out:
    return 'timeout'
  if 'Traceback' in stderr:
    return 'traceback'
  if returncode == 0:
    return 'accepted'
  lines = [line for line in stderr.splitlines() if line.strip()]
  if lines and lines[-1].startswith('error:'):
    return 'one_line'
  if any(line.startswith('error:') for line in lines):
    return 'noisy'
  return 'silent'


def verdict(expect: str, outcome: str) -> str:
  """'as expected', 'wrong_ok', 'wrong_error' or the bad outcome itself."""
  if outcome not in ('one_line', 'accepted'):
    return outcome
  if expect == 'error' and outcome == 'accepted':
    return 'wrong_ok'
  if expect == 'ok' and outcome == 'one_line':
    return 'wrong_error'
  return 'as expected'


# --- workdir snapshots --------------------------------------------------------
def snapshot(root: str) -> dict[str, str]:
  """{relative path: sha256} of every file, {'dir/': ''} for every folder."""
  found = {}
  if not os.path.isdir(root):
    return found
  for here, dirs, files in os.walk(root):
    rel = os.path.relpath(here, root)
    for name in dirs:
      found[os.path.normpath(os.path.join(rel, name)) + '/'] = ''
    for name in files:
      path = os.path.join(here, name)
      digest = hashlib.sha256()
      with open(path, 'rb') as f:
        for chunk in iter(lambda f=f: f.read(1 << 20), b''):
          digest.update(chunk)
      found[os.path.normpath(os.path.join(rel, name))] = digest.hexdigest()
  return found


def metric_keys(path: str) -> list[tuple[int, str]]:
  """(step, split) of each readable line of a metrics.jsonl."""
  keys = []
  if os.path.isfile(path):
    with open(path, errors='replace') as f:
      for line in f:
        try:
          row = json.loads(line)
          keys.append((int(row['step']), str(row.get('split', ''))))
        except (ValueError, KeyError, TypeError):
          continue
  return keys


def _json_files(root: str) -> list[Any]:
  out = []
  for rel in snapshot(root):
    path = os.path.join(root, rel)
    if rel.endswith('.json') and os.path.getsize(path) < 1 << 20:
      try:
        with open(path) as f:
          out.append(json.load(f))
      except (ValueError, OSError):
        continue
  return out


def _step_of(rel: str) -> int | None:
  parts = rel.split('/')
  if len(parts) > 1 and parts[0] in ('checkpoints', 'best'):
    return int(parts[1]) if parts[1].isdigit() else None
  return None


def lost_data(root: str, before: dict[str, str], meta_before: list,
              config_before: Any, unprotected: Sequence[str]) -> list[str]:
  """What of a workdir's config, checkpoints and metrics a run lost."""
  after = snapshot(root)
  lost = []
  if config_before is not None and config_before not in _json_files(root):
    lost.append('config.json: the previous config is gone')
  kept = collections.Counter(after.values())
  damaged = {_step_of(u) for u in unprotected} - {None}
  gone = [rel for rel, digest in before.items()
          if digest and _step_of(rel) is not None
          and _step_of(rel) not in damaged and not kept[digest]]
  if gone:
    lost.append(f'{len(gone)} checkpoint files changed or removed '
                f'({gone[0]}, ...)')
  deleted = [rel for rel, digest in before.items()
             if digest and _step_of(rel) in damaged and not kept[digest]]
  if deleted:
    lost.append(f'the damaged checkpoint was deleted, not kept aside '
                f'({len(deleted)} files, {deleted[0]}, ...)')
  steps = [_step_of(rel) for rel in before if rel.endswith('/')]
  intact = max([s for s in steps if s is not None and s not in damaged],
               default=None)
  if intact is not None:
    now = set(metric_keys(os.path.join(root, 'metrics.jsonl')))
    missing = sorted({k for k in meta_before if k[0] <= intact} - now)
    if missing:
      lost.append(f'metrics.jsonl: lines of {missing} are gone')
  return lost


def _topmost(paths) -> list[str]:
  """The paths whose folder is not among them ('a/' covers 'a/b')."""
  out = []
  for rel in sorted(paths):
    if not any(rel.startswith(p) for p in out if p.endswith('/')):
      out.append(rel)
  return out


def new_leftovers(root: str, before: dict[str, str], failed: bool,
                  clean_on_failure: bool, stay_empty: bool) -> list[str]:
  """New temporary or half-written paths (any new path, where so asked)."""
  new = set(snapshot(root)) - set(before)
  if stay_empty or (failed and clean_on_failure):
    top = _topmost(new)
    return [f'created {rel}' for rel in top[:3]] + (
        [f'... {len(top) - 3} more'] if len(top) > 3 else [])
  found = _topmost(rel for rel in new if _TEMPORARY.search(rel))
  for rel in sorted(new):
    parts = rel.rstrip('/').split('/')
    if (rel.endswith('/') and len(parts) == 2 and parts[1].isdigit() and
        parts[0] in ('checkpoints', 'best') and
        not any(os.path.exists(os.path.join(root, rel, m))
                for m in _COMMIT_MARKERS)):
      found.append(f'{rel} (no commit marker)')
  return found


def changes(root: str, before: dict[str, str]) -> list[str]:
  """What was created, removed or rewritten under `root` since `before`."""
  after = snapshot(root)
  found = ([f'created {rel}' for rel in _topmost(set(after) - set(before))] +
           [f'removed {rel}' for rel in _topmost(set(before) - set(after))] +
           [f'rewrote {rel}' for rel in sorted(after) if after[rel] and
            rel in before and before[rel] != after[rel]])
  return found[:3] + ([f'... {len(found) - 3} more'] if len(found) > 3 else [])


def duplicate_steps(root: str) -> list[str]:
  counts = collections.Counter(metric_keys(os.path.join(root, 'metrics.jsonl')))
  twice = sorted(k for k, n in counts.items() if n > 1)
  return [f'metrics.jsonl: (step, split) logged twice: {twice[:6]}'] if twice \
      else []


