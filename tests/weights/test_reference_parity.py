"""Parity with the public reference code, through the release importers.

Runs only with torch importable and a checkout of the reference named by an
environment variable (skipped otherwise, with the reason):

  SEMCORR_NCNET_REPO=/path/to/ncnet       (ignacio-rocco/ncnet; its
      lib/model.py imports torchvision)
  SEMCORR_CATS_REPO=/path/to/Cost-Aggregation-transformers
      (SunghwanHong/...; models/cats.py imports timm and torchvision)

Each test builds the reference module with random weights in a separate
interpreter (torchvision cannot be imported beside TensorFlow, which the
test process loads), runs its forward on a random input there and returns
the output and the state dict; the state dict goes into a release of the
official layout (the rest of the release random,
tests/helpers/release_files.py), our importer reads it, and our module's
forward on the same input is compared:

* NCNet's `NeighConsensus` (symmetric, kernels 5 then 3, channels 4, 1, on
  a non-square volume (2, 4, 5, 3, 6)) against `models.ncnet.
  NeighConsensus`;
* CATs' `TransformerAggregator` (S = 4, E = 24, 6 heads; depth 2 with
  N = 3 levels, and depth 1 with N = 1, the reference's single-level path)
  against `models.cats.TransformerAggregator`.

Tolerance: float32 on both sides with different summation orders; outputs
are O(1): |ours - reference| <= 1e-5 + 1e-4 |reference|. Each reference run
starts torch in a fresh interpreter (tens of seconds on a loaded CPU):
marked slow.
"""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from semcorr_jax import config_files
from semcorr_jax.models import cats
from semcorr_jax.models import ncnet
from semcorr_jax.weights import cats_release
from semcorr_jax.weights import ncnet_release
from helpers import paths
from helpers import release_files as rf

RTOL, ATOL = 1e-4, 1e-5
pytestmark = pytest.mark.slow

# Run in a fresh interpreter: the reference imports torchvision, which
# cannot be imported beside TensorFlow (which the test process loads).
# The body sets `results` = {case: (module, output)}.
_PRELUDE = """
import sys
import numpy as np
import torch
sys.path.insert(0, sys.argv[1])
inputs = dict(np.load(sys.argv[2]))
results = {}
"""
_SAVE = """
arrays = {}
for case, (module, output) in results.items():
  arrays[f'{case}/output'] = output
  for k, v in module.state_dict().items():
    arrays[f'{case}/state/{k}'] = v.detach().cpu().numpy()
np.savez(sys.argv[3], **arrays)
"""


@functools.cache
def _missing(names: tuple[str, ...]) -> str | None:
  """The first of `names` that does not import in a fresh interpreter."""
  for name in names:
    found = subprocess.run([sys.executable, '-c', f'import {name}'],
                           capture_output=True, check=False, timeout=300)
    if found.returncode:
      return name
  return None


def _run_reference(folder, env: str, module_file: str,
                   needs: tuple[str, ...], body: str, **inputs) -> dict:
  """Runs `body` beside the checkout `$env` (skips without it).

  Returns:
    {case: (output, {state-dict key: array})} of the reference modules.
  """
  repo = os.environ.get(env)
  if not repo:
    pytest.skip(f'{env} is not set (a checkout of the reference code)')
  if not os.path.isfile(os.path.join(repo, module_file)):
    pytest.skip(f'{env}={repo} has no {module_file}')
  missing = _missing(('torch',) + needs)
  if missing:
    pytest.skip(f'the reference needs {missing}, which does not import')
  np.savez(folder / 'inputs.npz', **inputs)
  script = _PRELUDE + textwrap.dedent(body) + _SAVE
  proc = subprocess.run(
      [sys.executable, '-c', script, repo, str(folder / 'inputs.npz'),
       str(folder / 'reference.npz')], capture_output=True, text=True,
      check=False, timeout=600, cwd=repo)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = {}
  with np.load(folder / 'reference.npz') as f:
    for key in f.files:
      case, kind, *name = key.split('/', 2)
      output, state = out.setdefault(case, [None, {}])
      if kind == 'output':
        out[case][0] = f[key]
      else:
        state[name[0]] = f[key]
  return {case: tuple(v) for case, v in out.items()}


def _assert_close(ours, reference):
  ours, reference = np.asarray(ours), np.asarray(reference)
  assert ours.shape == reference.shape
  np.testing.assert_allclose(ours, reference, rtol=RTOL, atol=ATOL)
  assert np.abs(reference).max() > 1e-2  # Not a trivial comparison.


