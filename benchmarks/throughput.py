r"""Train and inference throughput of any method (any `configs/*.py`).

  .venv/bin/python benchmarks/throughput.py --config=configs/sfnet.py:quick \
      --dtype=float32,bfloat16 [--batch_size=16] [--steps=20] [--warmup=3] \
      [--with_data] [--output=results.jsonl]
  .venv/bin/python benchmarks/throughput.py --configs=sfnet:paper,camnet:quick \
      --config=configs/camnet.py:quick,confidence --steps=5 --warmup=1

`--config=FILE:VARIANT` (repeatable; the variant may hold commas, e.g. a
Table-3 row) and `--configs` (comma-separated `FILE:VARIANT` entries, FILE a
path or a name in configs/, or bare variants of `--config_file`) name what
to time. Prints one JSON line per (config, dtype); benchmarks/README.md
explains every field. The model step runs on random arrays of the data
pipeline's batch spec (no tf.data), data-parallel over all devices with the
trainer's state creation (`starting_state.create_state`), shardings and
donation, so the figures measure the step alone; `--with_data` times the tf.data pipeline
on its own. Inference runs the jitted `method.predict` on one device, like
`semcorr_jax.load(...).match`.

A method may declare named parts of its train step (`step_parts`, e.g. a
generator and a discriminator update, see `declared_step_parts`); each is then
also jitted and timed alone (`--nostep_parts` skips that).

With several runs each one goes to its own subprocess (`--isolate`, the
default), so the peak-memory figure of one run never includes another's.
benchmarks/sfnet_throughput.py, the script's old name, is this script with
`--config_file=configs/sfnet.py --configs=paper,quick` as defaults.
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

# Before TensorFlow (tf.data, imported by the data pipeline) loads.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # noqa: E402  pylint: disable=g-import-not-at-top
from absl import flags  # noqa: E402  pylint: disable=g-import-not-at-top
import jax  # noqa: E402  pylint: disable=g-import-not-at-top
import ml_collections  # noqa: E402  pylint: disable=g-import-not-at-top
import numpy as np  # noqa: E402  pylint: disable=g-import-not-at-top

from semcorr_jax import methods  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax import parallel  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax import starting_state  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax import train  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax.data import pipeline  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax.models import backbones  # noqa: E402  pylint: disable=g-import-not-at-top

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_DIR, 'configs')
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

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the command-line flags. Called by `__main__` only, so that
  importing this module (tests, the alias) leaves absl's global flags to
  the semcorr CLIs, which define `--config`, `--output`, ... too."""
  flags.DEFINE_list(
      'configs', [],
      'FILE:VARIANT entries to time (FILE a path or a name in configs/: '
      '<method>:quick), or variants of --config_file. Its default (none '
      'here) runs only when no --config is given.')
  flags.DEFINE_multi_string(
      'config', [], 'FILE:VARIANT to time, repeatable; the variant may hold '
      'commas (configs/<method>.py:quick,<row>). Runs after --configs, '
      'which is then only used when given explicitly.')
  flags.DEFINE_list('dtype', ['float32'],
                    'Compute dtypes (config.model.dtype): float32, bfloat16.')
  flags.DEFINE_integer(
      'batch_size', None, 'Global batch size; default: the config\'s (paper '
      f'on a CPU: {CPU_PAPER_BATCH_SIZE}), rounded up to a multiple of the '
      'device count.')
  flags.DEFINE_integer('steps', 10, 'Timed train steps (and predict calls '
                       'per batch size).')
  flags.DEFINE_integer('warmup', 2, 'Untimed calls after compiling.')
  flags.DEFINE_bool('with_data', False,
                    'Also time the tf.data pair pipeline alone.')
  flags.DEFINE_string(
      'data_source', None, 'Override config.data.source for --with_data '
      '(e.g. embedded when VOC 2012 is not at hand).')
  flags.DEFINE_float(
      'peak_tflops', None, 'Peak TFLOP/s of one device for the utilisation '
      'figures; default: the table in this file.')
  flags.DEFINE_integer(
      'num_devices', None, 'Use the first n devices; default: all (trainer).')
  flags.DEFINE_string('config_file', None,
                      'The config file of bare --configs variants.')
  flags.DEFINE_string('output', None,
                      'Also append the JSON lines to this file.')
  flags.DEFINE_bool('isolate', True,
                    'Run each (config, dtype) in its own process.')
  flags.DEFINE_bool(
      'step_parts', True, 'Also time each named part of the train step '
      'that the method declares (`step_parts`) alone.')


