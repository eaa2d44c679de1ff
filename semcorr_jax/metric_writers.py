"""Metric writers: JSON lines, TensorBoard (CLU) and a console progress line.

Only process 0 writes. `workdir/metrics.jsonl` gets one JSON object per logged
step (`{"step": ..., "split": "train", "loss": ...}`); scalars (tag
`<split>/<name>`), images and the run's hyperparameters also go through CLU's
`metric_writers`: a `SummaryWriter` (TensorBoard event files in
`workdir/tensorboard/`) and a `LoggingWriter` (absl INFO), both behind an
`AsyncMultiWriter`, so encoding an image never holds up a train step (the
background thread's errors are raised at the next write or at `close`).

Each (step, split) is recorded once across resumes: a writer opened for a run
resumed from step s first drops what was logged after s (a killed run logs
steps its last checkpoint does not hold; they are trained and logged again),
and skips a (step, split) already recorded (a finished run started again
evaluates its last step again).

The workdir may be any `etils.epath` location (`gs://bucket/run`). Object
stores cannot append to an object, so there `metrics.jsonl` is kept in
memory and uploaded whole (one all-or-nothing upload,
`output_paths.atomic_write`) by the first write `REMOTE_FLUSH_SECS` after
the last upload, and by every `flush()`: the trainer flushes before each
checkpoint save, so every record of a step a checkpoint holds is in the file
before the checkpoint is. (A record is about 0.5 kB: 10,000 logged steps
make a 5 MB upload.) A local file is appended to line by line. TensorBoard files go
through TensorFlow's file systems (`tf.io.gfile`), which read and write
gs:// too.

The console line (`Progress`) is printed to stdout: the CLIs lower absl
logging to warnings (Orbax logs at INFO on every step), so the
`LoggingWriter`'s lines show with `--verbosity=0` only. Its rates come from
CLU's `periodic_actions.ReportProgress`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any, Mapping

from clu import metric_writers as clu_writers
from clu import periodic_actions
import jax
import numpy as np
import tensorflow as tf

from semcorr_jax import output_paths

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'
# Longest time records of a remote metrics.jsonl wait in memory.
REMOTE_FLUSH_SECS = 30.0


def _to_float(v: Any) -> float:
  return float(np.asarray(v))


def _parse_records(text: str) -> list[dict[str, Any]]:
  """The JSON lines of `text`; a torn last line (a kill mid-write) is
  dropped."""
  records = []
  for line in text.splitlines():
    try:
      record = json.loads(line)
    except ValueError:
      continue
    if isinstance(record, dict) and 'step' in record:
      records.append(record)
  return records


def truncate_jsonl(path, last_step: int) -> list[dict[str, Any]]:
  """Keeps the records of steps <= `last_step` (rewritten atomically).

  Args:
    path: a local path or any `etils.epath` location.
    last_step: the last step kept.

  Returns:
    the records kept.
  """
  text = output_paths.as_path(path).read_text()
  records = _parse_records(text)
  kept = [r for r in records if int(r['step']) <= last_step]
  if len(kept) != len(records) or not text.endswith('\n'):
    with output_paths.atomic_write(path, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
  return kept


def truncate_tensorboard(folder: str, last_step: int) -> int:
  """Drops summaries of steps > `last_step` from the event files in `folder`.

  Returns:
    the number of events dropped.
  """
  dropped = 0
  for root, _, names in tf.io.gfile.walk(folder):
    for name in names:
      if 'tfevents' not in name or name.startswith('.'):
        continue
      path = f'{root.rstrip("/")}/{name}'
      kept, cut = [], 0
      try:
        for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
          event = tf.compat.v1.Event.FromString(raw)
          if event.HasField('summary') and event.step > last_step:
            cut += 1
          else:
            kept.append(raw)
      except tf.errors.DataLossError:  # a torn last record
        cut += 1
      if cut:
        tmp = f'{root.rstrip("/")}/.{name}.tmp'
        with tf.io.TFRecordWriter(tmp) as out:
          for raw in kept:
            out.write(raw)
        tf.io.gfile.rename(tmp, path, overwrite=True)
        dropped += cut
  return dropped


class _JsonLines:
  """`metrics.jsonl`: appended line by line (local) or uploaded whole.

  Args:
    path: the file.
    last_step: records of later steps are dropped first; -1: all are.
    append: append to the file (a local disk) or keep it in memory and
      rewrite it whole (an object store). None: by the path.
  """

  def __init__(self, path: str, last_step: int, append: bool | None):
    self.path = path
    if append is None:
      append = not output_paths.is_remote(path)
    self.append = append
    kept = []
    if output_paths.as_path(path).exists():
      kept = truncate_jsonl(path, last_step)
    self.recorded = {(int(r['step']), r.get('split', 'train')) for r in kept}
    self._lines = [json.dumps(r) + '\n' for r in kept]
    self._dirty = False
    self._flushed_at = time.monotonic()
    self._file = None
    if self.append:
      self._file = output_paths.as_path(path).open('a')

  def write(self, record: dict[str, Any]) -> None:
    line = json.dumps(record) + '\n'
    if self._file is not None:
      self._file.write(line)
      self._file.flush()
      return
    self._lines.append(line)
    self._dirty = True
    if time.monotonic() - self._flushed_at >= REMOTE_FLUSH_SECS:
      self.flush()

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()
    elif self._dirty:
      with output_paths.atomic_write(self.path, 'w') as f:
        f.writelines(self._lines)
      self._dirty = False
      self._flushed_at = time.monotonic()

  def close(self) -> None:
    self.flush()
    if self._file is not None:
      self._file.close()
      self._file = None


def flat_hparams(config: Mapping[str, Any]) -> dict[str, Any]:
  """A config (`ConfigDict.to_dict()`) as `{dotted.key: bool/int/float/str}`.

  TensorBoard's hparams take only those types: tuples and lists become
  their text, None becomes 'None'.
  """
  flat = {}

  def visit(prefix, value):
    if isinstance(value, Mapping):
      for k, v in value.items():
        visit(f'{prefix}{k}.', v)
    elif isinstance(value, (bool, int, float, str)):
      flat[prefix[:-1]] = value
    else:
      flat[prefix[:-1]] = str(value)
  visit('', config)
  return flat


class MetricWriter:
  """Writes scalars to metrics.jsonl and, through CLU, scalars, images and
  hyperparameters to TensorBoard and the absl log (process 0 only).

  Args:
    workdir: the run's folder (local or an `etils.epath` location).
    tensorboard: also write TensorBoard events (and absl log lines).
    resume_step: the step the run resumes from; records of later steps are
      dropped first. None: a fresh run (records of any step are dropped).
    append: how metrics.jsonl is written (`_JsonLines`); None: appended on
      a local disk, rewritten whole on an object store.
  """

  def __init__(self, workdir: str, tensorboard: bool = True,
               resume_step: int | None = None, append: bool | None = None):
    self.enabled = jax.process_index() == 0
    self._jsonl = None
    self._clu = None
    if not self.enabled:
      return
    workdir = output_paths.resolve(workdir)
    output_paths.makedirs(workdir)  # nothing on an object store
    last = -1 if resume_step is None else int(resume_step)
    self._jsonl = _JsonLines(f'{workdir}/{METRICS_FILE}', last, append)
    if tensorboard:
      folder = f'{workdir}/{TENSORBOARD_DIR}'
      if tf.io.gfile.isdir(folder):
        truncate_tensorboard(folder, last)
      self._clu = clu_writers.AsyncMultiWriter(
          [clu_writers.SummaryWriter(folder), clu_writers.LoggingWriter()])

  def write(self, step: int, scalars: Mapping[str, Any],
            split: str = 'train') -> None:
    """Records `scalars` of (step, split) unless already recorded."""
    if not self.enabled or (int(step), split) in self._jsonl.recorded:
      return
    self._jsonl.recorded.add((int(step), split))
    values = {k: _to_float(v) for k, v in scalars.items()}
    self._jsonl.write({'step': int(step), 'split': split, 'time': time.time(),
                       **values})
    if self._clu is not None:
      self._clu.write_scalars(int(step), {f'{split}/{k}': v
                                          for k, v in values.items()})

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """TensorBoard images: {tag: (H, W, 3) or (N, H, W, 3) uint8}."""
    if self.enabled and self._clu is not None:
      self._clu.write_images(int(step), {k: np.asarray(v)
                                         for k, v in images.items()})

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """The run's hyperparameters (`flat_hparams` of the config), once."""
    if self.enabled and self._clu is not None:
      self._clu.write_hparams(flat_hparams(hparams))

  def flush(self) -> None:
    """Everything written so far is in the files (remote ones included)."""
    if not self.enabled:
      return
    self._jsonl.flush()
    if self._clu is not None:
      self._clu.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._clu is not None:
      self._clu.close()
      self._clu = None


