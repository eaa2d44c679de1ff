"""What the trainer does beside training: pictures of matches, a profiler
trace, and stopping cleanly when the job is preempted.

All three are generic: pictures use what every method declares (`predict`,
`flows`, `inference_variables`) and the data's held-out split; nothing here
knows a method by name.

* `MatchImages`: every `config.image_every` steps (0: never), the model's
  matches on a fixed held-out batch of `IMAGE_PAIRS` pairs, drawn by
  `evaluation.visualize` (`eval_pairs_figure` when the data has dense ground
  truth, one `match_figure` per pair otherwise) and written as TensorBoard
  images (`heldout_pairs`, or `heldout_pair_<i>`).
* `StepTrace`: a `jax.profiler` trace of `config.profile_steps` steps (0:
  none) that starts once the first step of the run (which includes
  warm-up) has finished, written to `workdir/tensorboard/plugins/profile/
  <run>/<host>.xplane.pb` (TensorBoard's profile tab, or Perfetto). The
  trace starts and stops on finished steps (`block_until_ready`), and one
  still running when the run ends is stopped: CLU's `periodic_actions.
  Profile` stops at the dispatch of a step and cannot end a trace the run
  outlives, hence this small hook on `jax.profiler`. Traces are large on
  a CPU (one step of the `test` sfnet config on 8 simulated devices: 23 MB):
  trace a few steps.
* `Preemption`: whether the run must stop now. A single process catches
  SIGTERM (the notice preemptible VMs and schedulers send) and stops after
  the step in progress. With several processes, JAX's preemption service
  (started by `jax.distributed.initialize`) owns SIGTERM, tells the other
  hosts and picks a step all of them reach; Orbax's `reached_preemption`
  (`Checkpointer.reached_preemption`) reads it, so every process saves the
  same step. The trainer then saves that step, flushes its logs and returns
  (the CLI exits 0); the same command resumes from that step.

`Hooks` bundles them, with the progress line (`metric_writers.Progress`),
for one run of the trainer.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

import jax
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from semcorr_jax import metric_writers
from semcorr_jax import parallel
from semcorr_jax.data import pipeline
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import predict as predict_lib
from semcorr_jax.evaluation import synthetic
from semcorr_jax.evaluation import visualize

IMAGE_PAIRS = 4
IMAGE_DPI = 60


def figure_pixels(fig: Figure, dpi: int = IMAGE_DPI) -> np.ndarray:
  """A matplotlib figure rendered by Agg: (H, W, 3) uint8."""
  fig.set_dpi(dpi)
  canvas = FigureCanvasAgg(fig)
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class MatchImages:
  """Pictures of the model's matches on a fixed held-out batch.

  Args:
    config: the run's config (`data`, `seed`, `image_every`).
    method: the method (`predict`, `flows`, `inference_variables`).
    writer: where the images go (`MetricWriter.write_images`).
  """

  def __init__(self, config, method, writer: metric_writers.MetricWriter):
    self.every = int(config.get('image_every', 0) or 0)
    self.method, self.writer = method, writer
    self.batch = None
    if not self.every or jax.process_index() != 0:
      self.every = 0
      return
    n = min(IMAGE_PAIRS, pipeline.num_examples(config.data, 'heldout'))
    dataset = pipeline.make_pair_dataset(
        config.data, 'heldout', batch_size=n, seed=config.seed, repeat=False,
        num_examples=n)
    self.batch = next(dataset.as_numpy_iterator())
    self.dense = all(k in self.batch for k in synthetic.DENSE_KEYS)

  def images(self, state: Any, step: int) -> dict[str, np.ndarray]:
    """{tag: (H, W, 3) uint8} of the model in `state`."""
    variables = predict_lib.to_one_device(
        parallel.to_host(self.method.inference_variables(state)))
    n = len(self.batch['source_image'])
    prediction = predict_lib.predict_padded(
        predict_lib.jitted_predict(self.method), variables, self.batch, n)
    flows = self.method.flows
    if self.dense:
      return {'heldout_pairs': figure_pixels(visualize.eval_pairs_figure(
          self.batch, prediction, flows, num_pairs=n,
          title=f'held-out pairs, step {step}'))}
    return {f'heldout_pair_{i}': figure_pixels(visualize.match_figure(
        self.batch['source_image'][i], self.batch['target_image'][i], flows,
        {k: v[i] for k, v in prediction.items()},
        title=f'held-out pair {i}, step {step}')) for i in range(n)}

  def __call__(self, step: int, state: Any) -> None:
    if self.every and step % self.every == 0:
      self.writer.write_images(step, self.images(state, step))


class StepTrace:
  """A `jax.profiler` trace of `num_steps` steps after `first_step`.

  Args:
    logdir: the trace's folder (TensorBoard's log folder).
    first_step: the trace starts when this step has finished.
    num_steps: steps traced (0: none); fewer when the run ends first.
    total_steps: the run's last step.
  """

  def __init__(self, logdir: str, first_step: int, num_steps: int,
               total_steps: int):
    self.logdir = logdir
    self.start = first_step
    self.stop = min(first_step + max(int(num_steps), 0), total_steps)
    self.running = False

  def __call__(self, step: int, state: Any) -> None:
    if step == self.start and self.stop > self.start:
      jax.block_until_ready(state)
      jax.profiler.start_trace(self.logdir)
      self.running = True
    elif self.running and step == self.stop:
      jax.block_until_ready(state)
      self.close()
      if jax.process_index() == 0:
        steps = (f'steps {self.start + 1}-{self.stop}'
                 if self.stop > self.start + 1 else f'step {self.stop}')
        print(f'profiled {steps}: {self.logdir}/plugins/profile/',
              flush=True)

  def close(self) -> None:
    if self.running:
      self.running = False
      jax.profiler.stop_trace()


class Preemption:
  """Whether to stop after a step: SIGTERM (one process) or Orbax's
  preemption sync point (several processes).

  `install` puts the SIGTERM handler in place (main thread, single process
  only); `restore` puts the previous one back.

  Args:
    reached_preemption: `Checkpointer.reached_preemption`, called at every
      step on every process when there are several.
  """

  def __init__(self, reached_preemption: Callable[[int], bool]):
    self._reached = reached_preemption
    self._several = jax.process_count() > 1
    self._installed, self._previous = False, None
    self.signal = None

  def install(self) -> None:
    if (not self._several and not self._installed and
        threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
      self._installed = True

  def restore(self) -> None:
    if self._installed:
      # None: a handler not set from Python; the default is the nearest.
      signal.signal(signal.SIGTERM,
                    signal.SIG_DFL if self._previous is None
                    else self._previous)
      self._installed = False

  def _on_signal(self, signum, frame) -> None:
    del frame  # Only a flag: printing here could re-enter a print.
    self.signal = signum

  def reached(self, step: int) -> bool:
    if self._several:
      return bool(self._reached(step))
    return self.signal is not None


class Hooks:
  """The trainer's hooks for one run: `progress` (`metric_writers.Progress`),
  `images`, `trace`, `preemption`.

  Args:
    config: the run's config (`batch_size`, `log_every`, `image_every`,
      `profile_steps`, `data`, `seed`).
    method: the method trained.
    writer: the run's `MetricWriter`.
    reached_preemption: `Checkpointer.reached_preemption`.
    workdir: the run's folder (the trace goes to its TensorBoard folder).
    start_step: the step the run starts from.
    total_steps: the run's last step.
  """

  def __init__(self, config, method, writer: metric_writers.MetricWriter,
               reached_preemption: Callable[[int], bool], workdir: str,
               start_step: int, total_steps: int):
    self.progress = metric_writers.Progress(total_steps, config.batch_size,
                                            config.log_every)
    self.images = MatchImages(config, method, writer)
    self.trace = StepTrace(f'{workdir}/{metric_writers.TENSORBOARD_DIR}',
                           start_step + 1,
                           int(config.get('profile_steps', 0) or 0),
                           total_steps)
    self.preemption = Preemption(reached_preemption)

  def start(self) -> None:
    """Before the first step: SIGTERM now stops the run cleanly."""
    self.preemption.install()

  def close(self) -> None:
    """After the last step (and on any error): SIGTERM ends the process
    again, a trace still running is stopped."""
    self.preemption.restore()
    self.trace.close()

  def stopped(self, step: int, where: str) -> dict[str, Any]:
    """The trainer's result for a run stopped by `preemption` at `step`."""
    if jax.process_index() == 0:
      print(f'Stopped at step {step} (SIGTERM or preemption); its '
            f'checkpoint is in {where}: run the same command to resume',
            flush=True)
    return {'step': step, 'evals': {}, 'preempted': True}


def check_config(config) -> None:
  """`image_every` and `profile_steps`, when the config has them, are whole
  numbers >= 0.

  Raises:
    SemcorrError: the first that is not, in one line.
  """
  for field in ('image_every', 'profile_steps'):
    value = config.get(field, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
      raise SemcorrError(f'config.{field}={value!r}: must be a whole number '
                         '>= 0 (0: off)')
