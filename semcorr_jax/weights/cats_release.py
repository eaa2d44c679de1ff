r"""Imports the official CATs release.

A run folder of CATs (SunghwanHong/Cost-Aggregation-transformers; the
README's Google-Drive checkpoints) holds what its train.py writes:

* `model_best.pth`: `{'epoch': int, 'state_dict': CATs.state_dict(),
  'optimizer': AdamW.state_dict(), 'scheduler': MultiStepLR.state_dict()
  (its milestones a collections.Counter), 'best_loss': float}`;
* `args.pkl`: the pickled `argparse.Namespace` of the run, e.g.
  hyperpixel='[0,8,20,21,26,28,29,30]', depth=1, feature_size=16,
  feature_proj_dim=128, num_heads=6, mlp_ratio=4.

Both are read without torch and without building anything but tensors
(`torch_pickle`'s inert mode). The architecture comes from the Namespace:
the hyperpixel ids (parsed as CATs' `parse_list`, every integer in the
string; its backbone returns the levels in increasing id order), the depth,
feature size, embedding size, heads and MLP ratio must be the config's
(`check_config`). Key mapping (level l = 0..N-1, block d; Linear weights
(out, in) -> Dense kernels (in, out); LayerNorm weight -> scale):

  feature_extraction.backbone.<torchvision key> -> params|batch_stats/
                                                   backbone/...
  proj.<l>.weight / .bias                      -> params/proj_<l>/kernel / bias
  decoder.pos_embed_x / pos_embed_y            -> params/decoder/pos_embed_x /
                                                  pos_embed_y (same shape)
  decoder.blocks.<d>.norm{1..4}.weight / .bias -> .../blocks_<d>/norm{i}/scale
                                                  / bias
  decoder.blocks.<d>.{attn,attn_multiscale}.{qkv,proj}.weight / .bias
                                               -> .../blocks_<d>/.../kernel
                                                  / bias
  decoder.blocks.<d>.{mlp,mlp2}.{fc1,fc2}.weight / .bias -> likewise
  decoder.proj.weight / .bias                  -> params/decoder/proj/...

Accepted and ignored (the reference never uses them for its output):
`decoder.norm.weight` / `.bias` (built, never called), `x_normal` /
`y_normal` (the soft-argmax grid, fixed `linspace(-1, 1, S)`),
`feature_extraction.backbone.fc.*` (the ImageNet classifier),
`feature_extraction.backbone.layer<k>.*` of stages after the deepest tap
(computed by the reference, never read) and `*.num_batches_tracked`. Any
other unknown key, a missing key or a wrong shape is one SemcorrError
naming them.

`semcorr-import-cats` (semcorr_jax/cli/import_cats.py) turns the release
into a workdir that `semcorr-eval` scores.
"""

from __future__ import annotations

from collections.abc import Mapping
import os
import re
from typing import NamedTuple

import numpy as np

from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import release_common
from semcorr_jax.weights import torch_pickle
from semcorr_jax.weights import torchvision_resnet
from semcorr_jax.weights import trees

WHAT = 'the CATs release'
BACKBONE = 'feature_extraction.backbone.'
IGNORED = (r'decoder\.norm\.(weight|bias)$', r'x_normal$', r'y_normal$',
           re.escape(BACKBONE + 'fc.'))
# Namespace flag -> (config field, CATs' train.py default).
ARCH_FLAGS = {'depth': ('model.depth', 1),
              'feature_size': ('model.feature_size', 16),
              'feature_proj_dim': ('model.proj_dim', 128),
              'num_heads': ('model.num_heads', 6),
              'mlp_ratio': ('model.mlp_ratio', 4)}
_LEAVES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}
_NUMBERED = re.compile(r'(proj|blocks)_(\d+)$')


class Release(NamedTuple):
  """A read release: flat tensors and the run's flags."""
  state: dict[str, np.ndarray]
  args: dict


def read_args(path) -> dict:
  """A run's `args.pkl` (a pickled argparse.Namespace) as a dict.

  Raises:
    SemcorrError: missing or unreadable file, or not a Namespace.
  """
  args = torch_pickle.read_pickle_file(path, inert_globals=True)
  return release_common.run_args(args, os.fspath(path))


def read_release(checkpoint, args) -> Release:
  """The release's tensors and flags.

  Args:
    checkpoint: path of `model_best.pth`, or its content (a mapping with a
      'state_dict').
    args: path of `args.pkl`, or the flags (Namespace, record or mapping).

  Raises:
    SemcorrError: unreadable files, no state dict, a state-dict entry that
      is not a tensor, or args that are not a Namespace.
  """
  ckpt = release_common.read_checkpoint(checkpoint, WHAT)
  state = release_common.state_dict(ckpt, WHAT)
  if isinstance(args, (str, os.PathLike)):
    args = read_args(args)
  return Release(state, release_common.run_args(args, f"{WHAT}'s args"))


