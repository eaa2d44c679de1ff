"""`gs://` workdirs: train, resume, evaluate, load and match against a GCS
emulator on 127.0.0.1 (`helpers/gcs_emulator.py`).

Orbax's arrays go through TensorStore's own GCS driver and every other file
through `etils.epath` (gcsfs), both to the emulator. What is checked against
what was worked out another way: the objects in the bucket (listed through
gcsfs), the step the second run resumes from, the evaluation that
`semcorr-eval` computes from the restored checkpoint against the one the
trainer computed from its live state, and the model and matches loaded from
the bucket against those loaded from a local copy of it.
"""

import contextlib
import io
import json
import os

from etils import epath
import fsspec
import jax
import numpy as np
from PIL import Image
import pytest

from semcorr_jax import api
from semcorr_jax import output_paths
from semcorr_jax import train
from semcorr_jax import workdir_lock
from semcorr_jax.cli import evaluate as evaluate_cli
from semcorr_jax.cli import match as match_cli
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import evaluators

from helpers import gcs_emulator

BUCKET = 'test-bucket'
RUN = f'gs://{BUCKET}/run'


@pytest.fixture(scope='module')
def emulator(tmp_path_factory):
  """The emulator with an empty bucket; TensorBoard files in a local folder;
  the working directory a fresh folder (a stray local `gs:` folder, made by
  a path handled with `os`, would show there)."""
  local = tmp_path_factory.mktemp('remote')
  cwd = os.getcwd()
  os.chdir(local)
  try:
    with gcs_emulator.gcs_emulator(BUCKET) as url, \
        gcs_emulator.tf_gcs_to_local(str(local / 'tf_gcs')) as tf_asked:
      yield {'url': url, 'local': local, 'tf_asked': tf_asked}
  finally:
    os.chdir(cwd)


def objects(prefix: str) -> set[str]:
  """Every object under `prefix` (relative names), listed through gcsfs."""
  root = prefix[len('gs://'):].rstrip('/') + '/'
  return {name[len(root):] for name in fsspec.filesystem('gs').find(root)}


def copy_down(prefix: str, target) -> None:
  """Copies every object under `prefix` into the local folder `target`."""
  for name in objects(prefix):
    local = target / name
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(epath.Path(f'{prefix}/{name}').read_bytes())


def jsonl(path: str) -> list[dict]:
  return [json.loads(l) for l in epath.Path(path).read_text().splitlines()]


def _config(load_config, steps: int):
  """The SFNet test config, a checkpoint every step, the synthetic
  evaluator selecting the best model (into `best/`)."""
  return load_config(**{'num_train_steps': steps, 'checkpoint_every': 1,
                        'log_every': 1, 'evals.synthetic.every': 2,
                        'evals.synthetic.select': 'pck@0.1',
                        'evals.synthetic.untrained_baseline': False})


