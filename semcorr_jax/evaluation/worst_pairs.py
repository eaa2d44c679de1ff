"""The picture of a benchmark run's worst pairs (`runner.evaluate_benchmark`).

One row per pair and declared flow (`semcorr_jax.outputs`), the primary
flow's first, panels of `WORST_PANEL_INCHES` at `WORST_DPI`, so the PNG size
depends only on the numbers of rows and columns (`WORST_COLUMNS`, one more
when a flow's confidence is drawn):

* keypoints: source, target, the image compared in (ground truth o,
  prediction x, error lines), the source warped into the target;
* flow (TSS): source, target, the source warped by the prediction and by the
  ground truth;
* masks (Caltech-101): source, target, warped source, the masks (target red,
  warped source green);
* then, for a flow declaring a confidence, its confidence map on the fixed
  scale [0, 1].

Another flow's row leaves out the pair's source and target (drawn in the
row above) and is captioned with the flow's name and score.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

from matplotlib.figure import Figure
import numpy as np

from semcorr_jax import output_paths
from semcorr_jax import outputs
from semcorr_jax.evaluation import caltech
from semcorr_jax.evaluation import tss
from semcorr_jax.evaluation import visualize

# pylint: disable=protected-access

WORST_COLUMNS = 4
WORST_PANEL_INCHES = 2.4
WORST_DPI = 80


def worst_pairs_size(num_rows: int, num_columns: int = WORST_COLUMNS
                     ) -> tuple[int, int]:
  """(width, height) in pixels of `draw_worst_pairs`' PNG (one row min)."""
  side = int(round(WORST_PANEL_INCHES * WORST_DPI))
  return num_columns * side, max(1, num_rows) * side


def _text(value) -> str:
  if isinstance(value, bytes):
    return value.decode()
  return str(value)


def _keypoint_panels(example, prediction, direction, prefix):
  src_kps = np.asarray(example['source_keypoints'], np.float64).reshape(-1, 2)
  tgt_kps = np.asarray(example['target_keypoints'], np.float64).reshape(-1, 2)
  valid = np.asarray(example.get('keypoint_valid',
                                 np.ones(len(src_kps), bool)), bool)
  src_kps, tgt_kps = src_kps[valid], tgt_kps[valid]
  if direction == 'ts':
    compared, gt, moved = example['source_image'], src_kps, tgt_kps
    title = 'target kps -> source'
  else:
    compared, gt, moved = example['target_image'], tgt_kps, src_kps
    title = 'source kps -> target'
  predicted = (prediction.transfer(moved, direction, prefix) if len(moved)
               else np.zeros((0, 2)))
  return [
      {'image': example['source_image'], 'title': 'source',
       'points': src_kps},
      {'image': example['target_image'], 'title': 'target',
       'points': tgt_kps},
      {'image': compared, 'title': f'{title}: truth o, predicted x',
       'points': gt, 'predicted': predicted},
  ]


def _confidence_panel(prediction, flows, name, direction) -> dict | None:
  """Flow `name`'s confidence of `direction` at the 'from' image's original
  resolution (None when the flow declares none or the map is not there)."""
  p = outputs.prefix(flows, name)
  if (outputs.CONFIDENCE not in outputs.find(flows, name).extras or
      f'{p}{outputs.CONFIDENCE}_{direction}' not in prediction.outputs):
    return None
  h, w = prediction.source_hw if direction == 'st' else prediction.target_hw
  xs, ys = np.meshgrid(np.arange(w), np.arange(h), indexing='xy')
  grid = np.stack([xs.ravel(), ys.ravel()], axis=-1)
  value = prediction.read_map(grid, direction, p + outputs.CONFIDENCE)
  label = f'{name} ' if len(flows) > 1 else ''
  return {'image': value.reshape(h, w), 'scale': (0.0, 1.0),
          'title': f'{label}confidence '
                   f'({visualize.DIRECTION_WORDS[direction]})'}


