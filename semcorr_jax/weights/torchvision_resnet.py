"""Torchvision ResNet state dict -> `models.resnet.ResNet` variables.

Pure numpy (no torch): read the state dict with `state_dict.read_state_dict`.
Per key (names in `models/resnet.py`'s docstring):

  conv weight (O, I, kh, kw)  -> params/.../kernel (kh, kw, I, O)
  fc.weight (out, in)         -> params/fc/kernel (in, out)
  bn.weight / bn.bias         -> params/.../scale / bias
  bn.running_mean / _var      -> batch_stats/.../mean / var
  *.num_batches_tracked       -> dropped (no Flax counterpart)

Loading is strict: the variables to fill (a template, e.g. from
`jax.eval_shape(model.init, ...)`) define the expected keys, and any missing
key, unexpected key or shape mismatch raises one `SemcorrError` that names
them (first few of each, with counts). Keys of whole layers that the module
does not build (layer4 with last_stage='layer3', fc without a head) can be
allowed and are returned as `unused`.
"""

from collections.abc import Iterable, Mapping, Sequence
import re

import jax
import jax.numpy as jnp
import numpy as np

from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import resnet as resnet_lib
from semcorr_jax.weights.state_dict import read_state_dict
from semcorr_jax.weights.trees import expected_keys
from semcorr_jax.weights.trees import export_torch
from semcorr_jax.weights.trees import fill_checked
from semcorr_jax.weights.trees import subtree_of as _subtree

_COLLECTIONS = ('params', 'batch_stats')
# (collection, Flax leaf) -> torch parameter/buffer name.
_LEAF_NAMES = {
    ('params', 'kernel'): 'weight',
    ('params', 'scale'): 'weight',
    ('params', 'bias'): 'bias',
    ('batch_stats', 'mean'): 'running_mean',
    ('batch_stats', 'var'): 'running_var',
}
_MODULE_NAMES = {'downsample_conv': 'downsample.0',
                 'downsample_bn': 'downsample.1'}
_BLOCK = re.compile(r'(layer\d+)_(\d+)$')
_TOP_MODULES = ('conv1', 'bn1', 'fc')
_BLOCK_MODULES = ('conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3',
                  'downsample_conv', 'downsample_bn')


def torch_key(path: Sequence[str]) -> str | None:
  """The torchvision key of a Flax variable path, or None if it has none.

  Args:
    path: ('params' | 'batch_stats', *module names, leaf), relative to the
      ResNet, e.g. ('params', 'layer2_0', 'downsample_conv', 'kernel').

  Returns:
    e.g. 'layer2.0.downsample.0.weight'.
  """
  collection, *modules, leaf = path
  if (collection, leaf) not in _LEAF_NAMES:
    return None
  if len(modules) == 1 and modules[0] in _TOP_MODULES:
    names = modules
  elif (len(modules) == 2 and _BLOCK.match(modules[0])
        and modules[1] in _BLOCK_MODULES):
    block = _BLOCK.match(modules[0])
    names = [block[1], block[2], _MODULE_NAMES.get(modules[1], modules[1])]
  else:
    return None
  return '.'.join(names + [_LEAF_NAMES[collection, leaf]])


def load_into(variables: Mapping,
              state_dict: Mapping[str, np.ndarray],
              *,
              subtree: Sequence[str] = (),
              prefix: str = '',
              allow_unused: Iterable[str] = ()) -> tuple[dict, list[str]]:
  """Strictly fills ResNet variables from a torchvision state dict.

  Args:
    variables: {'params': ..., 'batch_stats': ...} whose leaves (arrays or
      `jax.ShapeDtypeStruct`s) give the expected shapes and dtypes; other
      collections are passed through.
    state_dict: {torchvision key: array}, e.g. from `read_state_dict`.
    subtree: module path of the ResNet inside `variables` (e.g. ('backbone',)
      for `params/backbone/...`); () when `variables` is the ResNet's own.
    prefix: only state-dict keys starting with it are read, with it stripped
      (e.g. 'module.'); other keys are returned as unused.
    allow_unused: regexes (`re.match`) of state-dict keys (after `prefix`) that
      may be left unused, e.g. r'layer4\\.', r'fc\\.'.

  Returns:
    (variables, unused): a copy of `variables` with every ResNet leaf replaced
    by a numpy array of the template's dtype, and the sorted state-dict keys
    left unused: those matching `allow_unused` and those outside `prefix`.

  Raises:
    SemcorrError: naming the missing keys, unexpected keys and shape
      mismatches, if there is any.
  """
  expected = expected_keys(variables, subtree, _COLLECTIONS, torch_key,
                           'torchvision ResNet')

  weights = {k[len(prefix):]: v for k, v in state_dict.items()
             if k.startswith(prefix) and not k.endswith('num_batches_tracked')}
  out, unused = fill_checked(variables, expected, weights, allow_unused,
                             'torchvision ResNet', key_prefix=prefix)
  return out, sorted(unused + [k for k in state_dict
                               if not k.startswith(prefix)])


