"""Pretrained weights: state-dict readers and pure-numpy converters.

  state = read_state_dict('resnet101.npz')        # .npz/.safetensors/.pth
  variables = convert_torchvision_resnet(state)   # {'params', 'batch_stats'}
  variables, unused = load_backbone_weights(template, 'resnet101.npz')

How to get the torchvision ImageNet file: `semcorr_jax.weights.state_dict`.
"""

from semcorr_jax.weights.state_dict import read_state_dict
from semcorr_jax.weights.state_dict import save_npz
from semcorr_jax.weights.torchvision_resnet import absent_layer_patterns
from semcorr_jax.weights.torchvision_resnet import convert_torchvision_resnet
from semcorr_jax.weights.torchvision_resnet import export_torchvision_resnet
from semcorr_jax.weights.torchvision_resnet import load_backbone_weights
from semcorr_jax.weights.torchvision_resnet import load_into
from semcorr_jax.weights.torchvision_resnet import torch_key

__all__ = [
    'absent_layer_patterns',
    'convert_torchvision_resnet',
    'export_torchvision_resnet',
    'load_backbone_weights',
    'load_into',
    'read_state_dict',
    'save_npz',
    'torch_key',
]
