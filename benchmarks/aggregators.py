r"""NCNet's 4-D part and CATs' aggregator, timed and measured next to PyTorch.

  .venv/bin/python benchmarks/aggregators.py \
      --ncnet_repo=/path/to/ncnet --cats_repo=/path/to/Cost-Aggregation-transformers \
      [--parts=conv4d,ncnet,cats] [--sizes=16,25] [--batches=1,16] \
      [--modes=forward,train] [--steps=3] [--warmup=1] [--max_gmac=400] \
      [--output=results.jsonl]

Parts (every one on random inputs; weights random):
  conv4d  one 16 -> 16 channel, k = 5 4-D convolution on (B, s, s, s, s, 16):
          every `semcorr_jax.models.conv4d` implementation, and NCNet's
          `lib/conv4d.py:conv4d` (a Python loop of 3-D convolutions).
  ncnet   NCNet's 4-D part on L2-normalised (B, s, s, 1024) features: the 4-D
          correlation, mutual matching, symmetric neighbourhood consensus
          (kernels 5, 5, 5; channels 1 -> 16 -> 16 -> 1), mutual matching;
          `train` is the weak loss (positive and rolled negative pairs, two
          passes) and its gradient with respect to the consensus weights.
          Reference: `lib/model.py` NeighConsensus and MutualMatching.
  cats    CATs' TransformerAggregator (8 levels, depth 1, embed s^2 + 128)
          on a mutual-filtered correlation (B, 8, s^2, s^2) and appearance
          embeddings (B, 8, s^2, 128); `train` adds the soft-argmax read-out
          (temperature 0.02) and an end-point error against random flow, and
          differentiates with respect to the aggregator's weights. 6 heads
          (3 where s^2 + 128 is not divisible by 6). CATs needs an even
          embedding (its x and y position halves): at s = 25 (753) neither
          implementation builds, and the case is listed as skipped.
          Reference: `models/cats.py`.
`s` is the feature grid side (`--sizes`: 16 = CATs' 16^4, 25 = NCNet's
PF-PASCAL 25^4).

Every case runs in its own process and prints one JSON line: `seconds`
(median over `--steps` timed calls after `--warmup` untimed ones, compile
excluded), `peak_rss_mb` (the process's peak resident memory during the
calls less its resident memory before them, inputs and weights already
made; Linux), and for JAX the compiled
program's `xla_temp_mb` / `xla_total_mb` (XLA's memory analysis: temporaries,
and arguments + outputs + temporaries). A case whose estimated work exceeds
`--max_gmac` multiply-accumulates is not run: JAX still compiles it and
reports XLA's memory figures (`"timed": false`); the reference, which has no
such analysis, is skipped. After all cases, one summary line per
(part, mode, size, batch) gives the reference's time over each
implementation's (`speedup`; > 1: ours is faster) and the memory ratio.

Without torch, or without a reference folder, only the JAX cases run.
benchmarks/README.md lists measured figures.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from semcorr_jax import geometry
from semcorr_jax.losses import ncnet as ncnet_losses
from semcorr_jax.models import cats as cats_model
from semcorr_jax.models import conv4d
from semcorr_jax.models import ncnet as ncnet_model

_FLAGS = flags.FLAGS
flags.DEFINE_list('parts', ['conv4d', 'ncnet', 'cats'], 'What to time.')
flags.DEFINE_list('sizes', ['16', '25'], 'Feature grid sides s (s^4 cells).')
flags.DEFINE_list('batches', ['1', '16'], 'Batch sizes.')
flags.DEFINE_list('modes', ['forward', 'train'], 'forward and/or train.')
flags.DEFINE_list('impls', list(conv4d.IMPLEMENTATIONS),
                  'conv4d implementations for conv4d and ncnet.')
flags.DEFINE_integer('steps', 3, 'Timed calls per case.')
flags.DEFINE_integer('warmup', 1, 'Untimed calls after compiling.')
flags.DEFINE_float('max_gmac', 400.0, 'Cases whose estimated work exceeds '
                   'this many GMAC (forward x3 for train) are only compiled.')
flags.DEFINE_string('ncnet_repo', None, 'Checkout of the public NCNet code.')
flags.DEFINE_string('cats_repo', None, 'Checkout of the public CATs code.')
flags.DEFINE_string('output', None, 'Also append the JSON lines here.')
flags.DEFINE_string('case', None, 'Internal: run one case (JSON) and exit.')

LEVELS = 8  # CATs' SPair hyperpixel count.
FEATURES = 1024  # ResNet-101 layer3, NCNet's features.


def _status_mb(field: str) -> float:
  with open('/proc/self/status') as f:
    line = next(l for l in f if l.startswith(field + ':'))
  return int(line.split()[1]) / 1024


def _rss_mb() -> float:
  """Resident memory now; also resets the peak (VmHWM) to it (Linux)."""
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')
  return _status_mb('VmRSS')


def _peak_mb() -> float:
  """Peak resident memory since the last `_rss_mb()`."""
  return _status_mb('VmHWM')


def estimated_gmac(part: str, size: int, batch: int, mode: str) -> float:
  """Multiply-accumulates of one call, in G (train: 3x one forward)."""
  cells = size**4
  if part == 'conv4d':
    fwd = cells * 16 * 16 * 5**4
  elif part == 'ncnet':
    # Symmetric consensus, two passes (positive and negative) when training.
    fwd = 2 * cells * 5**4 * (16 + 16 * 16 + 16) + cells * FEATURES
    fwd *= 2 if mode == 'train' else 1
  else:
    embed = size * size + 128
    tokens = LEVELS * size * size
    per_block = tokens * (12 * embed * embed + 2 * size * size * embed)
    fwd = 2 * (per_block + tokens * embed * size * size)
  return batch * fwd * (3 if mode == 'train' else 1) / 1e9


# --- JAX side -------------------------------------------------------------


def _jax_case(part, size, batch, mode, impl):
  """(fn, args) of one JAX case; fn is jitted by the caller."""
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  if part == 'conv4d':
    x = jax.random.normal(keys[0], (batch,) + (size,) * 4 + (16,))
    layer = conv4d.Conv4d(16, 5, impl=impl)
    params = layer.init(keys[1], x[:1, :1, :1, :1, :1])

    def forward(params, x):
      return layer.apply(params, x)

    def train(params, x):
      return jax.grad(lambda p, x: jnp.sum(forward(p, x)**2),
                      argnums=(0, 1))(params, x)
    return (forward if mode == 'forward' else train), (params, x)

  if part == 'ncnet':
    shape = (batch, size, size, FEATURES)
    fa = jax.random.normal(keys[0], shape)
    fb = jax.random.normal(keys[1], shape)
    consensus = ncnet_model.NeighConsensus(
        kernel_sizes=(5, 5, 5), channels=(16, 16, 1), symmetric=True,
        impl=impl)
    params = consensus.init(keys[2], jnp.zeros((1,) + (size,) * 4))

    def matches(params, fa, fb):
      corr = geometry.correlation_4d(geometry.l2_normalize(fa, eps=1e-6),
                                     geometry.l2_normalize(fb, eps=1e-6))
      corr = ncnet_model.mutual_matching(corr)
      return ncnet_model.mutual_matching(consensus.apply(params, corr))

    def forward(params, fa, fb):
      return matches(params, fa, fb)

    def loss(params, fa, fb):
      positive = matches(params, fa, fb)
      negative = matches(params, jnp.roll(fa, -1, axis=0), fb)
      return ncnet_losses.weak_loss(positive, negative)[0]

    def train(params, fa, fb):
      return jax.value_and_grad(loss)(params, fa, fb)
    return (forward if mode == 'forward' else train), (params, fa, fb)

  heads = 6 if (size * size + 128) % 6 == 0 else 3
  aggregator = cats_model.TransformerAggregator(
      num_levels=LEVELS, feature_size=size, embed_dim=size * size + 128,
      depth=1, num_heads=heads)
  corr = jax.random.uniform(keys[0], (batch, LEVELS, size * size, size * size))
  source = jax.random.normal(keys[1], (batch, LEVELS, size * size, 128))
  target = jax.random.normal(keys[2], (batch, LEVELS, size * size, 128))
  flow = jax.random.normal(keys[3], (batch, size, size, 2))
  params = aggregator.init(keys[3], corr[:1], source[:1], target[:1])

  def forward(params, corr, source, target):
    return aggregator.apply(params, corr, source, target)

  def loss(params, corr, source, target):
    cost = forward(params, corr, source, target)  # (B, s^2 src, s^2 tgt)
    mapping = cats_model.soft_argmax_ts(cost, size, 0.02)
    grid = jnp.stack(jnp.meshgrid(jnp.arange(size), jnp.arange(size),
                                  indexing='xy'), -1)
    return jnp.mean(jnp.linalg.norm(mapping - grid - flow, axis=-1))

  def train(params, corr, source, target):
    return jax.value_and_grad(loss)(params, corr, source, target)
  return ((forward if mode == 'forward' else train),
          (params, corr, source, target))


def run_jax(case: dict) -> dict:
  fn, args = _jax_case(case['part'], case['size'], case['batch'],
                       case['mode'], case['impl'])
  compiled = jax.jit(fn).lower(*args).compile()
  memory = compiled.memory_analysis()
  out = dict(case)
  if memory is not None:
    temp = memory.temp_size_in_bytes
    total = (temp + memory.argument_size_in_bytes +
             memory.output_size_in_bytes)
    out.update(xla_temp_mb=temp / 2**20, xla_total_mb=total / 2**20)
  if not case['timed']:
    return out

  def call():
    jax.block_until_ready(compiled(*args))
  before = _rss_mb()
  out.update(_time(call), peak_rss_mb=_peak_mb() - before)
  return out


# --- PyTorch side ------------------------------------------------------------


def _torch_case(part, size, batch, mode, repo):
  """A closure running one reference call (torch imported here)."""
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, repo)
  torch.manual_seed(0)
  if part != 'cats':
    from lib import conv4d as ref_conv4d  # pylint: disable=g-import-not-at-top
    # The reference allocates its output as a leaf `Variable(zeros,
    # requires_grad=...)` and fills it in place, which PyTorch >= 0.4
    # refuses to differentiate; a plain zeros tensor is what it means.
    ref_conv4d.Variable = lambda tensor, requires_grad=False: tensor
  if part == 'conv4d':
    x = torch.randn(batch, 16, size, size, size, size, requires_grad=True)
    layer = ref_conv4d.Conv4d(16, 16, 5, bias=True)

    def call():
      if mode == 'forward':
        with torch.no_grad():
          layer(x)
        return
      (layer(x)**2).sum().backward()
    return call

  if part == 'ncnet':
    from lib import model as ref  # pylint: disable=g-import-not-at-top
    consensus = ref.NeighConsensus(use_cuda=False, kernel_sizes=[5, 5, 5],
                                   channels=[16, 16, 1], symmetric_mode=True)
    fa = torch.randn(batch, FEATURES, size, size)
    fb = torch.randn(batch, FEATURES, size, size)

    def matches(fa, fb):
      fa, fb = ref.featureL2Norm(fa), ref.featureL2Norm(fb)
      corr = torch.einsum('bcij,bckl->bijkl', fa, fb).unsqueeze(1)
      corr = ref.MutualMatching(corr)
      return ref.MutualMatching(consensus(corr))

    def score(corr):
      b = corr.shape[0]
      over_a = torch.softmax(corr.reshape(b, size * size, -1), 1)
      over_b = torch.softmax(corr.reshape(b, -1, size * size), 2)
      return (over_a.max(1)[0].mean() + over_b.max(2)[0].mean()) / 2

    def call():
      if mode == 'forward':
        with torch.no_grad():
          matches(fa, fb)
        return
      rolled = torch.roll(fa, -1, 0)
      loss = score(matches(rolled, fb)) - score(matches(fa, fb))
      loss.backward()
    return call

  from models import cats as ref  # pylint: disable=g-import-not-at-top
  heads = 6 if (size * size + 128) % 6 == 0 else 3
  aggregator = ref.TransformerAggregator(
      num_hyperpixel=LEVELS, img_size=size, embed_dim=size * size + 128,
      depth=1, num_heads=heads, mlp_ratio=4, qkv_bias=True)
  corr = torch.rand(batch, LEVELS, size * size, size * size)
  source = torch.randn(batch, LEVELS, size * size, 128)
  target = torch.randn(batch, LEVELS, size * size, 128)
  flow = torch.randn(batch, 2, size, size)
  coords = torch.linspace(-1, 1, size)

  def call():
    if mode == 'forward':
      with torch.no_grad():
        aggregator(corr, source, target)
      return
    cost = aggregator(corr, source, target)  # (B, src, tgt)
    prob = torch.softmax((cost - cost.max(1, keepdim=True)[0]) / 0.02, 1)
    prob = prob.view(batch, size, size, size, size)  # src y, src x, tgt
    x = (prob.sum(1) * coords.view(1, size, 1, 1)).sum(1)
    y = (prob.sum(2) * coords.view(1, size, 1, 1)).sum(1)
    mapping = torch.stack([x, y], 1) * (size - 1) / 2
    ((mapping - flow)**2).sum(1).sqrt().mean().backward()
  return call


def run_torch(case: dict) -> dict:
  call = _torch_case(case['part'], case['size'], case['batch'], case['mode'],
                     case['repo'])
  out = dict(case)
  before = _rss_mb()
  out.update(_time(call), peak_rss_mb=_peak_mb() - before)
  return out


# --- harness ---------------------------------------------------------------


def _time(call) -> dict:
  for _ in range(_FLAGS.warmup):
    call()
  times = []
  for _ in range(_FLAGS.steps):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return {'seconds': statistics.median(times), 'seconds_all': times}


def torch_available() -> bool:
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return False
  return True


def cases() -> list[dict]:
  """Every case the flags name, JAX first then the reference."""
  repos = {'conv4d': _FLAGS.ncnet_repo, 'ncnet': _FLAGS.ncnet_repo,
           'cats': _FLAGS.cats_repo}
  with_torch = torch_available()
  out = []
  for part in _FLAGS.parts:
    for mode in _FLAGS.modes:
      for size in map(int, _FLAGS.sizes):
        for batch in map(int, _FLAGS.batches):
          gmac = estimated_gmac(part, size, batch, mode)
          common = dict(part=part, mode=mode, size=size, batch=batch,
                        gmac=round(gmac, 1), timed=gmac <= _FLAGS.max_gmac)
          impls = _FLAGS.impls if part != 'cats' else ['jax']
          if part == 'cats' and (size * size + 128) % 2:
            out.append(dict(common, impl='jax', skipped=(
                f'embedding {size * size + 128} is odd; CATs needs it even')))
            continue
          out += [dict(common, impl=impl) for impl in impls]
          if with_torch and repos[part] and common['timed']:
            out.append(dict(common, impl='reference',
                            repo=os.path.abspath(repos[part])))
  return out


def summary(records: list[dict]) -> list[dict]:
  """Reference time / ours per (part, mode, size, batch) and impl."""
  groups = {}
  for r in records:
    groups.setdefault((r['part'], r['mode'], r['size'], r['batch']),
                      []).append(r)
  out = []
  for (part, mode, size, batch), rs in groups.items():
    ref = next((r for r in rs if r['impl'] == 'reference'
                and 'seconds' in r), None)
    for r in rs:
      if r['impl'] == 'reference' or ref is None or 'seconds' not in r:
        continue
      out.append(dict(summary=True, part=part, mode=mode, size=size,
                      batch=batch, impl=r['impl'],
                      speedup=ref['seconds'] / r['seconds'],
                      # None where ours stayed under 1 MB above the
                      # baseline (freed inputs can even make it negative).
                      memory_ratio=(ref['peak_rss_mb'] / r['peak_rss_mb']
                                    if r['peak_rss_mb'] >= 1 else None)))
  return out


def _emit(record: dict) -> None:
  line = json.dumps(record)
  print(line, flush=True)
  if _FLAGS.output:
    with open(_FLAGS.output, 'a') as f:
      f.write(line + '\n')


def main(argv):
  del argv
  if _FLAGS.case:
    case = json.loads(_FLAGS.case)
    runner = run_torch if case['impl'] == 'reference' else run_jax
    print(json.dumps(runner(case)), flush=True)
    return
  records = []
  for case in cases():
    if 'skipped' in case:
      _emit(case)
      continue
    cmd = [sys.executable, os.path.abspath(__file__),
           f'--case={json.dumps(case)}', f'--steps={_FLAGS.steps}', f'--warmup={_FLAGS.warmup}']
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
      error = (done.stderr.strip().splitlines() or ['no output'])[-1]
      record = dict(case, error=error)
    else:
      record = json.loads(done.stdout.strip().splitlines()[-1])
    records.append(record)
    _emit(record)
  for record in summary(records):
    _emit(record)


if __name__ == '__main__':
  app.run(main)