def convert_torchvision_resnet(
    state_dict: Mapping[str, np.ndarray],
    stage_sizes: Sequence[int] = resnet_lib.STAGE_SIZES[101],
    include_fc: bool | None = None,
    last_stage: str = 'layer4',
    allow_unused: Iterable[str] = (),
) -> dict:
  """Converts a torchvision ResNet state dict to `ResNet` variables.

  The width comes from `conv1.weight` and the class count from `fc.weight`;
  the expected keys and shapes come from `ResNet(stage_sizes, ...)` itself.

  Args:
    state_dict: {torchvision key: array}.
    stage_sizes: blocks per stage (`resnet.STAGE_SIZES[depth]`).
    include_fc: convert the classifier; None: iff `fc.weight` is present.
      With False, `fc.*` keys are ignored.
    last_stage: last stage to convert; keys of later stages are ignored.
    allow_unused: further regexes of keys that may be left unused (see
      `load_into`).

  Returns:
    {'params': ..., 'batch_stats': ...} of float32 numpy arrays for
    `ResNet(stage_sizes, width, num_classes if include_fc, last_stage)`.

  Raises:
    SemcorrError: on any missing key, unexpected key or shape mismatch.
  """
  if 'conv1.weight' not in state_dict:
    raise SemcorrError('torchvision ResNet weights do not fit the model: '
                       '1 missing (conv1.weight)')
  if include_fc is None:
    include_fc = 'fc.weight' in state_dict
  num_classes = None
  if include_fc:
    num_classes = np.shape(state_dict.get('fc.weight', np.zeros((1000,))))[0]
  model = resnet_lib.ResNet(stage_sizes=tuple(stage_sizes),
                            width=np.shape(state_dict['conv1.weight'])[0],
                            num_classes=num_classes, last_stage=last_stage)
  template = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, 32, 32, 3)))
  # Layers the caller chose not to build (fc, stages after last_stage) may
  # stay unused; everything else is strict.
  allow_unused = list(allow_unused) + absent_layer_patterns(template)
  variables, _ = load_into(template, state_dict, allow_unused=allow_unused)
  return variables


def export_torchvision_resnet(variables: Mapping,
                              subtree: Sequence[str] = ()) -> dict:
  """The inverse of `load_into`: ResNet variables -> torchvision state dict.

  Args:
    variables: {'params', 'batch_stats'} of a `ResNet`, or a larger tree
      holding it at `subtree`.
    subtree: module path of the ResNet inside `variables`.

  Returns:
    {torchvision key: float32 numpy array in torch layout}, plus a zero int64
    `num_batches_tracked` per BatchNorm so that torch's strict
    `load_state_dict` accepts it.
  """
  return export_torch(variables, subtree, _COLLECTIONS, torch_key,
                      'torchvision ResNet')


def absent_layer_patterns(variables: Mapping,
                          subtree: Sequence[str] = ()) -> list[str]:
  """Regexes of torchvision top-level layers that `variables` lacks.

  E.g. [r'layer4\\.', r'fc\\.'] for a ResNet with last_stage='layer3' and no
  head: a full ImageNet checkpoint loads into it with those keys unused.
  """
  present = set(_subtree(variables, 'params', subtree))
  names = [s for s in resnet_lib.STAGE_NAMES
           if not any(m.startswith(s + '_') for m in present)]
  if 'fc' not in present:
    names.append('fc')
  return [re.escape(n + '.') for n in names]


def load_backbone_weights(backbone_variables: Mapping,
                          path,
                          stage_sizes: Sequence[int] | None = None,
                          last_stage: str | None = None,
                          *,
                          subtree: Sequence[str] = (),
                          prefix: str = '') -> tuple[dict, list[str]]:
  """Loads a torchvision ResNet checkpoint file into backbone variables.

  Strict, except that keys of whole layers the module does not build (stages
  after `last_stage`, `fc` when there is no head) may go unused.

  Args:
    backbone_variables: the ResNet's {'params', 'batch_stats'} (arrays or
      ShapeDtypeStructs), or a larger tree holding it at `subtree`.
    path: `.npz`, `.safetensors`, or a `torch.save` file (`.pth`/`.pt`/`.bin`,
      read without torch by `weights.torch_pickle`).
    stage_sizes: if given, checked against the variables' blocks.
    last_stage: if given, checked against the variables' last stage.
    subtree: see `load_into`.
    prefix: see `load_into`.

  Returns:
    (variables, unused): the filled copy (numpy leaves) and the sorted
    state-dict keys left unused (e.g. every 'layer4.*' and 'fc.*' key).

  Raises:
    SemcorrError: unreadable file, or weights that do not fit (see
      `load_into`).
  """
  params = _subtree(backbone_variables, 'params', subtree)
  if stage_sizes is not None or last_stage is not None:
    have = [sum(1 for m in params if m.startswith(s + '_'))
            for s in resnet_lib.STAGE_NAMES]
    have = tuple(n for n in have if n)
    if last_stage is not None:
      want_stages = resnet_lib.STAGE_NAMES.index(last_stage) + 1
      if len(have) != want_stages:
        raise ValueError(f'variables have {len(have)} stages, last_stage='
                         f'{last_stage!r} needs {want_stages}')
    if stage_sizes is not None and have != tuple(stage_sizes)[:len(have)]:
      raise ValueError(f'variables have stage sizes {have}, expected '
                       f'{tuple(stage_sizes)}')
  state_dict = read_state_dict(path)
  try:
    return load_into(backbone_variables, state_dict, subtree=subtree,
                     prefix=prefix,
                     allow_unused=absent_layer_patterns(backbone_variables,
                                                        subtree))
  except SemcorrError as e:
    raise SemcorrError(f'{path}: {e}') from None