def worst_pair_row(example, prediction, record, kind: str, protocol,
                   primary: str, flows: Sequence[outputs.Flow] | None = None,
                   flow: str | None = None) -> dict:
  """One row of `draw_worst_pairs`: a scored benchmark pair, one flow.

  Columns: source, target, then for 'keypoints' the image the points are
  compared in (ground truth o, prediction x, joined by error lines) and the
  source warped into the target by the flow's dense mapping 'ts'; for
  'flow' the source warped by the prediction and by the ground truth (TSS
  `flow`); for 'masks' the warped source and the masks (target red, warped
  source mask green, overlap yellow); then the flow's confidence if it
  declares one (of the protocol's direction for keypoints, else 'ts': the
  warped source's grid). A flow other than the primary one has None for
  the source and the target (drawn in the primary flow's row).

  Args:
    example: the (prepared) record.
    prediction: its `protocol.PairPrediction` (flat keys of every flow).
    record: its `score_pair` record (other flows' metrics prefixed).
    kind: 'keypoints', 'flow' or 'masks'.
    protocol: the protocol (`direction`; Caltech options).
    primary: the metric shown in the row's caption.
    flows: the declared flows; None = the primary flow only.
    flow: the flow drawn; None = the primary one.

  Returns:
    {'caption': str, 'flow': name, 'panels': [None or {'image', 'title',
    'points'?, 'predicted'?, 'scale'? (vmin, vmax) of an (H, W) map}]}.
  """
  flows = outputs.check(flows or outputs.DEFAULT_FLOWS)
  flow = flow or flows[0].name
  p = outputs.prefix(flows, flow)
  source, target = example['source_image'], example['target_image']
  warped = visualize.warp_image(source, prediction.dense('ts', p))
  direction = 'ts'
  if kind == 'keypoints':
    direction = protocol.get('direction', 'ts')
    panels = _keypoint_panels(example, prediction, direction, p)
    panels.append({'image': warped, 'title': 'source warped to target'})
  elif kind == 'flow':
    panels = [{'image': source, 'title': 'source'},
              {'image': target, 'title': 'target'},
              {'image': warped, 'title': 'source warped (predicted)'},
              {'image': visualize.warp_image(source,
                                             tss.gt_mapping_ts(example)),
               'title': 'source warped (truth)'}]
  elif kind == 'masks':
    source_mask, target_mask = caltech.pair_masks(example, protocol)
    moved = caltech.warp_mask(
        source_mask, prediction.dense('ts', p),
        str(protocol.get('caltech_reference', 'weakalign')))
    overlay = np.stack([target_mask, moved, np.zeros_like(moved)],
                       -1).astype(np.float32)
    panels = [{'image': source, 'title': 'source'},
              {'image': target, 'title': 'target'},
              {'image': warped, 'title': 'source warped to target'},
              {'image': (0.25 * visualize.to_float_image(target)
                         + 0.75 * overlay),
               'title': 'target mask red, warped green'}]
  else:
    raise ValueError(f'unknown record kind {kind!r}')
  confidence = _confidence_panel(prediction, flows, flow, direction)
  panels += [confidence] if confidence else []
  if p:
    panels[:2] = [None, None]
  value = record.get(p + primary, float('nan'))
  value = f'{value:.3f}' if isinstance(value, (float, np.floating)) else value
  named = f'{flow}: ' if len(flows) > 1 else ''
  caption = f"{_text(record.get('pair_id', ''))}, {named}{primary} = {value}"
  return {'caption': caption, 'flow': flow, 'panels': panels}


def worst_pair_rows(example, prediction, record, kind: str, protocol,
                    primary: str, flows: Sequence[outputs.Flow] | None = None
                    ) -> list[dict]:
  """`worst_pair_row` of every declared flow, the primary one first."""
  flows = outputs.check(flows or outputs.DEFAULT_FLOWS)
  return [worst_pair_row(example, prediction, record, kind, protocol,
                         primary, flows, f.name) for f in flows]


def _error_lines(ax, gt, predicted, colors):
  for (x0, y0), (x1, y1), c in zip(gt, predicted, colors):
    ax.plot([x0, x1], [y0, y1], color=c, linewidth=1.0)


def _draw_panel(fig, ax, panel) -> None:
  if panel is None:
    ax.axis('off')
    return
  if 'scale' in panel:  # an (H, W) map on a fixed scale, with a colour bar
    im = ax.imshow(panel['image'], cmap='viridis', interpolation='nearest',
                   vmin=panel['scale'][0], vmax=panel['scale'][1])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
                 ticks=[0.0, 0.5, 1.0]).ax.tick_params(labelsize=5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(panel.get('title', ''), fontsize=6)
    return
  visualize._show(ax, visualize.to_float_image(panel['image']),
                  panel.get('title', ''))
  ax.title.set_fontsize(6)
  points = panel.get('points')
  colors = visualize.point_colors(0 if points is None else len(points))
  if panel.get('predicted') is not None:
    _error_lines(ax, points, panel['predicted'], colors)
    visualize._scatter(ax, panel['predicted'], colors, marker='x', size=16)
  visualize._scatter(ax, points, colors, size=10)


def draw_worst_pairs(path: str, rows: Sequence[Mapping], title: str = '',
                     ) -> str:
  """Writes the worst pairs of a benchmark run, one row per pair and flow.

  The PNG has exactly `worst_pairs_size(len(rows), columns)` pixels (fixed
  panel size, no tight cropping), `columns` = `WORST_COLUMNS` or the most
  panels of a row; with no rows it holds one line of text.

  Args:
    path: output PNG (written atomically).
    rows: `worst_pair_row(s)` outputs: 'caption' and 'panels', each None
      (left empty) or with 'image' (H, W, 3), 'title', optional 'points'
      (N, 2) drawn as circles and 'predicted' (N, 2) drawn as crosses
      joined to 'points', or an (H, W) 'image' with 'scale' (vmin, vmax).
    title: figure title.

  Returns:
    `path`.
  """
  columns = max([WORST_COLUMNS] + [len(r['panels']) for r in rows])
  width, height = worst_pairs_size(len(rows), columns)
  fig = Figure(figsize=(width / WORST_DPI, height / WORST_DPI))
  if not rows:
    fig.text(0.5, 0.5, 'no pair with a finite score', ha='center',
             va='center')
  else:
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for i, row in enumerate(rows):
      panels = list(row['panels']) + [None] * columns
      for j in range(columns):
        _draw_panel(fig, axes[i, j], panels[j])
      caption = row.get('caption', '')
      if caption:
        first = (panels[0] or {}).get('title', '')
        axes[i, 0].set_title(f'{caption}\n{first}'.strip(), fontsize=6)
    fig.subplots_adjust(left=0.01, right=0.97, bottom=0.01,
                        top=1.0 - 0.45 / len(rows), wspace=0.05,
                        hspace=0.35)
  if title:
    fig.suptitle(title, fontsize=8)
  output_paths.makedirs(os.path.dirname(output_paths.absolute(path)))
  with output_paths.atomic_write(path) as f:
    fig.savefig(f, format='png', dpi=WORST_DPI)
  return path
