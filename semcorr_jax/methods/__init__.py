"""Methods registered by name: `get(name)(config, total_steps)`.

`config.method` is a registered name ('sfnet', 'camnet', ...) or, for a
method that lives outside the package, 'module.path:ClassName' (the module
must be importable wherever the run is trained, evaluated or loaded).
"""

from __future__ import annotations

import importlib
from typing import Callable

from semcorr_jax.methods.base import Method, TrainState  # noqa: F401

# name -> 'module:Class'; imported lazily so a method's dependencies load only
# when it is used.
_REGISTRY = {
    'sfnet': 'semcorr_jax.methods.sfnet:SFNetMethod',
    'camnet': 'semcorr_jax.methods.camnet:CAMNetMethod',
    'gsf': 'semcorr_jax.methods.gsf:GSFMethod',
    'cats': 'semcorr_jax.methods.cats:CATsMethod',
    'ncnet': 'semcorr_jax.methods.ncnet:NCNetMethod',
    'jlfc': 'semcorr_jax.methods.jlfc:JLFCMethod',
}


def register(name: str, target: str) -> None:
  """Registers `target` ('module:Class') under `name`."""
  _REGISTRY[name] = target


def get(name: str) -> Callable[..., Method]:
  """Returns the Method class registered under `name` (or 'module:Class').

  Raises:
    KeyError: an unknown name, or a 'module:Class' that does not import.
  """
  target = _REGISTRY.get(name, name if ':' in name else None)
  if target is None:
    raise KeyError(f'unknown method {name!r}; known: {sorted(_REGISTRY)} or '
                   "'module:Class'")
  module, cls = target.split(':')
  try:
    found = getattr(importlib.import_module(module), cls)
  except (ImportError, AttributeError) as e:
    raise KeyError(f'method {name!r} does not import: {e}') from e
  if not (isinstance(found, type) and issubclass(found, Method)):
    raise KeyError(f'method {name!r} is not a semcorr_jax Method class')
  return found
