"""Ablation sweeps: rows x seeds of training runs, one Markdown table.

The generic half of the `benchmarks/*_ablation.py` scripts: their common
flags, a run trained unless already finished (resume), and the table of
mean ± sample std over seeds, then every seed's values. A script names its
rows and how a row becomes runs (configs and workdirs); this module knows
nothing of any method.

  define_flags(flag_values, root='runs/x_ablation', config='configs/x.py',
               rows=('full', 'no_y'))
  args = read_flags(argv, flag_values, known_rows)
  results = run_all(args, lambda row, seed: ...)   # {row: {seed: {...}}}
  write_table(markdown_table(results, args.seeds, columns, titles, ...),
              args.output)

A run's results are those of one evaluator (`synthetic` by default), as its
`eval/<name>.json` holds them: {'trained': metrics, 'untrained': metrics or
None}.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import statistics
import sys
from typing import Any, Callable, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import ml_collections

from semcorr_jax import config_files
from semcorr_jax import output_paths
from semcorr_jax import train
from semcorr_jax.errors import SemcorrError

EVALUATOR = 'synthetic'  # the evaluator that scores the runs
TRAINED, UNTRAINED = 'trained', 'untrained'

Results = Mapping[str, Any]
# (column title, TRAINED | UNTRAINED, metric key of the evaluator)
Column = tuple[str, str, str]


@dataclasses.dataclass(frozen=True)
class Args:
  """The checked common flags (`read_flags`).

  Attributes:
    rows: the rows to run, in the order given, without repeats.
    seeds: `config.seed` of each run of a row.
    root: folder of the runs.
    variant: the config size (`test`, `quick`, `paper`).
    overrides: {dotted config key: value} of `--set`.
    output: absolute path of the Markdown table, checked writable.
  """
  rows: tuple[str, ...]
  seeds: tuple[int, ...]
  root: str
  variant: str
  overrides: dict[str, Any]
  output: str


def define_flags(flag_values: flags.FlagValues, *, root: str | None,
                 config: str, rows: Sequence[str],
                 set_help: str = 'a config override of every run') -> None:
  """Defines --root, --seeds, --variant, --rows, --output and --set.

  Args:
    flag_values: where to define them (`flags.FLAGS`, or a test's own).
    root: default of --root (None: the script picks one).
    config: the config file the rows come from, for the help texts.
    rows: every row; the default of --rows.
    set_help: what --set overrides, for its help text.
  """
  flags.DEFINE_string('root', root, 'Folder of the runs.',
                      flag_values=flag_values)
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds (config.seed).',
                    flag_values=flag_values)
  flags.DEFINE_string('variant', 'quick', f'Size of {config}: test, quick '
                      'or paper.', flag_values=flag_values)
  flags.DEFINE_list('rows', list(rows), f'Rows, of {tuple(rows)}.',
                    flag_values=flag_values)
  flags.DEFINE_string('output', None, 'Markdown file (default: '
                      '<root>/table.md).', flag_values=flag_values)
  flags.DEFINE_multi_string(
      'set', [], f'KEY=VALUE: {set_help}, e.g. '
      '--set=backbone.weights=/w/resnet101.npz (VALUE a Python literal or '
      'a string).', flag_values=flag_values)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
  """['a.b=1', 'c=/path'] -> {'a.b': 1, 'c': '/path'}."""
  overrides = {}
  for item in items:
    key, sep, text = item.partition('=')
    if not sep or not key.strip():
      raise SemcorrError(f'--set={item!r}: expected KEY=VALUE, e.g. '
                         '--set=data.manual_dir=/data/voc.tar')
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    overrides[key.strip()] = value
  return overrides


def read_flags(argv: Sequence[str], flag_values: flags.FlagValues,
               known_rows: Sequence[str], root: str | None = None) -> Args:
  """Checks the flags of `define_flags` and returns them parsed.

  Args:
    argv: what flag parsing left (the program name only).
    flag_values: the parsed flags.
    known_rows: the rows that exist.
    root: the folder of the runs when --root is not given.

  Raises:
    app.UsageError: positional arguments.
    SemcorrError: unknown rows, seeds that are not integers, a bad --set,
      an --output that cannot be written (checked before any training).
  """
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  rows = tuple(dict.fromkeys(flag_values.rows))
  unknown = sorted(set(rows) - set(known_rows))
  if unknown or not rows:
    raise SemcorrError(f'--rows: unknown rows {unknown}; use some of '
                       f'{",".join(known_rows)}')
  try:
    seeds = tuple(int(s) for s in flag_values.seeds)
  except ValueError as e:
    raise SemcorrError(f'--seeds must be integers: {e}') from e
  if not seeds:
    raise SemcorrError('--seeds: give at least one seed')
  root = flag_values.root or root
  if not root:
    raise SemcorrError('--root: give the folder of the runs')
  output = output_paths.check_writable_output(
      flag_values.output or os.path.join(root, 'table.md'), '--output',
      make_parents=True)
  return Args(rows=rows, seeds=seeds, root=root,
              variant=flag_values.variant,
              overrides=parse_overrides(flag_values.set), output=output)


def finished(workdir: str, steps: int, evaluator: str = EVALUATOR
             ) -> dict[str, Any] | None:
  """{'trained', 'untrained'} results of a run that reached `steps`, else
  None."""
  path = os.path.join(workdir, 'eval', f'{evaluator}.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    doc = json.load(f)
  if doc.get('step') != steps:
    return None
  return {TRAINED: doc[TRAINED], UNTRAINED: doc.get(UNTRAINED)}


def train_or_read(workdir: str, config: ml_collections.ConfigDict,
                  evaluator: str = EVALUATOR) -> dict[str, Any]:
  """Trains a run unless finished; its {'trained', 'untrained'} results
  (both None when the config has no such evaluator)."""
  steps = train.total_train_steps(config)
  results = finished(workdir, steps, evaluator)
  if results is None:
    print(f'== training {steps} steps in {workdir}', flush=True)
    evals = train.train_and_evaluate(config, workdir)['evals']
    results = evals.get(evaluator, {TRAINED: None, UNTRAINED: None})
  return results


def _field(tree: Any, key: str) -> Any:
  for part in key.split('.'):
    if not isinstance(tree, Mapping) or part not in tree:
      return None
    tree = tree[part]
  return tree


def check_workdir(workdir: str, config: ml_collections.ConfigDict,
                  fields: Sequence[str]) -> None:
  """Refuses a workdir whose run has other values of `fields` (dotted).

  A sweep resumes the runs it finds; one of another config (e.g. another
  method in the same folder) must not be taken for this row's.

  Raises:
    SemcorrError: the run in `workdir` differs in one of `fields`.
  """
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  wanted = json.loads(config.to_json_best_effort())  # as config.json has it
  for key in fields:
    mine, theirs = _field(wanted, key), _field(saved, key)
    if mine != theirs:
      raise SemcorrError(
          f'{workdir} holds a run with {key}={theirs!r}, this row needs '
          f'{mine!r}; use another --root (or remove that folder)')


def run_all(args: Args, run_row: Callable[[str, int], Any]
            ) -> dict[str, dict[int, Any]]:
  """{row: {seed: run_row(row, seed)}}, every row of a seed before the
  next seed (a partial sweep has whole seeds)."""
  results: dict[str, dict[int, Any]] = {r: {} for r in args.rows}
  for seed in args.seeds:
    for row in args.rows:
      results[row][seed] = run_row(row, seed)
  return results


def mean_std(values: Sequence[float | None]) -> str:
  """'mean ± sample std' of the numbers ('mean' of one, '-' of none);
  None and NaN are left out."""
  values = [v for v in values if v is not None and not math.isnan(v)]
  if not values:
    return '-'
  mean = statistics.fmean(values)
  if len(values) == 1:
    return f'{mean:.3f}'
  return f'{mean:.3f} ± {statistics.stdev(values):.3f}'


def number(value: float | None) -> str:
  return '-' if value is None else f'{value:.3f}'


def _value(results: Results, which: str, key: str) -> float | None:
  part = results.get(which)
  return None if part is None else part.get(key)


def markdown_table(results: Mapping[str, Mapping[int, Results]],
                   seeds: Sequence[int], columns: Sequence[Column],
                   titles: Mapping[str, tuple[str, float | None]], *,
                   note: str, paper_title: str) -> str:
  """One line per row (mean ± std over seeds), then one per row and seed.

  Args:
    results: {row: {seed: {'trained': metrics, 'untrained': metrics}}}.
    seeds: the seeds, in order.
    columns: (title, 'trained' | 'untrained', metric key), in order.
    titles: {row: (title, the paper's figure or None)}.
    note: the paragraph above the table (what the numbers are).
    paper_title: the title of the paper's column.

  Returns:
    Markdown; a row line is '| <title> (`<row>`) | <paper> | <cells> |',
    a seed line '| `<row>` <seed> | <cells> |'.
  """
  heads = ' | '.join(t for t, _, _ in columns)
  lines = [note, '', f'| row | {paper_title} | {heads} |',
           '|---|---:|' + '---:|' * len(columns)]
  for row, per_seed in results.items():
    title, paper = titles[row]
    cells = [mean_std([_value(per_seed[s], which, k) for s in seeds])
             for _, which, k in columns]
    paper_cell = '-' if paper is None else f'{paper:.1f}'
    lines.append(f'| {title} (`{row}`) | {paper_cell} | '
                 + ' | '.join(cells) + ' |')
  lines += ['', 'Per seed:', '', f'| row, seed | {heads} |',
            '|---|' + '---:|' * len(columns)]
  for row, per_seed in results.items():
    for s in seeds:
      cells = [number(_value(per_seed[s], which, k))
               for _, which, k in columns]
      lines.append(f'| `{row}` {s} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def write_table(text: str, output: str) -> None:
  """Writes the table to `output` (atomically) and prints it."""
  os.makedirs(os.path.dirname(output), exist_ok=True)
  with output_paths.atomic_write(output, 'w', encoding='utf-8') as f:
    f.write(text)
  print(text)
  print(f'written: {output}')


def main_or_exit(main: Callable[[Sequence[str]], Any]
                 ) -> Callable[[Sequence[str]], None]:
  """`main` for `app.run`: quiet logging, a SemcorrError as one line."""

  def run(argv: Sequence[str]) -> None:
    if not flags.FLAGS['verbosity'].present:  # Orbax logs saves at INFO.
      logging.set_verbosity(logging.WARNING)
    try:
      main(argv)
    except SemcorrError as e:  # bad workdir, config or data: one line
      sys.exit(f'error: {e}')

  return run


def present_overrides(spec: str, overrides: Mapping[str, Any]
                      ) -> dict[str, Any]:
  """The overrides whose keys the config of `spec` has."""
  config = config_files.load(spec)
  return {k: v for k, v in overrides.items()
          if not config_files.missing_field(config, k)}
