"""benchmarks/throughput.py on the `test` configs: every field is there.

SFNet on all (simulated) devices; CAMNet with the GAN on one device at batch
1 (one predict program): its full step, then the parts it declares
(`step_parts`: G and D) alone.
"""

import importlib
import json
import math
import pathlib
import sys

import pytest
from helpers import paths

REPO = paths.REPO
BENCHMARKS = REPO / 'benchmarks'


@pytest.fixture(scope='module')
def bench():
  # Imported by name (not by file spec) so that the alias
  # sfnet_throughput.py, which imports `throughput`, shares this module and
  # its absl flags.
  sys.path.insert(0, str(BENCHMARKS))
  try:
    yield importlib.import_module('throughput')
  finally:
    sys.path.remove(str(BENCHMARKS))


POSITIVE = ('device_count', 'batch_size', 'train_pairs_per_s', 'train_step_s',
            'train_step_s_min', 'train_step_s_max', 'predict_ms_per_pair_b1',
            'predict_ms_per_pair_bB', 'train_compile_s',
            'predict_compile_s_b1', 'predict_compile_s_bB',
            'train_flops_per_step', 'predict_flops_per_pair',
            'train_flops_per_s', 'predict_flops_per_s', 'peak_memory_bytes',
            'train_executable_bytes')
PART_POSITIVE = ('repeats', 'step_s', 'compile_s', 'flops_per_step',
                 'time_fraction')


def _check_common(record):
  json.dumps(record, allow_nan=False)  # strict JSON
  assert record['dtype'] == 'float32'
  assert record['image_size'] == [64, 64]
  for key in POSITIVE:
    value = record[key]
    assert isinstance(value, (int, float)), key
    assert math.isfinite(value) and value > 0, (key, value)
  assert math.isfinite(record['train_loss'])
  assert record['flops_source'] in ('lowered_hlo', 'lowered_hlo_cpu')
  assert record['peak_memory_source'] in ('device_peak_bytes_in_use',
                                          'process_peak_rss')
  # One step does more work than one inference pair.
  assert record['train_flops_per_step'] > record['predict_flops_per_pair']


@pytest.mark.timeout(120)
def test_test_config_record(bench):
  # peak_tflops: CPUs have no known peak (null utilisation); 1 TFLOP/s makes
  # the utilisation fields computable here.
  # One timed call, no warm-up: a batch-8 step on 8 simulated devices takes
  # seconds on a 2-core CPU.
  record = bench.run_one('sfnet:test', 'float32', batch_size=1, steps=1,
                         warmup=0, peak_tflops=1.0)
  _check_common(record)
  assert record['config'] == 'test'
  assert record['config_file'] == 'configs/sfnet.py'
  assert record['method'] == 'sfnet'
  assert record['flows'] == ['final']
  assert record['batch_size'] == record['device_count']  # rounded up
  assert record['peak_flops_per_s_per_device'] == 1e12
  assert 0 < record['train_flop_utilization'] < 1
  assert 0 < record['predict_flop_utilization'] < 1
  assert record['step_parts'] is None  # the method declares none


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_camnet_step_parts_record(bench):
  config_file, variant = bench.resolve_spec('configs/camnet.py:test')
  record = bench.run_one(variant, 'float32', batch_size=1, steps=1,
                         warmup=0, num_devices=1, config_file=config_file)
  _check_common(record)
  assert record['config'] == 'test'
  assert record['config_file'] == 'configs/camnet.py'
  assert record['method'] == 'camnet'
  assert record['flows'] == ['final', 'base', 'update']
  assert record['batch_size'] == record['device_count'] == 1
  parts = record['step_parts']
  assert list(parts) == ['generator', 'discriminator']  # CAMNet's order
  for name, part in parts.items():
    assert set(part) == set(PART_POSITIVE), name
    for key in PART_POSITIVE:
      value = part[key]
      assert isinstance(value, (int, float)), (name, key)
      assert math.isfinite(value) and value > 0, (name, key, value)
  assert [p['repeats'] for p in parts.values()] == [1, 1]  # gan.disc_steps
  assert sum(p['time_fraction'] for p in parts.values()) == pytest.approx(1)
  # G's step runs D forward and backward too (L_adv); the full step is G
  # plus one D update.
  g = parts['generator']['flops_per_step']
  d = parts['discriminator']['flops_per_step']
  assert g > d
  assert record['train_flops_per_step'] == pytest.approx(g + d, rel=0.05)


