"""Files of a benchmark run: paths, Markdown and the writers of its files.

A scored run (`runner.Scored`) becomes `<stem>.json`, `<stem>.md`,
`<stem>_pairs.csv` (one row per pair) and `<stem>_worst.png` (the worst
pairs, a row per declared flow); `runner`'s docstring describes them.
`reports.write_all` replaces them together.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from semcorr_jax.evaluation import reports
from semcorr_jax.evaluation import spair_tables
from semcorr_jax.evaluation import worst_pairs

SUFFIXES = ('.json', '.md', '_pairs.csv', '_worst.png')


def stem_paths(out_dir: str, stem: str) -> dict[str, str]:
  """{'json', 'md', 'csv', 'png'}: `<out_dir>/<stem>` + `SUFFIXES`."""
  base = os.path.join(out_dir, stem)
  return dict(zip(('json', 'md', 'csv', 'png'),
                  (base + s for s in SUFFIXES)))


def output_paths(out_dir: str, benchmark: str, split: str,
                 label: str = '') -> dict[str, str]:
  """{'json', 'md', 'csv', 'png'}: the files `evaluate_benchmark` writes."""
  return stem_paths(out_dir, f'{benchmark}_{split}'
                    + (f'_{label}' if label else ''))


def summary_markdown(scorer: Any, summary: Mapping[str, Any]) -> str:
  """The scorer's Markdown of a summary (+ SPair-71k's tables per alpha).

  Args:
    scorer: the benchmark's scoring module (`runner.scorer_of`).
    summary: its summary (or flat results holding it).
  """
  text = scorer.markdown(summary).rstrip('\n')
  if summary.get('spair_tables'):
    text += ''.join('\n\n' + spair_tables.spair_markdown(t).rstrip('\n')
                    for t in summary['spair_tables'].values())
  return text + '\n'


def protocol_lines(protocol: Mapping[str, Any]) -> list[str]:
  """The protocol fields as Markdown bullet lines."""
  lines = []
  for key, value in sorted(dict(protocol).items()):
    if isinstance(value, (list, tuple)):
      value = ', '.join(str(v) for v in value)
    lines.append(f'* {key}: {value}')
  return lines


def results_markdown(scorer: Any, results: Mapping[str, Any]) -> str:
  """A header (benchmark, split, model, protocol), then the summary's
  tables (`summary_markdown`)."""
  title = f"# {results['benchmark']} ({results['split']})"
  model = []
  if results.get('label'):
    model.append(f"model: {results['label']}")
  if results.get('step') is not None:
    model.append(f"checkpoint step {results['step']}")
  head = [title, '']
  if model:
    text = '; '.join(model)
    head += [text[:1].upper() + text[1:] + '.', '']
  head += ['Protocol:', ''] + protocol_lines(results['protocol']) + ['']
  body = summary_markdown(scorer, results['summary'])
  return '\n'.join(head) + '\n' + body.rstrip('\n') + '\n'


def output_writers(paths: Mapping[str, str], scored: Any,
                   document: Mapping[str, Any], markdown: str
                   ) -> list[tuple[str, Callable[[str], Any]]]:
  """`reports.write_all` writers of the four files of one scored run.

  Args:
    paths: `output_paths(...)` ({'json', 'md', 'csv', 'png'}).
    scored: the run (`runner.Scored`).
    document: what goes into the JSON file.
    markdown: the Markdown file's text.
  """
  rows = [row for ex, pred, record in scored.worst
          for row in worst_pairs.worst_pair_rows(
              ex, pred, record, scored.kind, scored.protocol,
              scored.primary_metric, scored.flows)]
  results = scored.results
  label = f" ({results['label']})" if results.get('label') else ''
  title = (f"{results['benchmark']} {results['split']}{label}: the "
           f'{len(scored.worst)} pairs with the lowest '
           f'{scored.primary_metric}')
  return [
      (paths['json'], lambda p: reports.write_json(p, document, False)),
      (paths['md'], lambda p: reports.write_text(p, markdown, False)),
      (paths['csv'], lambda p: reports.write_csv(p, scored.records, False)),
      (paths['png'], lambda p: worst_pairs.draw_worst_pairs(p, rows, title)),
  ]