def _fmt_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


class _Rates:
  """Receives `ReportProgress`'s `steps_per_sec` (its `writer`)."""

  def __init__(self):
    self.latest: dict[int, float] = {}

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if 'steps_per_sec' in scalars:
      self.latest = {int(step): float(scalars['steps_per_sec'])}


class Progress:
  """Training speed (`periodic_actions.ReportProgress`) and the console line
  `step i/N | loss | steps/s | pairs/s | ETA`.

  Call it after every step (ReportProgress checks that none is skipped);
  the first call (made after the first step has finished, which includes
  compilation) starts the clock. At each `every` multiple and the last
  step it returns the steps/s and pairs/s since the previous one.

  Args:
    total_steps: the run's last step.
    global_batch_size: pairs per step.
    every: steps between measurements (the trainer's `log_every`).
    stream: where `report` prints.
  """

  def __init__(self, total_steps: int, global_batch_size: int, every: int,
               stream=sys.stdout):
    self.total = total_steps
    self.batch = global_batch_size
    self.stream = stream
    self._rates = _Rates()
    self._action = periodic_actions.ReportProgress(
        num_train_steps=total_steps, writer=self._rates, every_steps=every,
        every_secs=None)

  def __call__(self, step: int, t: float | None = None) -> dict[str, float]:
    """{'steps_per_sec', 'pairs_per_sec'} when measured at `step`, else {}.

    `t`: the time (`time.monotonic()` when None).
    """
    if not self._action(step, t):
      return {}
    rate = self._rates.latest.get(int(step), float('nan'))
    return {'steps_per_sec': rate, 'pairs_per_sec': rate * self.batch}

  def line(self, step: int, scalars: Mapping[str, float]) -> str:
    rate = scalars.get('steps_per_sec', float('nan'))
    eta = (self.total - step) / rate if rate > 0 else float('nan')
    shown = ' | '.join(f'{k} {v:.4g}' for k, v in scalars.items()
                       if k not in ('steps_per_sec', 'pairs_per_sec'))
    return (f'step {step}/{self.total} | {shown} | {rate:.2f} steps/s | '
            f'{rate * self.batch:.1f} pairs/s | ETA {_fmt_duration(eta)}')

  def report(self, step: int, scalars: Mapping[str, float]) -> None:
    if jax.process_index() == 0:
      print(self.line(step, scalars), file=self.stream, flush=True)