def test_declared_step_parts(bench):
  class NoParts:
    pass

  class Parts:
    step_parts = (('a', lambda state, inputs: (state, {}), 1),
                  ('b', lambda state, inputs: (state, {}), 3))

  class BadParts:
    step_parts = (('a', lambda state, inputs: (state, {}), 0),)

  assert bench.declared_step_parts(NoParts()) == ()
  assert [(n, k) for n, _, k in bench.declared_step_parts(Parts())] == [
      ('a', 1), ('b', 3)]
  with pytest.raises(ValueError, match='repeats >= 1'):
    bench.declared_step_parts(BadParts())


def test_config_specs(bench):
  sfnet = str(REPO / 'configs' / 'sfnet.py')
  camnet = str(REPO / 'configs' / 'camnet.py')
  # Bare variants are of --config_file.
  assert bench.config_specs(['paper', 'quick'], [], False, sfnet) == [
      (sfnet, 'paper'), (sfnet, 'quick')]
  # --config alone replaces the --configs default; commas stay in variants.
  assert bench.config_specs(
      ['paper', 'quick'],
      ['configs/camnet.py:quick', 'camnet:quick,confidence'], False,
      sfnet) == [(camnet, 'quick'), (camnet, 'quick,confidence')]
  # Both when --configs is given; FILE:VARIANT and names in configs/ there.
  assert bench.config_specs(['sfnet:quick', 'camnet:paper'],
                            ['camnet.py:test'], True) == [
                                (sfnet, 'quick'), (camnet, 'paper'),
                                (camnet, 'test')]
  assert bench.config_specs(['quick'], [], True, camnet) == [
      (camnet, 'quick')]
  # The script names no method: a bare variant needs its file.
  with pytest.raises(Exception, match='name its config file'):
    bench.config_specs(['quick'], [], True)
  with pytest.raises(Exception, match='nothing to time'):
    bench.config_specs([], [], False)
  with pytest.raises(Exception, match='FILE:VARIANT'):
    bench.config_specs([], ['configs/camnet.py'], False)
  with pytest.raises(Exception, match='not a file'):
    bench.resolve_spec('nosuch:quick')


def test_sfnet_throughput_alias(bench):
  sys.path.insert(0, str(BENCHMARKS))
  try:
    alias = importlib.import_module('sfnet_throughput')
  finally:
    sys.path.remove(str(BENCHMARKS))
  assert alias.run_one is bench.run_one
  assert alias.main is bench.main
  # Its old defaults: `paper` and `quick` of configs/sfnet.py.
  sfnet = str(REPO / 'configs' / 'sfnet.py')
  assert bench.config_specs(alias.CONFIGS, [], False, alias.CONFIG_FILE) == [
      (sfnet, 'paper'), (sfnet, 'quick')]


def test_xla_flops_dict_and_list(bench):
  class Fake:

    def __init__(self, analysis):
      self.analysis = analysis

    def cost_analysis(self):
      return self.analysis

  assert bench.xla_flops(Fake({'flops': 10.0})) == 10.0
  assert bench.xla_flops(Fake([{'flops': 4.0}, {'flops': 6.0}])) == 10.0
  assert bench.xla_flops(Fake(None)) is None
  assert bench.xla_flops(Fake([{}])) is None


def test_peak_table(bench):
  assert bench.peak_flops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989.4e12
  assert bench.peak_flops('NVIDIA H100 PCIe', 'bfloat16') == 756e12
  assert bench.peak_flops('TPU v5 lite', 'bfloat16') == 197e12
  assert bench.peak_flops('TPU v4', 'float32') is None
  assert bench.peak_flops('cpu', 'float32') is None  # -> null utilisation