def test_ncnet_neigh_consensus_equals_reference(tmp_path):
  kernels, channels = (5, 3), (4, 1)
  rng = np.random.default_rng(0)
  corr = rng.uniform(-0.5, 1.0, (2, 4, 5, 3, 6)).astype(np.float32)
  want, state = _run_reference(
      tmp_path, 'SEMCORR_NCNET_REPO', 'lib/model.py', ('torchvision',), f"""
      from lib.model import NeighConsensus
      torch.manual_seed(0)
      module = NeighConsensus(use_cuda=False, kernel_sizes={list(kernels)},
                              channels={list(channels)}, symmetric_mode=True)
      with torch.no_grad():  # Biases away from the default's tiny range.
        for name, p in module.named_parameters():
          if name.endswith('bias'):
            p.uniform_(-0.2, 0.2)
        corr = torch.from_numpy(inputs['corr'])[:, None]
        results['ncnet'] = module, module(corr).numpy()[:, 0]
      """, corr=corr)['ncnet']
  assert state['conv.0.weight'].shape == (5, 4, 1, 5, 5, 5)  # pre-permuted
  # The reference's weights inside a release of the official layout.
  checkpoint = rf.ncnet_checkpoint(kernel_sizes=kernels, channels=channels)
  checkpoint['state_dict'].update(
      {f'NeighConsensus.{k}': v for k, v in state.items()})
  config = config_files.load(
      str(paths.CONFIGS / 'ncnet.py:test'),
      {'model.kernel_sizes': kernels, 'model.channels': channels})
  model = ncnet.NCNet.from_config(config, train_backbone=False)
  x = jnp.zeros((1, 64, 64, 3))
  variables = ncnet_release.import_ncnet_release(
      checkpoint, jax.eval_shape(model.init, jax.random.key(0), x, x))
  ours = ncnet.NeighConsensus(kernels, channels, symmetric=True).apply(
      {'params': variables['params']['consensus']}, jnp.asarray(corr))
  _assert_close(ours, want)


# CATs: S, proj_dim, heads, MLP ratio, batch; cases (depth, hyperpixel ids).
S, PROJ, HEADS, MLP, BATCH = 4, 8, 6, 4, 2
E = S * S + PROJ
CATS_CASES = {'depth2_3levels': (2, (0, 2, 4)), 'depth1_1level': (1, (2,))}


@pytest.fixture(scope='module')
def cats_reference(tmp_path_factory):
  """{case: (inputs, output, state dict)} of CATs' TransformerAggregator."""
  rng = np.random.default_rng(1)
  inputs = {}
  for case, (_, ids) in CATS_CASES.items():
    n = len(ids)
    inputs[f'{case}.corr'] = rng.uniform(-0.2, 1.0, (BATCH, n, S * S, S * S))
    for k in ('source', 'target'):
      inputs[f'{case}.{k}'] = rng.standard_normal((BATCH, n, S * S, PROJ))
  inputs = {k: v.astype(np.float32) for k, v in inputs.items()}
  cases = {case: (depth, len(ids)) for case, (depth, ids) in
           CATS_CASES.items()}
  results = _run_reference(
      tmp_path_factory.mktemp('cats'), 'SEMCORR_CATS_REPO', 'models/cats.py',
      ('timm', 'torchvision'), f"""
      import functools
      from models.cats import TransformerAggregator
      for case, (depth, n) in {cases!r}.items():
        torch.manual_seed(1)
        module = TransformerAggregator(
            num_hyperpixel=n, img_size={S}, embed_dim={E}, depth=depth,
            num_heads={HEADS}, mlp_ratio={MLP}, qkv_bias=True,
            norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)).eval()
        with torch.no_grad():  # Every parameter random, LayerNorms too.
          for name, p in module.named_parameters():
            scale = 0.3 if 'pos_embed' in name else 0.1
            base = 1.0 if name.endswith('weight') and p.ndim == 1 else 0.0
            p.copy_(base + scale * torch.randn_like(p))
          output = module(*(torch.from_numpy(inputs[f'{{case}}.{{k}}'])
                            for k in ('corr', 'source', 'target')))
        results[case] = module, output.numpy()
      """, **inputs)
  return {case: ({k: inputs[f'{case}.{k}'] for k in
                  ('corr', 'source', 'target')},) + results[case]
          for case in CATS_CASES}


@pytest.mark.parametrize('case', list(CATS_CASES))
def test_cats_aggregator_equals_reference(cats_reference, case):
  depth, ids = CATS_CASES[case]
  inputs, want, state = cats_reference[case]
  checkpoint, args = rf.cats_checkpoint(
      hyperpixel_ids=ids, feature_size=S, proj_dim=PROJ, depth=depth,
      mlp_ratio=MLP)
  checkpoint['state_dict'].update({f'decoder.{k}': v for k, v in
                                   state.items()})
  config = config_files.load(
      str(paths.CONFIGS / 'cats.py:test'),
      {'model.depth': depth,
       'backbone.features': tuple(f'hyper_{i}' for i in ids)})
  cats_release.check_config(config, vars(args))
  model = cats.CATs.from_config(config)
  x = jnp.zeros((1, 32, 32, 3))
  variables = cats_release.import_cats_release(
      checkpoint, jax.eval_shape(model.init, jax.random.key(0), x, x), args)
  ours = cats.TransformerAggregator(
      num_levels=len(ids), feature_size=S, embed_dim=E, depth=depth,
      num_heads=HEADS, mlp_ratio=MLP).apply(
          {'params': variables['params']['decoder']},
          *(jnp.asarray(inputs[k]) for k in ('corr', 'source', 'target')))
  _assert_close(ours, want)