# --- helpers ---------------------------------------------------------------
def resolve_config_file(name: str) -> str:
  """Absolute path of a config file given as a path or a name in configs/.

  'configs/<method>.py' (from the working directory or the repository
  root), '<method>.py' or '<method>' all name configs/<method>.py.
  """
  candidates = [name, os.path.join(REPO_DIR, name),
                os.path.join(CONFIG_DIR, name),
                os.path.join(CONFIG_DIR, name + '.py')]
  for path in candidates:
    if os.path.isfile(path):
      return os.path.abspath(path)
  raise app.UsageError(f'config file {name!r}: not a file, nor a name in '
                       f'{CONFIG_DIR}')


def resolve_spec(entry: str, config_file: str | None = None
                 ) -> tuple[str, str]:
  """(absolute config file, variant) of 'FILE:VARIANT' or 'VARIANT' (of
  `config_file`); the variant may carry a comma ('quick,<row>')."""
  file, sep, variant = entry.rpartition(':')
  if not sep:
    if not config_file:
      raise app.UsageError(
          f'{entry!r}: name its config file, FILE:VARIANT (e.g. '
          f'<method>:{entry}), or give --config_file')
    file, variant = config_file, entry
  if not variant:
    raise app.UsageError(f'{entry!r}: name a variant, FILE:VARIANT')
  return resolve_config_file(file), variant


def config_label(config_file: str) -> str:
  """`config_file` relative to the repository when inside it."""
  path = os.path.abspath(config_file)
  rel = os.path.relpath(path, REPO_DIR)
  return path if rel.startswith('..') else rel


def load_config(variant: str, config_file: str
                ) -> ml_collections.ConfigDict:
  """`get_config(variant)` of `config_file`."""
  spec = importlib.util.spec_from_file_location('_benchmark_config',
                                                config_file)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def random_batch(config: ml_collections.ConfigDict, batch_size: int,
                 seed: int = 0) -> dict[str, np.ndarray]:
  """`pipeline.dummy_batch` of the config's data, filled with plausible
  random values (by the batch format's key names, docs/architecture.md)."""
  rng = np.random.default_rng(seed)
  batch = pipeline.dummy_batch(config.data, batch_size)
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
    elif key.startswith('valid_') or key.endswith('_valid'):
      batch[key] = np.ones_like(value)
    elif key.endswith('_bbox'):
      batch[key] = np.broadcast_to(np.asarray([0, 0, w - 1, h - 1],
                                              value.dtype), value.shape).copy()
    elif key.endswith('_keypoints'):
      batch[key] = (rng.random(value.shape) * [w - 1, h - 1]).astype(
          value.dtype)
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


def declared_step_parts(method: methods.Method
                        ) -> tuple[tuple[str, Callable[..., Any], int], ...]:
  """The parts of `method.train_step` it declares, or () (the default).

  A method whose step runs several updates (e.g. a generator's, then k of a
  discriminator's) may declare `step_parts`: a sequence of
  `(name, fn, repeats)` that, run in order, make one train step.
  `fn(state, inputs)` returns `(state, metrics)` or `(state, metrics,
  outputs)`; the first part's inputs are the batch, each later part's the
  outputs of the part before (or its inputs, when it returns none);
  `repeats` is how many times the part runs per train step.
  """
  parts = tuple(getattr(method, 'step_parts', None) or ())
  for part in parts:
    if len(part) != 3 or not callable(part[1]) or int(part[2]) < 1:
      raise ValueError(f'{type(method).__name__}.step_parts: (name, fn, '
                       f'repeats >= 1) entries expected, got {part!r}')
  return parts


