"""Evaluation reports: JSON + Markdown files and the trained/untrained table.

`write_eval(workdir, name, results)` writes `workdir/eval/<name>.json` (strict
JSON: NaN becomes null) and `workdir/eval/<name>.md`; `format_comparison`
prints a trained model's PCK beside the untrained model's, as every synthetic
result must be (design.md, Evaluation), with a table per declared flow
(`per_flow`) and the confidence metrics of the flows that have them.
`write_all` replaces several files together or none of them.

Results may hold in-memory entries for the files an evaluator writes besides
the JSON (e.g. pairs to draw) under `ARTEFACTS`; they never go into a JSON
file (`json_ready`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from semcorr_jax import output_paths
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import confidence
from semcorr_jax.evaluation import pck as pck_lib
from semcorr_jax.evaluation import per_flow

ARTEFACTS = '_artefacts'


def json_ready(x: Any) -> Any:
  """numpy scalars -> Python; NaN/inf -> None (strict JSON); `ARTEFACTS`
  entries left out."""
  if isinstance(x, Mapping):
    return {str(k): json_ready(v) for k, v in x.items() if k != ARTEFACTS}
  if isinstance(x, (list, tuple)):
    return [json_ready(v) for v in x]
  if isinstance(x, np.ndarray):
    return json_ready(x.tolist())
  if isinstance(x, np.bool_):
    return bool(x)
  if isinstance(x, np.integer):
    return int(x)
  if isinstance(x, (float, np.floating)):
    return float(x) if math.isfinite(x) else None
  return x



def _fmt(x: Any, digits: int = 3) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return 'n/a'
  return f'{x:.{digits}f}' if isinstance(x, float) else str(x)


def format_comparison(trained: Mapping[str, Any],
                      untrained: Mapping[str, Any] | None,
                      alphas: Sequence[float] | None = None) -> str:
  """Markdown table of a trained model's results beside the untrained one's.

  Args:
    trained: synthetic results of the trained model (`evaluate_synthetic`).
    untrained: the same for the untrained model (None: column left out).
    alphas: rows to show; default the results' own alphas.

  Returns:
    The table, one row per metric (PCK alpha_bbox per alpha, PCK alpha_img
    per alpha, end-point error) of the primary flow; with several flows
    (`trained['flows']`) a second table of every flow side by side, and for
    flows with confidences a table of the confidence metrics
    (`evaluation.confidence`).
  """
  alphas = alphas or trained.get('alphas') or pck_lib.DEFAULT_ALPHAS
  cols = [('trained', trained)]
  if untrained is not None:
    cols.append(('untrained', untrained))
  lines = _metric_table(cols, alphas)
  lines.append('| pairs / keypoints | ' + ' | '.join(
      f"{r.get('num_pairs')} / {r.get('num_keypoints')}" for _, r in cols)
               + ' |')
  return '\n'.join(lines + _flow_and_confidence_tables(cols, alphas))


def _metric_table(cols: Sequence[tuple[str, Mapping[str, Any]]],
                  alphas: Sequence[float], prefixes: Sequence[str] = ('',)
                  ) -> list[str]:
  """One row per metric, one column per (result, key prefix)."""
  lines = ['| metric | ' + ' | '.join(n for n, _ in cols) + ' |',
           '|---|' + '---:|' * len(cols)]
  keys = [pck_lib.alpha_key(a) for a in alphas]
  # alpha_bbox first: the object-relative threshold is the headline (an
  # image-relative one flatters pairs whose object is small).
  rows = [(f'PCK@{k} (alpha_bbox)', f'pck_bbox@{k}') for k in keys]
  rows += [(f'PCK@{k} (alpha_img)', f'pck@{k}') for k in keys]
  rows.append(('end-point error (px)', 'epe'))
  prefixes = list(prefixes) * len(cols) if len(prefixes) == 1 else prefixes
  for name, key in rows:
    lines.append(f'| {name} | ' + ' | '.join(
        _fmt(r.get(p + key), 2 if key == 'epe' else 3)
        for (_, r), p in zip(cols, prefixes)) + ' |')
  return lines


def _flow_and_confidence_tables(cols, alphas) -> list[str]:
  """The optional sections of `format_comparison` (empty for one flow
  without confidences)."""
  lines = []
  flows = per_flow.described(cols[0][1])
  if len(flows) > 1:
    columns = [(f"{n}: {f['name']}", r) for n, r in cols for f in flows]
    lines += ['', 'Every flow (the first is the primary flow, as above):',
              '']
    lines += _metric_table(columns, alphas,
                           [f['prefix'] for _ in cols for f in flows])
  rows = [row for n, r in cols for row in per_flow.confidence_rows(r, n)]
  split = next((r['confidence_split'] for _, r in cols
                if 'confidence_split' in r), confidence.DEFAULT_SPLIT)
  table = confidence.markdown_table(rows, alphas, split)
  if table:
    lines += ['', 'Confidence of the matches (keypoints of all pairs and '
              'both directions pooled; correct = d <= alpha L, '
              'alpha_img):', ''] + table
  return lines


def comparison_markdown(name: str, results: Mapping[str, Any]) -> str:
  """`format_comparison` of `results` (one result, or a dict with
  'trained' / 'untrained' and e.g. 'step') under a heading, with the
  conventions."""
  trained = results.get('trained', results)
  untrained = results.get('untrained')
  head = [f'# Evaluation: {name}', '']
  if results.get('step') is not None:
    head.append(f"Checkpoint step {results['step']}.")
  if untrained is not None:
    head.append('Untrained = the model the run started from (same seed, '
                'pretrained weights if configured), no training.')
  lines = head + ['', format_comparison(trained, untrained), '']
  conv = trained.get('conventions') or {}
  if conv:
    lines += ['Conventions:', '']
    lines += [f'* **{k}**: {v}' for k, v in conv.items()]
    lines.append('')
  return '\n'.join(lines)


def read_eval(workdir: str, name: str) -> dict[str, Any]:
  """Reads `workdir/eval/<name>.json` (nulls come back as NaN, also inside
  dicts; lists are kept as they are).

  Raises:
    SemcorrError: the file is missing or not JSON.
  """
  path = os.path.join(workdir, 'eval', f'{name}.json')
  try:
    raw = json.loads(output_paths.as_path(path).read_text())
  except FileNotFoundError as e:
    raise SemcorrError(f'{path} not found: run semcorr-eval first') from e
  except (OSError, json.JSONDecodeError) as e:
    raise SemcorrError(f'cannot read {path}: {e}') from e

  def nan_for_null(x):
    if isinstance(x, dict):
      return {k: nan_for_null(v) for k, v in x.items()}
    return float('nan') if x is None else x

  return nan_for_null(raw)


def write_eval(workdir: str, name: str, results: Mapping[str, Any]
               ) -> tuple[str, str]:
  """Writes `workdir/eval/<name>.json` and a Markdown table `<name>.md`.

  Both or neither are replaced (`write_all`). `results` is either one
  `evaluate_synthetic` output or a dict with `trained`/`untrained`
  (and e.g. `step`).

  Returns:
    (json_path, markdown_path).
  """
  out_dir = os.path.join(workdir, 'eval')
  output_paths.makedirs(out_dir)
  json_path = os.path.join(out_dir, f'{name}.json')
  md_path = os.path.join(out_dir, f'{name}.md')
  write_all([(json_path, lambda p: write_json(p, results, atomic=False)),
             (md_path, lambda p: write_text(
                 p, comparison_markdown(name, results), atomic=False))])
  return json_path, md_path


# --- files of the benchmark runner -------------------------------------------
temporary_path = output_paths.temporary_path


def write_text(path: str, text: str, atomic: bool = True) -> str:
  """Writes `text` to `path`; atomically (temporary file + rename) unless
  the caller renames it itself (`atomic=False`)."""
  if not atomic and output_paths.is_remote(path):
    output_paths.as_path(path).write_bytes(text.encode('utf-8'))
    return path
  if not atomic:
    with open(path, 'w', newline='') as f:
      f.write(text)
    return path
  with output_paths.atomic_write(path, 'w', newline='') as f:
    f.write(text)
  return path


def to_json(results: Any) -> str:
  """Strict JSON text (NaN/inf -> null, numpy -> Python), sorted keys."""
  return json.dumps(json_ready(results), indent=2, sort_keys=True,
                    allow_nan=False) + '\n'


def write_json(path: str, results: Any, atomic: bool = True) -> str:
  """Writes `to_json(results)` to `path` (see `write_text`)."""
  return write_text(path, to_json(results), atomic)


def write_all(writers: Sequence[tuple[str, Callable[[str], Any]]]
              ) -> list[str]:
  """Writes several files, replacing all of them or none.

  Each `(path, write)` pair's `write(tmp_path)` writes the file's content to
  a temporary path (`temporary_path`); only once every one has succeeded are
  they renamed to their paths. A failure removes the temporary files and
  leaves the old files as they were. Object stores have no rename (a copy
  and a delete): files bound there are written to a local temporary
  folder, then each is uploaded whole. A failure while writing still
  leaves every old file, but the uploads replace one file after another.

  Returns:
    The paths, in order.
  """
  if any(output_paths.is_remote(path) for path, _ in writers):
    return _write_all_remote(writers)
  tmp = [temporary_path(path) for path, _ in writers]
  try:
    for (path, write), t in zip(writers, tmp):
      output_paths.makedirs(os.path.dirname(output_paths.absolute(path)))
      write(t)
    for (path, _), t in zip(writers, tmp):
      output_paths.replace(t, path)
  finally:
    for t in tmp:
      if output_paths.as_path(t).exists():
        output_paths.remove(t)
  return [path for path, _ in writers]


def _write_all_remote(writers: Sequence[tuple[str, Callable[[str], Any]]]
                      ) -> list[str]:
  """`write_all` for files on an object store: staged locally, then
  uploaded (one all-or-nothing upload each)."""
  with tempfile.TemporaryDirectory(prefix='semcorr_upload_') as local:
    staged = [os.path.join(local, f'{i}_{os.path.basename(path)}')
              for i, (path, _) in enumerate(writers)]
    for (_, write), t in zip(writers, staged):
      write(t)
    for (path, _), t in zip(writers, staged):
      with open(t, 'rb') as f:
        output_paths.as_path(path).write_bytes(f.read())
  return [path for path, _ in writers]


def _csv_cell(value: Any) -> str:
  """One CSV cell: floats in full precision ('nan' for NaN), bools as
  'true'/'false', sequences joined by ';'."""
  if isinstance(value, (bool, np.bool_)):
    return 'true' if value else 'false'
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  if isinstance(value, (float, np.floating)):
    return repr(float(value))
  if isinstance(value, bytes):
    return value.decode()
  if isinstance(value, (list, tuple, np.ndarray)):
    return ';'.join(_csv_cell(v) for v in np.asarray(value).ravel().tolist())
  return str(value)


def csv_columns(records: Sequence[Mapping[str, Any]]) -> list[str]:
  """Every field of the records, in order of first appearance."""
  columns: dict[str, None] = {}
  for record in records:
    for key in record:
      columns.setdefault(str(key), None)
  return list(columns)


def write_csv(path: str, records: Sequence[Mapping[str, Any]],
              atomic: bool = True) -> str:
  """One row per record, a header of every field (`csv_columns`).

  A field missing from a record is an empty cell. Cells: `_csv_cell`.
  """
  columns = csv_columns(records)
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(columns)
  for record in records:
    writer.writerow([_csv_cell(record[c]) if c in record else ''
                     for c in columns])
  return write_text(path, buffer.getvalue(), atomic)
