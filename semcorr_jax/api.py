"""Python API: load a trained workdir and match images of any size.

  import semcorr_jax
  matcher = semcorr_jax.load('runs/sfnet_quick')
  out = matcher.match(source, target)  # (H, W, 3) uint8/[0, 1], or files
  out['mapping_st']  # (H_s, W_s, 2): target (x, y) for every source pixel
  points_t = matcher.transfer_keypoints(source, target, points_s)

Both images are resized (bilinear, align_corners=True, anti-aliased when
shrinking) to the model's input size `config.data.image_size`, matched there,
and every flow the method declares (`matcher.flows`, `semcorr_jax.outputs`)
is lifted back to the original grids and pixels (`geometry.resize_mapping`),
so `mapping_st[y, x]` is in the ORIGINAL target's pixels for the ORIGINAL
source pixel (x, y). Conventions: docs/architecture.md.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from semcorr_jax import background_noise
from semcorr_jax import checkpointing
from semcorr_jax import geometry
from semcorr_jax import image_files
from semcorr_jax import outputs
from semcorr_jax import workdirs
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import keypoints as kp
from semcorr_jax.evaluation import predict as predict_lib
from semcorr_jax.evaluation import protocol
from semcorr_jax.evaluation import visualize

# `load(..., best=True)`: the folder the trainer keeps the selected model in.
BEST_FOLDER = 'best'


def check_image(image: Any, name: str = 'image') -> np.ndarray:
  """Validates one image and returns it as (H, W, 3) float32 in [0, 1].

  Args:
    image: (H, W, 3) uint8, or float in [0, 1]; or an image file (str,
      bytes or os.PathLike path) or `skimage:<name>`, read as semcorr-match
      reads it (`image_files.read_image`: EXIF orientation applied, 16-bit
      scaled, transparency on white).
    name: used in error messages.

  Raises:
    SemcorrError: wrong rank, channel count, dtype, size or value range; an
      unreadable file.
  """
  if isinstance(image, (str, bytes, os.PathLike)):
    image = image_files.read_image(image, name)
  try:
    image = np.asarray(image)
  except (TypeError, ValueError) as e:
    raise SemcorrError(f'{name} is not an array: {e}') from e
  if image.ndim != 3 or image.shape[-1] != 3:
    raise SemcorrError(f'{name} must be an (H, W, 3) RGB array, got shape '
                       f'{image.shape}')
  if image.shape[0] < 2 or image.shape[1] < 2:
    raise SemcorrError(f'{name} must be at least 2x2 pixels, got '
                       f'{image.shape[0]}x{image.shape[1]}')
  if image.dtype == np.uint8:
    return image.astype(np.float32) / 255.0
  if not np.issubdtype(image.dtype, np.floating):
    raise SemcorrError(f'{name} must be uint8 or float in [0, 1], got dtype '
                       f'{image.dtype}')
  image = image.astype(np.float32)
  if not np.all(np.isfinite(image)):
    raise SemcorrError(f'{name} has NaN or infinite values')
  if image.min() < -1e-3 or image.max() > 1 + 1e-3:
    raise SemcorrError(f'{name} is float with values in [{image.min():.3g}, '
                       f'{image.max():.3g}]; expected [0, 1] (or pass uint8)')
  return np.clip(image, 0.0, 1.0)


def check_points(points: Any, name: str = 'points',
                 image_hw: tuple[int, int] | None = None,
                 image_name: str = 'source') -> np.ndarray:
  """Validates keypoints: (N, 2) finite (x, y) -> float64.

  Args:
    points: (N, 2) (x, y) in pixels.
    name: used in error messages.
    image_hw: (H, W) of the image the points belong to: every point must lie
      on it, x in [-0.5, W - 0.5] and y in [-0.5, H - 0.5] (the area of its
      pixels, whose centres are at 0 ... W - 1).
    image_name: that image, for messages.

  Raises:
    SemcorrError: wrong shape, NaN or infinite values, a point outside the
      image (naming the first and how many).
  """
  try:
    points = np.asarray(points, np.float64)
  except (TypeError, ValueError) as e:
    raise SemcorrError(f'{name} must be numbers: {e}') from e
  if points.ndim != 2 or points.shape[1] != 2:
    raise SemcorrError(f'{name} must have shape (N, 2) (x, y), got '
                       f'{points.shape}')
  if not np.all(np.isfinite(points)):
    raise SemcorrError(f'{name} has NaN or infinite values')
  if image_hw is not None:
    h, w = (int(s) for s in image_hw)
    x, y = points[:, 0], points[:, 1]
    outside = (x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5)
    if np.any(outside):
      i = int(np.argmax(outside))
      raise SemcorrError(
          f'{name}: point {i + 1} (index {i}) at x={x[i]:g}, y={y[i]:g} lies '
          f'outside the {w}x{h} {image_name} image ({int(outside.sum())} of '
          f'{len(points)} points do; x must be in [-0.5, {w - 0.5:g}], y in '
          f'[-0.5, {h - 0.5:g}])')
  return points


def _lift_field(value: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """(1, h, w) or (1, h, w, C) map -> the same on an (H, W) grid."""
  field = value if value.ndim == 4 else value[..., None]
  field = geometry.resize_images(field.astype(jnp.float32), hw)
  return field if value.ndim == 4 else field[..., 0]


class Matcher:
  """A trained method, ready to match pairs of images of any sizes.

  Attributes:
    config: the run's config.
    method: the `Method`.
    variables: its inference variables (on one device).
    step: the checkpoint step.
    image_size: (H, W) the model runs at.
    flows: the flows `match` returns (`method.flows`; the first is the
      primary one, whose maps carry no prefix).
  """

  def __init__(self, config, method, variables, step: int | None = None):
    self.config = config
    self.method = method
    self.variables = predict_lib.to_one_device(variables)
    self.step = step
    self.image_size = tuple(int(s) for s in config.data.image_size)
    self.flows = outputs.check(method.flows)
    self._predict = predict_lib.jitted_predict(method)

  def _to_model(self, image: np.ndarray) -> jax.Array:
    """(H, W, 3) -> (1, h, w, 3) at the model size (align_corners=True).

    `evaluation.protocol.resize_image`: when shrinking, a Gaussian of sigma
    (scale - 1) / 2 per axis (as scikit-image's anti-aliasing) is applied
    first; being symmetric it moves no pixel, so the align-corners
    correspondence of positions stays exact.
    """
    return jnp.asarray(protocol.resize_image(image, self.image_size))[None]

  def match(self, source: Any, target: Any) -> dict[str, np.ndarray]:
    """Dense matches between two images, for every declared flow.

    Args:
      source: (H_s, W_s, 3) uint8 or float in [0, 1], or an image file or
        `skimage:<name>` (read as semcorr-match reads it: `check_image`).
      target: the same kinds; any size.

    Returns:
      numpy float32 arrays under the flat keys of `semcorr_jax.outputs`
      (the primary flow unprefixed, flow `f` as `f_...`): per flow
      `mapping_st` (H_s, W_s, 2), for every source pixel the matching (x, y)
      in target pixels; `mapping_ts` (H_t, W_t, 2) the other way in source
      pixels; `flow_st` = mapping_st - source pixel grid, `flow_ts`
      likewise; and each extra the flow declares (e.g. `confidence_st`
      (H_s, W_s), `confidence_ts` (H_t, W_t)) resized to the grid its
      direction starts from. Outputs the method does not declare (e.g.
      feature-grid mappings) are left out.

    Raises:
      SemcorrError: an image of the wrong shape, dtype or value range, or a
        file that cannot be read.
    """
    src = check_image(source, 'source')
    tgt = check_image(target, 'target')
    # Grid each direction starts from, and the image its values refer to.
    grids = {'st': (src.shape[:2], tgt.shape[:2]),
             'ts': (tgt.shape[:2], src.shape[:2])}
    out = self._predict(self.variables, self._to_model(src),
                        self._to_model(tgt))
    try:
      per_flow = outputs.split(self.flows, out)
    except KeyError as e:
      raise SemcorrError(f'method {self.config.method!r}: {e.args[0]}') from e
    result = {}
    for name, maps in per_flow.items():
      lifted = {}
      for local, value in maps.items():
        kind, direction = local.rsplit('_', 1)
        grid_hw, other_hw = grids[direction]
        if kind == outputs.MAPPING:
          mapping = geometry.resize_mapping(value, grid_hw, self.image_size,
                                            other_hw)
          lifted[local] = mapping
          lifted[f'flow_{direction}'] = geometry.mapping_to_flow(mapping)
        else:
          lifted[local] = _lift_field(value, grid_hw)
      result.update(outputs.join(self.flows, {name: lifted}))
    return {k: np.asarray(v[0], np.float32) for k, v in result.items()}

  def transfer_keypoints(self, source: Any, target: Any, points_s: Any
                         ) -> np.ndarray:
    """Moves source keypoints into the target image (primary flow).

    Args:
      source: (H_s, W_s, 3) image, or an image file (as in `match`).
      target: (H_t, W_t, 3) image, or an image file.
      points_s: (N, 2) (x, y) in source pixels (of the upright image when
        read from a file); each must lie on the source (`check_points`).

    Returns:
      (N, 2) float64 (x, y) in target pixels (bilinear read of mapping_st).

    Raises:
      SemcorrError: bad images, or points of the wrong shape, non-finite or
        outside the source (checked before matching).
    """
    src = check_image(source, 'source')
    points_s = check_points(points_s, 'points_s', src.shape[:2])
    mapping_st = self.match(src, target)['mapping_st']
    return kp.transfer_keypoints(mapping_st, points_s)

  def warp_source_to_target(self, source: Any, target: Any) -> np.ndarray:
    """The source seen in the target's frame (sampled at mapping_ts).

    Images are arrays or files, as in `match`.

    Returns:
      (H_t, W_t, 3) float32 in [0, 1]; 0 where the mapping leaves the source.
    """
    src = check_image(source, 'source')
    mapping_ts = self.match(src, target)['mapping_ts']
    return visualize.warp_image(src, mapping_ts)


def load(workdir: str, step: int | None = None, best: bool = False
         ) -> Matcher:
  """Loads a checkpoint of a `semcorr-train` workdir.

  Args:
    workdir: the run's folder: a local path or a URI such as
      `gs://bucket/run` (read through `etils.epath` and Orbax;
      docs/workdirs.md).
    step: checkpoint step; None = the latest of the folder.
    best: read `best/` (the model kept by an evaluator's `select`) instead
      of `checkpoints/`.

  Raises:
    SemcorrError: not a workdir, no, mismatched or damaged checkpoint, or
      any other failure to read it (one line, the cause chained:
      `restore_workdir`).
  """
  folder = BEST_FOLDER if best else checkpointing.CHECKPOINT_DIR
  restored = restore_workdir(workdir, step, folder=folder)
  return Matcher(restored.config, restored.method, restored.variables,
                 restored.step)


def restore_workdir(workdir: str, step: int | None = None, *,
                    folder: str = checkpointing.CHECKPOINT_DIR,
                    for_inference: bool = True) -> workdirs.Restored:
  """`workdirs.restore` with every failure one `SemcorrError` line.

  Errors that are not `SemcorrError` (a config.json of the wrong shape, a
  checkpoint file damaged in a way not recognised as such) become one line
  naming the workdir, the error's type and first line; the original is the
  `__cause__`. What background reader threads print after a failed read is
  kept off stderr (`background_noise.drop_failed_io_noise`).
  """
  background_noise.drop_failed_io_noise()
  try:
    return workdirs.restore(workdir, step, for_inference=for_inference,
                            folder=folder)
  except SemcorrError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    which = f'{folder}, step {step}' if step is not None else folder
    raise SemcorrError(
        f'cannot load the workdir {workdir!r} ({which}): '
        f'{checkpointing.describe_error(e)}; its config.json or checkpoint '
        'may be damaged') from e
