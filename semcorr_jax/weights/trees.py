"""Helpers shared by the state-dict converters: layouts, nested trees, errors.

PyTorch stores convolution kernels OIHW (depthwise (C, 1, k, k)) and linear
weights (out, in); Flax wants HWIO ((k, k, 1, C)) and (in, out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
import re

import numpy as np

from semcorr_jax.errors import SemcorrError

SHOW = 5  # Keys named per kind of problem in an error message.


def to_flax(array: np.ndarray, leaf: str) -> np.ndarray:
  """A PyTorch tensor in the layout of the Flax leaf `leaf`."""
  if leaf == 'kernel' and array.ndim == 4:
    return array.transpose(2, 3, 1, 0)  # OIHW -> HWIO; (C,1,k,k) -> (k,k,1,C)
  if leaf == 'kernel' and array.ndim == 2:
    return array.T  # Linear (out, in) -> Dense (in, out).
  return array


def torch_shape(shape: Sequence[int], leaf: str) -> tuple[int, ...]:
  """Inverse of `to_flax` on shapes, to report expectations in torch terms."""
  shape = tuple(shape)
  if leaf == 'kernel' and len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if leaf == 'kernel' and len(shape) == 2:
    return shape[::-1]
  return shape


def flatten(tree, prefix=()):
  """Yields `(path tuple, leaf)` of a nested mapping."""
  if isinstance(tree, Mapping):
    for k, v in tree.items():
      yield from flatten(v, prefix + (k,))
  else:
    yield prefix, tree


def set_path(tree, path, value):
  """A copy of nested mapping `tree` with `path` set (copy on write)."""
  tree = dict(tree)
  tree[path[0]] = value if len(path) == 1 else set_path(
      tree.get(path[0], {}), path[1:], value)
  return tree


def subtree_of(variables, collection, subtree):
  """`variables[collection][subtree...]`, {} where a level is missing."""
  tree = variables.get(collection, {})
  for name in subtree:
    tree = tree.get(name, {}) if isinstance(tree, Mapping) else {}
  return tree


def summary(kind: str, items: list[str]) -> str:
  """'3 missing keys (a, b, c)', naming at most `SHOW` of them."""
  shown = ', '.join(items[:SHOW])
  more = f', ... ({len(items) - SHOW} more)' if len(items) > SHOW else ''
  return f'{len(items)} {kind} ({shown}{more})'


def expected_keys(variables: Mapping, subtree: Sequence[str],
                  collections: Sequence[str],
                  key_of: Callable[[tuple[str, ...]], str | None],
                  what: str) -> dict:
  """{torch key: (full Flax path, template leaf)} of a module's variables.

  Args:
    variables: the variables holding the module at `subtree`.
    subtree: module path of the module inside `variables`.
    collections: e.g. ('params', 'batch_stats').
    key_of: (collection,) + path inside the module -> torch key, or None for
      a variable the converter does not know.
    what: the module's name in errors, e.g. 'torchvision ResNet'.

  Raises:
    SemcorrError: an unknown variable, or no variables at all.
  """
  subtree = tuple(subtree)
  expected = {}
  for collection in collections:
    for path, leaf in flatten(subtree_of(variables, collection, subtree)):
      key = key_of((collection,) + path)
      if key is None:
        raise SemcorrError(
            f'{"/".join((collection,) + subtree + path)} is not a {what} '
            'variable; pass its own variables or its subtree')
      expected[key] = ((collection,) + subtree + path, leaf)
  if not expected:
    raise SemcorrError(f'no {what} variables under {"/".join(subtree) or "/"}')
  return expected


def fill_checked(variables: Mapping, expected: Mapping, weights: Mapping,
                 allow_unused: Iterable[str], what: str,
                 key_prefix: str = '') -> tuple[dict, list[str]]:
  """Fills every expected leaf from `weights`, strictly.

  Args:
    variables: the nested variables to fill (a copy is returned).
    expected: {torch key: (path in `variables`, template leaf with .shape
      and .dtype)}.
    weights: {torch key: array}, `num_batches_tracked` already dropped.
    allow_unused: regexes of keys that may be left unused.
    what: the weights' name in the error, e.g. 'torchvision ResNet'.
    key_prefix: prepended to the unused keys reported.

  Returns:
    (filled variables, sorted unused keys).

  Raises:
    SemcorrError: naming the missing, unexpected and mis-shaped keys.
  """
  patterns = [re.compile(p) for p in allow_unused]
  missing = [k for k in expected if k not in weights]
  unused, unexpected = [], []
  for k in weights:
    if k not in expected:
      if any(p.match(k) for p in patterns):
        unused.append(key_prefix + k)
      else:
        unexpected.append(k)
  mismatched = []
  for k, (path, leaf) in expected.items():
    if k in weights:
      want = torch_shape(leaf.shape, path[-1])
      got = tuple(np.shape(weights[k]))
      if got != want:
        mismatched.append(f'{k}: got {got}, expected {want}')
  if missing or unexpected or mismatched:
    problems = [summary(kind, items) for kind, items in (
        ('missing', missing), ('unexpected', unexpected),
        ('shape mismatches', mismatched)) if items]
    raise SemcorrError(f'{what} weights do not fit the model: '
                       + '; '.join(problems))
  out = variables
  for k, (path, leaf) in expected.items():
    array = to_flax(np.asarray(weights[k]), path[-1])
    out = set_path(out, path, np.ascontiguousarray(array, dtype=leaf.dtype))
  return out, sorted(unused)


def export_torch(variables: Mapping, subtree: Sequence[str],
                 collections: Sequence[str],
                 key_of: Callable[[tuple[str, ...]], str | None],
                 what: str) -> dict:
  """The inverse of `fill_checked`: module variables -> a torch state dict.

  Returns:
    {torch key: float32 numpy array in torch layout}, plus a zero int64
    `num_batches_tracked` per BatchNorm (torch's strict `load_state_dict`
    wants it).

  Raises:
    SemcorrError: a variable `key_of` does not know.
  """
  out = {}
  for collection in collections:
    for path, leaf in flatten(subtree_of(variables, collection, subtree)):
      key = key_of((collection,) + path)
      if key is None:
        raise SemcorrError(f'{"/".join((collection,) + tuple(subtree) + path)}'
                           f' is not a {what} variable')
      array = np.asarray(leaf, np.float32)
      if path[-1] == 'kernel':
        array = array.transpose(3, 2, 0, 1) if array.ndim == 4 else array.T
      out[key] = np.ascontiguousarray(array)
      if path[-1] == 'mean':
        out[key[:-len('running_mean')] + 'num_batches_tracked'] = np.zeros(
            (), np.int64)
  return out
