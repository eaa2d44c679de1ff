"""Pictures of matches: flow colour maps, match panels, held-out pair grids.

Uses matplotlib's object API with the Agg canvas (no display, no pyplot
state). Images are (H, W, 3) in [0, 1] (or uint8); points are `(x, y)` in
pixels; a mapping `mapping_ab` (H_a, W_a, 2) holds for every pixel of a the
matching `(x, y)` in b's pixels (docs/architecture.md).

Flow colour encoding (`flow_to_color`, the Middlebury convention of Baker et
al., "A Database and Evaluation Methodology for Optical Flow"): the hue is the
direction of the displacement (right = red, down = yellow, left = cyan,
up = blue/violet), the saturation its length relative to `max_flow`: zero flow
is white, a flow of length `max_flow` the full colour, longer flows are the
full colour darkened to 75 %. Non-finite flows are black.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
from matplotlib.figure import Figure

from semcorr_jax.evaluation import keypoints as kp

# Colour-wheel segments: (number of hues, start colour); each segment blends
# linearly from its start colour to the next segment's.
_WHEEL_SEGMENTS = (
    (15, (255, 0, 0)),      # red -> yellow
    (6, (255, 255, 0)),     # yellow -> green
    (4, (0, 255, 0)),       # green -> cyan
    (11, (0, 255, 255)),    # cyan -> blue
    (13, (0, 0, 255)),      # blue -> magenta
    (6, (255, 0, 255)),     # magenta -> red
)


def color_wheel() -> np.ndarray:
  """The 55 hues of the flow colour wheel, (55, 3) float64 in [0, 1]."""
  rows = []
  for i, (n, start) in enumerate(_WHEEL_SEGMENTS):
    end = _WHEEL_SEGMENTS[(i + 1) % len(_WHEEL_SEGMENTS)][1]
    t = np.arange(n, dtype=np.float64)[:, None] / n
    rows.append((1 - t) * np.array(start) + t * np.array(end))
  return np.clip(np.concatenate(rows) / 255.0, 0.0, 1.0)


def flow_to_color(flow: np.ndarray, max_flow: float | None = None
                  ) -> np.ndarray:
  """Colour-codes a flow field (see the module docstring for the encoding).

  Args:
    flow: (H, W, 2) displacements (dx, dy) in pixels, e.g. `mapping_ab -
      pixel_grid`.
    max_flow: length drawn at full saturation; None = the largest finite
      length in `flow` (at least 1e-6).

  Returns:
    (H, W, 3) uint8 RGB.
  """
  flow = np.asarray(flow, np.float64)
  finite = np.all(np.isfinite(flow), axis=-1)
  u = np.where(finite, flow[..., 0], 0.0)
  v = np.where(finite, flow[..., 1], 0.0)
  radius = np.hypot(u, v)
  if max_flow is None:
    max_flow = float(radius.max()) if radius.size else 0.0
  radius = radius / max(max_flow, 1e-6)

  wheel = color_wheel()
  ncols = wheel.shape[0]
  # Angle in (-1, 1]; pointing left (dx < 0) sits half-way round the wheel.
  angle = np.arctan2(-v, -u) / np.pi
  pos = (angle + 1.0) / 2.0 * (ncols - 1)
  k0 = np.floor(pos).astype(np.int64)
  k1 = (k0 + 1) % ncols
  frac = (pos - k0)[..., None]
  hue = (1 - frac) * wheel[k0] + frac * wheel[k1]  # (H, W, 3)

  r = radius[..., None]
  color = np.where(r <= 1.0, 1.0 - r * (1.0 - hue), hue * 0.75)
  color = np.where(finite[..., None], color, 0.0)
  return np.round(np.clip(color, 0, 1) * 255).astype(np.uint8)


def to_float_image(image: np.ndarray) -> np.ndarray:
  """uint8 or float image -> (H, W, 3) float32 in [0, 1]."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image.astype(np.float32) / 255.0
  return np.clip(image.astype(np.float32), 0.0, 1.0)


