"""The cases of benchmarks/bad_inputs.py: their registry, shared helpers and
the cases on workdirs (`bad_input_io_cases` registers the rest).

A case is a function `run(ctx) -> Proc` registered with `@case(tool,
expect)` (its docstring is its one-line description) or, when it is one
call, with `simple(name, tool, expect, what, run)`: it prepares its files in
`ctx.folder`, runs (`ctx.run`, `ctx.api`) and returns the subprocess to
classify; `ctx.problem(...)` records what its own checks found.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any, Callable

import numpy as np



@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  tool: str  # 'train', 'eval', 'match', 'fetch-weights', 'import-sfnet', 'api'
  expect: str  # 'error', 'ok' or 'any' (a one-line error or success)
  run: Callable[[Any], Any]
  what: str


CASES: list[Case] = []


def case(tool: str, expect: str):
  def register(fn):
    simple(fn.__name__, tool, expect, ' '.join((fn.__doc__ or '').split()),
           fn)
    return fn
  return register


def simple(name: str, tool: str, expect: str, what: str,
           run: Callable[[Any], Any]) -> None:
  CASES.append(Case(name, tool, expect, run, what))


# --- helpers ------------------------------------------------------------------
def _damage_latest(ctx, workdir: str) -> int:
  """Cuts the largest file of the newest checkpoint in half; its step."""
  folder = os.path.join(workdir, 'checkpoints')
  step = max(int(n) for n in os.listdir(folder) if n.isdigit())
  found = [os.path.join(here, n) for here, _, names in
           os.walk(os.path.join(folder, str(step))) for n in names]
  largest = max(found, key=os.path.getsize)
  os.truncate(largest, os.path.getsize(largest) // 2)
  ctx.unprotect(largest)
  return step


def _steps(workdir: str) -> list[int]:
  folder = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


def _fell_back(ctx, proc, workdir: str, damaged: int) -> None:
  """After a success on a damaged checkpoint: it was named on stderr."""
  named = os.path.join(workdir, 'checkpoints', str(damaged))
  if proc.rc == 0 and named not in proc.stderr:
    ctx.problem(f'checkpoint {damaged} is damaged, yet stderr does not name '
                f'{named}')


def _edit_config(ctx, workdir: str, content: dict[str, Any] | None) -> None:
  """Replaces config.json: `{}`, or the same with other fields."""
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    config = json.load(f)
  with open(path, 'w') as f:
    json.dump({} if content is None else {**config, **content}, f)
  ctx.unprotect(path)


def load_npy(path: str):
  try:
    return np.load(path)
  except (OSError, ValueError):
    return None


def run_match(ctx, source: str = '', target: str = '', *, workdir: str = '',
           output: Any = None, extra=()):
  workdir = workdir or ctx.trained()
  out = ctx.path('out')
  os.makedirs(out, exist_ok=True)
  ctx.watch(out, clean_on_failure=True)
  return ctx.run('match', [
      f'--workdir={workdir}', f'--source={source or ctx.inputs["photo"]}',
      f'--target={target or ctx.inputs["photo"]}',
      output or f'--output={out}/m.png', *extra])


def run_reference(ctx, source: str, target: str):
  """mapping_st of a plain match (None when it failed)."""
  proc = run_match(ctx, source, target)
  mapping = load_npy(ctx.path('out', 'm_mapping.npy')) if proc.rc == 0 else None
  shutil.rmtree(ctx.folder, ignore_errors=True)
  return mapping


# --- train --------------------------------------------------------------------
def _train(ctx, workdir: str, *overrides: str, config: str = ''):
  return ctx.run('train', [config or ctx.config(), f'--workdir={workdir}',
                           *overrides])


def _resume(*overrides: str, config=('sfnet', 'test')):
  return lambda ctx: _train(ctx, ctx.trained(), *overrides,
                            config=ctx.config(*config))


def _write(path: str, text: str) -> str:
  with open(path, 'w', encoding='utf-8', newline='') as f:
    f.write(text)
  return path


simple('train_unknown_key', 'train', 'error', '--config.nope=1 (new workdir)',
       lambda ctx: _train(ctx, ctx.fresh(), '--config.nope=1'))
simple('train_unknown_variant', 'train', 'error',
       '--config=configs/sfnet.py:nope',
       lambda ctx: _train(ctx, ctx.fresh(), config=ctx.config('sfnet', 'no')))
simple('train_missing_config_file', 'train', 'error',
       '--config naming no file',
       lambda ctx: _train(ctx, ctx.fresh(),
                          config=f'--config={ctx.path("no.py")}:test'))
simple('train_unknown_method', 'train', 'error', '--config.method=nope',
       lambda ctx: _train(ctx, ctx.fresh(), '--config.method=nope'))
simple('train_workdir_is_a_file', 'train', 'error', '--workdir naming a file',
       lambda ctx: _train(ctx, _write(ctx.path('a_file'), 'x\n')))
simple('train_batch_size_0', 'train', 'error',
       '--config.batch_size=0 (new workdir)',
       lambda ctx: _train(ctx, ctx.fresh(), '--config.batch_size=0'))
simple('train_log_every_0', 'train', 'error',
       'resume with --config.log_every=0',
       _resume('--config.log_every=0', '--config.num_train_steps=6'))
simple('train_checkpoint_every_0', 'train', 'error',
       'resume with --config.checkpoint_every=0',
       _resume('--config.checkpoint_every=0', '--config.num_train_steps=6'))
simple('train_other_method_on_workdir', 'train', 'error',
       'configs/camnet.py:test on a trained SFNet workdir',
       _resume(config=('camnet', 'test')))
simple('train_image_size_64', 'train', 'error',
       'resume with --config.data.image_size=64 (one number)',
       _resume('--config.data.image_size=64', '--config.num_train_steps=6'))
simple('train_image_size_changed', 'train', 'any',
       'resume with --config.data.image_size=(96,96)',
       _resume('--config.data.image_size=(96,96)',
               '--config.num_train_steps=6'))
simple('train_disk_full', 'train', 'error',
       'a new workdir with files limited to 2 MB (RLIMIT_FSIZE)',
       lambda ctx: ctx.run('train', [ctx.config(), '--workdir=' +
                                     ctx.fresh('w', False)],
                           file_size=2 << 20))


@case('train', 'error')
def train_nan_run(ctx):
  """Resume with --config.optimizer.lr=1e30 (the loss turns NaN)."""
  workdir = ctx.trained(untouched_on_failure=False)  # it trains, then stops
  steps = _steps(workdir)
  proc = _train(ctx, workdir, '--config.optimizer.lr=1e30',
                '--config.num_train_steps=8')
  # config.json is that of the latest checkpoints: lr=1e30 only once a
  # checkpoint of that config is complete.
  with open(os.path.join(workdir, 'config.json')) as f:
    if (json.load(f).get('optimizer', {}).get('lr', 0) >= 1e29 and
        _steps(workdir) == steps):
      ctx.problem('config.json holds lr=1e30, yet no checkpoint of it exists')
  return proc


@case('train', 'error')
def train_two_at_once(ctx):
  """Two semcorr-train on one new workdir (the second 1 s later)."""
  workdir = ctx.fresh(clean_on_failure=False)
  args = [ctx.config(), f'--workdir={workdir}']
  first = ctx.start('train', args)
  time.sleep(1.0)
  procs = [ctx.wait(p) for p in (first, ctx.start('train', args))]
  failed = [p for p in procs if p.rc != 0]
  if len(failed) == 2:
    ctx.problem('both runs failed')
  elif not failed:
    ctx.problem('both runs exited 0')
  return failed[0] if failed else procs[1]


@case('train', 'ok')
def train_kill_and_resume(ctx):
  """kill -9 after step 5 of 10 (checkpoint every 4), then resume."""
  workdir = ctx.fresh(clean_on_failure=False)
  args = [ctx.config(), f'--workdir={workdir}',
          '--config.num_train_steps=10', '--config.checkpoint_every=4',
          '--config.log_every=1']
  first = ctx.start('train', args)
  metrics = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.monotonic() + ctx.battery.timeout
  while not first.poll() and time.monotonic() < deadline:
    if any(step >= 5 for step, _ in ctx.metric_keys(metrics)):
      ctx.kill(first)
      break
    time.sleep(0.05)
  if ctx.wait(first).rc == 0:
    ctx.problem('the first run ended before the kill')
  proc = ctx.run('train', args)
  if proc.rc == 0 and not os.path.isdir(
      os.path.join(workdir, 'checkpoints', '10')):
    ctx.problem('no checkpoint of step 10 after the resume')
  return proc


@case('train', 'ok')
def train_resume_truncated_checkpoint(ctx):
  """Resume a workdir whose newest checkpoint is cut in half."""
  workdir = ctx.trained()
  step = _damage_latest(ctx, workdir)
  proc = _train(ctx, workdir)
  _fell_back(ctx, proc, workdir, step)
  if proc.rc == 0 and step not in _steps(workdir):
    ctx.problem(f'no checkpoint of step {step} after the resume')
  return proc


# --- eval and the API on broken workdirs --------------------------------------
_SYNTHETIC = ('--evals=synthetic', '--num_pairs=2')
_BROKEN = {  # name: (expect, what, how the trained workdir is broken)
    'truncated_checkpoint': ('any', 'its newest checkpoint cut in half',
                             _damage_latest),
    'config_json_empty': ('error', 'config.json replaced by {}',
                          lambda ctx, w: _edit_config(ctx, w, None)),
    'unknown_method': ('error', "config.json's method 'nope'",
                       lambda ctx, w: _edit_config(ctx, w, {'method': 'no'})),
}


def _broken(kind: str, tool: str):
  def run(ctx):
    workdir = ctx.trained()
    steps = _steps(workdir)
    damaged = _BROKEN[kind][2](ctx, workdir)
    if tool == 'eval':
      proc = ctx.run('eval', [f'--workdir={workdir}', *_SYNTHETIC])
    elif tool == 'match':
      proc = run_match(ctx, workdir=workdir)
    else:
      proc = ctx.api(f'm = semcorr_jax.load({workdir!r})\n'
                     'print("step", m.step)')
    if isinstance(damaged, int):  # the newest step: the one before is used
      _fell_back(ctx, proc, workdir, damaged)
      if tool == 'api' and proc.rc == 0 and (
          f'step {steps[-2]}' not in proc.stdout):
        ctx.problem(f'loaded {proc.stdout.strip()!r}, not step {steps[-2]}')
    return proc
  return run


for _kind, (_expect, _what, _) in _BROKEN.items():
  for _tool in ('eval', 'match', 'api'):
    simple(f'{_tool}_{_kind}', _tool, _expect, f'a workdir with {_what}',
           _broken(_kind, _tool))


def _eval(ctx, workdir: str, *args: str, **kwargs):
  return ctx.run('eval', [f'--workdir={workdir}', *args], **kwargs)


def _read_only_eval(ctx):
  workdir = ctx.trained()
  return _eval(ctx, workdir, *_SYNTHETIC, read_only=workdir)


simple('eval_read_only_workdir', 'eval', 'error', 'a read-only workdir',
       _read_only_eval)
simple('eval_missing_step', 'eval', 'error', '--step=3 (steps 2 and 4 exist)',
       lambda ctx: _eval(ctx, ctx.trained(), *_SYNTHETIC, '--step=3'))
simple('eval_missing_workdir', 'eval', 'error', '--workdir naming nothing',
       lambda ctx: _eval(ctx, ctx.path('nothing'), *_SYNTHETIC))


@case('eval', 'error')
def eval_empty_data_dir(ctx):
  """--benchmark=pf_pascal --data_dir=<an empty folder>; nothing made there."""
  data = ctx.path('data')
  os.makedirs(data)
  ctx.watch(data, stay_empty=True)
  return _eval(ctx, ctx.trained(), '--benchmark=pf_pascal',
               f'--data_dir={data}')
