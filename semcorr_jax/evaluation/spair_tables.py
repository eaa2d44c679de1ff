"""SPair-71k result tables: per variation factor and per category (numpy).

`spair_tables(records)` groups per-pair PCK values the way SPair-71k results
are reported; `spair_markdown(tables)` renders them.

Layout (Table 2 of Jeon et al., "Guided Semantic Flow", paper 001): one row
per method with the columns Viewpoint easy / medi / hard, Scale easy / medi /
hard, Truncation none / src / tgt / both, Occlusion none / src / tgt / both
and All, as PCK (alpha_bbox = 0.1) in percent with one decimal. That table
has no per-category columns; the per-category table (18 columns + All, as in
the SPair-71k paper, DHPF and CATs) is rendered as a second table.

Input: one record per pair, with `category` (name), the four labels as
written in the pair JSONs (`viewpoint_variation`, `scale_variation`: 0 easy,
1 medium, 2 hard; `truncation`, `occlusion`: 0 none, 1 source, 2 target,
3 both; see `semcorr_jax.data.benchmarks.spair`) and the pair's PCK in [0, 1]
under `'pck@<alpha>'` (`pck.alpha_key`). A NaN PCK (a pair without valid
keypoints) leaves the pair out of every group; `num_skipped` counts them.

Aggregation: every cell is the mean over the group's pairs of the per-pair
PCK (each pair weighs the same, whatever its keypoint count). That is what
DHPF (`common/logger.py: AverageMeter`) and CATs (`utils_training/
optimize.py`) compute for their overall number: the sum of per-pair
percentages over the number of pairs. Neither public codebase computes the
per-category or per-factor numbers of their papers; we apply the same
per-pair mean inside each group. (A per-keypoint mean, correct keypoints over
all keypoints of a category, appears in some later evaluation scripts; it is
not offered here.)

Groups (`condition`):

* 'marginal' (default): a level's column holds every pair with that level,
  whatever its other labels. This matches the numbers of Table 2.
* 'others_easiest': only pairs whose other three labels are 0 (easy /
  none), the literal reading of Table 2's caption ("evaluated by fixing the
  levels of other variations as 'easy' and 'none'"). Under that reading the
  columns Viewpoint easy, Scale easy, Truncation none and Occlusion none would
  all hold the same pairs (all four labels 0) and be equal, but Table 2's
  rows differ there (e.g. HPF 35.6 / 33.0 / 31.0 / 30.8), so the table was
  not made this way; the option exists for comparison only.

`All` and the per-category cells always use every (non-NaN) pair.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import pck as pck_lib

# The 18 categories in the official order (as the SPair-71k builder).
CATEGORIES = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
    'chair', 'cow', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
    'sheep', 'train', 'tvmonitor')
# factor -> level names, index = the label value in the pair JSONs.
FACTORS = {
    'viewpoint_variation': ('easy', 'medium', 'hard'),
    'scale_variation': ('easy', 'medium', 'hard'),
    'truncation': ('none', 'source', 'target', 'both'),
    'occlusion': ('none', 'source', 'target', 'both'),
}
CONDITIONS = ('marginal', 'others_easiest')
# Column headings as Table 2 spells them.
_FACTOR_HEADINGS = {'viewpoint_variation': 'Viewpoint',
                    'scale_variation': 'Scale', 'truncation': 'Truncation',
                    'occlusion': 'Occlusion'}
_LEVEL_HEADINGS = {'easy': 'easy', 'medium': 'medi', 'hard': 'hard',
                   'none': 'none', 'source': 'src', 'target': 'tgt',
                   'both': 'both'}


def _cell(values: list[float]) -> dict[str, Any]:
  """{'pck': mean (NaN if empty), 'num_pairs': count}."""
  return {'pck': float(np.mean(values)) if values else float('nan'),
          'num_pairs': len(values)}


def _parse(record: Mapping[str, Any], key: str, index: int
           ) -> tuple[str, tuple[int, ...], float]:
  """(category, labels in FACTORS order, pck) of one record, validated."""
  where = f'spair_tables: record {index}'
  missing = [k for k in ('category', key, *FACTORS) if k not in record]
  if missing:
    raise SemcorrError(
        f'{where} lacks {", ".join(missing)} (has '
        f'{", ".join(map(str, record))}); each record needs category, the '
        f'four SPair-71k labels and {key!r}.')
  category = record['category']
  if isinstance(category, bytes):
    category = category.decode()
  if category not in CATEGORIES:
    raise SemcorrError(
        f'{where}: category {category!r} is not one of the 18 SPair-71k '
        'categories (give the name, e.g. "aeroplane").')
  labels = []
  for factor, levels in FACTORS.items():
    value = int(record[factor])
    if not 0 <= value < len(levels):
      raise SemcorrError(
          f'{where}: {factor}={value}; expected 0..{len(levels) - 1}.')
    labels.append(value)
  pck = float(record[key])
  if not math.isnan(pck) and not 0.0 <= pck <= 1.0:
    raise SemcorrError(
        f'{where}: {key}={pck} is outside [0, 1]; give fractions, not '
        'percentages.')
  return category, tuple(labels), pck


def spair_tables(records: Sequence[Mapping[str, Any]], alpha: float = 0.1,
                 condition: str = 'marginal') -> dict[str, Any]:
  """Per-factor-level, per-category and overall mean PCK of SPair-71k pairs.

  Args:
    records: one mapping per pair (module docstring): 'category', the four
      labels and `'pck@' + alpha_key(alpha)` in [0, 1] or NaN.
    alpha: which PCK to read.
    condition: 'marginal' or 'others_easiest' (module docstring).

  Returns:
    {'alpha', 'key' (e.g. 'pck@0.1'), 'condition', 'aggregation':
    'per_pair_mean', 'num_skipped' (NaN pairs left out),
    'all': {'pck', 'num_pairs'},
    'categories': {name: {'pck', 'num_pairs'}} for all 18 in order,
    'factors': {factor: {level: {'pck', 'num_pairs'}}}}; `pck` is a
    fraction in [0, 1], NaN for an empty group.

  Raises:
    SemcorrError: a record without a needed key, an unknown category, a
      label out of range, a PCK outside [0, 1], or an unknown condition.
  """
  if condition not in CONDITIONS:
    raise SemcorrError(
        f'spair_tables: condition={condition!r}; use one of {CONDITIONS}.')
  key = f'pck@{pck_lib.alpha_key(alpha)}'
  parsed = [_parse(r, key, i) for i, r in enumerate(records)]
  kept = [p for p in parsed if not math.isnan(p[2])]
  by_category = {name: [] for name in CATEGORIES}
  for category, _, pck in kept:
    by_category[category].append(pck)
  factors = {}
  for f, (factor, levels) in enumerate(FACTORS.items()):
    groups = {level: [] for level in levels}
    for _, labels, pck in kept:
      others = labels[:f] + labels[f + 1:]
      if condition == 'others_easiest' and any(others):
        continue
      groups[levels[labels[f]]].append(pck)
    factors[factor] = {level: _cell(v) for level, v in groups.items()}
  return {
      'alpha': float(alpha),
      'key': key,
      'condition': condition,
      'aggregation': 'per_pair_mean',
      'num_skipped': len(parsed) - len(kept),
      'all': _cell([p[2] for p in kept]),
      'categories': {name: _cell(v) for name, v in by_category.items()},
      'factors': factors,
  }


def _percent(value: float) -> str:
  return 'n/a' if not math.isfinite(value) else f'{100.0 * value:.1f}'


def _row(label: str, cells: list[dict[str, Any]]) -> str:
  return f'| {label} | ' + ' | '.join(_percent(c['pck']) for c in cells) + (
      ' |')


def _count_row(cells: list[dict[str, Any]]) -> str:
  return '| pairs | ' + ' | '.join(str(c['num_pairs']) for c in cells) + ' |'


def _factor_cells(tables: Mapping[str, Any]) -> list[dict[str, Any]]:
  cells = [tables['factors'][f][level]
           for f, levels in FACTORS.items() for level in levels]
  return cells + [tables['all']]


def _category_cells(tables: Mapping[str, Any]) -> list[dict[str, Any]]:
  return [tables['categories'][c] for c in CATEGORIES] + [tables['all']]


def spair_markdown(tables: Mapping[str, Any], label: str = 'ours',
                   compare: Mapping[str, Mapping[str, Any]] | None = None,
                   per_category: bool = True) -> str:
  """Markdown tables of `spair_tables` output, in percent with one decimal.

  The first table has Table 2's columns (variation factors, then All); the
  second (if `per_category`) has the 18 categories and All. Each has one row
  per method (`label`, then the `compare` rows, e.g. {'untrained': ...}) and
  a last row with the pair counts of `tables`. Empty groups show 'n/a'.

  Args:
    tables: `spair_tables` output of the main method.
    label: its row name.
    compare: more rows, name -> `spair_tables` output.
    per_category: whether to add the per-category table.

  Returns:
    The Markdown text (a caption line and the table(s)).
  """
  rows = [(label, tables)] + list((compare or {}).items())
  caption = (
      f"SPair-71k, PCK@{pck_lib.alpha_key(tables['alpha'])} (%), mean over "
      f"pairs of per-pair PCK ({tables['condition']} groups; "
      f"{tables['num_skipped']} pair(s) without valid keypoints left out).")
  headings = [f'{_FACTOR_HEADINGS[f]} {_LEVEL_HEADINGS[level]}'
              for f, levels in FACTORS.items() for level in levels]
  lines = [caption, '',
           '| method | ' + ' | '.join(headings) + ' | All |',
           '|---|' + '---:|' * (len(headings) + 1)]
  lines += [_row(name, _factor_cells(t)) for name, t in rows]
  lines.append(_count_row(_factor_cells(tables)))
  if per_category:
    lines += ['', '| method | ' + ' | '.join(CATEGORIES) + ' | All |',
              '|---|' + '---:|' * (len(CATEGORIES) + 1)]
    lines += [_row(name, _category_cells(t)) for name, t in rows]
    lines.append(_count_row(_category_cells(tables)))
  return '\n'.join(lines) + '\n'