def warp_image(image_b: np.ndarray, mapping_ab: np.ndarray) -> np.ndarray:
  """Image b seen in a's frame: b sampled at `mapping_ab` (bilinear).

  Numpy twin of `geometry.warp(..., padding_mode='zeros')`: each of the four
  neighbours that falls outside b contributes 0.

  Args:
    image_b: (H_b, W_b, C) image (uint8 or float in [0, 1]).
    mapping_ab: (H_a, W_a, 2) absolute (x, y) in b's pixels.

  Returns:
    (H_a, W_a, C) float32.
  """
  image_b = to_float_image(image_b)
  hb, wb = image_b.shape[:2]
  mapping_ab = np.asarray(mapping_ab, np.float64)
  x = np.nan_to_num(mapping_ab[..., 0], nan=-2.0)
  y = np.nan_to_num(mapping_ab[..., 1], nan=-2.0)
  x0, y0 = np.floor(x), np.floor(y)
  out = np.zeros(mapping_ab.shape[:2] + image_b.shape[2:], np.float64)
  for dx in (0, 1):
    for dy in (0, 1):
      xi, yi = x0 + dx, y0 + dy
      weight = (1 - np.abs(x - xi)) * (1 - np.abs(y - yi))
      inside = (xi >= 0) & (xi <= wb - 1) & (yi >= 0) & (yi <= hb - 1)
      xc = np.clip(xi, 0, wb - 1).astype(np.int64)
      yc = np.clip(yi, 0, hb - 1).astype(np.int64)
      out += (np.where(inside, weight, 0.0)[..., None] * image_b[yc, xc])
  return out.astype(np.float32)


def flow_of(mapping_ab: np.ndarray) -> np.ndarray:
  """`mapping_ab - pixel_grid`: (H, W, 2) -> (H, W, 2) displacement."""
  mapping_ab = np.asarray(mapping_ab, np.float64)
  h, w = mapping_ab.shape[:2]
  gx, gy = np.meshgrid(np.arange(w), np.arange(h), indexing='xy')
  return mapping_ab - np.stack([gx, gy], axis=-1)


def point_colors(n: int) -> np.ndarray:
  """n distinct RGB colours (n, 3) in [0, 1] for keypoints."""
  wheel = color_wheel()
  idx = (np.arange(n) * 23) % wheel.shape[0]  # spread neighbours apart
  return wheel[idx]


def _show(ax, image, title, cmap=None):
  ax.imshow(image, cmap=cmap, interpolation='nearest')
  ax.set_title(title, fontsize=8)
  ax.set_xticks([])
  ax.set_yticks([])


def _scatter(ax, points, colors, marker='o', size=14):
  if points is None or len(points) == 0:
    return
  points = np.asarray(points)
  ax.scatter(points[:, 0], points[:, 1], c=colors[:len(points)], s=size,
             marker=marker, edgecolors='black' if marker == 'o' else None,
             linewidths=0.6 if marker == 'o' else 1.2)


