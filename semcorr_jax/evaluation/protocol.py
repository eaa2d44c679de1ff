"""Benchmark evaluation protocols: model inputs, point frames, predictions.

A protocol (`default_protocol(benchmark)`, a `ml_collections.ConfigDict`)
fixes everything between the original images and a score:

* `input_size` (h, w) and `pad`: each image is squashed (align-corners
  bilinear resize, Gaussian anti-alias when shrinking, as `Matcher`) to
  `input_size`, then `pad` black pixels (0 in [0, 1] space) are added on every
  side. The MODEL INPUT SIZE IS `input_size + 2 pad`; `input_size` None means
  the model's own `config.data.image_size` minus `2 pad`.
* `direction`: 'ts' = target keypoints are moved into the source and compared
  with the source keypoints in source pixels (SFNet, NCNet, weakalign, DCCNet,
  CATs); 'st' = source -> target, compared in the target (DHPF).
* `threshold`: L of `d <= alpha L`, taken from the image compared in: 'img'
  max(H, W) (the square side in the 'square' frame), 'bbox' the max side of
  its object box, 'kps' the max side of its valid keypoints' extent.
* `frame`: 'square' = predicted and ground-truth points of the compared image
  are squashed to a `square_side` square first (`pck.square_points`, plain
  `side / W` scaling as the references), 'original' = original pixels.
* `kps_padding_bug`: DHPF/CATs PF-WILLOW bug (-1 rows up to 40 points before
  the extent's min/max; `pck.keypoint_extent_threshold`).
* `alphas`, `tss_alpha` (TSS flow accuracy), `batch_size` (pairs per call).
* `caltech_reference` ('weakalign' Python area metrics, or 'dsp' the
  original Matlab rules) and `polygon_offset` (added to the Caltech polygon
  coordinates; -1 reads them as 1-based): `semcorr_jax.evaluation.caltech`.

Defaults per benchmark (ours; then what the references did,
reference-facts.md §A.7, §D.4; DHPF entries partly [unverified]):

* pf_pascal: input = model size, pad 0, 'ts', 'img', 'square' (224).
  SFNet: 288x288 + 16 px pad -> 320 (pad = -mean/std there, black here),
  'ts', L = 288 after squashing. weakalign/NCNet/DCCNet: input 240/400,
  'ts', SCNet squash to 224. DHPF: 240, 'st', img. CATs: 256, 'ts', img.
  The square side cancels in PCK; only the anisotropic squash matters.
* pf_willow: input = model size, pad 0, 'ts', 'kps' of image A (the
  source), 'original', bug off: SFNet, NCNet, weakalign, DCCNet. CATs: 'ts',
  kps extent on the 256 squash WITH the -1 padding bug; DHPF: 'st' with the
  bug (reported ~80% -> ~70% once fixed, dhpf#3).
* spair71k: input = model size, pad 0, 'ts', 'bbox' of the source,
  'original'. CATs: 'ts', source box on the 256 squash; DHPF: 'st', target
  box on its 240 resize.
* tss: flow accuracy at `tss_alpha` = 0.05 (the Matlab kit; weakalign#14),
  'img' L in original pixels; the TSS module reads the fields it needs.
* caltech101: label transfer (no PCK), 'ts' (source masks are warped into
  the target by mapping_ts as weakalign's area metrics), 'original'.
* synthetic: kept for completeness; `evaluation.synthetic` scores both
  directions itself.

`apply_preset(protocol, 'padded')` gives SFNet's evaluation input (288 x 288
+ 16 px of padding on every side; the preset's published name is an alias);
`apply_preset(protocol, 'resize')` the plain resize to the model size.

Coordinates (docs/architecture.md): an original pixel (x, y) of a W x H image
sits at `x_m = x (w - 1) / (W - 1) + pad` in the model input
(`to_model_points`), exactly the align-corners resize of the image.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np
from skimage import filters

from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import keypoints as kp
from semcorr_jax.evaluation import pck as pck_lib
from semcorr_jax.geometry import grids

BENCHMARKS = ('pf_pascal', 'pf_willow', 'spair71k', 'tss', 'caltech101',
              'synthetic')
PRESETS = {
    'resize': {'input_size': None, 'pad': 0},
    'padded': {'input_size': (288, 288), 'pad': 16},
}
# Other names of presets: the method that published the protocol.
PRESET_ALIASES = {'sfnet': 'padded'}
# The values each choice of a protocol takes (module docstring).
CHOICES = {'direction': ('ts', 'st'), 'threshold': ('img', 'bbox', 'kps'),
           'frame': ('square', 'original')}
_OVERRIDES = {
    'pf_pascal': {'threshold': 'img', 'frame': 'square'},
    'pf_willow': {'threshold': 'kps', 'frame': 'original'},
    'spair71k': {'threshold': 'bbox', 'frame': 'original'},
    'tss': {'threshold': 'img', 'frame': 'original'},
    'caltech101': {'threshold': 'img', 'frame': 'original'},
    'synthetic': {'threshold': 'img', 'frame': 'original'},
}
PredictFn = Callable[[np.ndarray, np.ndarray], Mapping[str, Any]]


def default_protocol(benchmark: str) -> ml_collections.ConfigDict:
  """Our default protocol of a benchmark (module docstring); unlocked.

  Raises:
    SemcorrError: unknown benchmark.
  """
  if benchmark not in _OVERRIDES:
    raise SemcorrError(f'no evaluation protocol for {benchmark!r}; known: '
                       f'{", ".join(BENCHMARKS)}')
  protocol = ml_collections.ConfigDict({
      'benchmark': benchmark,
      'input_size': None,
      'pad': 0,
      'alphas': tuple(pck_lib.DEFAULT_ALPHAS),
      'direction': 'ts',
      'threshold': 'img',
      'frame': 'original',
      'square_side': 224,
      'kps_padding_bug': False,
      'tss_alpha': 0.05,
      'caltech_reference': 'weakalign',
      'polygon_offset': 0.0,
      'batch_size': 8,
  })
  protocol.update(_OVERRIDES[benchmark])
  return protocol


def apply_preset(protocol: ml_collections.ConfigDict, name: str
                 ) -> ml_collections.ConfigDict:
  """A copy of `protocol` with the `PRESETS[name]` fields set.

  Args:
    protocol: a protocol.
    name: a key of `PRESETS` or of `PRESET_ALIASES`.

  Raises:
    SemcorrError: unknown preset.
  """
  preset = PRESETS.get(PRESET_ALIASES.get(name, name))
  if preset is None:
    aliases = ', '.join(f'{a} = {p}' for a, p in PRESET_ALIASES.items())
    raise SemcorrError(f'unknown protocol preset {name!r}; known: '
                       f'{", ".join(PRESETS)} (aliases: {aliases})')
  out = ml_collections.ConfigDict(protocol.to_dict())
  for key, value in preset.items():
    out[key] = value
  return out


def resolve_input_size(protocol: ml_collections.ConfigDict,
                       model_size: Sequence[int]) -> tuple[int, int]:
  """(h, w) the images are squashed to before padding.

  Args:
    protocol: with `input_size` (None or (h, w)) and `pad`.
    model_size: (Hm, Wm) the model runs at.

  Raises:
    SemcorrError: the padding leaves less than 2x2 pixels.
  """
  pad = int(protocol.pad)
  if protocol.input_size is not None:
    h, w = (int(s) for s in protocol.input_size)
  else:
    h, w = int(model_size[0]) - 2 * pad, int(model_size[1]) - 2 * pad
  if h < 2 or w < 2:
    raise SemcorrError(f'input size {h}x{w} (model {tuple(model_size)} minus '
                       f'2 x pad {pad}) is too small; lower the pad')
  return h, w


def _as_float_image(image: Any) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise SemcorrError(f'images must be (H, W, 3) RGB, got {image.shape}')
  if image.dtype == np.uint8:
    return image.astype(np.float32) / 255.0
  return np.clip(image.astype(np.float32), 0.0, 1.0)


def resize_image(image: Any, out_hw: Sequence[int]) -> np.ndarray:
  """Align-corners bilinear resize with a Gaussian anti-alias when shrinking.

  Shrinking by `s = (n - 1) / (m - 1)` on an axis first blurs with a
  Gaussian of sigma `(s - 1) / 2` (scikit-image's anti-aliasing), applied
  only when some sigma exceeds 0.25; being symmetric it moves no pixel, so
  the align-corners correspondence of positions stays exact. The resize is
  `geometry.resize_images`'s interpolation matrices in float64.

  Args:
    image: (H, W, 3) uint8, or float in [0, 1].
    out_hw: (h, w).

  Returns:
    (h, w, 3) float32 in [0, 1].
  """
  image = _as_float_image(image)
  out_h, out_w = int(out_hw[0]), int(out_hw[1])
  scale = [(n - 1) / max(m - 1, 1) for n, m in
           zip(image.shape[:2], (out_h, out_w))]
  sigma = [max(0.0, (s - 1.0) / 2.0) for s in scale]
  if max(sigma) > 0.25:
    image = filters.gaussian(image, sigma=sigma, mode='nearest',
                             channel_axis=-1, preserve_range=True)
  # pylint: disable=protected-access
  wy = grids._interp_matrix(image.shape[0], out_h)
  wx = grids._interp_matrix(image.shape[1], out_w)
  # pylint: enable=protected-access
  out = np.einsum('oh,hwc->owc', wy, image.astype(np.float64))
  out = np.einsum('pw,owc->opc', wx, out)
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def model_input(image: Any, input_size: Sequence[int], pad: int
                ) -> np.ndarray:
  """One image as the model sees it: resized to `input_size`, black padded.

  Args:
    image: (H, W, 3) uint8, or float in [0, 1].
    input_size: (h, w) before padding.
    pad: black pixels added on every side.

  Returns:
    (h + 2 pad, w + 2 pad, 3) float32 in [0, 1].
  """
  out = resize_image(image, input_size)
  pad = int(pad)
  if pad:
    out = np.pad(out, ((pad, pad), (pad, pad), (0, 0)))
  return out


def _span_ratio(image_hw: Sequence[int], input_size: Sequence[int]
                ) -> np.ndarray:
  """((w - 1) / (W - 1), (h - 1) / (H - 1)), x first."""
  eps = 1e-6
  return np.array([(input_size[1] - 1) / max(image_hw[1] - 1, eps),
                   (input_size[0] - 1) / max(image_hw[0] - 1, eps)],
                  np.float64)


def to_model_points(points: Any, image_hw: Sequence[int],
                    input_size: Sequence[int], pad: int) -> np.ndarray:
  """Original pixels -> model-input pixels: `x_m = x (w-1)/(W-1) + pad`.

  Args:
    points: (N, 2) (x, y) in an H x W image.
    image_hw: (H, W).
    input_size: (h, w) before padding.
    pad: padding in pixels.

  Returns:
    (N, 2) float64 (x, y) in the (h + 2 pad, w + 2 pad) model input.
  """
  points = np.asarray(points, np.float64).reshape(-1, 2)
  return points * _span_ratio(image_hw, input_size) + float(pad)


def from_model_points(points: Any, image_hw: Sequence[int],
                      input_size: Sequence[int], pad: int) -> np.ndarray:
  """Inverse of `to_model_points`: `x = (x_m - pad) (W-1)/(w-1)`.

  Args:
    points: (N, 2) (x, y) in model-input pixels.
    image_hw: (H, W) of the original image.
    input_size: (h, w) before padding.
    pad: padding in pixels.

  Returns:
    (N, 2) float64 (x, y) in the original image's pixels (not clamped).
  """
  points = np.asarray(points, np.float64).reshape(-1, 2)
  return (points - float(pad)) / _span_ratio(image_hw, input_size)


class PairPrediction:
  """One pair's model-frame prediction, read out in original pixels.

  Attributes:
    outputs: the model outputs of this pair, numpy: 'mapping_st' (Hm, Wm, 2)
      target model-input (x, y) for every source model-input pixel,
      'mapping_ts' the other way, plus any extra maps (another flow's
      '<flow>_mapping_st'/'_ts', read with `transfer(..., prefix='<flow>_')`,
      and 'confidence_st'/'_ts' (Hm, Wm), read with `read_map`).
    source_hw: (H_s, W_s) of the original source.
    target_hw: (H_t, W_t) of the original target.
    input_size: (h, w) before padding.
    pad: padding in pixels.
  """

  def __init__(self, outputs: Mapping[str, Any], source_hw: Sequence[int],
               target_hw: Sequence[int], input_size: Sequence[int],
               pad: int):
    self.outputs = {k: np.asarray(v) for k, v in outputs.items()}
    for name in ('mapping_st', 'mapping_ts'):
      m = self.outputs.get(name)
      if m is None or m.ndim != 3 or m.shape[-1] != 2:
        raise SemcorrError(f'prediction needs {name} of shape (Hm, Wm, 2), '
                           f'got {None if m is None else m.shape}')
    self.source_hw = (int(source_hw[0]), int(source_hw[1]))
    self.target_hw = (int(target_hw[0]), int(target_hw[1]))
    self.input_size = (int(input_size[0]), int(input_size[1]))
    self.pad = int(pad)

  def _sides(self, direction: str, prefix: str = ''):
    if direction not in ('st', 'ts'):
      raise SemcorrError(
          f"direction must be 'st' or 'ts', got {direction!r}")
    mapping = self.outputs.get(f'{prefix}mapping_{direction}')
    if mapping is None or mapping.shape[-1:] != (2,):
      raise SemcorrError(f'prediction has no {prefix}mapping_{direction}')
    if direction == 'st':
      return self.source_hw, self.target_hw, mapping
    return self.target_hw, self.source_hw, mapping

  def transfer(self, points: Any, direction: str, prefix: str = ''
               ) -> np.ndarray:
    """Moves points of one image into the other.

    The points go into the model frame (`to_model_points`), the model-frame
    mapping is read there bilinearly (points clamped to its borders; the
    mapping is not upsampled first), and the result leaves the other image's
    model frame (`from_model_points`).

    Args:
      points: (N, 2) (x, y) in the original pixels of the 'from' image
        (source for 'st', target for 'ts').
      direction: 'st' or 'ts'.
      prefix: '' reads 'mapping_<direction>', '<flow>_' another flow's
        '<flow>_mapping_<direction>' (`semcorr_jax.outputs.prefix`).

    Returns:
      (N, 2) float64 (x, y) in the other image's original pixels.
    """
    from_hw, to_hw, mapping = self._sides(direction, prefix)
    p_m = to_model_points(points, from_hw, self.input_size, self.pad)
    q_m = kp.bilinear_read(mapping, p_m)
    return from_model_points(q_m, to_hw, self.input_size, self.pad)

  def read_map(self, points: Any, direction: str, name: str = 'confidence'
               ) -> np.ndarray:
    """Reads the 'from' image's map `<name>_<direction>` (Hm, Wm) at its
    points, bilinearly in the model frame: where `transfer` reads the
    mapping of the same direction (`<name>_st` is on the source's grid).

    Args:
      points: (N, 2) (x, y) in the original pixels of the 'from' image.
      direction: 'st' or 'ts'.
      name: the map's name before the direction suffix ('confidence',
        '<flow>_confidence').

    Returns:
      (N,) float64.

    Raises:
      SemcorrError: no such (Hm, Wm) map.
    """
    from_hw = self._sides(direction)[0]
    field = self.outputs.get(f'{name}_{direction}')
    if field is None or field.ndim != 2:
      raise SemcorrError(f'prediction has no (Hm, Wm) {name}_{direction}')
    p_m = to_model_points(points, from_hw, self.input_size, self.pad)
    return kp.bilinear_read(np.asarray(field)[..., None], p_m)[:, 0]

  def dense(self, direction: str, prefix: str = '') -> np.ndarray:
    """The mapping at the 'from' image's original resolution.

    Args:
      direction: 'st' (mapping_st on the source grid) or 'ts'.
      prefix: '' or another flow's prefix (`transfer`).

    Returns:
      (H_a, W_a, 2) float32: `transfer` of every original pixel of a.
    """
    from_hw = self._sides(direction, prefix)[0]
    xs, ys = np.meshgrid(np.arange(from_hw[1]), np.arange(from_hw[0]),
                         indexing='xy')
    grid = np.stack([xs.ravel(), ys.ravel()], axis=-1)
    out = self.transfer(grid, direction, prefix)
    return out.reshape(from_hw[0], from_hw[1], 2).astype(np.float32)


def predict_pairs(predict_fn: PredictFn,
                  pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                  protocol: ml_collections.ConfigDict,
                  model_size: Sequence[int]) -> list[PairPrediction]:
  """Runs a model on pairs of original images under a protocol.

  Batches of `protocol.batch_size` pairs; the last batch is filled up by
  repeating its last pair (so a jitted function compiles once) and the
  results are cut back.

  Args:
    predict_fn: `(source (B, Hm, Wm, 3) float32, target) -> {'mapping_st',
      'mapping_ts': (B, Hm, Wm, 2) model-input pixels, ...}` (numpy or jax).
    pairs: (source, target) images, (H, W, 3) uint8 or float in [0, 1].
    protocol: with `input_size`, `pad`, `batch_size`.
    model_size: (Hm, Wm) the model runs at.

  Returns:
    One `PairPrediction` per pair, in order.

  Raises:
    SemcorrError: `input_size + 2 pad` differs from `model_size`.
  """
  pad = int(protocol.pad)
  input_size = resolve_input_size(protocol, model_size)
  full = (input_size[0] + 2 * pad, input_size[1] + 2 * pad)
  if full != tuple(int(s) for s in model_size[:2]):
    raise SemcorrError(
        f'protocol input {input_size[0]}x{input_size[1]} + 2 x pad {pad} = '
        f'{full[0]}x{full[1]} but the model runs at '
        f'{model_size[0]}x{model_size[1]}; set input_size to None or to the '
        'model size minus 2 pad')
  batch_size = max(1, int(protocol.batch_size))
  results = []
  for start in range(0, len(pairs), batch_size):
    chunk = list(pairs[start:start + batch_size])
    n = len(chunk)
    chunk += [chunk[-1]] * (batch_size - n)
    src = np.stack([model_input(s, input_size, pad) for s, _ in chunk])
    tgt = np.stack([model_input(t, input_size, pad) for _, t in chunk])
    out = {k: np.asarray(v) for k, v in predict_fn(src, tgt).items()}
    for i in range(n):
      source, target = pairs[start + i]
      per_pair = {k: (v[i] if v.ndim and v.shape[0] == batch_size else v)
                  for k, v in out.items()}
      results.append(PairPrediction(
          per_pair, np.shape(source)[:2], np.shape(target)[:2], input_size,
          pad))
  return results
