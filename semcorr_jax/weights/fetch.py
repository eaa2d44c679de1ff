r"""torchvision's ImageNet ResNets as our `.npz` (library of `semcorr-fetch-weights`).

`fetch(name, output)` downloads torchvision's `IMAGENET1K_V1` file
(`ResNet101_Weights` / `ResNet50_Weights` in torchvision/models/resnet.py;
the weights SFNet used) from download.pytorch.org into a temporary file
beside the output, checks that its sha256 starts with the 8 hex digits in
the file name (as `torch.hub` does), reads it with
`torch_pickle.read_torch_file` (no torch), checks that it is a complete
torchvision ResNet state dict of that depth (`convert_torchvision_resnet`:
every key, every shape, nothing extra), and writes the state dict,
torchvision keys unchanged, as `.npz` (written to a temporary name, then
renamed). `fetch(..., input_path=...)` converts an already downloaded file
instead. The command line is `semcorr_jax.cli.fetch_weights`.

The output location (and, with `keep_download`, the download's final
name) is checked before anything is downloaded or read. Every failure (an
unwritable output, no network, hash mismatch, incomplete file, a full disk)
is a one-line `SemcorrError` (or OSError); nothing half-written is left.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request

import numpy as np

from semcorr_jax import output_paths
from semcorr_jax.errors import SemcorrError
from semcorr_jax.models import resnet as resnet_lib
from semcorr_jax.weights import torch_pickle
from semcorr_jax.weights.torchvision_resnet import convert_torchvision_resnet

_CHUNK = 1 << 20
_HASH = re.compile(r'-([a-f0-9]{8,})\.')


@dataclasses.dataclass(frozen=True)
class Model:
  """A downloadable torchvision ResNet: its URL and stage sizes."""
  url: str
  stage_sizes: tuple[int, ...]

  @property
  def file_name(self) -> str:
    return self.url.rsplit('/', 1)[-1]

  @property
  def sha256_prefix(self) -> str:
    match = _HASH.search(self.file_name)
    if not match:
      raise SemcorrError(f'{self.url}: no sha256 prefix in the file name')
    return match[1]


# torchvision.models.ResNet{50,101}_Weights.IMAGENET1K_V1.
MODELS = {
    'resnet50': Model('https://download.pytorch.org/models/'
                      'resnet50-0676ba61.pth', resnet_lib.STAGE_SIZES[50]),
    'resnet101': Model('https://download.pytorch.org/models/'
                       'resnet101-63fe2227.pth', resnet_lib.STAGE_SIZES[101]),
}


def sha256_of(path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(_CHUNK), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _check_hash(path, model: Model, what: str) -> None:
  digest = sha256_of(path)
  if not digest.startswith(model.sha256_prefix):
    raise SemcorrError(
        f'{what}: sha256 {digest[:16]}... does not start with '
        f'{model.sha256_prefix} (expected {model.file_name}); the file is '
        'corrupt or a different one')


def download(model: Model, directory: str, timeout: float = 60.0) -> str:
  """Downloads `model.url` into a new temporary file in `directory`.

  Args:
    model: what to download.
    directory: where the temporary file goes (the output's folder, so that
      a later rename stays on one file system).
    timeout: seconds without data before giving up.

  Returns:
    The path of the verified download; the caller removes or renames it.

  Raises:
    SemcorrError: no network, HTTP error, or a sha256 mismatch (the partial
      file is removed).
  """
  fd, tmp = tempfile.mkstemp(prefix=model.file_name + '.', suffix='.part',
                             dir=directory)
  try:
    with os.fdopen(fd, 'wb') as out:
      with urllib.request.urlopen(model.url, timeout=timeout) as response:
        for chunk in iter(lambda: response.read(_CHUNK), b''):
          out.write(chunk)
    _check_hash(tmp, model, model.url)
  except (urllib.error.URLError, http.client.HTTPException, OSError,
          ValueError) as e:
    os.unlink(tmp)
    reason = getattr(e, 'reason', None) or e
    raise SemcorrError(
        f'cannot download {model.url} ({reason}); check the network, or '
        'download the file elsewhere and convert it with --input FILE'
    ) from None
  except BaseException:
    os.unlink(tmp)
    raise
  return tmp


def write_npz(state: dict[str, np.ndarray], output: str) -> None:
  """Writes `state` to `output` through a temporary file and a rename.

  Raises:
    SemcorrError: writing failed (the temporary file is removed).
  """
  fd, tmp = tempfile.mkstemp(suffix='.npz.part',
                             dir=os.path.dirname(output) or '.')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **state)  # A file object: no '.npz' appended.
    os.replace(tmp, output)
  except BaseException as e:
    if os.path.exists(tmp):
      os.unlink(tmp)
    if isinstance(e, OSError):  # A full disk, a folder removed meanwhile.
      raise SemcorrError(f'cannot write {output}: {e.strerror or e}') from e
    raise


def convert(path, model: Model, output: str) -> dict[str, np.ndarray]:
  """Checks a torchvision ResNet file strictly and writes it as `.npz`.

  Args:
    path: the downloaded `.pth` (any torch.save format).
    model: the expected architecture (stage sizes; the width and class count
      come from the file).
    output: the `.npz` to write, with torchvision's keys.

  Returns:
    The state dict written.

  Raises:
    SemcorrError: unreadable file, or a missing/unexpected key or wrong shape.
  """
  state = torch_pickle.read_torch_file(path)
  try:
    convert_torchvision_resnet(state, model.stage_sizes, include_fc=True)
  except SemcorrError as e:
    raise SemcorrError(f'{path}: {e}') from None
  write_npz(state, output)
  return state


def fetch(name: str, output, input_path=None, keep_download: bool = False,
          timeout: float = 60.0) -> str:
  """Downloads (or takes `input_path`), verifies and converts one model.

  Returns:
    The absolute path of the written `.npz`.
  """
  if name not in MODELS:
    raise SemcorrError(f'unknown model {name!r}; one of {", ".join(MODELS)}')
  model = MODELS[name]
  output = os.path.abspath(os.path.expanduser(os.fspath(output)))
  if not output.endswith('.npz'):
    raise SemcorrError(f'--output {output} must end in .npz')
  # Every output is checked before anything is downloaded or read.
  output = output_paths.check_writable_output(output, '--output',
                                              make_parents=True)
  directory = os.path.dirname(output)
  kept = os.path.join(directory, model.file_name)
  if keep_download and input_path is None and os.path.isdir(kept):
    raise SemcorrError(f'--keep_download: {kept} is a folder; move it away '
                       'or leave out --keep_download')
  os.makedirs(directory, exist_ok=True)
  if input_path is not None:
    input_path = os.path.expanduser(os.fspath(input_path))
    if not os.path.isfile(input_path):
      raise SemcorrError(f'{input_path}: no such file')
    _check_hash(input_path, model, input_path)
    state = convert(input_path, model, output)
  else:
    print(f'downloading {model.url}', flush=True)
    tmp = download(model, directory, timeout)
    try:
      state = convert(tmp, model, output)
      if keep_download:
        os.replace(tmp, kept)
    finally:
      if os.path.exists(tmp):
        os.unlink(tmp)
  print(f'wrote {len(state)} arrays ({name}, torchvision IMAGENET1K_V1) to '
        f'{output}')
  return output
