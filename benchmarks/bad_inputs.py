r"""A battery of hostile-but-fair inputs to the command-line tools and the API.

  .venv/bin/python benchmarks/bad_inputs.py [--code=/path/to/tree] \
      [--output=bad_inputs.json] [--markdown=bad_inputs.md] \
      [--cases=csv,train_kill] [--scratch=DIR]

Each case of `bad_input_cases.CASES` (workdirs; `bad_input_io_cases`: inputs
and outputs) runs the console tools (semcorr-train, -eval, -match,
-fetch-weights, -import-sfnet) or a `semcorr_jax.load` / `Matcher` snippet
in a subprocess, `PYTHONPATH=<code> <python> -m semcorr_jax.cli.<tool>`,
with a timeout, and classifies it:

* `one_line`: non-zero exit, the last non-empty stderr line starts with
  `error:` and stderr holds no `Traceback`;
* `traceback`: stderr holds `Traceback`;
* `noisy`: non-zero exit, an `error:` line that is not the last, no traceback;
* `silent`: non-zero exit, no `error:` line, no traceback;
* `accepted`: exit 0; `timeout`: killed after `--timeout` seconds.

Every case expects `error`, `ok` or `any` (a one-line error or success); an
`accepted` refusal is `wrong_ok`, a one-line error of a valid input
`wrong_error`. Cases on a trained workdir (one tiny run of
`configs/sfnet.py:test`, trained once into the scratch folder and copied per
case) snapshot it first: `data_lost` lists what of config.json (its content
anywhere in the workdir), the checkpoints (every file's content) and
metrics.jsonl (each (step, split) up to the newest undamaged checkpoint) is
gone afterwards; a checkpoint the case damaged may be moved (to
`corrupt_checkpoints/`) but not deleted, and a config.json replaced by a new
one counts as kept when its content is anywhere in the workdir
(`config_history/<k>.json`). A failed run must leave a trained workdir
byte-identical (unless the case says otherwise: `leftovers` lists what it
changed). `leftovers` also lists new `*.tmp`/`*.part`/Orbax temporary
paths, checkpoint folders without a commit marker, anything a failed run
left in a new workdir or output folder, and anything made in a user's data
folder; `problems` the checks of the case (wrong values, duplicate metric
steps, peak memory of a bomb). Prints per-tool counts and a per-case list
(Markdown) and writes them as JSON to `--output`. The subprocesses inherit
the environment plus `PYTHONPATH`, `LC_ALL=C.UTF-8` and (`--fast_compile`)
`JAX_DISABLE_MOST_OPTIMIZATIONS=1`; `not_run` marks a case the battery
itself failed to run.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

from absl import app
from absl import flags

import bad_input_cases  # pylint: disable=g-bad-import-order
import bad_input_checks as checks  # pylint: disable=g-bad-import-order
import bad_input_files  # pylint: disable=g-bad-import-order
import bad_input_io_cases  # pylint: disable=g-bad-import-order,unused-import

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = {'train': 'semcorr_jax.cli.train', 'eval': 'semcorr_jax.cli.evaluate',
           'match': 'semcorr_jax.cli.match',
           'fetch-weights': 'semcorr_jax.cli.fetch_weights',
           'import-sfnet': 'semcorr_jax.cli.import_sfnet'}


def define_flags() -> None:
  flags.DEFINE_string('code', REPO, 'The code tree whose tools are run.')
  flags.DEFINE_string('python', sys.executable, 'The Python that runs them.')
  flags.DEFINE_string('output', None, 'Also write the results as JSON here.')
  flags.DEFINE_string('markdown', None, 'Also write the tables here.')
  flags.DEFINE_string('scratch', None, 'Scratch folder (default: a new one); '
                      'its trained workdir is reused for the same --code.')
  flags.DEFINE_list('cases', [], 'Only cases whose name contains one of these.')
  flags.DEFINE_integer('timeout', 300, 'Seconds per subprocess.')
  flags.DEFINE_bool('keep', False, 'Keep each case folder.')
  flags.DEFINE_bool('fast_compile', True,
                    'JAX_DISABLE_MOST_OPTIMIZATIONS=1 in the subprocesses.')


# --- subprocesses -------------------------------------------------------------
@dataclasses.dataclass
class Proc:
  """A started subprocess; rc and the rest are set by `Context.wait`."""
  argv: list[Any]
  popen: subprocess.Popen
  out_path: str
  err_path: str
  started: float
  rc: int | None = None
  seconds: float = 0.0
  max_rss_mb: float = 0.0
  timed_out: bool = False
  stdout: str = ''
  stderr: str = ''

  def poll(self) -> bool:
    """True once the process ended (then rc etc. are set)."""
    if self.rc is not None:
      return True
    pid, status, usage = os.wait4(self.popen.pid, os.WNOHANG)
    if pid == 0:
      return False
    self.rc = self.popen.returncode = os.waitstatus_to_exitcode(status)
    self.seconds = time.monotonic() - self.started
    self.max_rss_mb = usage.ru_maxrss / 1024.0
    with open(self.out_path, errors='replace') as f:
      self.stdout = f.read()
    with open(self.err_path, errors='replace') as f:
      self.stderr = f.read()
    return True


class Context:
  """What a case uses: files, workdir copies, subprocesses, checks."""

  def __init__(self, battery: 'Battery', folder: str):
    self.battery, self.folder = battery, folder
    self.code, self.inputs = battery.code, battery.inputs
    self.watched = []  # dicts: path, before, options
    self.problems = []
    self._count = 0

  metric_keys = staticmethod(checks.metric_keys)

  def path(self, *parts: str) -> str:
    return os.path.join(self.folder, *parts)

  def config(self, method: str = 'sfnet', variant: str = 'test') -> str:
    return f'--config={self.code}/configs/{method}.py:{variant}'

  def trained(self, name: str = 'wd', untouched_on_failure: bool = True
              ) -> str:
    """A fresh copy of the trained workdir, watched for lost data (and, by
    default, for any change made by a run that failed)."""
    path = self.path(name)
    shutil.copytree(self.battery.master, path, symlinks=True)
    self.watch(path, protect=True, untouched_on_failure=untouched_on_failure)
    return path

  def fresh(self, name: str = 'new_wd', clean_on_failure: bool = True) -> str:
    """A workdir path that does not exist yet, watched."""
    path = self.path(name)
    self.watch(path, clean_on_failure=clean_on_failure)
    return path

  def watch(self, path: str, protect: bool = False,
            clean_on_failure: bool = False, stay_empty: bool = False,
            untouched_on_failure: bool = False) -> None:
    self.watched.append(dict(path=path, protect=protect, before=None,
                             clean_on_failure=clean_on_failure,
                             stay_empty=stay_empty, unprotected=[],
                             untouched_on_failure=untouched_on_failure))

  def unprotect(self, path: str) -> None:
    """Files the case damaged itself: not counted as lost."""
    for w in self.watched:
      if path.startswith(w['path'] + os.sep):
        w['unprotected'].append(os.path.relpath(path, w['path']))

  def problem(self, message: str) -> None:
    self.problems.append(message)

  def _snapshot_once(self) -> None:
    for w in self.watched:
      if w['before'] is None:
        w['before'] = checks.snapshot(w['path'])
        w['metrics'] = checks.metric_keys(
            os.path.join(w['path'], 'metrics.jsonl'))
        w['config'] = None
        config = os.path.join(w['path'], 'config.json')
        if w['protect'] and os.path.isfile(config):
          with open(config) as f:
            w['config'] = json.load(f)

  def start(self, tool: str, args: Sequence[Any], read_only: str = '',
            file_size: int = 0, env: dict[str, str] | None = None) -> Proc:
    """Starts a tool ('train', ..., or 'python' for `-c` code)."""
    self._snapshot_once()
    self._count += 1
    head = ['-m', MODULES[tool]] if tool in MODULES else []
    argv = [self.battery.python, *head, *args]
    if read_only and os.geteuid() == 0:  # root ignores file modes
      argv = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c',
              'mount --bind -o ro "$1" "$1" && shift && exec "$@"', 'sh',
              read_only, *argv]
    elif read_only:
      subprocess.run(['chmod', '-R', 'a-w', read_only], check=True)

    def limits():
      if file_size:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    out, err = (self.path(f'{self._count}.{n}') for n in ('out', 'err'))
    with open(out, 'wb') as fo, open(err, 'wb') as fe:
      popen = subprocess.Popen(
          argv, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
          cwd=self.folder, env={**self.battery.env, **(env or {})},
          start_new_session=True, preexec_fn=limits)
    return Proc(argv, popen, out, err, time.monotonic())

  def wait(self, proc: Proc, timeout: float | None = None) -> Proc:
    deadline = proc.started + (timeout or self.battery.timeout)
    while not proc.poll():
      if time.monotonic() > deadline:
        proc.timed_out = True
        self.kill(proc)
      time.sleep(0.1)
    return proc

  def kill(self, proc: Proc) -> None:
    try:
      os.killpg(proc.popen.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass

  def run(self, tool: str, args: Sequence[Any], **kwargs) -> Proc:
    timeout = kwargs.pop('timeout', None)
    return self.wait(self.start(tool, args, **kwargs), timeout)

  def api(self, body: str) -> Proc:
    """Runs `body` in a subprocess, numpy (np) and semcorr_jax imported.

    A `SemcorrError` becomes `error: <message>` and exit status 1.
    """
    indented = '\n'.join('  ' + line for line in body.strip().splitlines())
    code = ('import sys\nimport numpy as np\nimport semcorr_jax\n'
            'from semcorr_jax.errors import SemcorrError\ntry:\n'
            f'{indented}\nexcept SemcorrError as e:\n'
            "  print('error: ' + ' '.join(str(e).split()), file=sys.stderr)\n"
            '  sys.exit(1)\n')
    return self.run('python', ['-c', code])

  def reference(self, source: str, target: str):
    """mapping_st of `semcorr-match` on the trained workdir (cached)."""
    return self.battery.reference(source, target)

  def finish(self, proc: Proc) -> list[dict[str, Any]]:
    """Checks every watched path after the case's classified run."""
    failed = proc.rc != 0
    for w in self.watched:
      if w['before'] is None:
        continue
      w['lost'] = checks.lost_data(
          w['path'], w['before'], w['metrics'], w['config'],
          w['unprotected']) if w['protect'] else []
      w['leftovers'] = checks.new_leftovers(
          w['path'], w['before'], failed, w['clean_on_failure'],
          w['stay_empty'])
      if failed and w['untouched_on_failure']:
        w['leftovers'] += [f'refused, yet {x}' for x in
                           checks.changes(w['path'], w['before'])]
      self.problems += checks.duplicate_steps(w['path'])
    return self.watched


