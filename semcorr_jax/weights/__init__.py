"""Pretrained weights: state-dict readers and pure-numpy converters.

  state = read_state_dict('resnet101.npz')        # .npz/.safetensors/.pth
  variables = convert_torchvision_resnet(state)   # {'params', 'batch_stats'}
  variables, unused = load_backbone_weights(template, 'resnet101.npz')

How to get the torchvision ImageNet file: `semcorr-fetch-weights`
(`semcorr_jax.cli.fetch_weights`).
"""

from semcorr_jax.weights.efficientnet_lite import convert_lite0
from semcorr_jax.weights.efficientnet_lite import export_lite0
from semcorr_jax.weights.efficientnet_lite import load_lite0_variables
from semcorr_jax.weights.efficientnet_lite import packaged_lite0_path
from semcorr_jax.weights.efficientnet_lite import read_lite0_state_dict
from semcorr_jax.weights.sfnet_release import import_sfnet_release
from semcorr_jax.weights.state_dict import read_state_dict
from semcorr_jax.weights.state_dict import save_npz
from semcorr_jax.weights.state_dict import save_safetensors
from semcorr_jax.weights.state_dict import save_torch_file
from semcorr_jax.weights.torch_pickle import read_torch_file
from semcorr_jax.weights.torchvision_resnet import absent_layer_patterns
from semcorr_jax.weights.torchvision_resnet import convert_torchvision_resnet
from semcorr_jax.weights.torchvision_resnet import export_torchvision_resnet
from semcorr_jax.weights.torchvision_resnet import load_backbone_weights
from semcorr_jax.weights.torchvision_resnet import load_into
from semcorr_jax.weights.torchvision_resnet import torch_key

__all__ = [
    'absent_layer_patterns',
    'convert_lite0',
    'convert_torchvision_resnet',
    'export_lite0',
    'export_torchvision_resnet',
    'import_sfnet_release',
    'load_backbone_weights',
    'load_into',
    'load_lite0_variables',
    'packaged_lite0_path',
    'read_lite0_state_dict',
    'read_state_dict',
    'read_torch_file',
    'save_npz',
    'save_safetensors',
    'save_torch_file',
    'torch_key',
]