def time_step_parts(method: methods.Method, state: Any, batch: dict[str, Any],
                    state_shardings: Any, num_devices: int, steps: int,
                    warmup: int) -> tuple[dict[str, dict[str, Any]], Any]:
  """Times each declared step part (`declared_step_parts`) alone.

  Each part is jitted on its own with the train step's state shardings and
  donation (its other outputs keep the shardings XLA gives them), and timed
  on the outputs of the last call of the part before it.

  Returns:
    ({name: {'repeats', 'step_s', 'compile_s', 'flops_per_step',
    'time_fraction'}}, the final state). `time_fraction` = repeats x step_s
    over the sum of that product over the parts: the part's share of a step
    (the fused train step may take less than the parts apart).
  """
  holder = {'state': state}
  inputs = batch
  record = {}
  for name, fn, repeats in declared_step_parts(method):
    returns_outputs = len(jax.eval_shape(fn, holder['state'], inputs)) == 3
    out_shardings = (state_shardings, None) + ((None,) if returns_outputs
                                               else ())
    jitted = jax.jit(fn, in_shardings=(state_shardings, None),
                     out_shardings=out_shardings, donate_argnums=0)
    lowered, compiled, compile_s = _timed_compile(jitted, holder['state'],
                                                  inputs)
    flops, _ = program_flops(fn, (holder['state'], inputs), lowered,
                             compiled, num_devices)

    def run(compiled=compiled, inputs=inputs):
      out = compiled(holder['state'], inputs)
      holder['state'] = out[0]
      holder['outputs'] = out[2] if len(out) == 3 else inputs
      return out

    times = _wall_times(run, steps, warmup)
    inputs = holder.pop('outputs')
    record[name] = {'repeats': int(repeats),
                    'step_s': statistics.median(times),
                    'compile_s': compile_s, 'flops_per_step': flops}
  total = sum(p['repeats'] * p['step_s'] for p in record.values())
  for part in record.values():
    part['time_fraction'] = _ratio(part['repeats'] * part['step_s'], total)
  return record, holder['state']


