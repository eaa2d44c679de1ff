"""Reads and writes PyTorch-style state dicts as `{name: np.ndarray}`.

Formats by suffix:

* `.npz`: numpy archive, one array per key (what `save_npz` writes);
* `.safetensors`: read with `safetensors.numpy` (no torch needed);
* `.pth` / `.pt` / `.bin`: read with `torch.load(map_location='cpu',
  weights_only=True)`, only where torch is installed. Without torch, convert
  the file to `.npz` once on a machine that has it:

    python -m semcorr_jax.weights.state_dict resnet101.pth resnet101.npz

To dump torchvision's ImageNet ResNet-101 (needs torchvision and internet):

    python -c "import numpy as np, torchvision; np.savez('resnet101.npz', **{k: v.numpy() for k, v in torchvision.models.resnet101(weights='IMAGENET1K_V1').state_dict().items()})"

Every failure (missing file, corrupt file, unknown format) raises a
`SemcorrError` with one line.
"""

from collections.abc import Mapping
import os
import pathlib
import sys

import numpy as np

from semcorr_jax.errors import SemcorrError

TORCH_SUFFIXES = ('.pth', '.pt', '.bin')
SUFFIXES = ('.npz', '.safetensors') + TORCH_SUFFIXES


def _to_numpy(value, key, path):
  """A tensor or array as a numpy array (bfloat16 tensors become float32)."""
  if hasattr(value, 'detach'):  # A torch tensor; no torch import needed here.
    value = value.detach().cpu()
    if str(value.dtype) == 'torch.bfloat16':
      value = value.float()
    return value.numpy()
  if isinstance(value, (np.ndarray, np.generic, int, float)):
    return np.asarray(value)
  raise SemcorrError(f'{path}: entry {key!r} is a {type(value).__name__}, '
                     'not a tensor; expected a flat state dict')


def _read_npz(path):
  with np.load(path, allow_pickle=False) as archive:
    return {k: archive[k] for k in archive.files}


def _read_safetensors(path):
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  return load_file(path)


def _read_torch(path):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SemcorrError(
        f'{path}: reading PyTorch files needs torch, which is not installed; '
        'convert it to .npz on a machine with torch: python -m '
        f'semcorr_jax.weights.state_dict {path} '
        f'{pathlib.Path(path).with_suffix(".npz")}') from None
  state = torch.load(path, map_location='cpu', weights_only=True)
  # Training checkpoints often wrap the weights: {'state_dict': {...}, ...}.
  for wrapper in ('state_dict', 'model'):
    if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
      state = state[wrapper]
  if not isinstance(state, Mapping):
    raise SemcorrError(f'{path}: holds a {type(state).__name__}, not a state '
                       'dict')
  return state


_READERS = {'.npz': _read_npz, '.safetensors': _read_safetensors}
_READERS.update({s: _read_torch for s in TORCH_SUFFIXES})


def read_state_dict(path) -> dict[str, np.ndarray]:
  """Reads a state dict from `.npz`, `.safetensors` or (with torch) `.pth`.

  Args:
    path: file path; the suffix picks the format.

  Returns:
    {key: array} in the file's order, arrays in the file's dtypes.

  Raises:
    SemcorrError: the file is missing, unreadable, of an unknown format, or
      not a flat mapping of arrays.
  """
  path = os.fspath(path)
  suffix = pathlib.Path(path).suffix.lower()
  if suffix not in _READERS:
    raise SemcorrError(f'{path}: unknown weights format {suffix!r}; expected '
                       f'one of {", ".join(SUFFIXES)}')
  if not os.path.isfile(path):
    raise SemcorrError(f'{path}: no such weights file')
  try:
    state = _READERS[suffix](path)
  except SemcorrError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # Corrupt files surface as many exception types (zipfile, pickle,
    # safetensors' own); all mean the same thing to the user.
    first_line = (str(e).splitlines() or [''])[0][:200]
    raise SemcorrError(f'{path}: cannot read {suffix} weights '
                       f'({type(e).__name__}: {first_line})') from e
  return {str(k): _to_numpy(v, k, path) for k, v in state.items()}


def save_npz(state_dict: Mapping[str, object], path) -> None:
  """Writes `{key: tensor or array}` to an `.npz` that `read_state_dict` reads.

  Args:
    state_dict: e.g. `torchvision.models.resnet101(...).state_dict()` (torch
      tensors are moved to CPU; bfloat16 becomes float32) or numpy arrays.
    path: output path; '.npz' is appended by numpy when missing.
  """
  arrays = {str(k): _to_numpy(v, k, path) for k, v in state_dict.items()}
  np.savez(path, **arrays)


def main(argv=None) -> int:
  """CLI: `python -m semcorr_jax.weights.state_dict IN OUT.npz`."""
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 2:
    print('usage: python -m semcorr_jax.weights.state_dict IN OUT.npz\n'
          'converts a .pth/.pt/.bin/.safetensors/.npz state dict to .npz',
          file=sys.stderr)
    return 2
  try:
    state = read_state_dict(argv[0])
    save_npz(state, argv[1])
  except SemcorrError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(f'wrote {len(state)} arrays to {argv[1]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
