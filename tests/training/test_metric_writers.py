"""metrics.jsonl and TensorBoard hold each (step, split) once across resumes,
local or on an object store; images and hyperparameters reach TensorBoard."""

import collections
import functools
import io
import json
import os

from etils import epath
from etils.epath import gpath
from google.protobuf import json_format
import numpy as np
from PIL import Image
from tensorboard.plugins.hparams import plugin_data_pb2
import tensorflow as tf

from semcorr_jax import metric_writers

from helpers import gcs_emulator


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


def test_a_remote_log_is_uploaded_whole_and_resumes(tmp_path, monkeypatch):
  """gs:// through a local GCS emulator (epath) and a local TensorBoard
  folder (TensorFlow's own GCS client cannot be redirected)."""
  monkeypatch.setattr(metric_writers, 'REMOTE_FLUSH_SECS', 1e9)
  run = 'gs://test-bucket/run'
  with gcs_emulator.gcs_emulator('test-bucket'), \
      gcs_emulator.tf_gcs_to_local(str(tmp_path)) as asked:
    # epath caches its choice of TensorFlow for gs:// (any earlier path
    # made it); the emulator's EPATH_USE_TF=false must be read again.
    # pylint: disable-next=protected-access
    uncached = gpath._is_tf_installed.__wrapped__
    monkeypatch.setattr(gpath, '_is_tf_installed', functools.cache(uncached))
    log = epath.Path(run) / 'metrics.jsonl'

    def steps():
      return [(r['step'], r['split'])
              for r in map(json.loads, log.read_text().splitlines())]

    writer = metric_writers.MetricWriter(run)
    for step in range(1, 5):
      writer.write(step, {'loss': float(step)})
    writer.flush()  # what the trainer does before each checkpoint
    writer.write(5, {'loss': 5.0})
    assert steps() == [(s, 'train') for s in range(1, 5)]  # 5: in memory
    writer.close()
    assert steps() == [(s, 'train') for s in range(1, 6)]

    writer = metric_writers.MetricWriter(run, resume_step=3)
    assert steps() == [(s, 'train') for s in range(1, 4)]
    writer.write(3, {'loss': 9.0})  # recorded before the resume: skipped
    writer.write(4, {'loss': 4.5})
    writer.close()
    records = list(map(json.loads, log.read_text().splitlines()))
    assert [(r['step'], r['loss']) for r in records] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.5)]
  assert asked and all(p.startswith(f'{run}/tensorboard') for p in asked)
  assert sorted(s for _, s in _tensorboard(tmp_path / 'test-bucket' / 'run')
                ) == [1, 2, 3, 4]


def test_images_and_hyperparameters_reach_tensorboard(tmp_path):
  writer = metric_writers.MetricWriter(str(tmp_path))
  writer.write_hparams({'optimizer': {'lr': 0.5, 'decay_at': (0.75,)},
                        'seed': 3, 'init': None, 'frozen': True})
  picture = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
  writer.write_images(3, {'heldout_pairs': picture})
  writer.close()
  hparams, images = {}, []
  for root, _, names in os.walk(tmp_path / 'tensorboard'):
    for name in names:
      for raw in tf.data.TFRecordDataset(os.path.join(root, name)):
        event = tf.compat.v1.Event.FromString(raw.numpy())
        for v in event.summary.value:
          plugin = v.metadata.plugin_data
          if v.tag == '_hparams_/session_start_info':
            info = plugin_data_pb2.HParamsPluginData.FromString(
                plugin.content).session_start_info
            hparams = {k: json_format.MessageToDict(x)
                       for k, x in info.hparams.items()}
          elif plugin.plugin_name == 'images':
            width, height, png = tf.make_ndarray(v.tensor)
            images.append((event.step, v.tag, int(width), int(height),
                           np.asarray(Image.open(io.BytesIO(png)))))
  assert hparams == {'optimizer.lr': 0.5, 'optimizer.decay_at': '(0.75,)',
                     'seed': 3.0, 'init': 'None', 'frozen': True}
  (step, tag, width, height, decoded), = images
  assert (step, tag, width, height) == (3, 'heldout_pairs', 7, 5)
  np.testing.assert_array_equal(decoded, picture)
