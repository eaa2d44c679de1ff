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

import dataclasses
import os
from typing import Any, Sequence

# Before TensorFlow (tf.data, imported by the trainer) loads.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # noqa: E402  pylint: disable=g-import-not-at-top
from absl import flags  # noqa: E402  pylint: disable=g-import-not-at-top

from semcorr_jax import ablation_runs  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax import config_files  # noqa: E402  pylint: disable=g-import-not-at-top
# Re-exported: tests patch `train.train_and_evaluate` through this script.
from semcorr_jax import train  # noqa: E402,F401  pylint: disable=g-import-not-at-top,unused-import

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
UNTRAINED = ablation_runs.UNTRAINED

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """The command-line flags (only when run as a script, or a test's own
  `flags.FlagValues`)."""
  ablation_runs.define_flags(flag_values, root='runs/gsf_ablation',
                             config='configs/gsf.py', rows=ROWS)


parse_overrides = ablation_runs.parse_overrides  # the script's own name


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


def run_row(row: str, variant: str, seed: int, root: str,
            extra: dict[str, Any] | None = None
            ) -> dict[str, dict[str, Any] | None]:
  """Trains a row's runs (unless finished).

  Returns:
    {'trained': the last run's results, 'untrained': the untrained
    baseline of its first run (which starts from scratch)}; each a dict of
    the `synthetic` evaluator's metrics, or None.
  """
  results = [ablation_runs.train_or_read(workdir, config)
             for workdir, config in runs_of(row, variant, seed, root, extra)]
  return {'trained': results[-1]['trained'],
          UNTRAINED: results[0]['untrained']}


def table(results: dict[str, dict[int, dict[str, Any]]],
          seeds: Sequence[int]) -> str:
  """Markdown: one line per row, mean ± std over seeds; then per seed."""
  columns = ([(t, ablation_runs.TRAINED, k) for t, k in COLUMNS] +
             [(f'untrained {t}', UNTRAINED, k) for t, k in COLUMNS])
  return ablation_runs.markdown_table(
      results, seeds, columns,
      {row: (ROWS[row].title, ROWS[row].paper) for row in results},
      note=(f'Mean ± sample std over seeds {", ".join(map(str, seeds))}; '
            'alpha_bbox PCK on the held-out synthetic pairs (tau: final '
            "flow, G': guidance flow); paper: Table 3, SPair-71k test, %."),
      paper_title='paper SPair PCK@0.1')


def main(argv: Sequence[str], flag_values: flags.FlagValues = FLAGS) -> str:
  """Trains what is missing, prints and writes the table; returns it.

  Args:
    argv: what flag parsing left (the program name only).
    flag_values: the parsed flags (`define_flags`).

  Raises:
    SemcorrError: bad flags, configs, workdirs or data (one line).
  """
  args = ablation_runs.read_flags(argv, flag_values, tuple(ROWS))
  results = ablation_runs.run_all(
      args, lambda row, seed: run_row(row, args.variant, seed, args.root,
                                      args.overrides))
  text = table(results, args.seeds)
  ablation_runs.write_table(text, args.output)
  return text


if __name__ == '__main__':
  define_flags()
  app.run(ablation_runs.main_or_exit(main))