def hyperpixel_ids(args: Mapping) -> list[int]:
  """The levels' hyperpixel ids, in the order of the reference's levels.

  `args['hyperpixel']` is a string such as '[0,8,20,21,26,28,29,30]' (every
  integer in it counts, as CATs' `parse_list` reads it); the reference's
  backbone appends the levels in increasing id order.

  Raises:
    SemcorrError: no ids.
  """
  text = args.get('hyperpixel')
  ids = ([int(v) for v in re.findall(r'\d+', text)]
         if isinstance(text, str) else [])
  if not ids:
    raise SemcorrError(f'{WHAT}\'s args have no hyperpixel ids (hyperpixel='
                       f'{text!r})')
  return sorted(set(ids))


def expected_config(args: Mapping) -> dict:
  """{config field: value} the release's flags ask for."""
  out = {'backbone.name': 'resnet',
         'backbone.features': tuple(f'hyper_{i}'
                                    for i in hyperpixel_ids(args))}
  for flag, (field, default) in ARCH_FLAGS.items():
    out[field] = args.get(flag, default)
  return out


def check_config(config, args: Mapping) -> None:
  """The config's architecture against the release's flags.

  Args:
    config: a `cats` run config.
    args: the release's flags.

  Raises:
    SemcorrError: the fields that differ, with the values to set.
  """
  wrong = []
  for field, want in expected_config(args).items():
    group, name = field.split('.')
    have = config[group].get(name)
    if isinstance(want, tuple):
      same = tuple(have or ()) == want
    else:
      same = have == want
    if not same:
      wrong.append(f'config.{field}={want!r} (is {have!r})')
  if wrong:
    raise SemcorrError(f'{WHAT} does not match the config; set '
                       + ', '.join(wrong))


def _aggregator_key(path: tuple[str, ...]) -> str | None:
  """('params', 'decoder', 'blocks_0', 'norm1', 'scale') ->
  'decoder.blocks.0.norm1.weight'."""
  collection, *modules, leaf = path
  if collection != 'params':
    return None
  names = []
  for module in modules:
    match = _NUMBERED.match(module)
    names += [match[1], match[2]] if match else [module]
  if leaf.startswith('pos_embed_'):
    return '.'.join(names + [leaf])
  if leaf not in _LEAVES:
    return None
  return '.'.join(names + [_LEAVES[leaf]])


def _aggregator_entries(variables: Mapping) -> dict:
  table = {}
  params = variables.get('params', {})
  for name in params:
    if name == 'backbone':
      continue
    for path, value in trees.flatten(params[name], ('params', name)):
      key = _aggregator_key(path)
      if key is None:
        raise SemcorrError(f'{"/".join(path)} is not a CATs variable')
      ndim = len(value.shape)
      transpose = path[-1] == 'kernel' and ndim == 2
      table[key] = release_common.Entry(
          path, tuple(value.shape[::-1] if transpose else value.shape),
          np.dtype(value.dtype),
          (lambda w: w.T) if transpose else (lambda w: w))
  if not any(k.startswith('decoder.') for k in table):
    raise SemcorrError('the model has no params/decoder: not a CATs model')
  return table


def release_mapping(variables: Mapping) -> dict[str, release_common.Entry]:
  """The release key -> `Entry` table of a CATs model's variables.

  Raises:
    SemcorrError: not a CATs model with a ResNet backbone.
  """
  backbone = release_common.leaf(variables, ('params', 'backbone'))
  if not isinstance(backbone, Mapping) or 'conv1' not in backbone:
    raise SemcorrError(f'{WHAT} holds a ResNet-101 backbone; the model\'s '
                       "backbone is not a ResNet (set config.backbone.name="
                       "'resnet', depth=101)")
  table = release_common.resnet_entries(variables, ('backbone',),
                                        lambda k: BACKBONE + k)
  table.update(_aggregator_entries(variables))
  return table


def ignored_patterns(variables: Mapping) -> list[str]:
  """`IGNORED` plus the backbone stages the model does not build."""
  absent = torchvision_resnet.absent_layer_patterns(variables, ('backbone',))
  return list(IGNORED) + [re.escape(BACKBONE) + p for p in absent
                          if p != re.escape('fc.')]


def import_cats_release(checkpoint, variables: Mapping, args=None) -> dict:
  """Fills a CATs model's backbone, embeddings and aggregator.

  Args:
    checkpoint: path of `model_best.pth`, its content, or a `Release`.
    variables: the CATs model's {'params', 'batch_stats', ...} (arrays or
      ShapeDtypeStructs).
    args: path of `args.pkl` or the flags; needed unless `checkpoint` is a
      `Release`. The caller checks them against the config
      (`check_config`).

  Returns:
    A copy of `variables` whose backbone and aggregator leaves are numpy
    arrays of the template's dtypes in our layouts.

  Raises:
    SemcorrError: unreadable files, or missing/unexpected keys or wrong
      shapes (named, first few of each).
  """
  if not isinstance(checkpoint, Release):
    if args is None:
      raise SemcorrError(f'{WHAT} needs its args.pkl for the architecture')
    checkpoint = read_release(checkpoint, args)
  table = release_mapping(variables)
  return release_common.fill(variables, table, checkpoint.state,
                             ignored_patterns(variables), WHAT)