class Battery:
  """Runs the cases against one code tree."""

  def __init__(self, code: str, python: str, scratch: str, timeout: int,
               keep: bool, fast_compile: bool):
    self.code, self.python, self.scratch = code, python, scratch
    self.timeout, self.keep = timeout, keep
    # A UTF-8 locale, as most users have (file names reach stdout).
    self.env = {**os.environ, 'PYTHONPATH': code, 'LC_ALL': 'C.UTF-8'}
    if fast_compile:
      self.env['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'
    self.master = os.path.join(scratch, 'master')
    self.inputs = {}
    self._references = {}

  def prepare(self) -> None:
    """Checks the import path, makes the inputs, trains the workdir."""
    ctx = Context(self, self.scratch)
    proc = ctx.run('python', ['-c', 'import semcorr_jax; '
                              'print(semcorr_jax.__file__)'])
    if not proc.stdout.startswith(os.path.join(self.code, '')):
      raise SystemExit(f'error: {self.code} is not what gets imported: '
                       f'{proc.stdout.strip()} {proc.stderr[-300:]}')
    self.inputs = bad_input_files.make_inputs(
        os.path.join(self.scratch, 'inputs'), self.code)
    marker = self.master + '.code'  # the tree that trained it
    if os.path.isfile(marker):
      with open(marker) as f:
        if f.read() == self.code:
          return
    shutil.rmtree(self.master, ignore_errors=True)
    print('training the shared workdir ...', flush=True)
    proc = ctx.run('train', [ctx.config(), f'--workdir={self.master}'],
                   timeout=900)
    if proc.rc != 0:
      raise SystemExit(f'error: training the shared workdir failed: '
                       f'{proc.stderr[-2000:]}')
    with open(marker, 'w') as f:
      f.write(self.code)

  def reference(self, source: str, target: str):
    key = (source, target)
    if key not in self._references:
      self._references[key] = bad_input_cases.run_reference(
          Context(self, tempfile.mkdtemp(dir=self.scratch)), source, target)
    return self._references[key]

  def run_case(self, case: bad_input_cases.Case) -> dict[str, Any]:
    folder = os.path.join(self.scratch, case.name)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    ctx = Context(self, folder)
    try:
      proc = case.run(ctx)
      watched = ctx.finish(proc)
    except Exception as e:  # pylint: disable=broad-except
      # A fault of the battery, not of the code under test: reported.
      return dict(name=case.name, tool=case.tool, expect=case.expect,
                  what=case.what, outcome='not_run', verdict='not_run',
                  rc=None, stderr_lines=0, last_line='', seconds=0,
                  max_rss_mb=0, data_lost=[], leftovers=[],
                  problems=[f'battery: {type(e).__name__}: {e}'],
                  passed=False)
    finally:
      if not self.keep:
        subprocess.run(['chmod', '-R', 'u+w', folder], check=False)
        shutil.rmtree(folder, ignore_errors=True)
    outcome = checks.classify(proc.rc, proc.stderr, proc.timed_out)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    record = dict(
        name=case.name, tool=case.tool, expect=case.expect, what=case.what,
        outcome=outcome, verdict=checks.verdict(case.expect, outcome),
        rc=proc.rc,
        stderr_lines=len(lines), last_line=(lines or [''])[-1][:200],
        seconds=round(proc.seconds, 1), max_rss_mb=round(proc.max_rss_mb),
        data_lost=[x for w in watched for x in w.get('lost', [])],
        leftovers=[x for w in watched for x in w.get('leftovers', [])],
        problems=ctx.problems)
    record['passed'] = (record['verdict'] == 'as expected' and not
                        (record['data_lost'] or record['leftovers'] or
                         record['problems']))
    return record


# --- report -------------------------------------------------------------------
COLUMNS = (('tried',) + checks.OUTCOMES +
           ('wrong_ok', 'wrong_error', 'data_lost', 'leftovers', 'problems',
            'passed'))


def counts(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
  """{tool (and 'all'): {column: number of cases}}."""
  table = collections.OrderedDict()
  for r in records:
    for tool in (r['tool'], 'all'):
      row = table.setdefault(tool, dict.fromkeys(COLUMNS, 0))
      row['tried'] += 1
      row[r['outcome']] += 1
      for column in ('wrong_ok', 'wrong_error'):
        row[column] += r['verdict'] == column
      for column in ('data_lost', 'leftovers', 'problems', 'passed'):
        row[column] += bool(r[column])
  if 'all' in table:
    table.move_to_end('all')
  return table


def markdown(records: Sequence[dict[str, Any]], code: str) -> str:
  lines = [f'Bad inputs against `{code}`: {len(records)} cases.', '',
           '| tool | ' + ' | '.join(c.replace('_', ' ') for c in COLUMNS) +
           ' |', '|---|' + '---:|' * len(COLUMNS)]
  for tool, row in counts(records).items():
    lines.append(f'| {tool} | ' + ' | '.join(str(row[c]) for c in COLUMNS) +
                 ' |')
  lines += ['', '| case | expect | outcome | verdict | stderr lines | s | '
            'peak MB | notes |', '|---|---|---|---|---:|---:|---:|---|']
  for r in records:
    notes = r['data_lost'] + r['leftovers'] + r['problems']
    if r['outcome'] != 'accepted' and r['last_line']:
      notes.append(f"last line: {r['last_line'][:90]}")
    notes = '; '.join(notes).replace('|', '/').replace('\n', ' ')
    lines.append(f"| {r['name']} | {r['expect']} | {r['outcome']} | "
                 f"{r['verdict']} | {r['stderr_lines']} | {r['seconds']} | "
                 f"{r['max_rss_mb']} | {notes} |")
  return '\n'.join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  code = os.path.abspath(FLAGS.code)
  scratch = FLAGS.scratch or tempfile.mkdtemp(prefix='bad_inputs_')
  os.makedirs(scratch, exist_ok=True)
  battery = Battery(code, FLAGS.python, os.path.abspath(scratch),
                    FLAGS.timeout, FLAGS.keep, FLAGS.fast_compile)
  battery.prepare()
  cases = [c for c in bad_input_cases.CASES
           if not FLAGS.cases or any(p in c.name for p in FLAGS.cases)]
  records = []
  for case in cases:
    records.append(battery.run_case(case))
    r = records[-1]
    print(f"{r['name']}: {r['outcome']} ({r['verdict']}, {r['seconds']} s)",
          flush=True)
  text = markdown(records, code)
  print(text)
  if FLAGS.markdown:
    with open(FLAGS.markdown, 'w') as f:
      f.write(text + '\n')
  if FLAGS.output:
    with open(FLAGS.output, 'w') as f:
      json.dump({'code': code, 'python': FLAGS.python, 'cases': records,
                 'counts': counts(records), 'markdown': text}, f, indent=1)


if __name__ == '__main__':
  define_flags()
  app.run(main)
