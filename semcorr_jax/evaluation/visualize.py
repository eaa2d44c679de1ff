"""Pictures of matches: flow colour maps, match panels, held-out pair grids.

`draw_flows` draws one row per flow a method declares (`semcorr_jax.outputs`),
the primary flow first, each with its extras (confidence maps on a fixed
[0, 1] scale); `draw_match` is its one-flow form. `draw_eval_pairs` draws
held-out pairs with their ground truth, one row per pair and flow.

Uses matplotlib's object API with the Agg canvas (no display, no pyplot
state). Images are (H, W, 3) in [0, 1] (or uint8); points are `(x, y)` in
pixels; a mapping `mapping_ab` (H_a, W_a, 2) holds for every pixel of a the
matching `(x, y)` in b's pixels (docs/architecture.md).

Flows are colour-coded by `flow_colors.flow_to_color` (Middlebury).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Sequence

import chex
import jax
from matplotlib.figure import Figure
import numpy as np
from PIL import Image

from semcorr_jax import geometry
from semcorr_jax import output_paths
from semcorr_jax import outputs
from semcorr_jax.evaluation import keypoints as kp
from semcorr_jax.evaluation.flow_colors import color_wheel
from semcorr_jax.evaluation.flow_colors import flow_to_color


def to_float_image(image: np.ndarray) -> np.ndarray:
  """uint8 or float image -> (H, W, 3) float32 in [0, 1]."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image.astype(np.float32) / 255.0
  return np.clip(image.astype(np.float32), 0.0, 1.0)


_warp = jax.jit(geometry.warp)


def warp_image(image_b: np.ndarray, mapping_ab: np.ndarray) -> np.ndarray:
  """Image b seen in a's frame: b sampled at `mapping_ab` (bilinear).

  Drawn with `geometry.warp(..., padding_mode='zeros')`, the sampler the
  models and the losses use, so a picture shows exactly what the model's
  own warp gives (pixel centres at integers, each of the four neighbours
  that falls outside b contributes 0) rather than a second implementation
  of the convention. Jitted: about 0.2 s to compile for each new pair of
  sizes on a CPU (then cached), where running it op by op costs about 1 s
  per new size. Mappings that are NaN (no match) read 0.

  Args:
    image_b: (H_b, W_b, C) image (uint8 or float in [0, 1]).
    mapping_ab: (H_a, W_a, 2) absolute (x, y) in b's pixels.

  Returns:
    (H_a, W_a, C) float32.
  """
  image_b = to_float_image(image_b)
  mapping_ab = np.asarray(mapping_ab, np.float32)
  chex.assert_rank(image_b, 3)
  chex.assert_shape(mapping_ab, (None, None, 2))
  # Outside the image (and finite, so that no index is undefined).
  mapping_ab = np.nan_to_num(mapping_ab, nan=-2.0, posinf=-2.0, neginf=-2.0)
  return np.asarray(_warp(image_b[None], mapping_ab[None])[0], np.float32)


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
  output_paths.makedirs(os.path.dirname(output_paths.absolute(path)))
  with output_paths.atomic_write(path) as f:
    fig.savefig(f, format='png', dpi=dpi, bbox_inches='tight')
  return path


# Words for the two directions of a flow's maps, in panel titles.
DIRECTION_WORDS = {'st': 'source -> target', 'ts': 'target -> source'}

