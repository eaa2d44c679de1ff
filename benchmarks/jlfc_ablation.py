r"""JLFC's Tables 2-3 ablation and its aggregator-only baseline, rows x seeds.

  .venv/bin/python benchmarks/jlfc_ablation.py [--aggregator=ncnet|cats] \
      [--root=runs/jlfc_<aggregator>_ablation] [--seeds=0,1,2] \
      [--variant=quick] [--rows=full,no_joint,...,baseline] \
      [--output=<root>/table.md] [--set=KEY=VALUE ...]

Every row is one run per seed s in `<root>/<row>_s<s>`, with `seed` s:
* a row of `configs/jlfc.py`'s ABLATIONS (`full`, `no_joint`,
  `no_confidence`, `agg_only`, `agg_cross`):
  `configs/jlfc.py:<variant>,<aggregator>,<row>`;
* `baseline`: the aggregator's own method at the same size,
  `configs/ncnet.py:<variant>` (NCNet's weak loss) or
  `configs/cats.py:<variant>` (`paper,pf_pascal` for `paper`), whose
  steps and batch are JLFC's (configs/jlfc.py takes them, and at `quick`
  the training pairs, from there).
  CATs trains with ground truth: the dense flow of the synthetic pairs in
  `test` and `quick`, PF-PASCAL's keypoints in `paper`; the JLFC rows use
  none.
Each run is scored by its `synthetic` evaluator (held-out pairs made from
its `data`: the same for every row at `quick`; configs/cats.py:test warps
affine only): PCK of the aggregated flow at alpha_img and alpha_bbox, of the raw
(winner-take-all of the raw cost) flow, and the untrained model's
aggregated PCK@0.1. A finished run (its `eval/synthetic.json` at the last
step) is not trained again, so an interrupted sweep resumes where it
stopped; a folder holding a run of another method or aggregator is refused
(one --root per aggregator). The table (mean ± sample std over seeds, then
every seed's values) is printed and written to `--output`.

`--set` overrides fields of the JLFC rows (each key must be a field of
configs/jlfc.py); the baseline takes those of them that its own config has
(e.g. `data.*`, `backbone.weights`, `num_train_steps`, `seed`) and ignores
the others (e.g. `loss.temperature`). `paper` configs have no `synthetic`
evaluator: their runs train and are scored by their benchmark evaluators
(`eval/` of each run), the table shows '-'.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

# Before TensorFlow (tf.data, imported by the trainer) loads.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # noqa: E402  pylint: disable=g-import-not-at-top
from absl import flags  # noqa: E402  pylint: disable=g-import-not-at-top
import ml_collections  # noqa: E402  pylint: disable=g-import-not-at-top

from semcorr_jax import ablation_runs  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax import config_files  # noqa: E402  pylint: disable=g-import-not-at-top
# Re-exported: tests patch `train.train_and_evaluate` through this script.
from semcorr_jax import train  # noqa: E402,F401  pylint: disable=g-import-not-at-top,unused-import

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO_DIR, 'configs')
JLFC = os.path.join(CONFIGS, 'jlfc.py')
BASELINE = 'baseline'
TRAINED, UNTRAINED = ablation_runs.TRAINED, ablation_runs.UNTRAINED


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of the table.

  Attributes:
    title: the row as Tables 2-3 of paper 002 describe it.
    paper: PF-PASCAL test PCK@0.1 (alpha_img, %) by aggregator; an
      aggregator the paper does not report the row for is absent.
  """
  title: str
  paper: Mapping[str, float]


