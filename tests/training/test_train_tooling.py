"""The trainer's tools: a clean stop on SIGTERM that resumes, pictures of
matches, hyperparameters and a profiler trace in TensorBoard, progress rates,
and a train step that is traced once."""

import json
import os
import signal
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
import tensorflow as tf

from semcorr_jax import config_files
from semcorr_jax import methods
from semcorr_jax import metric_writers
from semcorr_jax import outputs
from semcorr_jax import parallel
from semcorr_jax import starting_state
from semcorr_jax import train
from semcorr_jax import train_hooks
from semcorr_jax.errors import SemcorrError

from helpers import kill_resume
from helpers import paths
from helpers import toy_method

STEPS = 8
TERM_AT = 3  # SIGTERM once step 3 is logged: the run stops after step 4.
OVERRIDES = {
    'num_train_steps': STEPS, 'log_every': 1, 'checkpoint_every': 5,
    'keep_checkpoints': 10, 'data.image_size': (32, 32),
    'data.scene_size': (40, 40),
    'evals.synthetic.untrained_baseline': False,
    'evals.synthetic.num_pairs': 2, 'evals.synthetic.batch_size': 2}


def _flag(key, value):
  if isinstance(value, tuple):
    value = '(' + ','.join(map(str, value)) + ')'
  return f'--config.{key}={value}'


def _train_steps(workdir):
  return [r['step'] for r in map(json.loads, open(workdir / 'metrics.jsonl'))
          if r['split'] == 'train']


def _summaries(workdir):
  """[(step, tag, plugin)] of every summary in the TensorBoard files."""
  seen = []
  for root, _, names in os.walk(workdir / 'tensorboard'):
    for name in names:
      if 'tfevents' in name:
        for raw in tf.data.TFRecordDataset(os.path.join(root, name)):
          event = tf.compat.v1.Event.FromString(raw.numpy())
          seen += [(event.step, v.tag, v.metadata.plugin_data.plugin_name)
                   for v in event.summary.value]
  return seen


def test_sigterm_saves_the_step_reached_and_the_run_resumes(tmp_path, capsys):
  workdir = tmp_path / 'run'
  cmd = [sys.executable, str(paths.HELPERS / 'fault_train.py'),
         f'term:{TERM_AT}', f'--config={paths.CONFIGS}/sfnet.py:test',
         f'--workdir={workdir}'] + [_flag(k, v) for k, v in OVERRIDES.items()]
  # One device: the cheapest compilation; the checkpoint is restored onto
  # this process's 8 devices.
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=1')
  stopped = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                           env=env)
  assert stopped.returncode == 0, stopped.stderr[-2000:]
  assert f'Stopped at step {TERM_AT + 1}' in stopped.stdout
  # Saved at the step reached, not only at a checkpoint_every multiple.
  assert kill_resume.committed_steps(workdir) == [TERM_AT + 1]
  meta = json.loads((workdir / 'checkpoints' / str(TERM_AT + 1) / 'meta' /
                     'metadata').read_text())
  assert meta['data_index'] == (TERM_AT + 1) * 8  # batch_size 8
  assert _train_steps(workdir) == list(range(1, TERM_AT + 2))
  assert not (workdir / 'eval').exists()  # no final evaluation

  # Resumed in this process, with pictures every 2 steps, 1 step traced and
  # no evaluator.
  config = config_files.load(f'{paths.CONFIGS}/sfnet.py:test', OVERRIDES)
  with config.unlocked():
    config.image_every = 2
    config.profile_steps = 1
    del config.evals['synthetic']
  capsys.readouterr()
  results = train.train_and_evaluate(config, str(workdir))
  out = capsys.readouterr().out
  assert f'Resumed from step {TERM_AT + 1}' in out
  assert results['step'] == STEPS and 'preempted' not in results
  assert _train_steps(workdir) == list(range(1, STEPS + 1))
  assert sorted(kill_resume.committed_steps(workdir)) == [TERM_AT + 1, 5,
                                                          STEPS]

  summaries = _summaries(workdir)
  assert [s for s, _, p in summaries if p == 'hparams'] == [0]  # once
  assert [(s, t) for s, t, p in summaries if p == 'images'] == [
      (6, 'heldout_pairs'), (8, 'heldout_pairs')]
  assert sorted(s for s, t, _ in summaries if t == 'train/loss') == list(
      range(1, STEPS + 1))
  # The trace starts once step 5 (the first of this run) has finished.
  assert 'profiled step 6: ' in out
  traces = list((workdir / 'tensorboard' / 'plugins' / 'profile').glob(
      '*/*.xplane.pb'))
  assert len(traces) == 1 and traces[0].stat().st_size > 10_000