# (key, title, (H, W) float32 map, vmin, vmax); None = auto-scaled.
Panel = tuple[str, str, np.ndarray, float | None, float | None]


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of `draw_flows`: one declared flow.

  Attributes:
    flow: the flow's name.
    label: '' for the primary flow, else '<name> ' (a prefix of titles).
    description: the flow's declared description.
    mapping_st: (H_s, W_s, 2) source -> target, in target pixels.
    mapping_ts: (H_t, W_t, 2) target -> source, in source pixels.
    panels: its extra maps as drawn (`Panel`s).
  """
  flow: str
  label: str
  description: str
  mapping_st: np.ndarray
  mapping_ts: np.ndarray
  panels: tuple[Panel, ...]


def _as_map(value: np.ndarray) -> np.ndarray | None:
  """(H, W) or (H, W, 1) -> (H, W) float32; None for anything else."""
  value = np.asarray(value, np.float32)
  if value.ndim == 3 and value.shape[-1] == 1:
    value = value[..., 0]
  return value if value.ndim == 2 else None


def _panel(key: str, title: str, value: np.ndarray, kind: str
           ) -> Panel | None:
  value = _as_map(value)
  if value is None:
    return None
  if kind == outputs.CONFIDENCE:
    return (key, title, value, 0.0, 1.0)
  return (key, title, value, None, None)


def flow_panels(flows: Sequence[outputs.Flow], name: str,
                maps: Mapping[str, np.ndarray]) -> list[Panel]:
  """The extras flow `name` declares that `maps` holds, as drawn.

  In declared order, each direction present (st, then ts); confidence
  extras on the fixed scale [0, 1], others auto-scaled. Extras that are
  not one (H, W) map per direction are skipped.

  Args:
    flows: the method's declared flows.
    name: one of them.
    maps: flat maps (`outputs` keys) of one pair, e.g. `Matcher.match`.
  """
  flow = outputs.find(flows, name)
  label = outputs.prefix(flows, name).replace('_', ' ')
  panels = []
  for extra in flow.extras:
    for direction in outputs.DIRECTIONS:
      key = outputs.key(flows, name, extra, direction)
      if key in maps:
        panel = _panel(key, f'{label}{extra} ({DIRECTION_WORDS[direction]})',
                       maps[key], extra)
        if panel is not None:
          panels.append(panel)
  return panels


def map_panels(extra_maps: Mapping[str, np.ndarray] | None) -> list[Panel]:
  """Undeclared (H, W) maps, by name: `confidence_st`, `x_confidence_ts`, ...
  on the fixed scale [0, 1] (first), every other map auto-scaled and titled
  by its name; otherwise in the given order."""
  panels = []
  for key, value in (extra_maps or {}).items():
    stem, _, direction = key.rpartition('_')
    confidence = (direction in DIRECTION_WORDS and
                  stem.rpartition('_')[2] == outputs.CONFIDENCE)
    title = (f'{stem.replace("_", " ")} ({DIRECTION_WORDS[direction]})'
             if confidence else key)
    panel = _panel(key, title, value, outputs.CONFIDENCE if confidence else '')
    if panel is not None:
      panels.append(panel)
  return sorted(panels, key=lambda p: p[3] is None)  # stable


def match_rows(flows: Sequence[outputs.Flow], maps: Mapping[str, np.ndarray],
               extra_maps: Mapping[str, np.ndarray] | None = None
               ) -> list[Row]:
  """What `draw_flows` draws: one `Row` per declared flow, the primary first.

  Args:
    flows: the method's declared flows (`method.flows`).
    maps: flat maps of one pair (`Matcher.match`): every flow's
      `mapping_st`/`mapping_ts` and any of its declared extras.
    extra_maps: undeclared (H, W) maps, drawn in the primary row after its
      own (`map_panels`).

  Raises:
    KeyError: a declared mapping is missing from `maps`.
  """
  per_flow = outputs.split(flows, maps)
  rows = []
  for i, flow in enumerate(flows):
    panels = flow_panels(flows, flow.name, maps)
    if i == 0:
      panels += map_panels(extra_maps)
    rows.append(Row(flow=flow.name,
                    label=outputs.prefix(flows, flow.name).replace('_', ' '),
                    description=flow.description,
                    mapping_st=np.asarray(per_flow[flow.name]['mapping_st']),
                    mapping_ts=np.asarray(per_flow[flow.name]['mapping_ts']),
                    panels=tuple(panels)))
  return rows


def match_figure(source: np.ndarray, target: np.ndarray,
                 flows: Sequence[outputs.Flow],
                 maps: Mapping[str, np.ndarray],
                 points_s: np.ndarray | None = None,
                 points_t: np.ndarray | None = None,
                 extra_maps: Mapping[str, np.ndarray] | None = None,
                 title: str | None = None) -> Figure:
  """The figure of `draw_flows` (one row per declared flow)."""
  source, target = to_float_image(source), to_float_image(target)
  rows = match_rows(flows, maps, extra_maps)
  if points_s is not None and points_t is None:
    points_t = kp.transfer_keypoints(rows[0].mapping_st, points_s)
  colors = point_colors(0 if points_s is None else len(points_s))

  cols = 4 + max(len(r.panels) for r in rows)
  fig = Figure(figsize=(3.2 * cols, 3.6 * len(rows)))
  axes = fig.subplots(len(rows), cols, squeeze=False)
  for i, row in enumerate(rows):
    if i == 0:
      _show(axes[0, 0], source, 'source')
      _scatter(axes[0, 0], points_s, colors)
      if len(rows) > 1:
        axes[0, 0].set_ylabel(row.flow, fontsize=9)
      moved, by = points_t, 'transferred keypoints'
    else:
      axes[i, 0].axis('off')
      axes[i, 0].text(0.5, 0.5, f'{row.flow}\n{row.description}'.strip(),
                      ha='center', va='center', fontsize=9, wrap=True)
      moved = (None if points_s is None else
               kp.transfer_keypoints(row.mapping_st, points_s))
      by = f'keypoints by the {row.flow} flow'
    _show(axes[i, 1], target, f'target ({by})')
    _scatter(axes[i, 1], moved, colors)
    _show(axes[i, 2], warp_image(source, row.mapping_ts),
          'source warped to target' + (f' ({row.flow})' if i else ''))
    _show(axes[i, 3], flow_to_color(flow_of(row.mapping_st)),
          f'{row.label}flow source -> target')
    _draw_maps(fig, axes[i, 4:], row.panels)
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def draw_flows(path: str, source: np.ndarray, target: np.ndarray,
               flows: Sequence[outputs.Flow], maps: Mapping[str, np.ndarray],
               points_s: np.ndarray | None = None,
               points_t: np.ndarray | None = None,
               extra_maps: Mapping[str, np.ndarray] | None = None,
               title: str | None = None, dpi: int = 110) -> str:
  """Writes a PNG of one matched pair, one row per declared flow.

  Each row, the primary flow's first: the source with its keypoints (first
  row; later rows name their flow there), the target with the keypoints
  moved by the row's `mapping_st` (same colours), the source warped into the
  target frame (sampled at the row's `mapping_ts`), the colour-coded flow
  `mapping_st - grid` (`flow_to_color`), then the row's extras with colour
  bars (`flow_panels`: confidence maps on the fixed scale [0, 1]).

  Args:
    path: output PNG file.
    source: (H_s, W_s, 3) image, uint8 or float in [0, 1].
    target: (H_t, W_t, 3) image.
    flows: the method's declared flows.
    maps: flat maps of the pair (`Matcher.match`).
    points_s: optional (N, 2) source keypoints.
    points_t: optional (N, 2) their positions in the target by the primary
      flow; None with `points_s` given = read from its `mapping_st`.
    extra_maps: undeclared (H, W) maps for the first row (`map_panels`).
    title: figure title.
    dpi: resolution of the PNG.

  Returns:
    `path`.
  """
  fig = match_figure(source, target, flows, maps, points_s=points_s,
                     points_t=points_t, extra_maps=extra_maps, title=title)
  return _save(fig, path, dpi)


def draw_match(path: str, source: np.ndarray, target: np.ndarray,
               mapping_st: np.ndarray, mapping_ts: np.ndarray,
               points_s: np.ndarray | None = None,
               points_t: np.ndarray | None = None,
               extra_maps: Mapping[str, np.ndarray] | None = None,
               title: str | None = None, dpi: int = 110) -> str:
  """`draw_flows` of a single flow: one row.

  Args:
    path: output PNG file.
    source: (H_s, W_s, 3) image, uint8 or float in [0, 1].
    target: (H_t, W_t, 3) image.
    mapping_st: (H_s, W_s, 2) source -> target, in target pixels.
    mapping_ts: (H_t, W_t, 2) target -> source, in source pixels.
    points_s: optional (N, 2) source keypoints.
    points_t: optional (N, 2) their positions in the target; None with
      `points_s` given = `transfer_keypoints(mapping_st, points_s)`.
    extra_maps: name -> (H, W) map drawn with a colour bar (`map_panels`).
    title: figure title.
    dpi: resolution of the PNG.

  Returns:
    `path`.
  """
  return draw_flows(path, source, target, outputs.DEFAULT_FLOWS,
                    {'mapping_st': mapping_st, 'mapping_ts': mapping_ts},
                    points_s=points_s, points_t=points_t,
                    extra_maps=extra_maps, title=title, dpi=dpi)


def _draw_maps(fig, axes, panels) -> None:
  """Draws `Panel`s with colour bars; leftover axes are hidden."""
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


def eval_pairs_figure(batch: Mapping[str, np.ndarray],
                      prediction: Mapping[str, np.ndarray],
                      flows: Sequence[outputs.Flow] | None = None,
                      num_pairs: int = 4, num_points: int = 16,
                      title: str | None = None) -> Figure:
  """The figure of `draw_eval_pairs`: one row per pair and declared flow."""
  flows = outputs.check(flows or outputs.DEFAULT_FLOWS)
  per_flow = outputs.split(flows, prediction)
  several = len(flows) > 1
  columns = 7 if any(outputs.CONFIDENCE in f.extras and 'confidence_st' in
                     per_flow[f.name] for f in flows) else 6
  pairs = min(num_pairs, len(batch['source_image']))
  titles = ('source', 'target: predicted o, truth x', 'warped (predicted)',
            'warped (truth)', 'flow (predicted)', 'flow (truth)')
  fig = Figure(figsize=(2.4 * columns, 2.5 * pairs * len(flows)))
  axes = fig.subplots(pairs * len(flows), columns, squeeze=False)
  for i in range(pairs):
    source = to_float_image(batch['source_image'][i])
    region = (batch['source_mask'][i] > 0.5) & (batch['valid_st'][i] > 0.5)
    stride = max(1, int(np.sqrt(max(region.sum(), 1) / num_points)))
    points = kp.grid_points_in_mask(region, stride)[:num_points * 2]
    colors = point_colors(len(points))
    gt_st = batch['mapping_st'][i]
    flow_gt = np.where(batch['valid_st'][i][..., None] > 0.5,
                       flow_of(gt_st), 0.0)
    scale = max(float(np.abs(flow_gt).max()), 1.0) * np.sqrt(2)
    warped_gt = warp_image(source, batch['mapping_ts'][i]) * (
        batch['valid_ts'][i][..., None] > 0.5)
    for j, flow in enumerate(flows):
      row, maps = axes[i * len(flows) + j], per_flow[flow.name]
      pred_st = np.asarray(maps['mapping_st'][i])
      images = (source, to_float_image(batch['target_image'][i]),
                warp_image(source, maps['mapping_ts'][i]), warped_gt,
                flow_to_color(flow_of(pred_st), scale),
                flow_to_color(flow_gt, scale))
      for c, (image, name) in enumerate(zip(images, titles)):
        if j and c in (0, 3, 5):  # the pair's source and truth: drawn once
          row[c].axis('off')
        elif several and 'predicted' in name:  # every row names its flow
          _show(row[c], image, name.replace('predicted', flow.name))
        else:
          _show(row[c], image, name if i == j == 0 else '')
      _scatter(row[1], kp.transfer_keypoints(pred_st, points), colors)
      _scatter(row[1], kp.transfer_keypoints(gt_st, points), colors,
               marker='x', size=18)
      if j:
        row[0].text(0.5, 0.5, f'pair {i}: {flow.name}\n{flow.description}',
                    ha='center', va='center', fontsize=8, wrap=True)
      else:
        _scatter(row[0], points, colors)
        row[0].set_ylabel(f'pair {i}' + (f': {flow.name}' if several else ''),
                          fontsize=8)
      if columns > 6:
        conf = (maps.get('confidence_st') if outputs.CONFIDENCE in flow.extras
                else None)
        conf = None if conf is None else _as_map(conf[i])
        _draw_maps(fig, row[6:], [] if conf is None else [(
            '', f'{flow.name + " " if several else ""}confidence\n(source '
            '-> target)', conf, 0.0, 1.0)])
  if title:
    fig.suptitle(title, fontsize=10)
  return fig


def draw_eval_pairs(path: str, batch: Mapping[str, np.ndarray],
                    prediction: Mapping[str, np.ndarray],
                    num_pairs: int = 4, num_points: int = 16,
                    title: str | None = None, dpi: int = 90,
                    flows: Sequence[outputs.Flow] | None = None) -> str:
  """Writes a grid of held-out pairs: one row per pair and declared flow.

  A pair's first row (its primary flow): the source with keypoints (grid
  points on the source foreground where the ground truth is valid); the
  target with predicted (dots) and ground-truth (crosses) positions of the
  same points; the source warped into the target frame by the prediction
  and by the ground truth; predicted and ground-truth flow source -> target
  (one saturation scale per pair). Below it, a row per other flow: its name,
  then its predicted panels (titled with the flow's name when there are
  several). If a flow declares a confidence, a last column shows its
  `confidence_st` on the fixed scale [0, 1].

  Args:
    path: output PNG file.
    batch: a pipeline batch (docs/architecture.md) as numpy arrays.
    prediction: `method.predict` output as numpy arrays: the flat keys
      (`semcorr_jax.outputs`) of every flow in `flows`, mappings
      (B, H, W, 2), confidences (B, H, W).
    num_pairs: pairs drawn (at most the batch size).
    num_points: about how many keypoints per pair.
    title: figure title.
    dpi: resolution.
    flows: the method's declared flows; None = the primary flow only.

  Returns:
    `path`.
  """
  return _save(eval_pairs_figure(batch, prediction, flows, num_pairs,
                                 num_points, title), path, dpi)


def save_image(path: str, image: np.ndarray) -> str:
  """Writes an (H, W, 3) uint8 or [0, 1] float image as PNG (atomically)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = np.round(to_float_image(image) * 255).astype(np.uint8)
  output_paths.makedirs(os.path.dirname(output_paths.absolute(path)))
  with output_paths.atomic_write(path) as f:
    Image.fromarray(image).save(f, format='PNG')
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
