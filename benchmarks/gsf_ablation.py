r"""Guided Semantic Flow's Table-3 ablation, rows x seeds, as one command.

  .venv/bin/python benchmarks/gsf_ablation.py --root=runs/gsf_ablation \
      [--seeds=0,1,2] [--variant=quick] [--rows=full,no_pruning,...] \
      [--output=runs/gsf_ablation/table.md] [--set=KEY=VALUE ...]

Every row (`ROWS`) is at most two runs per seed s, both of
`configs/gsf.py` with `seed` s:
* stage 1 (the pruning network alone, L_P): `<variant>,stage1[,<config
  row>]` in `<root>/<config row>_stage1_s<s>`; rows that name the same
  stage-1 config share that run (`no_matching` and `both_losses` use
  `full`'s);
* stage 2 (end to end, L_final): `<variant>,stage2[,<config row>]` in
  `<root>/<row>_stage2_s<s>`, started from the row's stage-1 run
  (`init_from.workdir`; `no_matching` takes all but the matching network),
  or from scratch when the row has no stage 1.
A row is scored by its last run's `synthetic` evaluator (the same held-out
pairs for all): alpha_bbox PCK of tau (the final flow, `pck_bbox@...`) and
of G' (the guidance flow, `guidance_pck_bbox@...`), beside the same figures
of the untrained model (the untrained baseline of the row's first run,
which starts from scratch; the full model's for rows reusing `full`'s stage
1). A finished run (its `eval/synthetic.json` at the
last step) is not trained again, so an interrupted sweep resumes where it
stopped. The table (mean ± sample std over seeds, then every seed's values)
is printed and written to `--output`. `--set` overrides config fields of
every run (e.g. the data and weights paths of `--variant=paper`).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import statistics
import sys
from typing import Any, Sequence

# Before TensorFlow (tf.data, imported by the trainer) loads.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # noqa: E402  pylint: disable=g-import-not-at-top
from absl import flags  # noqa: E402  pylint: disable=g-import-not-at-top
from absl import logging  # noqa: E402  pylint: disable=g-import-not-at-top

from semcorr_jax import config_files  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax import output_paths  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax import train  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax.errors import SemcorrError  # noqa: E402  pylint: disable=g-import-not-at-top

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO_DIR, 'configs', 'gsf.py')
FULL = 'full'  # the config row without switches


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of the table.

  Attributes:
    title: the row as Table 3 of the paper names it.
    stage1: the `configs/gsf.py` row whose stage-1 run this row uses (trained
      once per seed, shared by every row naming it), or None: no stage 1.
    stage2: the `configs/gsf.py` row of its stage-2 run, or None: the row is
      scored on its stage-1 run.
    paper: Table 3's SPair-71k PCK@0.1 (alpha_bb), in %.
    subtrees: `init_from.subtrees` of stage 2 (empty: every variable of the
      stage-1 run).
  """
  title: str
  stage1: str | None
  stage2: str | None
  paper: float
  subtrees: tuple[str, ...] = ()


# Without a matching network, stage 2 takes all of the full stage-1 run but
# its (untrained) matching network.
NO_MATCHING_SUBTREES = ('params/features', 'params/pruning',
                        'batch_stats/features')


