"""The picture of a benchmark run's worst pairs (`runner.evaluate_benchmark`).

One row per pair, `WORST_COLUMNS` panels of `WORST_PANEL_INCHES` at
`WORST_DPI`, so the PNG size depends only on the number of rows:

* keypoints: source, target, the image compared in (ground truth o,
  prediction x, error lines), the source warped into the target;
* flow (TSS): source, target, the source warped by the prediction and by the
  ground truth;
* masks (Caltech-101): source, target, warped source, the masks (target red,
  warped source green).
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

from matplotlib.figure import Figure
import numpy as np

from semcorr_jax.evaluation import caltech
from semcorr_jax.evaluation import tss
from semcorr_jax.evaluation import visualize

# pylint: disable=protected-access

WORST_COLUMNS = 4
WORST_PANEL_INCHES = 2.4
WORST_DPI = 80


def worst_pairs_size(num_rows: int) -> tuple[int, int]:
  """(width, height) in pixels of `draw_worst_pairs`' PNG (one row min)."""
  side = int(round(WORST_PANEL_INCHES * WORST_DPI))
  return WORST_COLUMNS * side, max(1, num_rows) * side


def _text(value) -> str:
  if isinstance(value, bytes):
    return value.decode()
  return str(value)


def _keypoint_panels(example, prediction, direction):
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
  predicted = (prediction.transfer(moved, direction) if len(moved)
               else np.zeros((0, 2)))
  return [
      {'image': example['source_image'], 'title': 'source',
       'points': src_kps},
      {'image': example['target_image'], 'title': 'target',
       'points': tgt_kps},
      {'image': compared, 'title': f'{title}: truth o, predicted x',
       'points': gt, 'predicted': predicted},
  ]


def worst_pair_row(example, prediction, record, kind: str, protocol,
                   primary: str) -> dict:
  """One row of `draw_worst_pairs` for a scored benchmark pair.

  Columns: source, target, then for 'keypoints' the image the points are
  compared in (ground truth o, prediction x, joined by error lines) and the
  source warped into the target by `prediction.dense('ts')`; for 'flow' the
  source warped by the prediction and by the ground truth (TSS `flow`); for
  'masks' the warped source and the masks (target red, warped source mask
  green, overlap yellow).

  Args:
    example: the (prepared) record.
    prediction: its `protocol.PairPrediction`.
    record: its `score_pair` record.
    kind: 'keypoints', 'flow' or 'masks'.
    protocol: the protocol (`direction`; Caltech options).
    primary: the metric shown in the row's caption.

  Returns:
    {'caption': str, 'panels': [{'image', 'title', 'points'?,
    'predicted'?}] * 4}.
  """
  source, target = example['source_image'], example['target_image']
  warped = visualize.warp_image(source, prediction.dense('ts'))
  if kind == 'keypoints':
    panels = _keypoint_panels(example, prediction,
                              protocol.get('direction', 'ts'))
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
        source_mask, prediction.dense('ts'),
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
  value = record.get(primary, float('nan'))
  value = f'{value:.3f}' if isinstance(value, (float, np.floating)) else value
  caption = f"{_text(record.get('pair_id', ''))}, {primary} = {value}"
  return {'caption': caption, 'panels': panels}


def _error_lines(ax, gt, predicted, colors):
  for (x0, y0), (x1, y1), c in zip(gt, predicted, colors):
    ax.plot([x0, x1], [y0, y1], color=c, linewidth=1.0)


def draw_worst_pairs(path: str, rows: Sequence[Mapping], title: str = '',
                     ) -> str:
  """Writes the worst pairs of a benchmark run, one row per pair.

  The PNG has exactly `worst_pairs_size(len(rows))` pixels (fixed panel
  size, no tight cropping); with no rows it holds one line of text.

  Args:
    path: output PNG (written atomically).
    rows: `worst_pair_row` outputs: 'caption' and four 'panels' with
      'image' (H, W, 3), 'title', optional 'points' (N, 2) drawn as circles
      and 'predicted' (N, 2) drawn as crosses joined to 'points'.
    title: figure title.

  Returns:
    `path`.
  """
  width, height = worst_pairs_size(len(rows))
  fig = Figure(figsize=(width / WORST_DPI, height / WORST_DPI))
  if not rows:
    fig.text(0.5, 0.5, 'no pair with a finite score', ha='center',
             va='center')
  else:
    axes = fig.subplots(len(rows), WORST_COLUMNS, squeeze=False)
    for i, row in enumerate(rows):
      for j, panel in enumerate(row['panels'][:WORST_COLUMNS]):
        ax = axes[i, j]
        visualize._show(ax, visualize.to_float_image(panel['image']),
                        panel.get('title', ''))
        ax.title.set_fontsize(6)
        points = panel.get('points')
        colors = visualize.point_colors(0 if points is None else len(points))
        if panel.get('predicted') is not None:
          _error_lines(ax, points, panel['predicted'], colors)
          visualize._scatter(ax, panel['predicted'], colors, marker='x',
                             size=16)
        visualize._scatter(ax, points, colors, size=10)
      caption = row.get('caption', '')
      if caption:
        axes[i, 0].set_title(f"{caption}\n{row['panels'][0].get('title', '')}",
                             fontsize=6)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01,
                        top=1.0 - 0.45 / len(rows), wspace=0.05,
                        hspace=0.35)
  if title:
    fig.suptitle(title, fontsize=8)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  fig.savefig(tmp, format='png', dpi=WORST_DPI)
  os.replace(tmp, path)
  return path
