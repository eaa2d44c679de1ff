r"""Imports the official NCNet release (ignacio-rocco/ncnet).

NCNet's `ncnet_pfpascal.pth.tar` (trained_models/download.sh) is the
checkpoint its train.py writes:

  {'epoch': int, 'args': argparse.Namespace(ncons_kernel_sizes=[5, 5, 5],
   ncons_channels=[16, 16, 1], fe_finetune_params=1, ...),
   'state_dict': ImMatchNet.state_dict(), 'best_test_loss': numpy float64,
   'optimizer': Adam.state_dict(), 'train_loss' / 'test_loss': numpy arrays}

It is read without torch and without building anything but tensors
(`torch_pickle.read_torch_checkpoint(..., inert_globals=True)`: the
Namespace and the numpy values stay inert records). `FeatureExtraction.model`
is `nn.Sequential(conv1, bn1, relu, maxpool, layer1, layer2, layer3)` of
torchvision's ResNet-101; `NeighConsensus.conv` alternates Conv4d and ReLU,
and NCNet's Conv4d keeps its weight pre-permuted as (k1, out, in, k2, k3,
k4). Key mapping (torchvision names as in `torchvision_resnet`):

  FeatureExtraction.model.0.weight        -> params/backbone/conv1/kernel
  FeatureExtraction.model.1.*             -> backbone/bn1 (scale, bias, mean,
                                             var)
  FeatureExtraction.model.{4,5,6}.<b>.*   -> backbone/layer{1,2,3}_<b>/...
  NeighConsensus.conv.<2i>.weight         -> params/consensus/conv_<i>/kernel
      (k1, out, in, k2, k3, k4)              (k1, k2, k3, k4, in, out) =
                                             w.transpose(0, 3, 4, 5, 2, 1)
  NeighConsensus.conv.<2i>.bias           -> params/consensus/conv_<i>/bias
  *.num_batches_tracked                   -> dropped (absent before torch
                                             0.4.1)

Keys named `FeatureExtraction.vgg.*` are read as `FeatureExtraction.model.*`
(NCNet's own loader renames them so). Strict: a missing or unexpected key or
a wrong shape is one SemcorrError naming them; the Namespace's
`ncons_kernel_sizes` / `ncons_channels` must be the model's kernel sizes and
channels.

`semcorr-import-ncnet` (semcorr_jax/cli/import_ncnet.py) turns the release
into a workdir that `semcorr-eval` scores.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import release_common

WHAT = 'the NCNet release'
# Index of torchvision's top-level modules in `FeatureExtraction.model`.
_SEQUENTIAL = {'conv1': 0, 'bn1': 1, 'layer1': 4, 'layer2': 5, 'layer3': 6,
               'layer4': 7}
FEATURES = 'FeatureExtraction.model.'
CONSENSUS = 'NeighConsensus.conv.'


class Release(NamedTuple):
  """A read release: flat tensors and the run's flags."""
  state: dict[str, np.ndarray]
  args: dict


def feature_key(torchvision_key: str) -> str:
  """'layer3.22.conv1.weight' -> 'FeatureExtraction.model.6.22.conv1.weight'."""
  top, _, rest = torchvision_key.partition('.')
  return f'{FEATURES}{_SEQUENTIAL[top]}.{rest}'


def read_release(checkpoint) -> Release:
  """The release's tensors and flags.

  Args:
    checkpoint: path of `ncnet_pfpascal.pth.tar` (torch.save, either
      format), or its content: a mapping with 'state_dict' (nested or flat
      tensors) and optionally 'args' (Namespace, record or mapping).

  Raises:
    SemcorrError: unreadable file, no state dict, a state-dict entry that is
      not a tensor, or malformed args.
  """
  ckpt = release_common.read_checkpoint(checkpoint, WHAT)
  state = release_common.state_dict(ckpt, WHAT)
  state = {(FEATURES + k[len('FeatureExtraction.vgg.'):]
            if k.startswith('FeatureExtraction.vgg.') else k): v
           for k, v in state.items()}
  args = ckpt.get('args')
  args = {} if args is None else release_common.run_args(
      args, f"{WHAT}'s 'args'")
  return Release(state, args)


def consensus_layout(variables: Mapping) -> tuple[list[int], list[int]]:
  """(kernel sizes, channels) of the model's NeighConsensus.

  Raises:
    SemcorrError: the variables have no params/consensus/conv_0.
  """
  convs = release_common.leaf(variables, ('params', 'consensus'))
  if not isinstance(convs, Mapping) or 'conv_0' not in convs:
    raise SemcorrError('the model has no params/consensus/conv_0: not an '
                       'NCNet')
  kernels = [convs[f'conv_{i}']['kernel'].shape
             for i in range(len(convs)) if f'conv_{i}' in convs]
  return [k[0] for k in kernels], [k[-1] for k in kernels]