def test_preemption_notes_sigterm_and_restores_the_handler():
  before = signal.getsignal(signal.SIGTERM)
  asked = []
  preemption = train_hooks.Preemption(lambda step: asked.append(step))
  preemption.install()
  try:
    assert not preemption.reached(1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert preemption.reached(2)
  finally:
    preemption.restore()
  assert signal.getsignal(signal.SIGTERM) is before
  assert asked == []  # one process: Orbax's sync point is not asked


def test_progress_rates_come_from_report_progress():
  progress = metric_writers.Progress(total_steps=10, global_batch_size=4,
                                     every=2)
  assert progress(1, t=100.0) == {}  # the clock starts
  assert progress(2, t=100.5) == {'steps_per_sec': 2.0, 'pairs_per_sec': 8.0}
  assert progress(3, t=101.0) == {}
  assert progress(4, t=102.5) == {'steps_per_sec': 1.0, 'pairs_per_sec': 4.0}
  line = progress.line(4, {'loss': 0.25, 'steps_per_sec': 1.0})
  assert line == ('step 4/10 | loss 0.25 | 1.00 steps/s | 4.0 pairs/s | '
                  'ETA 0m06s')
  with pytest.raises(ValueError, match='every step'):
    progress(6, t=103.0)  # a step was skipped


class _Identity:
  """A method that predicts the identity mapping (no parameters)."""

  flows = outputs.DEFAULT_FLOWS

  def inference_variables(self, state):
    return state

  def predict(self, variables, source, target):
    del variables, target
    b, h, w = source.shape[:3]
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1)
    grid = np.broadcast_to(grid, (b, h, w, 2)).astype(np.float32)
    return {'mapping_st': grid, 'mapping_ts': grid}


def test_match_images_of_a_fixed_heldout_batch(load_config):
  config = load_config('sfnet', 'test', **{'data.image_size': (32, 32),
                                           'data.scene_size': (40, 40)})
  with config.unlocked():
    config.image_every = 3
  written = []

  class Writer:
    def write_images(self, step, images):
      written.append((step, {k: v.shape for k, v in images.items()}))

  images = train_hooks.MatchImages(config, _Identity(), Writer())
  assert len(images.batch['source_image']) == train_hooks.IMAGE_PAIRS
  assert images.dense  # synthetic pairs: drawn with their ground truth
  for step in (1, 2, 3):
    images(step, {})
  assert [s for s, _ in written] == [3]
  (shape,) = written[0][1].values()
  assert shape[2] == 3 and shape[0] > 4 * 60  # 4 rows of pairs
  # Without dense ground truth: one picture per pair.
  images.dense = False
  tags = images.images({}, 3)
  assert sorted(tags) == [f'heldout_pair_{i}' for i in range(4)]
  assert all(v.dtype == np.uint8 and v.ndim == 3 for v in tags.values())


@pytest.mark.parametrize('field', ['image_every', 'profile_steps'])
def test_tool_fields_are_checked(load_config, field):
  config = load_config('sfnet', 'test')
  with config.unlocked():
    config[field] = -1
  with pytest.raises(SemcorrError, match=rf'config\.{field}=-1: must be a '
                     'whole number >= 0'):
    train_hooks.check_config(config)


def test_train_step_is_traced_once_across_steps():
  config = toy_method.get_config()
  method = methods.get(config.method)(config, 10)
  mesh = parallel.make_mesh(jax.devices()[:2])
  state, _ = starting_state.create_state(method, config, mesh,
                                         jax.random.key(0))
  method.train_step = chex.assert_max_traces(method.train_step, n=1)
  step = train.jit_train_step(method, mesh)
  rng = np.random.default_rng(0)

  def batch(h=24):
    return parallel.host_to_global(
        {k: rng.random((8, h, 32, 3), np.float32)
         for k in ('source_image', 'target_image')}, mesh)

  for i in range(3):  # the donated state comes back with the same types
    state, metrics = step(state, batch(), jax.random.key(1))
    assert int(state.step) == i + 1 and np.isfinite(float(metrics['loss']))
  with pytest.raises(AssertionError, match='traced > 1 times'):
    step(state, batch(h=16), jax.random.key(1))  # a new shape: a new trace
