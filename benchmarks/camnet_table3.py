r"""CAMNet's Table-3 ablation, rows x seeds, as one command.

  .venv/bin/python benchmarks/camnet_table3.py --root=runs/table3 \
      [--seeds=0,1,2] [--variant=quick] [--rows=sfnet,refinement,confidence,full] \
      [--output=runs/table3/table3.md]

Per seed s (paper 000, Table 3, as the ablation means it):
* the base network is trained with SFNet's own loss (mask 3, flow 16,
  smooth 0.5; `configs/sfnet.py:<variant>`, seed s) in `<root>/base_s<s>`;
* every row then starts from that trained base and trains the same number
  of steps (`num_train_steps` of `configs/camnet.py:<variant>`), seed s, in
  `<root>/<row>_s<s>`: `sfnet` goes on with SFNet's loss
  (`configs/sfnet.py:<variant>`), the others are
  `configs/camnet.py:<variant>,<row>` with the base's variables under
  CAMNet's `base` (`init_from`).
Every run is scored by its config's `synthetic` evaluator (the same
held-out pairs for all). A finished run (its `eval/synthetic.json` at the
last step) is not trained again, so an interrupted sweep resumes where it
stopped. The table (mean and sample standard deviation over seeds, and every
seed's value) is printed and written to `--output`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
from typing import Any, Sequence

# Before TensorFlow (tf.data, imported by the trainer) loads.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

from absl import app  # noqa: E402  pylint: disable=g-import-not-at-top
from absl import flags  # noqa: E402  pylint: disable=g-import-not-at-top

from semcorr_jax.errors import SemcorrError  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax import ablation_runs  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax import config_files  # noqa: E402  pylint: disable=g-import-not-at-top
from semcorr_jax import train  # noqa: E402  pylint: disable=g-import-not-at-top

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO_DIR, 'configs')
# Table 3's rows; configs/camnet.py ABLATIONS may hold more (e.g.
# 'full_cues'), which --rows can name.
ROWS = ('sfnet', 'refinement', 'confidence', 'full')
BASE = 'base'  # the run every row starts from
# An SFNet run's variables go under CAMNet's `base`.
BASE_SUBTREES = ('params:params/base', 'batch_stats:batch_stats/base')
# (column title, result key); missing keys print as '-'.
COLUMNS = (
    ('PCK_bbox@0.05', 'pck_bbox@0.05'),
    ('PCK_bbox@0.1', 'pck_bbox@0.1'),
    ('PCK@0.05', 'pck@0.05'),
    ('PCK@0.1', 'pck@0.1'),
    ('EPE px', 'epe'),
    ('F_b PCK@0.05', 'base_pck@0.05'),
    ('F_b PCK@0.1', 'base_pck@0.1'),
    ('F_u PCK@0.05', 'update_pck@0.05'),
    ('F_u PCK@0.1', 'update_pck@0.1'),
    ('AUC@0.05', 'confidence_auc@0.05'),
    ('AUC@0.1', 'confidence_auc@0.1'),
    # Share of training cells whose GT confidence label is 'correct' (base
    # flow, mean over the logged steps).
    ('labels correct', 'base_correct_fraction'),
)

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags (only when run as a script)."""
  flags.DEFINE_string('root', 'runs/table3', 'Folder of the runs.')
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds (config.seed).')
  flags.DEFINE_string('variant', 'quick', 'Variant of both config files.')
  flags.DEFINE_list('rows', list(ROWS), f'Rows, of {ROWS}.')
  flags.DEFINE_string('output', None, 'Markdown file (default: '
                      '<root>/table3.md).')


def row_config(row: str, variant: str, seed: int, root: str):
  """The locked config of one run: `BASE` or a row, seed `seed`."""
  sfnet = os.path.join(CONFIGS, f'sfnet.py:{variant}')
  if row == BASE:
    return config_files.load(sfnet, {'seed': seed})
  camnet = os.path.join(CONFIGS, f'camnet.py:{variant}')
  start = {'seed': seed, 'init_from.workdir': run_dir(root, BASE, seed)}
  if row == 'sfnet':
    budget = config_files.load(camnet).num_train_steps
    return config_files.load(sfnet, {**start, 'num_train_steps': budget,
                                     'init_from.subtrees': ()})
  return config_files.load(f'{camnet},{row}',
                           {**start, 'init_from.subtrees': BASE_SUBTREES})


