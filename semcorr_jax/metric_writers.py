"""Metric writers: JSON lines, TensorBoard and a console progress line.

Only process 0 writes. `workdir/metrics.jsonl` gets one JSON object per logged
step (`{"step": ..., "split": "train", "loss": ...}`); TensorBoard event files go
to `workdir/tensorboard/`.

Each (step, split) is recorded once across resumes: a writer opened for a run
resumed from step s first drops what was logged after s (a killed run logs
steps its last checkpoint does not hold; they are trained and logged again),
and skips a (step, split) already recorded (a finished run started again
evaluates its last step again).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np
import tensorflow as tf

from semcorr_jax import output_paths

METRICS_FILE = 'metrics.jsonl'
TENSORBOARD_DIR = 'tensorboard'


def _to_float(v: Any) -> float:
  return float(np.asarray(v))


def _read_records(path: str) -> list[dict[str, Any]]:
  """The JSON lines of `path`; a torn last line (a kill mid-write) is dropped."""
  records = []
  with open(path) as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if isinstance(record, dict) and 'step' in record:
        records.append(record)
  return records


def truncate_jsonl(path: str, last_step: int) -> list[dict[str, Any]]:
  """Keeps the records of steps <= `last_step` (rewritten atomically).

  Returns:
    the records kept.
  """
  records = _read_records(path)
  kept = [r for r in records if int(r['step']) <= last_step]
  with open(path, 'rb') as f:
    unchanged = len(kept) == len(records) and f.read().endswith(b'\n')
  if not unchanged:
    with output_paths.atomic_write(path, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
  return kept


def truncate_tensorboard(folder: str, last_step: int) -> int:
  """Drops summaries of steps > `last_step` from the event files in `folder`.

  Returns:
    the number of events dropped.
  """
  dropped = 0
  for root, _, names in os.walk(folder):
    for name in names:
      if 'tfevents' not in name or name.startswith('.'):
        continue
      path = os.path.join(root, name)
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
        tmp = output_paths.temporary_path(path)
        with tf.io.TFRecordWriter(tmp) as out:
          for raw in kept:
            out.write(raw)
        os.replace(tmp, path)
        dropped += cut
  return dropped


class MetricWriter:
  """Appends scalars to metrics.jsonl and TensorBoard (process 0 only).

  Args:
    workdir: the run's folder.
    tensorboard: also write TensorBoard events.
    resume_step: the step the run resumes from; records of later steps are
      dropped first. None: a fresh run (records of any step are dropped).
  """

  def __init__(self, workdir: str, tensorboard: bool = True,
               resume_step: int | None = None):
    self.enabled = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    self._recorded = set()
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, METRICS_FILE)
    last = -1 if resume_step is None else int(resume_step)
    if os.path.exists(path):
      self._recorded = {(int(r['step']), r.get('split', 'train'))
                        for r in truncate_jsonl(path, last)}
    self._jsonl = open(path, 'a')
    if tensorboard:
      folder = os.path.join(workdir, TENSORBOARD_DIR)
      if os.path.isdir(folder):
        truncate_tensorboard(folder, last)
      self._tb = tf.summary.create_file_writer(folder)

  def write(self, step: int, scalars: Mapping[str, Any],
            split: str = 'train') -> None:
    if not self.enabled or (int(step), split) in self._recorded:
      return
    self._recorded.add((int(step), split))
    values = {k: _to_float(v) for k, v in scalars.items()}
    record = {'step': int(step), 'split': split, 'time': time.time(), **values}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      with self._tb.as_default():
        for k, v in values.items():
          tf.summary.scalar(f'{split}/{k}', v, step=int(step))
      self._tb.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def _fmt_duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


class Progress:
  """Prints `step i/N | loss | steps/s | pairs/s | ETA` (first step excluded).

  The first step of a run includes compilation, so rates are measured from the
  end of the first step on.
  """

  def __init__(self, total_steps: int, global_batch_size: int,
               stream=sys.stdout):
    self.total = total_steps
    self.batch = global_batch_size
    self.stream = stream
    self._t0 = None
    self._s0 = None

  def mark_start(self, step: int) -> None:
    self._t0, self._s0 = time.perf_counter(), step

  def rate(self, step: int) -> float:
    if self._t0 is None or step <= self._s0:
      return float('nan')
    return (step - self._s0) / max(time.perf_counter() - self._t0, 1e-9)

  def line(self, step: int, scalars: Mapping[str, float]) -> str:
    rate = self.rate(step)
    eta = (self.total - step) / rate if rate > 0 else float('nan')
    shown = ' | '.join(f'{k} {v:.4g}' for k, v in scalars.items())
    return (f'step {step}/{self.total} | {shown} | {rate:.2f} steps/s | '
            f'{rate * self.batch:.1f} pairs/s | ETA {_fmt_duration(eta)}')

  def report(self, step: int, scalars: Mapping[str, float]) -> None:
    if jax.process_index() == 0:
      print(self.line(step, scalars), file=self.stream, flush=True)
