"""Middlebury `.flo` optical-flow files: read, write, validity.

The format (Middlebury `flow-code`, the reader the TSS evaluation kit ships
in `EvalToolVC/EvalTool/FlowIO.cpp`), all little-endian:

  bytes 0-3    float32 202021.25 (the ASCII tag 'PIEH')
  bytes 4-7    int32 width W
  bytes 8-11   int32 height H
  bytes 12-    float32 H * W * 2 values, row-major, (u, v) interleaved:
               u[0, 0], v[0, 0], u[0, 1], v[0, 1], ...

A flow of image a holds for every pixel of a the displacement `(u, v)` to its
match in image b: `b pixel = a pixel + (u, v)`, x first. A vector is
UNKNOWN when `|u| > 1e9` or `|v| > 1e9` (Middlebury's rule; the TSS ground
truth writes 1e10 outside the foreground, and weakalign/DCCNet write 1e10
where their prediction leaves the other image). `valid_flow` also treats
NaN/inf as unknown. The TSS Matlab kit tests only `u < 1e9`, the C++ kit
`|u| <= 1e9 and |v| <= 1e9`; both agree with `valid_flow` on the TSS files.

Numpy only. Malformed files raise `SemcorrError` naming the file.
"""

from __future__ import annotations

import os
from typing import Union

from etils import epath
import numpy as np

from semcorr_jax.errors import SemcorrError

FLO_MAGIC = 202021.25
UNKNOWN_THRESHOLD = 1e9
UNKNOWN_VALUE = 1e10
_HEADER_BYTES = 12

Source = Union[str, os.PathLike, bytes, bytearray, memoryview]


def decode_flo(data: bytes, what: str = '.flo data') -> np.ndarray:
  """Parses the bytes of a `.flo` file.

  Args:
    data: the whole file.
    what: name for error messages (e.g. the path).

  Returns:
    (H, W, 2) float32 (u, v), unknown values kept as stored.

  Raises:
    SemcorrError: wrong magic number, truncated or over-long file, bad size.
  """
  data = bytes(data)
  if len(data) < _HEADER_BYTES:
    raise SemcorrError(
        f'{what}: {len(data)} bytes is too short for a .flo header (12 '
        'bytes); the file is truncated or not a .flo file')
  magic = float(np.frombuffer(data[:4], '<f4')[0])
  if magic != FLO_MAGIC:
    raise SemcorrError(
        f'{what}: magic number {magic!r} is not {FLO_MAGIC} (PIEH); not a '
        'Middlebury .flo file')
  width, height = (int(v) for v in np.frombuffer(data[4:12], '<i4'))
  if width < 1 or height < 1:
    raise SemcorrError(f'{what}: invalid flow size {width} x {height}')
  expected = _HEADER_BYTES + 8 * width * height
  if len(data) != expected:
    state = 'truncated' if len(data) < expected else 'longer than its header'
    raise SemcorrError(
        f'{what}: {len(data)} bytes but a {width} x {height} flow needs '
        f'{expected}; the file is {state} (re-download or re-write it)')
  values = np.frombuffer(data[_HEADER_BYTES:], '<f4')
  return values.reshape(height, width, 2).astype(np.float32)


def read_flo(source: Source) -> np.ndarray:
  """Reads a `.flo` file from a path (str, os.PathLike, epath) or its bytes.

  Returns:
    (H, W, 2) float32 (u, v); see `valid_flow` for unknown vectors.

  Raises:
    SemcorrError: a missing file or malformed content (see `decode_flo`).
  """
  if isinstance(source, (bytes, bytearray, memoryview)):
    return decode_flo(bytes(source))
  path = epath.Path(source)
  if not path.exists():
    raise SemcorrError(f'flow file {path} does not exist')
  return decode_flo(path.read_bytes(), str(path))


def encode_flo(flow: np.ndarray, valid: np.ndarray | None = None) -> bytes:
  """The bytes of a `.flo` file.

  Args:
    flow: (H, W, 2) (u, v).
    valid: optional (H, W) bools; False vectors (and non-finite ones) are
      written as `UNKNOWN_VALUE` (1e10), as the TSS files do.

  Raises:
    SemcorrError: `flow` is not (H, W, 2) or `valid` does not fit it.
  """
  flow = np.asarray(flow, np.float64)
  if flow.ndim != 3 or flow.shape[-1] != 2 or 0 in flow.shape:
    raise SemcorrError(f'a .flo flow must be (H, W, 2), got {flow.shape}')
  known = np.all(np.isfinite(flow), axis=-1)
  if valid is not None:
    valid = np.asarray(valid, bool)
    if valid.shape != flow.shape[:2]:
      raise SemcorrError(
          f'valid mask {valid.shape} does not fit the flow {flow.shape[:2]}')
    known &= valid
  flow = np.where(known[..., None], flow, UNKNOWN_VALUE)
  height, width = flow.shape[:2]
  header = (np.array([FLO_MAGIC], '<f4').tobytes()
            + np.array([width, height], '<i4').tobytes())
  return header + flow.astype('<f4').tobytes()


def write_flo(path: str | os.PathLike, flow: np.ndarray,
              valid: np.ndarray | None = None) -> None:
  """Writes `encode_flo(flow, valid)` to `path` (parent folders created)."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(encode_flo(flow, valid))


def valid_flow(flow: np.ndarray) -> np.ndarray:
  """(H, W) bools: finite vectors with `|u| <= 1e9` and `|v| <= 1e9`."""
  flow = np.asarray(flow)
  finite = np.all(np.isfinite(flow), axis=-1)
  with np.errstate(invalid='ignore'):
    small = np.all(np.abs(flow) <= UNKNOWN_THRESHOLD, axis=-1)
  return finite & small