# Table 3 of paper 001: (a) modules removed, (b) losses and stages.
ROWS = {
    'full': Row('Full (1st & 2nd stage)', FULL, FULL, 33.5),
    'no_pruning': Row("w/o pruning (Q' = T(Q, rho))", None, 'no_pruning',
                      25.1),
    'no_mls': Row("w/o MLS layer (C' around G on S only)", 'no_mls',
                  'no_mls', 26.8),
    'no_matching': Row("w/o matching (tau = G')", FULL, 'no_matching', 29.3,
                       NO_MATCHING_SUBTREES),
    'sil_only': Row('L_sil only (1st stage)', 'sil_only', None, 25.1),
    'geo_only': Row('L_geo only (1st stage)', 'geo_only', None, 24.3),
    'both_losses': Row('L_sil + L_geo (1st stage)', FULL, None, 28.5),
    'only_stage2': Row('only 2nd stage', None, FULL, 30.2),
}
# (column title, result key); the untrained model's columns follow.
COLUMNS = (
    ('tau PCK_bbox@0.05', 'pck_bbox@0.05'),
    ('tau PCK_bbox@0.1', 'pck_bbox@0.1'),
    ("G' PCK_bbox@0.05", 'guidance_pck_bbox@0.05'),
    ("G' PCK_bbox@0.1", 'guidance_pck_bbox@0.1'),
)
UNTRAINED = 'untrained'

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """The command-line flags (only when run as a script, or a test's own
  `flags.FlagValues`)."""
  flags.DEFINE_string('root', 'runs/gsf_ablation', 'Folder of the runs.',
                      flag_values=flag_values)
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds (config.seed).',
                    flag_values=flag_values)
  flags.DEFINE_string('variant', 'quick', 'Size of configs/gsf.py: test, '
                      'quick or paper.', flag_values=flag_values)
  flags.DEFINE_list('rows', list(ROWS), f'Rows, of {tuple(ROWS)}.',
                    flag_values=flag_values)
  flags.DEFINE_string('output', None, 'Markdown file (default: '
                      '<root>/table.md).', flag_values=flag_values)
  flags.DEFINE_multi_string(
      'set', [], 'KEY=VALUE: a config override of every run, e.g. '
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


def stage1_dir(root: str, row: str, seed: int) -> str:
  """The stage-1 run of `row` (a ROWS key), shared by rows with one config."""
  return os.path.abspath(
      os.path.join(root, f'{ROWS[row].stage1}_stage1_s{seed}'))


def stage2_dir(root: str, row: str, seed: int) -> str:
  return os.path.abspath(os.path.join(root, f'{row}_stage2_s{seed}'))


def _variant(variant: str, stage: str, config_row: str) -> str:
  parts = [variant, stage] + ([] if config_row == FULL else [config_row])
  return f'{CONFIG}:{",".join(parts)}'


def runs_of(row: str, variant: str, seed: int, root: str,
            extra: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
  """[(workdir, locked config)] of a row, in training order; `extra`
  overrides every config."""
  spec = ROWS[row]
  runs = []
  if spec.stage1 is not None:
    runs.append((stage1_dir(root, row, seed), config_files.load(
        _variant(variant, 'stage1', spec.stage1), {**(extra or {}),
                                                   'seed': seed})))
  if spec.stage2 is not None:
    overrides = {**(extra or {}), 'seed': seed}
    if spec.stage1 is not None:
      overrides['init_from.workdir'] = stage1_dir(root, row, seed)
      overrides['init_from.subtrees'] = spec.subtrees
    runs.append((stage2_dir(root, row, seed), config_files.load(
        _variant(variant, 'stage2', spec.stage2), overrides)))
  return runs


def finished(workdir: str, steps: int) -> dict[str, Any] | None:
  """{'trained', 'untrained'} synthetic results of a run that reached
  `steps`, else None."""
  path = os.path.join(workdir, 'eval', 'synthetic.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    doc = json.load(f)
  if doc.get('step') != steps:
    return None
  return {'trained': doc['trained'], 'untrained': doc.get('untrained')}


def train_or_read(workdir: str, config: Any) -> dict[str, Any]:
  """Trains a run unless finished; its {'trained', 'untrained'} results."""
  steps = train.total_train_steps(config)
  results = finished(workdir, steps)
  if results is None:
    print(f'== training {steps} steps in {workdir}', flush=True)
    results = train.train_and_evaluate(config, workdir)['evals']['synthetic']
  return results


def run_row(row: str, variant: str, seed: int, root: str,
            extra: dict[str, Any] | None = None
            ) -> dict[str, dict[str, Any] | None]:
  """Trains a row's runs (unless finished).

  Returns:
    {'trained': the last run's results, 'untrained': the untrained
    baseline of its first run (which starts from scratch)}; each a dict of
    the `synthetic` evaluator's metrics, or None.
  """
  results = [train_or_read(workdir, config)
             for workdir, config in runs_of(row, variant, seed, root, extra)]
  return {'trained': results[-1]['trained'],
          UNTRAINED: results[0]['untrained']}


def _cell(values: Sequence[float | None]) -> str:
  values = [v for v in values if v is not None and not math.isnan(v)]
  if not values:
    return '-'
  mean = statistics.fmean(values)
  if len(values) == 1:
    return f'{mean:.3f}'
  return f'{mean:.3f} ± {statistics.stdev(values):.3f}'


def _value(results: dict[str, Any] | None, key: str) -> float | None:
  return None if results is None else results.get(key)


def _columns():
  """[(title, 'trained' | 'untrained', key)]."""
  return ([(t, 'trained', k) for t, k in COLUMNS] +
          [(f'untrained {t}', UNTRAINED, k) for t, k in COLUMNS])


def table(results: dict[str, dict[int, dict[str, Any]]],
          seeds: Sequence[int]) -> str:
  """Markdown: one line per row, mean ± std over seeds; then per seed."""
  columns = _columns()
  head = ('| row | paper SPair PCK@0.1 | '
          + ' | '.join(t for t, _, _ in columns) + ' |')
  rule = '|---|---:|' + '---:|' * len(columns)
  lines = [f'Mean ± sample std over seeds {", ".join(map(str, seeds))}; '
           'alpha_bbox PCK on the held-out synthetic pairs (tau: final '
           "flow, G': guidance flow); paper: Table 3, SPair-71k test, %.",
           '', head, rule]
  for row, per_seed in results.items():
    cells = [_cell([_value(per_seed[s][which], k) for s in seeds])
             for _, which, k in columns]
    lines.append(f'| {ROWS[row].title} (`{row}`) | {ROWS[row].paper:.1f} | '
                 + ' | '.join(cells) + ' |')
  lines += ['', 'Per seed:', '',
            '| row, seed | ' + ' | '.join(t for t, _, _ in columns) + ' |',
            '|---|' + '---:|' * len(columns)]
  for row, per_seed in results.items():
    for s in seeds:
      cells = []
      for _, which, k in columns:
        v = _value(per_seed[s][which], k)
        cells.append('-' if v is None else f'{v:.3f}')
      lines.append(f'| `{row}` {s} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv: Sequence[str], flag_values: flags.FlagValues = FLAGS) -> str:
  """Trains what is missing, prints and writes the table; returns it.

  Args:
    argv: what flag parsing left (the program name only).
    flag_values: the parsed flags (`define_flags`).

  Raises:
    SemcorrError: bad flags, configs, workdirs or data (one line).
  """
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  rows = list(dict.fromkeys(flag_values.rows))
  unknown = sorted(set(rows) - set(ROWS))
  if unknown or not rows:
    raise SemcorrError(f'--rows: unknown rows {unknown}; use some of '
                       f'{",".join(ROWS)}')
  try:
    seeds = [int(s) for s in flag_values.seeds]
  except ValueError as e:
    raise SemcorrError(f'--seeds must be integers: {e}') from e
  if not seeds:
    raise SemcorrError('--seeds: give at least one seed')
  root, variant = flag_values.root, flag_values.variant
  extra = parse_overrides(flag_values.set)
  # Checked before hours of training, not after.
  output = output_paths.check_writable_output(
      flag_values.output or os.path.join(root, 'table.md'), '--output',
      make_parents=True)
  results: dict[str, dict[int, dict[str, Any]]] = {r: {} for r in rows}
  for seed in seeds:
    for row in rows:
      results[row][seed] = run_row(row, variant, seed, root, extra)
  text = table(results, seeds)
  os.makedirs(os.path.dirname(output), exist_ok=True)
  with output_paths.atomic_write(output, 'w', encoding='utf-8') as f:
    f.write(text)
  print(text)
  print(f'written: {output}')
  return text


def main_or_exit(argv: Sequence[str]) -> None:
  if not FLAGS['verbosity'].present:  # Orbax logs every save at INFO.
    logging.set_verbosity(logging.WARNING)
  try:
    main(argv)
  except SemcorrError as e:  # bad workdir, config or data: one line
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  define_flags()
  app.run(main_or_exit)