# --- the benchmark ---------------------------------------------------------
def benchmark(config: ml_collections.ConfigDict, name: str,
              batch_size: int | None = None, steps: int = 10,
              warmup: int = 2, with_data: bool = False,
              data_source: str | None = None,
              peak_tflops: float | None = None,
              num_devices: int | None = None,
              config_file: str | None = None,
              with_step_parts: bool = True) -> dict[str, Any]:
  """Times one config; returns the JSON-ready record (README.md: fields).

  Args:
    config: a config of configs/*.py (its `model.dtype` is the dtype).
    name: the config's variant in the record ('quick', 'quick,<row>').
    batch_size: global batch; None = the config's (CPU paper: 2). Rounded up
      to a multiple of the device count.
    steps: timed train steps, and timed predict calls per batch size.
    warmup: untimed calls after compiling.
    with_data: also time `pipeline.make_pair_dataset` alone.
    data_source: override `config.data.source` for `with_data`.
    peak_tflops: peak of one device; None = `PEAK_FLOPS`.
    num_devices: use the first n devices; None = all, like the trainer.
    config_file: the file `config` came from, for the record.
    with_step_parts: also time each part of the train step the method
      declares alone (`time_step_parts`).
  """
  devices = jax.devices()[:num_devices]
  backend = jax.default_backend()
  mesh = parallel.make_mesh(devices)
  n_dev = mesh.devices.size
  if batch_size is None:
    batch_size = config.batch_size
    if backend == 'cpu' and name.partition(',')[0] == 'paper':
      batch_size = CPU_PAPER_BATCH_SIZE
  batch_size = -(-int(batch_size) // n_dev) * n_dev
  dtype = str(config.model.dtype)
  method = methods.get(config.method)(config, total_steps=1000)

  # Train step: the trainer's state, shardings and donation.
  state, abstract = starting_state.create_state(method, config, mesh,
                                       jax.random.key(config.seed))
  state_shardings = jax.tree.map(lambda s: s.sharding, abstract)
  step_fn = train.jit_train_step(method, mesh)
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
  # Read before the step parts compile more programs.
  memory, memory_source = peak_memory(devices)
  parts = None
  if with_step_parts and declared_step_parts(method):
    parts, holder['state'] = time_step_parts(
        method, holder['state'], batch, state_shardings, n_dev, steps, warmup)
  record = {
      'config': name,
      'config_file': config_label(config_file) if config_file else None,
      'method': config.method,
      'flows': [flow.name for flow in method.flows],
      'backend': backend,
      'device_kind': kind,
      'device_count': n_dev,
      'dtype': dtype,
      'backbone': (backbones.BackboneSpec.from_config(
          config.backbone).describe() if 'backbone' in config else None),
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
      'step_parts': parts,
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
            num_devices: int | None = None, config_file: str | None = None,
            with_step_parts: bool = True) -> dict[str, Any]:
  """Loads `name` ('FILE:VARIANT', or a variant of `config_file`) with
  `model.dtype = dtype` and times it (`benchmark`)."""
  config_file, variant = resolve_spec(name, config_file)
  config = load_config(variant, config_file)
  config.model.dtype = dtype
  return benchmark(config, variant, batch_size=batch_size, steps=steps,
                   warmup=warmup, with_data=with_data, data_source=data_source,
                   peak_tflops=peak_tflops, num_devices=num_devices,
                   config_file=config_file, with_step_parts=with_step_parts)


def _emit(record: dict[str, Any], output: str | None) -> None:
  line = json.dumps(record, sort_keys=False)
  print(line, flush=True)
  if output:
    with open(output, 'a') as f:
      f.write(line + '\n')


def _child_argv(config_file: str, name: str, dtype: str) -> list[str]:
  """The command line of one isolated run (same flags, one config/dtype)."""
  argv = [sys.executable, os.path.abspath(__file__),
          f'--config={config_file}:{name}', f'--dtype={dtype}',
          f'--steps={FLAGS.steps}', f'--warmup={FLAGS.warmup}',
          '--noisolate', f'--with_data={FLAGS.with_data}',
          f'--step_parts={FLAGS.step_parts}']
  for flag, value in (('batch_size', FLAGS.batch_size),
                      ('data_source', FLAGS.data_source),
                      ('peak_tflops', FLAGS.peak_tflops),
                      ('num_devices', FLAGS.num_devices),
                      ('output', FLAGS.output)):
    if value is not None:
      argv.append(f'--{flag}={value}')
  return argv


def config_specs(configs: Sequence[str], config: Sequence[str],
                 configs_given: bool, config_file: str | None = None
                 ) -> list[tuple[str, str]]:
  """(config file, variant) of every run: `--configs` (when given, or when
  there is no `--config`) then `--config`.

  Raises:
    app.UsageError: nothing to run, a `--config` without FILE, or a bare
      variant without `config_file`.
  """
  specs = []
  if configs_given or not config:
    specs += [resolve_spec(e, config_file) for e in configs]
  for entry in config:
    if ':' not in entry:
      raise app.UsageError(f'--config={entry}: FILE:VARIANT, e.g. '
                           f'configs/<method>.py:{entry}')
    specs.append(resolve_spec(entry, config_file))
  if not specs:
    raise app.UsageError('nothing to time: give --config=FILE:VARIANT '
                         '(e.g. configs/<method>.py:quick) or --configs')
  return specs


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for dtype in FLAGS.dtype:
    if dtype not in ('float32', 'bfloat16'):
      raise app.UsageError(f'--dtype: float32 or bfloat16, not {dtype!r}')
  specs = config_specs(FLAGS.configs, FLAGS.config,
                       FLAGS['configs'].present,
                       FLAGS.config_file and resolve_config_file(
                           FLAGS.config_file))
  runs = [(f, c, d) for f, c in specs for d in FLAGS.dtype]
  if FLAGS.isolate and len(runs) > 1:
    failed = 0
    for config_file, name, dtype in runs:
      failed += subprocess.call(_child_argv(config_file, name, dtype)) != 0
    sys.exit(1 if failed else 0)
  for config_file, name, dtype in runs:
    _emit(run_one(name, dtype, batch_size=FLAGS.batch_size,
                  steps=FLAGS.steps, warmup=FLAGS.warmup,
                  with_data=FLAGS.with_data, data_source=FLAGS.data_source,
                  peak_tflops=FLAGS.peak_tflops,
                  num_devices=FLAGS.num_devices, config_file=config_file,
                  with_step_parts=FLAGS.step_parts), FLAGS.output)


if __name__ == '__main__':
  define_flags()
  app.run(main)