def check_args(args: Mapping, variables: Mapping) -> None:
  """The release's NeighConsensus flags against the model's layout.

  Raises:
    SemcorrError: different kernel sizes or channels, with the config
      settings that match the release.
  """
  if args:
    _compare(args, *consensus_layout(variables))


def check_config(config, args: Mapping) -> None:
  """The release's flags against an `ncnet` config, before building it.

  Raises:
    SemcorrError: the config's consensus differs from the release's, or is
      not symmetric.
  """
  if not config.model.symmetric:
    raise SemcorrError(f'{WHAT} was trained with the symmetric '
                       'NeighConsensus; set config.model.symmetric=True')
  if args:
    _compare(args, list(config.model.kernel_sizes),
             list(config.model.channels))


def _compare(args: Mapping, kernels: list[int], channels: list[int]) -> None:
  want_k = release_common.int_list(args.get('ncons_kernel_sizes'),
                                   'ncons_kernel_sizes', WHAT)
  want_c = release_common.int_list(args.get('ncons_channels'),
                                   'ncons_channels', WHAT)
  if (want_k, want_c) != (kernels, channels):
    raise SemcorrError(
        f'{WHAT} has NeighConsensus kernel sizes {want_k} and channels '
        f'{want_c} (its args), the model {kernels} and {channels}: set '
        f'config.model.kernel_sizes={tuple(want_k)} and config.model.channels='
        f'{tuple(want_c)} (configs/ncnet.py:paper has the PF-PASCAL '
        "release's)")


def _consensus_entries(variables: Mapping) -> dict:
  convs = release_common.leaf(variables, ('params', 'consensus'))
  table = {}
  for i in range(len(convs)):
    path = ('params', 'consensus', f'conv_{i}')
    kernel = release_common.leaf(variables, path + ('kernel',))
    bias = release_common.leaf(variables, path + ('bias',))
    if kernel is None or bias is None or len(kernel.shape) != 6:
      raise SemcorrError(f'{"/".join(path)} is not a Conv4d with bias')
    k1, k2, k3, k4, cin, cout = kernel.shape
    table[f'{CONSENSUS}{2 * i}.weight'] = release_common.Entry(
        path + ('kernel',), (k1, cout, cin, k2, k3, k4),
        np.dtype(kernel.dtype), lambda w: w.transpose(0, 3, 4, 5, 2, 1))
    table[f'{CONSENSUS}{2 * i}.bias'] = release_common.Entry(
        path + ('bias',), tuple(bias.shape), np.dtype(bias.dtype),
        lambda b: b)
  return table


def release_mapping(variables: Mapping) -> dict[str, release_common.Entry]:
  """The release key -> `Entry` table of an NCNet's variables.

  Args:
    variables: NCNet's {'params', 'batch_stats'} (arrays or
      ShapeDtypeStructs): a torchvision-style ResNet at `backbone`, the
      NeighConsensus at `consensus`.

  Raises:
    SemcorrError: not an NCNet with a ResNet backbone.
  """
  consensus_layout(variables)  # Checks there is one.
  backbone = release_common.leaf(variables, ('params', 'backbone'))
  if not isinstance(backbone, Mapping) or 'conv1' not in backbone:
    raise SemcorrError(f'{WHAT} holds a ResNet-101 backbone; the model\'s '
                       'backbone is not a ResNet (set config.backbone.name='
                       "'resnet', depth=101, features=('layer3',))")
  table = release_common.resnet_entries(variables, ('backbone',), feature_key)
  table.update(_consensus_entries(variables))
  return table


def import_ncnet_release(checkpoint, variables: Mapping) -> dict:
  """Fills an NCNet's backbone and NeighConsensus from the release.

  Args:
    checkpoint: path of the release, its content (see `read_release`), or a
      `Release`.
    variables: NCNet's {'params', 'batch_stats', ...} (arrays or
      ShapeDtypeStructs) for ResNet-101 tapped at layer3.

  Returns:
    A copy of `variables` whose backbone and consensus leaves are numpy
    arrays of the template's dtypes in our layouts.

  Raises:
    SemcorrError: unreadable file, flags that do not match the model, or
      missing/unexpected keys or wrong shapes (named, first few of each).
  """
  release = (checkpoint if isinstance(checkpoint, Release)
             else read_release(checkpoint))
  table = release_mapping(variables)
  check_args(release.args, variables)
  return release_common.fill(variables, table, release.state, (), WHAT)