def _save(fig: Figure, path: str, dpi: int) -> str:
  """Writes the figure atomically (a crash never leaves half a PNG)."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  fig.savefig(tmp, format='png', dpi=dpi, bbox_inches='tight')
  os.replace(tmp, path)
  return path


# Confidence maps drawn on a fixed [0, 1] scale, in this order, titled so.
CONFIDENCE_TITLES = {
    'confidence_st': 'confidence (source -> target)',
    'confidence_ts': 'confidence (target -> source)',
    'base_confidence_st': 'base confidence (source -> target)',
    'base_confidence_ts': 'base confidence (target -> source)',
}


def map_panels(extra_maps: Mapping[str, np.ndarray] | None
               ) -> list[tuple[str, str, np.ndarray, float | None,
                               float | None]]:
  """How `draw_match` draws extra (H, W) maps.

  Args:
    extra_maps: name -> (H, W) or (H, W, 1) map.

  Returns:
    (name, title, (H, W) float32 map, vmin, vmax) per map: the confidence
    maps of `CONFIDENCE_TITLES` first, in its order, on the fixed scale
    [0, 1]; then the others in their order, auto-scaled (None).
  """
  extra_maps = dict(extra_maps or {})
  names = [n for n in CONFIDENCE_TITLES if n in extra_maps]
  names += [n for n in extra_maps if n not in CONFIDENCE_TITLES]
  panels = []
  for name in names:
    value = np.asarray(extra_maps[name], np.float32)
    if value.ndim == 3 and value.shape[-1] == 1:
      value = value[..., 0]
    if name in CONFIDENCE_TITLES:
      panels.append((name, CONFIDENCE_TITLES[name], value, 0.0, 1.0))
    else:
      panels.append((name, name, value, None, None))
  return panels


def draw_match(path: str, source: np.ndarray, target: np.ndarray,
               mapping_st: np.ndarray, mapping_ts: np.ndarray,
               points_s: np.ndarray | None = None,
               points_t: np.ndarray | None = None,
               extra_maps: Mapping[str, np.ndarray] | None = None,
               title: str | None = None, dpi: int = 110,
               base_mapping_st: np.ndarray | None = None,
               base_mapping_ts: np.ndarray | None = None) -> str:
  """Writes a PNG showing one predicted match.

  Panels: the source with its keypoints, the target with the transferred
  keypoints (same colours), the source warped into the target frame (source
  sampled at `mapping_ts`), the colour-coded flow `mapping_st - grid`
  (`flow_to_color`), then one panel per extra map with a colour bar:
  confidence maps ('confidence_st', ...: `CONFIDENCE_TITLES`) on a fixed
  [0, 1] scale, other maps auto-scaled. With base mappings (CAMNet) a second
  row shows the base flow the same way, aligned under the first: the target
  with the keypoints moved by `base_mapping_st`, the source warped by
  `base_mapping_ts`, the base flow, and the 'base_confidence_*' maps.

  Args:
    path: output PNG file.
    source: (H_s, W_s, 3) image, uint8 or float in [0, 1].
    target: (H_t, W_t, 3) image.
    mapping_st: (H_s, W_s, 2) source -> target, in target pixels.
    mapping_ts: (H_t, W_t, 2) target -> source, in source pixels.
    points_s: optional (N, 2) source keypoints.
    points_t: optional (N, 2) their positions in the target; None with
      `points_s` given = `transfer_keypoints(mapping_st, points_s)`.
    extra_maps: name -> (H, W) map drawn with a colour bar.
    title: figure title.
    dpi: resolution of the PNG.
    base_mapping_st: optional (H_s, W_s, 2) base mapping source -> target.
    base_mapping_ts: optional (H_t, W_t, 2) base mapping target -> source
      (the second row needs both).

  Returns:
    `path`.
  """
  source, target = to_float_image(source), to_float_image(target)
  if points_s is not None and points_t is None:
    points_t = kp.transfer_keypoints(mapping_st, points_s)
  n = 0 if points_s is None else len(points_s)
  colors = point_colors(n)
  maps = map_panels(extra_maps)
  base = base_mapping_st is not None and base_mapping_ts is not None
  top = [m for m in maps if not (base and m[0].startswith('base_'))]
  bottom = [m for m in maps if base and m[0].startswith('base_')]

  cols = 4 + max(len(top), len(bottom))
  rows = 2 if base else 1
  fig = Figure(figsize=(3.2 * cols, 3.6 * rows))
  axes = fig.subplots(rows, cols, squeeze=False)
  _show(axes[0, 0], source, 'source')
  _scatter(axes[0, 0], points_s, colors)
  _show(axes[0, 1], target, 'target (transferred keypoints)')
  _scatter(axes[0, 1], points_t, colors)
  _show(axes[0, 2], warp_image(source, mapping_ts), 'source warped to target')
  _show(axes[0, 3], flow_to_color(flow_of(mapping_st)),
        'flow source -> target')
  _draw_maps(fig, axes[0, 4:], top)
  if base:
    axes[1, 0].axis('off')
    _show(axes[1, 1], target, 'target (keypoints by the base flow)')
    if points_s is not None:
      _scatter(axes[1, 1], kp.transfer_keypoints(base_mapping_st, points_s),
               colors)
    _show(axes[1, 2], warp_image(source, base_mapping_ts),
          'source warped to target (base)')
    _show(axes[1, 3], flow_to_color(flow_of(base_mapping_st)),
          'base flow source -> target')
    _draw_maps(fig, axes[1, 4:], bottom)
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, path, dpi)


def _draw_maps(fig, axes, panels) -> None:
  """Draws `map_panels` entries with colour bars; leftover axes are hidden."""
  for i, ax in enumerate(axes):
    if i >= len(panels):
      ax.axis('off')
      continue
    _, name, value, vmin, vmax = panels[i]
    im = ax.imshow(value, cmap='viridis', interpolation='nearest',
                   vmin=vmin, vmax=vmax)
    ax.set_title(name, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def draw_eval_pairs(path: str, batch: Mapping[str, np.ndarray],
                    prediction: Mapping[str, np.ndarray],
                    num_pairs: int = 4, num_points: int = 16,
                    title: str | None = None, dpi: int = 90) -> str:
  """Writes a grid of held-out pairs: one row per pair.

  Columns: source with keypoints (grid points on the source foreground where
  the ground truth is valid); target with predicted (dots) and ground-truth
  (crosses) positions of the same points; the source warped into the target
  frame by the prediction and by the ground truth; predicted and ground-truth
  flow source -> target (one shared saturation scale per row).

  Args:
    path: output PNG file.
    batch: a pipeline batch (docs/architecture.md) as numpy arrays.
    prediction: `method.predict` output as numpy arrays (mapping_st,
      mapping_ts of shape (B, H, W, 2)).
    num_pairs: rows drawn (at most the batch size).
    num_points: about how many keypoints per pair.
    title: figure title.
    dpi: resolution.

  Returns:
    `path`.
  """
  rows = min(num_pairs, len(batch['source_image']))
  titles = ('source', 'target: predicted o, truth x', 'warped (predicted)',
            'warped (truth)', 'flow (predicted)', 'flow (truth)')
  fig = Figure(figsize=(2.4 * len(titles), 2.5 * rows))
  axes = fig.subplots(rows, len(titles), squeeze=False)
  for i in range(rows):
    source = to_float_image(batch['source_image'][i])
    target = to_float_image(batch['target_image'][i])
    region = (batch['source_mask'][i] > 0.5) & (batch['valid_st'][i] > 0.5)
    stride = max(1, int(np.sqrt(max(region.sum(), 1) / num_points)))
    points = kp.grid_points_in_mask(region, stride)[:num_points * 2]
    colors = point_colors(len(points))
    gt_st, pred_st = batch['mapping_st'][i], prediction['mapping_st'][i]
    gt_ts, pred_ts = batch['mapping_ts'][i], prediction['mapping_ts'][i]
    flow_gt = np.where(batch['valid_st'][i][..., None] > 0.5,
                       flow_of(gt_st), 0.0)
    scale = max(float(np.abs(flow_gt).max()), 1.0) * np.sqrt(2)
    warped_gt = warp_image(source, gt_ts) * (
        batch['valid_ts'][i][..., None] > 0.5)
    images = (source, target, warp_image(source, pred_ts), warped_gt,
              flow_to_color(flow_of(pred_st), scale),
              flow_to_color(flow_gt, scale))
    for j, (image, name) in enumerate(zip(images, titles)):
      _show(axes[i, j], image, name if i == 0 else '')
    _scatter(axes[i, 0], points, colors)
    _scatter(axes[i, 1], kp.transfer_keypoints(pred_st, points), colors)
    _scatter(axes[i, 1], kp.transfer_keypoints(gt_st, points), colors,
             marker='x', size=18)
    axes[i, 0].set_ylabel(f'pair {i}', fontsize=8)
  if title:
    fig.suptitle(title, fontsize=10)
  return _save(fig, path, dpi)


def save_image(path: str, image: np.ndarray) -> str:
  """Writes an (H, W, 3) uint8 or [0, 1] float image as PNG (atomically)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = np.round(to_float_image(image) * 255).astype(np.uint8)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  Image.fromarray(image).save(tmp, format='PNG')
  os.replace(tmp, path)
  return path


def write_pair_images(directory: str, batch: Mapping[str, np.ndarray],
                      num_pairs: int = 2) -> list[str]:
  """Writes pairs as `pair_<i:03d>_source.png` / `pair_<i:03d>_target.png`.

  Returns:
    The paths written.
  """
  paths = []
  for i in range(min(num_pairs, len(batch['source_image']))):
    for side in ('source', 'target'):
      paths.append(save_image(
          os.path.join(directory, f'pair_{i:03d}_{side}.png'),
          batch[f'{side}_image'][i]))
  return paths
