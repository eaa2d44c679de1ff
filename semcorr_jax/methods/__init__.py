"""Methods registered by name: `get(name)(config, total_steps)`."""

from __future__ import annotations

import importlib
from typing import Callable

from semcorr_jax.methods.base import Method, TrainState  # noqa: F401

# name -> 'module:Class'; imported lazily so a method's dependencies load only
# when it is used.
_REGISTRY = {
    'sfnet': 'semcorr_jax.methods.sfnet:SFNetMethod',
    'camnet': 'semcorr_jax.methods.camnet:CAMNetMethod',
}


def register(name: str, target: str) -> None:
  """Registers `target` ('module:Class') under `name`."""
  _REGISTRY[name] = target


def get(name: str) -> Callable[..., Method]:
  """Returns the Method class registered under `name`."""
  if name not in _REGISTRY:
    raise KeyError(f'unknown method {name!r}; known: {sorted(_REGISTRY)}')
  module, cls = _REGISTRY[name].split(':')
  return getattr(importlib.import_module(module), cls)
