r"""Imports the official SFNet release checkpoint (cvlab-yonsei/SFNet).

SFNet's released `best_checkpoint.pt` (Google Drive link in its README)
holds only the trained adaptation layers, as saved by its train.py:
`{'state_dict1': adap_layer_feat3.state_dict(), 'state_dict2':
adap_layer_feat4.state_dict()}`. Each layer has two residual units
`conv1`, `conv2` = Sequential(Conv2d(C, C, k, padding k // 2), BatchNorm2d,
ReLU) (layer3: C=1024, k=5; layer4: C=2048, k=3). Key mapping (unit u = 1,
2 -> our index u - 1; `adapt_<tap>` = adapt_layer3 / adapt_layer4):

  state_dict1.conv{u}.0.weight (C, C, k, k) -> params/adapt_layer3/conv{u-1}
                                              /kernel (k, k, C, C)
  state_dict1.conv{u}.0.bias               -> params/.../conv{u-1}/bias
  state_dict1.conv{u}.1.weight / .bias     -> params/.../bn{u-1}/scale / bias
  state_dict1.conv{u}.1.running_mean / _var -> batch_stats/.../bn{u-1}/mean
                                              / var
  state_dict1.conv{u}.1.num_batches_tracked -> dropped (optional)
  state_dict2.*                            -> adapt_layer4, the same way

Strict: a missing or unexpected key, or a wrong shape, is one SemcorrError
naming them. The backbone is not in the file: SFNet used torchvision's
ImageNet ResNet-101 (`semcorr-fetch-weights resnet101`).

`semcorr-import-sfnet` (semcorr_jax/cli/import_sfnet.py) turns the release
into a workdir that `semcorr-eval` scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os

import numpy as np

from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import torch_pickle
from semcorr_jax.weights.trees import summary as _summary

# Release state dict -> SFNet level index (0: finer tap, 1: coarser tap).
STATE_DICTS = ('state_dict1', 'state_dict2')
_BN = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
       'running_mean': ('batch_stats', 'mean'),
       'running_var': ('batch_stats', 'var')}


def _leaf(variables, path):
  node = variables
  for name in path:
    if not isinstance(node, Mapping) or name not in node:
      return None
    node = node[name]
  return node


def release_mapping(variables: Mapping, levels: Sequence[str]
                    ) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """The release key -> (our variable path, expected torch shape) table.

  Args:
    variables: SFNet's {'params', 'batch_stats'} (arrays or
      ShapeDtypeStructs, e.g. from `jax.eval_shape(model.init, ...)`).
    levels: the two tapped features, finer first (`SFNet.levels`).

  Returns:
    e.g. {'state_dict1.conv1.0.weight': (('params', 'adapt_layer3', 'conv0',
    'kernel'), (1024, 1024, 5, 5)), ...} for every adaptation leaf.

  Raises:
    SemcorrError: the variables have no such adaptation layers, or leaves
      this mapping does not know.
  """
  table = {}
  for sd_name, level in zip(STATE_DICTS, levels):
    module = f'adapt_{level}'
    params = _leaf(variables, ('params', module))
    if not isinstance(params, Mapping):
      raise SemcorrError(f'the model has no params/{module}: not an SFNet '
                         'with these taps')
    units = sum(1 for name in params if name.startswith('conv'))
    covered = set()
    for i in range(units):
      conv = ('params', module, f'conv{i}')
      bn = (module, f'bn{i}')
      prefix = f'{sd_name}.conv{i + 1}.'
      kernel = _leaf(variables, conv + ('kernel',))
      bias = _leaf(variables, conv + ('bias',))
      if kernel is None or bias is None or len(kernel.shape) != 4:
        raise SemcorrError(f'{"/".join(conv)} is not a conv with bias')
      kh, kw, cin, cout = kernel.shape
      table[prefix + '0.weight'] = (conv + ('kernel',), (cout, cin, kh, kw))
      table[prefix + '0.bias'] = (conv + ('bias',), tuple(bias.shape))
      for torch_name, (collection, leaf) in _BN.items():
        path = (collection,) + bn + (leaf,)
        value = _leaf(variables, path)
        if value is None:
          raise SemcorrError(f'{"/".join(path)} is missing in the model')
        table[prefix + '1.' + torch_name] = (path, tuple(value.shape))
      covered.update({f'conv{i}', f'bn{i}'})
    for collection in ('params', 'batch_stats'):
      extra = set(_leaf(variables, (collection, module)) or {}) - covered
      if extra:
        raise SemcorrError(f'{collection}/{module} has modules the release '
                           f'does not fill: {sorted(extra)}')
  return table


def read_release(checkpoint) -> dict[str, np.ndarray]:
  """The release as {'state_dict1.conv1.0.weight': array, ...}.

  Args:
    checkpoint: path of the release file, or its content as a nested or flat
      mapping (see `import_sfnet_release`).

  Raises:
    SemcorrError: unreadable file, or not a release.
  """
  if isinstance(checkpoint, (str, os.PathLike)):
    checkpoint = torch_pickle.read_torch_checkpoint(checkpoint)
  if not isinstance(checkpoint, Mapping):
    raise SemcorrError(f'the SFNet release holds a {type(checkpoint).__name__}'
                       ", not {'state_dict1': ..., 'state_dict2': ...}")
  nested = {k: v for k, v in checkpoint.items() if isinstance(v, Mapping)}
  if not nested:  # Already flat ('state_dict1.conv1.0.weight' keys).
    return {str(k): np.asarray(v) for k, v in checkpoint.items()}
  other = sorted(str(k) for k in checkpoint if k not in nested)
  if other:
    raise SemcorrError('SFNet release weights do not fit the model: '
                       + _summary('unexpected', other))
  return torch_pickle.flatten_state_dict(nested, 'SFNet release')


def import_sfnet_release(checkpoint, variables: Mapping,
                         levels: Sequence[str] = ('layer3', 'layer4')
                         ) -> dict:
  """Fills SFNet's adaptation layers from the official release.

  Args:
    checkpoint: path of the release file (torch.save, either format; read
      without torch), or its content as a nested mapping
      {'state_dict1': {...}, 'state_dict2': {...}} or flat mapping
      {'state_dict1.conv1.0.weight': ...} of arrays.
    variables: SFNet's {'params', 'batch_stats', ...} (arrays or
      ShapeDtypeStructs); only the adaptation leaves are replaced.
    levels: the taps, finer first (`SFNet.levels`); the release is for
      ResNet-101 ('layer3', 'layer4').

  Returns:
    A copy of `variables` whose adaptation leaves are numpy arrays of the
    template's dtypes (kernels OIHW -> HWIO).

  Raises:
    SemcorrError: unreadable file, or missing/unexpected keys or wrong shapes
      (named, first few of each).
  """
  table = release_mapping(variables, levels)
  weights = {k: v for k, v in read_release(checkpoint).items()
             if not k.endswith('.num_batches_tracked')}
  missing = [k for k in table if k not in weights]
  unexpected = [k for k in weights if k not in table]
  mismatched = [f'{k}: got {tuple(np.shape(v))}, expected {table[k][1]}'
                for k, v in weights.items()
                if k in table and tuple(np.shape(v)) != table[k][1]]
  if missing or unexpected or mismatched:
    problems = [_summary(kind, items) for kind, items in (
        ('missing', missing), ('unexpected', unexpected),
        ('shape mismatches', mismatched)) if items]
    raise SemcorrError('SFNet release weights do not fit the model: '
                       + '; '.join(problems))
  out = _copy_tree(variables)
  for key, (path, _) in table.items():
    value = np.asarray(weights[key])
    if path[-1] == 'kernel':
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO.
    node = out
    for name in path[:-1]:
      node = node[name]
    node[path[-1]] = np.ascontiguousarray(value, dtype=node[path[-1]].dtype)
  return out


def _copy_tree(tree):
  if isinstance(tree, Mapping):
    return {k: _copy_tree(v) for k, v in tree.items()}
  return tree
