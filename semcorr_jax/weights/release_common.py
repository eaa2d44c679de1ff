"""Pieces shared by the importers of training checkpoints (NCNet, CATs).

A released training checkpoint is a `torch.save` of a dict holding, beside
the model's `state_dict`, the run's `argparse.Namespace`, numpy scalars and
optimiser/scheduler state. It is read with `torch_pickle`'s inert mode
(nothing in it is built or called; `pickle_records`), its `state_dict` must
be plain tensors, and the model's variables are filled through a strict
table {release key: `Entry`}: every expected key present with its shape,
every other key named in one error unless a pattern allows it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping, Sequence
import os
import re
from typing import NamedTuple

import numpy as np

from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import torch_pickle
from semcorr_jax.weights import torchvision_resnet
from semcorr_jax.weights import trees
from semcorr_jax.weights.pickle_records import InertRecord

_BATCHES_TRACKED = 'num_batches_tracked'


class Entry(NamedTuple):
  """One release key's destination.

  Attributes:
    path: the full variable path, e.g. ('params', 'decoder', 'proj',
      'kernel').
    shape: the expected shape in the release's layout.
    dtype: the variable's dtype.
    to_ours: release layout -> ours (e.g. a transpose).
  """
  path: tuple[str, ...]
  shape: tuple[int, ...]
  dtype: np.dtype
  to_ours: Callable[[np.ndarray], np.ndarray]


def read_checkpoint(checkpoint, what: str) -> Mapping:
  """A training checkpoint as nested containers (objects as records).

  Args:
    checkpoint: path of a `torch.save` file, or its content (a mapping).
    what: the release's name in errors, e.g. 'the NCNet release'.

  Raises:
    SemcorrError: unreadable file, or not a dict.
  """
  if isinstance(checkpoint, (str, os.PathLike)):
    checkpoint = torch_pickle.read_torch_checkpoint(checkpoint,
                                                    inert_globals=True)
  if not isinstance(checkpoint, Mapping):
    kind = (checkpoint.name if isinstance(checkpoint, InertRecord)
            else type(checkpoint).__name__)
    raise SemcorrError(f'{what} holds a {kind}, not a training checkpoint '
                       "dict with a 'state_dict'")
  return checkpoint


def state_dict(checkpoint: Mapping, what: str) -> dict[str, np.ndarray]:
  """`checkpoint['state_dict']` flat, without `num_batches_tracked`.

  Raises:
    SemcorrError: no state dict, or an entry that is not a tensor (e.g. an
      inert record).
  """
  state = checkpoint.get('state_dict')
  if not isinstance(state, Mapping):
    keys = ', '.join(map(str, list(checkpoint)[:8]))
    raise SemcorrError(f"{what} has no 'state_dict' (its keys: {keys}); "
                       'is it the right file?')
  flat = torch_pickle.flatten_state_dict(state, what)
  return {k: v for k, v in flat.items()
          if k.rsplit('.', 1)[-1] != _BATCHES_TRACKED}


def run_args(args, what: str) -> dict:
  """The flags of a run's `argparse.Namespace` as a dict.

  Args:
    args: an inert record of an `argparse.Namespace` (as read), a real
      Namespace, or a mapping.
    what: where it comes from, for errors.

  Raises:
    SemcorrError: anything else.
  """
  if isinstance(args, argparse.Namespace):
    return dict(vars(args))
  if isinstance(args, Mapping):
    return dict(args)
  if isinstance(args, InertRecord) and args.name == 'argparse.Namespace':
    return args.fields()
  kind = args.name if isinstance(args, InertRecord) else type(args).__name__
  raise SemcorrError(f'{what} is a {kind}, not an argparse.Namespace of the '
                     'run')


def int_list(value, name: str, what: str) -> list[int]:
  """A run argument that must be a list of ints (e.g. ncons_channels)."""
  if (isinstance(value, (list, tuple)) and value and
      all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
    return list(value)
  raise SemcorrError(f'{what}: argument {name}={value!r} is not a list of '
                     'integers')


def resnet_entries(variables: Mapping, subtree: Sequence[str],
                   key_of: Callable[[str], str]) -> dict[str, Entry]:
  """Entries of a torchvision-style ResNet inside `variables`.

  Args:
    variables: the model's {'params', 'batch_stats'}.
    subtree: the ResNet's module path, e.g. ('backbone',).
    key_of: torchvision key ('layer1.0.conv1.weight') -> release key.
  """
  expected = trees.expected_keys(
      variables, subtree, ('params', 'batch_stats'),
      torchvision_resnet.torch_key, 'torchvision ResNet')
  out = {}
  for key, (path, leaf) in expected.items():
    def convert(array, leaf_name=path[-1]):
      return trees.to_flax(array, leaf_name)
    out[key_of(key)] = Entry(tuple(path),
                             trees.torch_shape(leaf.shape, path[-1]),
                             np.dtype(leaf.dtype), convert)
  return out


def fill(variables: Mapping, table: Mapping[str, Entry],
         weights: Mapping[str, np.ndarray], ignored: Iterable[str],
         what: str) -> dict:
  """Fills every entry of `table` from `weights`, strictly.

  Args:
    variables: the model's variables (arrays or ShapeDtypeStructs).
    table: {release key: `Entry`}.
    weights: {release key: array}.
    ignored: regexes (`re.match`) of release keys that are accepted and
      not used.
    what: the release's name in the error.

  Returns:
    A copy of `variables` with every entry's leaf a numpy array of its
    dtype in our layout.

  Raises:
    SemcorrError: one line naming the missing keys, unexpected keys and
      shape mismatches (first few of each, with counts).
  """
  patterns = [re.compile(p) for p in ignored]
  missing = [k for k in table if k not in weights]
  unexpected = [k for k in weights if k not in table
                and not any(p.match(k) for p in patterns)]
  mismatched = [f'{k}: got {tuple(np.shape(v))}, expected {table[k].shape}'
                for k, v in weights.items()
                if k in table and tuple(np.shape(v)) != table[k].shape]
  if missing or unexpected or mismatched:
    problems = [trees.summary(kind, items) for kind, items in (
        ('missing', missing), ('unexpected', unexpected),
        ('shape mismatches', mismatched)) if items]
    raise SemcorrError(f'{what} does not fit the model: '
                       + '; '.join(problems))
  out = variables
  for key, entry in table.items():
    value = entry.to_ours(np.asarray(weights[key]))
    want = tuple(leaf(variables, entry.path).shape)
    if value.shape != want:  # A wrong table, not a wrong file.
      raise ValueError(f'{key} converts to {value.shape}, but '
                       f'{"/".join(entry.path)} is {want}')
    out = trees.set_path(out, entry.path,
                         np.ascontiguousarray(value, dtype=entry.dtype))
  return out


def leaf(variables: Mapping, path: Sequence[str]):
  """`variables[path...]`, or None where a level is missing."""
  node = variables
  for name in path:
    if not isinstance(node, Mapping) or name not in node:
      return None
    node = node[name]
  return node