def camnet_rows() -> tuple[str, ...]:
  """The rows configs/camnet.py defines (its ABLATIONS)."""
  spec = importlib.util.spec_from_file_location(
      'camnet_config', os.path.join(CONFIGS, 'camnet.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return tuple(module.ABLATIONS)


def run_dir(root: str, row: str, seed: int) -> str:
  return os.path.abspath(os.path.join(root, f'{row}_s{seed}'))


def mean_logged(workdir: str, key: str) -> float | None:
  """Mean of a training metric over the steps `metrics.jsonl` logged."""
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    values = [v for v in (json.loads(line).get(key) for line in f)
              if v is not None]
  return statistics.fmean(values) if values else None


def finished_results(workdir: str, steps: int) -> dict[str, Any] | None:
  """The synthetic results of a run that reached `steps`, else None."""
  path = os.path.join(workdir, 'eval', 'synthetic.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    doc = json.load(f)
  return doc['trained'] if doc.get('step') == steps else None


def run(row: str, variant: str, seed: int, root: str) -> dict[str, Any]:
  """Trains (unless finished) and returns the run's synthetic results."""
  config = row_config(row, variant, seed, root)
  workdir = run_dir(root, row, seed)
  steps = train.total_train_steps(config)
  results = finished_results(workdir, steps)
  if results is None:
    print(f'== {row}, seed {seed}: training {steps} steps in {workdir}',
          flush=True)
    results = train.train_and_evaluate(config, workdir)['evals'][
        'synthetic']['trained']
  results = dict(results)
  fraction = mean_logged(workdir, 'base_correct_fraction')
  if fraction is not None:
    results['base_correct_fraction'] = fraction
  return results


def table(results: dict[str, dict[int, dict[str, Any]]],
          seeds: Sequence[int]) -> str:
  """Markdown: one line per row, mean ± std over seeds; then per seed."""
  head = '| row | ' + ' | '.join(t for t, _ in COLUMNS) + ' |'
  rule = '|---|' + '---:|' * len(COLUMNS)
  lines = [f'Mean ± sample std over seeds {", ".join(map(str, seeds))}.', '',
           head, rule]
  for row, per_seed in results.items():
    lines.append(f'| `{row}` | ' + ' | '.join(
        ablation_runs.mean_std([per_seed[s].get(k) for s in seeds]) for _, k in COLUMNS)
                 + ' |')
  lines += ['', 'Per seed:', '', head.replace('| row |', '| row, seed |'),
            rule]
  for row, per_seed in results.items():
    for s in seeds:
      lines.append(f'| `{row}` {s} | ' + ' | '.join(
          '-' if per_seed[s].get(k) is None else f'{per_seed[s][k]:.3f}'
          for _, k in COLUMNS) + ' |')
  return '\n'.join(lines) + '\n'


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  rows = list(FLAGS.rows)
  known = tuple(dict.fromkeys(('sfnet', *camnet_rows())))
  unknown = sorted(set(rows) - set(known))
  if unknown:
    raise app.UsageError(f'unknown rows {unknown}; use {known}')
  try:
    seeds = [int(s) for s in FLAGS.seeds]
  except ValueError as e:
    raise app.UsageError(f'--seeds must be integers: {e}') from e
  results: dict[str, dict[int, dict[str, Any]]] = {r: {} for r in rows}
  for seed in seeds:
    run(BASE, FLAGS.variant, seed, FLAGS.root)  # every row starts here
    for row in rows:
      results[row][seed] = run(row, FLAGS.variant, seed, FLAGS.root)
  text = table(results, seeds)
  output = FLAGS.output or os.path.join(FLAGS.root, 'table3.md')
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, 'w') as f:
    f.write(text)
  print(text)
  print(f'written: {output}')


def main_or_exit(argv: Sequence[str]) -> None:
  try:
    main(argv)
  except SemcorrError as e:  # bad workdir, config or data: one line
    raise SystemExit(f'%s: {e}' % os.path.basename(__file__)) from None


if __name__ == '__main__':
  define_flags()
  app.run(main_or_exit)
