"""benchmarks/aggregators.py on tiny grids: every part, mode and JAX
implementation gives a record with its time and memory figures."""

import json
import os
import subprocess
import sys

from helpers import paths

SCRIPT = str(paths.REPO / 'benchmarks' / 'aggregators.py')


def test_every_jax_case_has_a_record(tmp_path):
  output = tmp_path / 'records.jsonl'
  cmd = [sys.executable, SCRIPT, '--sizes=4', '--batches=2', '--steps=1',
         '--warmup=0', '--impls=planes', f'--output={output}']
  # No reference folders: only the JAX side runs, with or without torch.
  done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert done.returncode == 0, done.stderr[-3000:]
  records = [json.loads(line) for line in output.read_text().splitlines()]
  assert done.stdout.splitlines() == output.read_text().splitlines()
  timed = [r for r in records if 'seconds' in r]
  expected = {(part, mode, 4, impl)
              for part, impl in (('conv4d', 'planes'), ('ncnet', 'planes'),
                                 ('cats', 'jax'))
              for mode in ('forward', 'train')}
  assert {(r['part'], r['mode'], r['size'], r['impl'])
          for r in timed} == expected
  for r in timed:
    assert r['seconds'] > 0 and r['xla_total_mb'] > 0, r
    assert r['gmac'] >= 0 and r['peak_rss_mb'] >= 0, r
  assert not [r for r in records if 'error' in r or 'skipped' in r]
