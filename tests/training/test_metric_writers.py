"""metrics.jsonl and TensorBoard hold each (step, split) once across resumes."""

import collections
import json
import os

import tensorflow as tf

from semcorr_jax import metric_writers


def _jsonl(workdir):
  return [(r['step'], r['split'])
          for r in map(json.loads, open(workdir / 'metrics.jsonl'))]


def _tensorboard(workdir):
  """(tag, step) of every scalar summary in the event files."""
  seen = []
  for root, _, names in os.walk(workdir / 'tensorboard'):
    for name in names:
      for raw in tf.data.TFRecordDataset(os.path.join(root, name)):
        event = tf.compat.v1.Event.FromString(raw.numpy())
        seen += [(v.tag, event.step) for v in event.summary.value]
  return seen


def test_a_resumed_writer_drops_later_steps_and_never_repeats_one(tmp_path):
  writer = metric_writers.MetricWriter(str(tmp_path))
  for step in range(1, 7):
    writer.write(step, {'loss': float(step)})
  writer.write(6, {'pck': 0.5}, split='synthetic')
  writer.close()
  # A torn last line, as a kill mid-write leaves it.
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 7, "spl')

  writer = metric_writers.MetricWriter(str(tmp_path), resume_step=3)
  assert _jsonl(tmp_path) == [(1, 'train'), (2, 'train'), (3, 'train')]
  assert sorted(s for _, s in _tensorboard(tmp_path)) == [1, 2, 3]
  writer.write(3, {'loss': 9.0})  # recorded before the resume: skipped
  for step in range(4, 7):
    writer.write(step, {'loss': float(step)})
  writer.write(6, {'pck': 0.5}, split='synthetic')
  writer.write(6, {'pck': 0.5}, split='synthetic')
  writer.close()
  keys = _jsonl(tmp_path)
  assert keys == [(s, 'train') for s in range(1, 7)] + [(6, 'synthetic')]
  counts = collections.Counter(_tensorboard(tmp_path))
  assert set(counts.values()) == {1}
  assert sorted(s for (tag, s) in counts if tag == 'train/loss') == list(
      range(1, 7))
  # The value of step 3 is the one written before the resume.
  records = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert records[2]['loss'] == 3.0


def test_a_fresh_writer_starts_an_empty_log(tmp_path):
  writer = metric_writers.MetricWriter(str(tmp_path))
  writer.write(1, {'loss': 1.0})
  writer.close()
  writer = metric_writers.MetricWriter(str(tmp_path), resume_step=None)
  writer.close()
  assert _jsonl(tmp_path) == []