# Tables 2-3 (NCNet aggregator); with CATs the paper reports the full model
# only (Table 1). The keys are configs/jlfc.py's ABLATIONS.
ROWS = {
    'full': Row('T3 (d) = T2 (a): L^C + L^{A->C} + L^A + L^{C->A}',
                {'ncnet': 80.0, 'cats': 92.5}),
    'no_joint': Row('T3 (c) = T2 (b), w/o joint learning: L^C + L^A',
                    {'ncnet': 78.4}),
    'no_confidence': Row('T2 (c), w/o confidence-aware loss (M = 1)',
                         {'ncnet': 77.7}),
    'agg_only': Row('T3 (a): L^A only', {'ncnet': 70.0}),
    'agg_cross': Row('T3 (b): L^A + L^{C->A}', {'ncnet': 71.7}),
}
# The aggregator's own method (Table 1), trained alone.
BASELINES = {
    'ncnet': Row('NCNet alone (configs/ncnet.py, weak loss)',
                 {'ncnet': 78.9}),
    'cats': Row('CATs alone (configs/cats.py, ground-truth supervision)',
                {'cats': 87.3}),
}
ALL_ROWS = (*ROWS, BASELINE)
# (column title, 'trained' | 'untrained', key of the synthetic evaluator)
COLUMNS = (
    ('PCK@0.05', TRAINED, 'pck@0.05'),
    ('PCK@0.1', TRAINED, 'pck@0.1'),
    ('PCK_bbox@0.05', TRAINED, 'pck_bbox@0.05'),
    ('PCK_bbox@0.1', TRAINED, 'pck_bbox@0.1'),
    ('raw PCK@0.1', TRAINED, 'raw_pck@0.1'),
    ('raw PCK_bbox@0.1', TRAINED, 'raw_pck_bbox@0.1'),
    ('untrained PCK@0.1', UNTRAINED, 'pck@0.1'),
)
# The evaluator that scores a row at each size: the synthetic held-out pairs,
# or PF-PASCAL test at `paper` (the paper's Tables 2-3); a paper run keeps
# only PF-PASCAL's evaluators (test, and validation for model selection).
SCORED_BY = {'test': 'synthetic', 'quick': 'synthetic', 'paper': 'pf_pascal'}
PAPER_EVALS = ('pf_pascal', 'pf_pascal_val')
# A folder with another value of these holds some other sweep's run.
SAME_FIELDS = ('method', 'model.aggregator', 'data.image_size')

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """The command-line flags (only when run as a script, or a test's own
  `flags.FlagValues`)."""
  ablation_runs.define_flags(
      flag_values, root=None, config='configs/jlfc.py', rows=ALL_ROWS,
      set_help='a config override of the JLFC rows (the baseline takes '
      'those its config has)')
  flags.DEFINE_enum('aggregator', 'ncnet', tuple(BASELINES),
                    'The cost aggregator of JLFC and the baseline method.',
                    flag_values=flag_values)


def default_root(aggregator: str) -> str:
  return f'runs/jlfc_{aggregator}_ablation'


def run_dir(root: str, row: str, seed: int) -> str:
  return os.path.abspath(os.path.join(root, f'{row}_s{seed}'))


def baseline_spec(variant: str, aggregator: str) -> str:
  """`configs/<aggregator>.py:<variant>`; CATs' paper size on PF-PASCAL."""
  if aggregator == 'cats' and variant == 'paper':
    variant = 'paper,pf_pascal'
  return f'{os.path.join(CONFIGS, aggregator)}.py:{variant}'


def run_of(row: str, variant: str, aggregator: str, seed: int, root: str,
           extra: Mapping[str, Any] | None = None
           ) -> tuple[str, ml_collections.ConfigDict]:
  """(workdir, locked config) of a row and seed.

  Args:
    row: a key of `ROWS`, or `BASELINE`.
    variant: the size: test, quick or paper.
    aggregator: 'ncnet' or 'cats'.
    seed: `config.seed`.
    root: folder of the runs.
    extra: `--set` overrides: all of them for a JLFC row, those its config
      has for the baseline.

  Raises:
    SemcorrError: an unknown variant, or an override that is no field of
      configs/jlfc.py.
  """
  extra = dict(extra or {})
  jlfc = config_files.load(f'{JLFC}:{variant},{aggregator},'
                           f'{"full" if row == BASELINE else row}',
                           {**extra, 'seed': seed})
  if row != BASELINE:
    return run_dir(root, row, seed), _scored(jlfc, variant)
  spec = baseline_spec(variant, aggregator)
  kept = ablation_runs.present_overrides(spec, extra)
  return run_dir(root, row, seed), _scored(
      config_files.load(spec, {**kept, 'seed': seed}), variant)


def _scored(config: ml_collections.ConfigDict, variant: str
            ) -> ml_collections.ConfigDict:
  """At `paper`: PF-PASCAL's evaluators only, the test split also scoring
  the untrained model (the table's untrained column)."""
  if variant != 'paper':
    return config
  config = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy
  for name in list(config.evals):
    if name not in PAPER_EVALS:
      del config.evals[name]
  config.evals.pf_pascal.untrained_baseline = True
  config.lock()
  return config


