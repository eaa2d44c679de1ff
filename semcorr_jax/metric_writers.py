"""Metric writers: JSON lines, TensorBoard and a console progress line.

Only process 0 writes. `workdir/metrics.jsonl` gets one JSON object per logged
step (`{"step": ..., "split": "train", "loss": ...}`); TensorBoard event files go
to `workdir/tensorboard/`.
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


def _to_float(v: Any) -> float:
  return float(np.asarray(v))


class MetricWriter:
  """Appends scalars to metrics.jsonl and TensorBoard (process 0 only)."""

  def __init__(self, workdir: str, tensorboard: bool = True):
    self.enabled = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if not self.enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
    if tensorboard:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._tb = tf.summary.create_file_writer(
          os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, scalars: Mapping[str, Any],
            split: str = 'train') -> None:
    if not self.enabled:
      return
    values = {k: _to_float(v) for k, v in scalars.items()}
    record = {'step': int(step), 'split': split, 'time': time.time(), **values}
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
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
