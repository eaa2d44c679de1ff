r"""SFNet throughput: train pairs/s, inference ms/pair, compile time, FLOPs.

  .venv/bin/python benchmarks/sfnet_throughput.py --configs=paper,quick \
      --dtype=float32,bfloat16 [--batch_size=16] [--steps=20] [--warmup=3] \
      [--with_data] [--output=results.jsonl]

Prints one JSON line per (config, dtype); benchmarks/README.md explains every
field. The model step runs on random arrays in the pipeline's batch format
(no tf.data), data-parallel over all devices with the trainer's state
creation (`train.create_state`), shardings and donation, so the figures
measure the step alone; `--with_data` times the tf.data pipeline on its own.
Inference runs the jitted `method.predict` on one device, like
`semcorr_jax.load(...).match`.

With several runs each one goes to its own subprocess (`--isolate`, the
default), so the peak-memory figure of one run never includes another's.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np

from semcorr_jax import checkpointing
from semcorr_jax import methods
from semcorr_jax import parallel
from semcorr_jax import train
from semcorr_jax.models import backbones

# TensorFlow (only for --with_data) is imported later: keep its logs quiet.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

DEFAULT_CONFIG_FILE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs',
    'sfnet.py')
# Global batch of the `paper` config on a CPU unless --batch_size is given:
# the paper's 16 takes minutes per step on a 2-core CPU.
CPU_PAPER_BATCH_SIZE = 2

# Dense (no sparsity) peak FLOP/s of ONE device per compute dtype, from the
# vendors' datasheets. Keys are lower-case substrings of `device.device_kind`,
# tried in order. float32 on NVIDIA GPUs is the TF32 tensor-core peak: XLA's
# default precision runs float32 convolutions and matmuls in TF32 on Ampere
# and later (with jax_default_matmul_precision='highest' the real ceiling is
# the CUDA-core peak, e.g. 67 TFLOP/s on an H100 SXM, and utilisation reads
# low). TPUs: bf16 only. CPUs: unknown -> null. design.md quotes ~790 TFLOP/s
# for H100 bf16, the rate an 8192^3 bf16 matmul reaches on our machines; pass
# --peak_tflops=790 to measure against that instead.
PEAK_FLOPS = (
    ('h100 pcie', {'bfloat16': 756e12, 'float32': 378e12}),   # H100 PCIe
    ('h100', {'bfloat16': 989.4e12, 'float32': 494.7e12}),    # H100 SXM5
    ('h200', {'bfloat16': 989.4e12, 'float32': 494.7e12}),    # H200 SXM
    ('a100', {'bfloat16': 312e12, 'float32': 156e12}),        # A100
    ('tpu v4', {'bfloat16': 275e12}),
    ('tpu v5 lite', {'bfloat16': 197e12}),                    # v5e
    ('tpu v5', {'bfloat16': 459e12}),                         # v5p
    ('tpu v6 lite', {'bfloat16': 918e12}),                    # v6e (Trillium)
)

_CONFIGS = flags.DEFINE_list('configs', ['paper', 'quick'],
                             'Variants of configs/sfnet.py to time.')
_DTYPES = flags.DEFINE_list('dtype', ['float32'],
                            'Compute dtypes (config.model.dtype): float32, '
                            'bfloat16.')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', None, 'Global batch size; default: the config\'s (paper on '
    f'a CPU: {CPU_PAPER_BATCH_SIZE}), rounded up to a multiple of the '
    'device count.')
_STEPS = flags.DEFINE_integer('steps', 10, 'Timed train steps (and predict '
                              'calls per batch size).')
_WARMUP = flags.DEFINE_integer('warmup', 2, 'Untimed calls after compiling.')
_WITH_DATA = flags.DEFINE_bool('with_data', False,
                               'Also time the tf.data pair pipeline alone.')
_DATA_SOURCE = flags.DEFINE_string(
    'data_source', None, 'Override config.data.source for --with_data '
    '(e.g. embedded when VOC 2012 is not at hand).')
_PEAK_TFLOPS = flags.DEFINE_float(
    'peak_tflops', None, 'Peak TFLOP/s of one device for the utilisation '
    'figures; default: the table in this file.')
_NUM_DEVICES = flags.DEFINE_integer(
    'num_devices', None, 'Use the first n devices; default: all (trainer).')
_CONFIG_FILE = flags.DEFINE_string('config_file', DEFAULT_CONFIG_FILE,
                                   'The config file with get_config(variant).')
_OUTPUT = flags.DEFINE_string('output', None,
                              'Also append the JSON lines to this file.')
_ISOLATE = flags.DEFINE_bool('isolate', True,
                             'Run each (config, dtype) in its own process.')


# --- helpers ---------------------------------------------------------------
def load_config(variant: str, config_file: str = DEFAULT_CONFIG_FILE
                ) -> ml_collections.ConfigDict:
  """`get_config(variant)` of `config_file`."""
  spec = importlib.util.spec_from_file_location('_benchmark_config',
                                                config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def random_batch(config: ml_collections.ConfigDict, batch_size: int,
                 seed: int = 0) -> dict[str, np.ndarray]:
  """`checkpointing.dummy_batch` filled with plausible random values."""
  rng = np.random.default_rng(seed)
  batch = checkpointing.dummy_batch(config, batch_size)
  h, w = config.data.image_size
  gx, gy = np.meshgrid(np.arange(w), np.arange(h), indexing='xy')
  grid = np.stack([gx, gy], -1).astype(np.float32)
  for key, value in batch.items():
    if key.endswith('_image'):
      batch[key] = rng.random(value.shape, np.float32)
    elif key.endswith('_mask'):
      batch[key] = (rng.random(value.shape) < 0.7).astype(np.float32)
    elif key.startswith('mapping_'):
      batch[key] = grid + rng.normal(0, 2, value.shape).astype(np.float32)
    elif key.startswith('valid_'):
      batch[key] = np.ones_like(value)
    elif key == 'index':
      batch[key] = np.arange(batch_size, dtype=value.dtype)
  return batch


def xla_flops(stage: Any) -> float | None:
  """FLOPs from XLA's cost analysis of a `Lowered` or `Compiled`, or None.

  `cost_analysis()` returns a dict (newer jax) or a list of per-module dicts
  (older jax); module FLOPs are summed.
  """
  try:
    analysis = stage.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if not analysis:
    return None
  if isinstance(analysis, dict):
    analysis = [analysis]
  flops = sum(float(a.get('flops', 0.0)) for a in analysis if a)
  return flops if flops > 0 and math.isfinite(flops) else None


def program_flops(fn: Callable[..., Any], args: Sequence[Any], lowered: Any,
                  compiled: Any, num_devices: int
                  ) -> tuple[float | None, str | None]:
  """(FLOPs of the whole program `fn(*args)`, which HLO they come from).

  Unoptimised HLO comes first: it is the global (unpartitioned) program and
  its convolutions and dots are still HLO ops. After GPU compilation they are
  cuDNN / cuBLAS custom calls that the compiled executable's cost analysis
  does not count (SFNet paper step on an H100: 26 GFLOP instead of 5 TFLOP).
  PJRT plugins (jax's CUDA plugin) may not analyse unoptimised HLO; then the
  same program lowered for the CPU is counted. The compiled fallback is one
  device's share of a data-parallel program, hence `* num_devices`.
  """
  flops = xla_flops(lowered)
  if flops is not None:
    return flops, 'lowered_hlo'
  try:
    cpu = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
    shapes = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu),
        tuple(args))
    flops = xla_flops(jax.jit(fn).lower(*shapes))
  except Exception:  # pylint: disable=broad-except
    flops = None
  if flops is not None:
    return flops, 'lowered_hlo_cpu'
  flops = xla_flops(compiled)
  if flops is not None:
    return flops * num_devices, 'compiled_hlo'
  return None, None


def executable_bytes(compiled: Any) -> int | None:
  """Arguments + outputs + temporaries - donated aliases of one device."""
  try:
    m = compiled.memory_analysis()
    total = (m.argument_size_in_bytes + m.output_size_in_bytes +
             m.temp_size_in_bytes - m.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None
  return int(total) if total > 0 else None


def peak_flops(device_kind: str, dtype: str) -> float | None:
  """Datasheet peak FLOP/s of one device for `dtype`, or None if unknown."""
  kind = device_kind.lower()
  for key, peaks in PEAK_FLOPS:
    if key in kind:
      return peaks.get(dtype)
  return None


def peak_memory(devices: Sequence[jax.Device]) -> tuple[int, str]:
  """(bytes, source): the largest device peak, else the process peak RSS."""
  peaks = []
  for d in devices:
    try:
      stats = d.memory_stats()
    except Exception:  # pylint: disable=broad-except
      stats = None
    if stats and 'peak_bytes_in_use' in stats:
      peaks.append(int(stats['peak_bytes_in_use']))
  if peaks:
    return max(peaks), 'device_peak_bytes_in_use'
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  # Linux reports KiB, macOS bytes.
  return int(rss if sys.platform == 'darwin' else rss * 1024), \
      'process_peak_rss'


def _timed_compile(jitted: Callable[..., Any], *args
                   ) -> tuple[Any, Any, float]:
  """(lowered, compiled, seconds of trace + lower + XLA compile)."""
  start = time.perf_counter()
  lowered = jitted.lower(*args)
  compiled = lowered.compile()
  return lowered, compiled, time.perf_counter() - start


def _wall_times(call: Callable[[], Any], steps: int, warmup: int
                    ) -> list[float]:
  """Per-call wall times (with block_until_ready) after `warmup` calls."""
  for _ in range(warmup):
    jax.block_until_ready(call())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(call())
    times.append(time.perf_counter() - start)
  return times


def _ratio(num: float | None, den: float | None) -> float | None:
  if num is None or not den:
    return None
  return num / den


# --- the benchmark ---------------------------------------------------------
def benchmark(config: ml_collections.ConfigDict, name: str,
              batch_size: int | None = None, steps: int = 10,
              warmup: int = 2, with_data: bool = False,
              data_source: str | None = None,
              peak_tflops: float | None = None,
              num_devices: int | None = None) -> dict[str, Any]:
  """Times one config; returns the JSON-ready record (README.md: fields).

  Args:
    config: a config of configs/sfnet.py (its `model.dtype` is the dtype).
    name: the config's name in the record.
    batch_size: global batch; None = the config's (CPU paper: 2). Rounded up
      to a multiple of the device count.
    steps: timed train steps, and timed predict calls per batch size.
    warmup: untimed calls after compiling.
    with_data: also time `pipeline.make_pair_dataset` alone.
    data_source: override `config.data.source` for `with_data`.
    peak_tflops: peak of one device; None = `PEAK_FLOPS`.
    num_devices: use the first n devices; None = all, like the trainer.
  """
  devices = jax.devices()[:num_devices]
  backend = jax.default_backend()
  mesh = parallel.make_mesh(devices)
  n_dev = mesh.devices.size
  if batch_size is None:
    batch_size = config.batch_size
    if backend == 'cpu' and name == 'paper':
      batch_size = CPU_PAPER_BATCH_SIZE
  batch_size = -(-int(batch_size) // n_dev) * n_dev
  dtype = str(config.model.dtype)
  method = methods.get(config.method)(config, total_steps=1000)

  # Train step: the trainer's state, shardings and donation.
  state, abstract = train.create_state(method, config, mesh,
                                       jax.random.key(config.seed))
  state_shardings = jax.tree.map(lambda s: s.sharding, abstract)
  step_fn = jax.jit(
      method.train_step,
      in_shardings=(state_shardings, parallel.data_sharded(mesh),
                    parallel.replicated(mesh)),
      out_shardings=(state_shardings, parallel.replicated(mesh)),
      donate_argnums=0)
  host_batch = random_batch(config, batch_size, config.seed)
  # Each host feeds its slice of the global batch, as in the trainer.
  per_host = batch_size // jax.process_count()
  first = jax.process_index() * per_host
  batch = parallel.host_to_global(
      {k: v[first:first + per_host] for k, v in host_batch.items()}, mesh)
  rng = jax.device_put(jax.random.key(1), parallel.replicated(mesh))
  train_lowered, train_compiled, train_compile_s = _timed_compile(
      step_fn, state, batch, rng)
  train_flops, flops_source = program_flops(
      method.train_step, (state, batch, rng), train_lowered, train_compiled,
      n_dev)

  holder = {'state': state}

  def run_step():
    holder['state'], metrics = train_compiled(holder['state'], batch, rng)
    return holder['state'], metrics

  train_times = _wall_times(run_step, steps, warmup)
  _, metrics = run_step()
  loss = float(jax.device_get(metrics['loss']))
  step_s = statistics.median(train_times)

  # Inference: jitted predict on one device, batch 1 and batch B.
  device = devices[0]
  variables = jax.device_put(method.inference_variables(holder['state']),
                             device)
  predict_fn = jax.jit(method.predict)
  predict = {}
  for b in sorted({1, batch_size}):
    src = jax.device_put(host_batch['source_image'][:b], device)
    tgt = jax.device_put(host_batch['target_image'][:b], device)
    lowered, compiled, compile_s = _timed_compile(predict_fn, variables, src,
                                                  tgt)
    times = _wall_times(lambda c=compiled, s=src, t=tgt: c(variables, s, t),
                       steps, warmup)
    predict[b] = {'compile_s': compile_s,
                  'flops': program_flops(method.predict, (variables, src, tgt),
                                         lowered, compiled, 1)[0],
                  'seconds': statistics.median(times)}
  p1, pb = predict[1], predict[batch_size]

  kind = devices[0].device_kind
  peak = peak_tflops * 1e12 if peak_tflops else peak_flops(kind, dtype)
  train_flops_per_s = _ratio(train_flops, step_s)
  predict_flops_per_s = _ratio(pb['flops'], pb['seconds'])
  memory, memory_source = peak_memory(devices)
  record = {
      'config': name,
      'method': config.method,
      'backend': backend,
      'device_kind': kind,
      'device_count': n_dev,
      'dtype': dtype,
      'backbone': backbones.BackboneSpec.from_config(
          backbones.backbone_config(config)).describe(),
      'image_size': [int(s) for s in config.data.image_size],
      'batch_size': batch_size,
      'steps': steps,
      'warmup': warmup,
      'train_pairs_per_s': batch_size / step_s,
      'train_step_s': step_s,
      'train_step_s_min': min(train_times),
      'train_step_s_max': max(train_times),
      'train_loss': loss,
      'predict_ms_per_pair_b1': 1e3 * p1['seconds'],
      'predict_ms_per_pair_bB': 1e3 * pb['seconds'] / batch_size,
      'train_compile_s': train_compile_s,
      'predict_compile_s_b1': p1['compile_s'],
      'predict_compile_s_bB': pb['compile_s'],
      'train_flops_per_step': train_flops,
      'flops_source': flops_source,
      'predict_flops_per_pair': _ratio(p1['flops'], 1),
      'train_flops_per_s': train_flops_per_s,
      'predict_flops_per_s': predict_flops_per_s,
      'peak_flops_per_s_per_device': peak,
      'train_flop_utilization': _ratio(train_flops_per_s,
                                       peak and peak * n_dev),
      'predict_flop_utilization': _ratio(predict_flops_per_s, peak),
      'peak_memory_bytes': memory,
      'peak_memory_source': memory_source,
      'train_executable_bytes': executable_bytes(train_compiled),
      'jax_version': jax.__version__,
  }
  if with_data:
    record.update(data_throughput(config, batch_size, steps, warmup,
                                  data_source))
  return record


def data_throughput(config: ml_collections.ConfigDict, batch_size: int,
                    steps: int, warmup: int, source: str | None = None
                    ) -> dict[str, Any]:
  """Pairs/s of the tf.data train pipeline alone (numpy batches on the host)."""
  # Imported lazily: TensorFlow is only needed here.
  from semcorr_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  data_config = ml_collections.ConfigDict(config.data.to_dict())
  if source:
    data_config.source = source
  out = {'data_source': data_config.source}
  try:
    batches = pipeline.make_pair_dataset(
        data_config, 'train', batch_size=batch_size, seed=config.seed
    ).as_numpy_iterator()
    for _ in range(warmup):
      next(batches)
    start = time.perf_counter()
    for _ in range(steps):
      next(batches)
    out['data_pairs_per_s'] = steps * batch_size / (time.perf_counter() -
                                                    start)
  except Exception as e:  # pylint: disable=broad-except
    # E.g. VOC 2012 not at hand: report it, keep the model figures.
    out['data_pairs_per_s'] = None
    out['data_error'] = f'{type(e).__name__}: {" ".join(str(e).split())}'
  return out


def run_one(name: str, dtype: str, batch_size: int | None = None,
            steps: int = 10, warmup: int = 2, with_data: bool = False,
            data_source: str | None = None, peak_tflops: float | None = None,
            num_devices: int | None = None,
            config_file: str = DEFAULT_CONFIG_FILE) -> dict[str, Any]:
  """Loads `name` of `config_file` with `model.dtype = dtype` and times it."""
  config = load_config(name, config_file)
  config.model.dtype = dtype
  return benchmark(config, name, batch_size=batch_size, steps=steps,
                   warmup=warmup, with_data=with_data, data_source=data_source,
                   peak_tflops=peak_tflops, num_devices=num_devices)


def _emit(record: dict[str, Any], output: str | None) -> None:
  line = json.dumps(record, sort_keys=False)
  print(line, flush=True)
  if output:
    with open(output, 'a') as f:
      f.write(line + '\n')


def _child_argv(name: str, dtype: str) -> list[str]:
  """The command line of one isolated run (same flags, one config/dtype)."""
  argv = [sys.executable, os.path.abspath(__file__), f'--configs={name}',
          f'--dtype={dtype}', f'--steps={_STEPS.value}',
          f'--warmup={_WARMUP.value}', f'--config_file={_CONFIG_FILE.value}',
          '--noisolate', f'--with_data={_WITH_DATA.value}']
  for flag, value in (('batch_size', _BATCH_SIZE.value),
                      ('data_source', _DATA_SOURCE.value),
                      ('peak_tflops', _PEAK_TFLOPS.value),
                      ('num_devices', _NUM_DEVICES.value),
                      ('output', _OUTPUT.value)):
    if value is not None:
      argv.append(f'--{flag}={value}')
  return argv


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  runs = [(c, d) for c in _CONFIGS.value for d in _DTYPES.value]
  for dtype in _DTYPES.value:
    if dtype not in ('float32', 'bfloat16'):
      raise app.UsageError(f'--dtype: float32 or bfloat16, not {dtype!r}')
  if _ISOLATE.value and len(runs) > 1:
    failed = 0
    for name, dtype in runs:
      failed += subprocess.call(_child_argv(name, dtype)) != 0
    sys.exit(1 if failed else 0)
  for name, dtype in runs:
    _emit(run_one(name, dtype, batch_size=_BATCH_SIZE.value,
                  steps=_STEPS.value, warmup=_WARMUP.value,
                  with_data=_WITH_DATA.value, data_source=_DATA_SOURCE.value,
                  peak_tflops=_PEAK_TFLOPS.value,
                  num_devices=_NUM_DEVICES.value,
                  config_file=_CONFIG_FILE.value), _OUTPUT.value)


if __name__ == '__main__':
  app.run(main)