def test_train_resume_evaluate_load_match_in_a_bucket(emulator, load_config,
                                                      tmp_path):
  first = train.train_and_evaluate(_config(load_config, 1), RUN)
  assert first['step'] == 1
  written = objects(RUN)
  for name in ('config.json', 'checkpoints/1/commit_success.txt',
               'checkpoints/1/meta/metadata', 'best/1/commit_success.txt',
               'metrics.jsonl', 'eval/synthetic.json', 'eval/synthetic.md',
               'eval/synthetic_pairs.png',
               'eval/model_selection.json', 'eval/pairs/pair_000_source.png'):
    assert name in written, sorted(written)
  assert '.lock' not in written  # released
  assert not [n for n in written if n.endswith('.tmp')]
  assert not os.path.exists(emulator['local'] / 'gs:')
  assert emulator['tf_asked'][0] == f'{RUN}/tensorboard'

  # A second run with more steps resumes from the saved step.
  config = _config(load_config, 2)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    second = train.train_and_evaluate(config, RUN)
  assert second['step'] == 2
  assert f'Resumed from step 1 in {RUN}/checkpoints' in out.getvalue()
  records = jsonl(f'{RUN}/metrics.jsonl')
  assert [r['step'] for r in records if r['split'] == 'train'] == [1, 2]
  assert {'checkpoints/2/commit_success.txt'} <= objects(RUN)
  meta = json.loads(epath.Path(f'{RUN}/checkpoints/2/meta/metadata')
                    .read_text())
  assert meta['data_index'] == 2 * config.batch_size

  # semcorr-eval scores the checkpoint read back from the bucket: the same
  # numbers as the trainer's final evaluation of its live state.
  trained = second['evals']['synthetic']['trained']
  doc = evaluate_cli.evaluate(
      RUN, lambda config, flows: evaluators.build(config, flows))['synthetic']
  assert doc['step'] == 2
  for key in ('pck@0.05', 'pck@0.1', 'epe'):
    np.testing.assert_allclose(doc['trained'][key], trained[key], rtol=1e-5)
  on_disk = json.loads(epath.Path(f'{RUN}/eval/synthetic.json').read_text())
  assert on_disk['trained']['pck@0.1'] == pytest.approx(trained['pck@0.1'])

  # Loaded from the bucket = loaded from a local copy of it.
  copy_down(RUN, tmp_path / 'copy')
  remote, local = api.load(RUN), api.load(str(tmp_path / 'copy'))
  assert remote.step == local.step == 2
  for a, b in zip(jax.tree.leaves(remote.variables),
                  jax.tree.leaves(local.variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  # semcorr-match reads the bucket's run and writes into the bucket.
  pair = {}
  for side in ('source', 'target'):
    pair[side] = tmp_path / f'{side}.png'
    pair[side].write_bytes(epath.Path(
        f'{RUN}/eval/pairs/pair_000_{side}.png').read_bytes())
  written = match_cli.match_files(RUN, str(pair['source']),
                                  str(pair['target']),
                                  f'gs://{BUCKET}/out/match.png')
  assert written['npy'] == f'gs://{BUCKET}/out/match_mapping.npy'
  mapping = np.load(io.BytesIO(epath.Path(written['npy']).read_bytes()))
  expected = local.match(np.asarray(Image.open(pair['source'])),
                         np.asarray(Image.open(pair['target'])))
  np.testing.assert_allclose(mapping, expected['mapping_st'], atol=1e-4)
  assert epath.Path(written['png']).read_bytes()[:4] == b'\x89PNG'


def test_output_checks_on_a_bucket(emulator):
  del emulator
  with pytest.raises(SemcorrError, match='bucket gs://no-such-bucket does not'):
    output_paths.check_writable_dir('gs://no-such-bucket/run')
  epath.Path(f'gs://{BUCKET}/checks/a_file').write_text('x')
  with pytest.raises(SemcorrError, match='is a file, not a folder'):
    output_paths.check_writable_dir(f'gs://{BUCKET}/checks/a_file')
  with pytest.raises(SemcorrError, match='is a folder'):
    output_paths.check_writable_output(f'gs://{BUCKET}/checks', '--output')
  assert (output_paths.check_writable_dir(f'gs://{BUCKET}/checks/new/')
          == f'gs://{BUCKET}/checks/new')


def test_atomic_write_to_a_bucket_is_whole_or_nothing(emulator):
  del emulator
  path = f'gs://{BUCKET}/atomic/result.json'
  with output_paths.atomic_write(path, 'w') as f:
    f.write('{"old": 1}')
  with pytest.raises(RuntimeError):
    with output_paths.atomic_write(path, 'w') as f:
      f.write('{"new": ')
      raise RuntimeError('failed half-way')
  assert epath.Path(path).read_text() == '{"old": 1}'
  assert objects(f'gs://{BUCKET}/atomic') == {'result.json'}
  output_paths.append_text(path, '\n2')
  assert epath.Path(path).read_text() == '{"old": 1}\n2'


def test_lock_record_in_a_bucket(emulator):
  del emulator
  workdir = f'gs://{BUCKET}/locked'
  epath.Path(f'{workdir}/.lock').write_text(json.dumps(
      {'pid': 4242, 'host': 'other-host', 'started': 0}))
  messages = io.StringIO()
  lock = workdir_lock.WorkdirLock(workdir, stream=messages).acquire()
  assert 'pid 4242 on host other-host' in messages.getvalue()
  assert lock.stale['pid'] == 4242
  assert json.loads(epath.Path(f'{workdir}/.lock').read_text())['pid'] == (
      os.getpid())
  lock.release()
  assert not epath.Path(f'{workdir}/.lock').exists()
  # A record another run wrote meanwhile is left alone.
  lock = workdir_lock.WorkdirLock(workdir, stream=io.StringIO()).acquire()
  epath.Path(f'{workdir}/.lock').write_text('{"pid": 1, "host": "h"}')
  lock.release()
  assert epath.Path(f'{workdir}/.lock').exists()