def title(row: str, aggregator: str) -> tuple[str, float | None]:
  """(title, paper figure or None) of a row."""
  spec = BASELINES[aggregator] if row == BASELINE else ROWS[row]
  return spec.title, spec.paper.get(aggregator)


def _budget(config: ml_collections.ConfigDict) -> str:
  if config.num_train_steps > 0:
    return f'{config.num_train_steps} steps of batch {config.batch_size}'
  return f'{config.num_epochs} epochs of batch {config.batch_size}'


def note(seeds: Sequence[int], variant: str, aggregator: str,
         budgets: Mapping[str, str]) -> str:
  """The paragraph above the table: what its numbers are."""
  if len(set(budgets.values())) == 1:
    budget = f'every run {next(iter(budgets.values()))}'
  else:
    budget = '; '.join(f'`{r}` {b}' for r, b in budgets.items())
  text = (
      f'Mean ± sample std over seeds {", ".join(map(str, seeds))}; JLFC rows: '
      f'`configs/jlfc.py:{variant},{aggregator},<row>`, baseline: '
      f'`{os.path.relpath(baseline_spec(variant, aggregator), REPO_DIR)}`; '
      f'budget: {budget}. '
      + ('PCK on PF-PASCAL test (the `pf_pascal` evaluator; PCK_bbox '
         'columns empty): ' if variant == 'paper' else
         'PCK on the held-out pairs of the `synthetic` '
         "evaluator, made from each config's `data` (the same pairs for "
         'every row at `quick`): ') +
      'PCK at alpha_img, PCK_bbox at '
      'alpha_bbox, of the aggregated flow (JLFC: read-out of the aggregated '
      'cost A; baseline: its final flow); raw: the winner-take-all flow of '
      "JLFC's raw cost C (the baseline has none: -); untrained: the "
      "aggregated PCK@0.1 of the row's model before training. Paper: "
      'PF-PASCAL test PCK@0.1 (alpha_img), %: Tables 3 and 2 (NCNet '
      'aggregator; with CATs only the full model, Table 1), baseline Table 1; '
      'another dataset and budget, to compare orderings only.')
  if aggregator == 'cats':
    text += (' The CATs baseline trains with ground truth (dense flow of the '
             "synthetic pairs; PF-PASCAL keypoints at `paper`), which the "
             'JLFC rows never see.')
  return text


def table(results: Mapping[str, Mapping[int, Any]], seeds: Sequence[int],
          variant: str, aggregator: str, budgets: Mapping[str, str]) -> str:
  """Markdown: one line per row, mean ± std over seeds; then per seed."""
  return ablation_runs.markdown_table(
      results, seeds, COLUMNS, {r: title(r, aggregator) for r in results},
      note=note(seeds, variant, aggregator, budgets),
      paper_title='paper PF-PASCAL PCK@0.1')


def main(argv: Sequence[str], flag_values: flags.FlagValues = FLAGS) -> str:
  """Trains what is missing, prints and writes the table; returns it.

  Args:
    argv: what flag parsing left (the program name only).
    flag_values: the parsed flags (`define_flags`).

  Raises:
    SemcorrError: bad flags, configs, workdirs or data (one line).
  """
  aggregator = flag_values.aggregator
  args = ablation_runs.read_flags(argv, flag_values, ALL_ROWS,
                                  root=default_root(aggregator))
  # Every config and folder is checked before any training.
  runs = {(row, seed): run_of(row, args.variant, aggregator, seed, args.root,
                              args.overrides)
          for seed in args.seeds for row in args.rows}
  for workdir, config in runs.values():
    ablation_runs.check_workdir(workdir, config, SAME_FIELDS)
  results = ablation_runs.run_all(
      args, lambda row, seed: ablation_runs.train_or_read(
          *runs[row, seed], evaluator=SCORED_BY[args.variant]))
  budgets = {row: _budget(runs[row, args.seeds[0]][1]) for row in args.rows}
  text = table(results, args.seeds, args.variant, aggregator, budgets)
  ablation_runs.write_table(text, args.output)
  return text


if __name__ == '__main__':
  define_flags()
  app.run(ablation_runs.main_or_exit(main))
