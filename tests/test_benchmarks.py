"""benchmarks/sfnet_throughput.py on the `test` config: every field is there."""

import importlib.util
import json
import math
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'benchmarks' / 'sfnet_throughput.py'


@pytest.fixture(scope='module')
def bench():
  spec = importlib.util.spec_from_file_location('sfnet_throughput', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


POSITIVE = ('device_count', 'batch_size', 'train_pairs_per_s', 'train_step_s',
            'train_step_s_min', 'train_step_s_max', 'predict_ms_per_pair_b1',
            'predict_ms_per_pair_bB', 'train_compile_s',
            'predict_compile_s_b1', 'predict_compile_s_bB',
            'train_flops_per_step', 'predict_flops_per_pair',
            'train_flops_per_s', 'predict_flops_per_s', 'peak_memory_bytes',
            'train_executable_bytes')


@pytest.mark.timeout(120)
def test_test_config_record(bench):
  # peak_tflops: CPUs have no known peak (null utilisation); 1 TFLOP/s makes
  # the utilisation fields computable here.
  record = bench.run_one('test', 'float32', batch_size=1, steps=2, warmup=1,
                         peak_tflops=1.0)
  json.dumps(record, allow_nan=False)  # strict JSON
  assert record['config'] == 'test'
  assert record['method'] == 'sfnet'
  assert record['dtype'] == 'float32'
  assert record['image_size'] == [64, 64]
  assert record['batch_size'] == record['device_count']  # rounded up
  for key in POSITIVE:
    value = record[key]
    assert isinstance(value, (int, float)), key
    assert math.isfinite(value) and value > 0, (key, value)
  assert math.isfinite(record['train_loss'])
  assert record['flops_source'] in ('lowered_hlo', 'lowered_hlo_cpu')
  assert record['peak_flops_per_s_per_device'] == 1e12
  assert 0 < record['train_flop_utilization'] < 1
  assert 0 < record['predict_flop_utilization'] < 1
  assert record['peak_memory_source'] in ('device_peak_bytes_in_use',
                                          'process_peak_rss')
  # One step does more work than one inference pair.
  assert record['train_flops_per_step'] > record['predict_flops_per_pair']


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
