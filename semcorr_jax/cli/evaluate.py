r"""`semcorr-eval`: score a trained workdir with its evaluators or a benchmark.

The run's own evaluators (`config.evals`, semcorr_jax/evaluation/evaluators.py),
the same the trainer runs, writing the same files:

  semcorr-eval --workdir=runs/sfnet_quick [--evals=synthetic,pf_val] \
    [--step=300 | --best] [--num_pairs=64]

Each evaluator writes `<workdir>/eval/<name>.json` ({'evaluator', 'type',
'step', 'trained', 'untrained'}) and `<name>.md`; those with
`untrained_baseline` score the model the run started from too (beside, and
in `<name>_untrained.json`). The synthetic held-out pairs also give
`<name>_pairs.png` and `pairs/pair_00{0,1}_{source,target}.png` (two
held-out pairs as image files, e.g. for `semcorr-match`); a benchmark gives
`<name>_pairs.csv` (one row per pair) and `<name>_worst.png`. `--best` scores
the selected model (`<workdir>/best/`, kept by the trainer when an evaluator
has `select`).

`--benchmark=synthetic` runs the config's evaluator named 'synthetic' (the
synthetic defaults if it has none), always beside the untrained model.

Real benchmarks, scored by a benchmark evaluator named `<benchmark>_<split>`
built from the flags (download them first; docs/benchmarks.md says what and
where; `--data_dir` is the folder holding the downloaded files, the TFDS
dataset is prepared into `<data_dir>/tensorflow_datasets` on first use):

  semcorr-eval --workdir=runs/sfnet --benchmark=pf_pascal \
    --data_dir=~/data/pf_pascal                 # alpha_img, 224 square, ts
  semcorr-eval --workdir=runs/sfnet --benchmark=pf_pascal \
    --data_dir=~/data/pf_pascal --protocol=padded  # 288 + 16 px pad input
  semcorr-eval --workdir=runs/sfnet --benchmark=pf_willow \
    --data_dir=~/data/pf_willow [--kps_padding_bug]  # L = kps extent
  semcorr-eval --workdir=runs/sfnet --benchmark=spair71k \
    --data_dir=~/data/spair [--split=validation]     # alpha_bbox (source)
  semcorr-eval --workdir=runs/sfnet --benchmark=tss --data_dir=~/data/tss
  semcorr-eval --workdir=runs/sfnet --benchmark=caltech101 \
    --data_dir=~/data/caltech101 --untrained

Your own annotated pairs (a folder with one sub-folder per pair holding
source.<ext>, target.<ext>, points.csv and optional target_box.txt:
semcorr_jax/data/pairs_folder.py), scored as the keypoint benchmarks are,
source points moved into the target, PCK at alpha_img and alpha_bbox, by an
evaluator named `pairs` (eval/pairs.json, pairs.md, pairs_pairs.csv,
pairs_worst.png):

  semcorr-eval --workdir=runs/mine --benchmark=pairs --data_dir=~/my_pairs

Protocol flags (defaults per benchmark: `semcorr_jax.evaluation.protocol`):
`--protocol=resize|padded` (`sfnet` is an alias of `padded`),
`--input_size=H,W` (evaluation resolution; the model runs at input_size +
2 pad), `--direction=ts|st`, `--threshold=img|bbox|kps`,
`--frame=square|original`, `--alphas=0.05,0.1,0.15`, `--kps_padding_bug`,
`--eval_batch_size`. `--num_pairs=N` scores the first N pairs only;
`--untrained` also scores the model at initialisation. Files are replaced
only when a run completes: a failing run keeps earlier results.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from absl import app
from absl import flags
import jax
import tensorflow_datasets as tfds

from semcorr_jax import api
from semcorr_jax import checkpointing
from semcorr_jax import methods
from semcorr_jax import output_paths
from semcorr_jax import parallel
from semcorr_jax import starting_state
from semcorr_jax import workdirs
from semcorr_jax.cli import common
from semcorr_jax.cli import flag_parsing
from semcorr_jax.data import pairs_folder
from semcorr_jax.errors import SemcorrError
from semcorr_jax.evaluation import evaluators
from semcorr_jax.evaluation import pairs_benchmark
from semcorr_jax.evaluation import protocol as protocol_lib
from semcorr_jax.evaluation import reports
from semcorr_jax.evaluation import runner

FLAGS = flags.FLAGS
REAL_BENCHMARKS = ('pf_pascal', 'pf_willow', 'spair71k', 'tss',
                   'caltech101', pairs_benchmark.NAME)
BENCHMARKS = ('synthetic',) + REAL_BENCHMARKS
EVAL_FOLDER = 'eval'  # <workdir>/eval: every evaluator writes there
# Flags that only apply to the real benchmarks.
_REAL_ONLY = ('data_dir', 'tfds_dir', 'split', 'protocol', 'input_size',
              'direction', 'threshold', 'frame', 'alphas', 'kps_padding_bug',
              'eval_batch_size', 'untrained', 'num_worst')


def _define_flags() -> None:
  """Defines the flags once (several tools may share a process in tests)."""
  choices = {  # the 'enum' flags' values (runner and protocol check them)
      'benchmark': BENCHMARKS,
      'split': ('train', 'validation', 'test'),
      'protocol': (*protocol_lib.PRESETS, *protocol_lib.PRESET_ALIASES),
      **protocol_lib.CHOICES,
  }
  defs = (
      ('string', 'workdir', None, 'a semcorr-train workdir'),
      ('string', 'evals', None,
       "evaluators of the run's config to run, e.g. synthetic,pf_val "
       '(default: all)'),
      ('enum', 'benchmark', None,
       "score on one benchmark instead of the run's evaluators"),
      ('integer', 'step', None, 'checkpoint step (default: the latest)'),
      ('bool', 'best', False,
       'score the selected model (<workdir>/best/) instead of the latest'),
      ('integer', 'num_pairs', None,
       "pairs to score (default: each evaluator's setting; real "
       'benchmarks: all)'),
      ('integer', 'num_pictures', None,
       'synthetic: held-out pairs drawn in the picture (default 4)'),
      ('string', 'data_dir', None,
       'real benchmarks: the folder with the downloaded files'),
      ('string', 'tfds_dir', None,
       'where the TFDS dataset is prepared (default: '
       '<data_dir>/tensorflow_datasets)'),
      ('enum', 'split', None,
       "dataset split (default: test, or the benchmark's last)"),
      ('enum', 'protocol', None,
       'protocol preset: resize, or padded (288 + 16 px pad; sfnet is '
       'its alias)'),
      ('string', 'input_size', None,
       'evaluation resolution H,W (or N) the images are resized to before '
       'padding; the model then runs at input_size + 2 pad (default: the '
       "model's training size)"),
      ('enum', 'direction', None,
       "'ts' (target points -> source) or 'st' (source -> target)"),
      ('enum', 'threshold', None,
       'PCK length: the image, the object box or the keypoints extent'),
      ('enum', 'frame', None,
       'PCK frame: points squashed to a square, or original pixels'),
      ('string', 'alphas', None, 'PCK alphas, e.g. 0.05,0.1,0.15'),
      ('bool', 'kps_padding_bug', False,
       'PF-WILLOW: pad the keypoints with -1 rows before taking their '
       'extent, as published reference code did (docs/benchmarks.md)'),
      ('integer', 'eval_batch_size', None, 'pairs per model call'),
      ('bool', 'untrained', False,
       'also score the untrained model (same architecture at init)'),
      ('integer', 'num_worst', None, 'pairs drawn in <...>_worst.png'),
  )
  for kind, name, default, help_text in defs:
    if name in FLAGS:
      continue
    if kind == 'enum':
      flags.DEFINE_enum(name, default, choices[name], help_text)
    else:
      getattr(flags, f'DEFINE_{kind}')(name, default, help_text)


_define_flags()


# --- flag parsing -------------------------------------------------------------
def benchmark_settings(benchmark: str) -> dict[str, Any]:
  """The settings of a 'benchmark' evaluator from the flags."""
  bug = FLAGS.kps_padding_bug if FLAGS['kps_padding_bug'].present else None
  return {
      'type': 'benchmark', 'benchmark': benchmark, 'split': FLAGS.split,
      'data_dir': FLAGS.data_dir, 'tfds_dir': FLAGS.tfds_dir,
      'num_pairs': FLAGS.num_pairs, 'num_worst': FLAGS.num_worst,
      'protocol': FLAGS.protocol, 'input_size': flag_parsing.size_pair('input_size', FLAGS.input_size),
      'direction': FLAGS.direction, 'threshold': FLAGS.threshold,
      'frame': FLAGS.frame, 'alphas': flag_parsing.number_list(
          'alphas', FLAGS.alphas, float,
          'numbers separated by commas, e.g. 0.05,0.1,0.15'),
      'kps_padding_bug': bug, 'batch_size': FLAGS.eval_batch_size,
      'untrained_baseline': FLAGS.untrained}


# --- evaluation ---------------------------------------------------------------
MakeEvaluators = Callable[[Any, Sequence[Any]], list[evaluators.Evaluator]]


def untrained_variables(restored: workdirs.Restored) -> Any:
  """Inference variables of the model the run started from.

  The trainer's own starting state (`starting_state.initial_state`: the
  first half of `jax.random.split(jax.random.key(config.seed))`, pretrained
  weights, then `config.init_from`), on one device.
  """
  config, method = restored.config, restored.method
  init_rng, _ = jax.random.split(jax.random.key(config.get('seed', 0)))
  mesh = parallel.make_mesh(jax.local_devices()[:1])
  state, _ = starting_state.initial_state(method, config, mesh, init_rng)
  return parallel.to_host(method.inference_variables(state))


def _declared_flows(config) -> tuple[Any, ...]:
  try:
    return tuple(methods.get(config.method).flows)
  except KeyError as e:
    raise SemcorrError(f'config.json: {e.args[0]}') from e


def read_config(workdir: str):
  """`workdirs.load_config`, any failure one SemcorrError line."""
  try:
    return workdirs.load_config(workdir)
  except SemcorrError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise SemcorrError(
        f'cannot read {os.path.join(workdir, checkpointing.CONFIG_FILE)}: '
        f'{checkpointing.describe_error(e)}; is it the config.json '
        'semcorr-train wrote?') from e


def check_results_folder(workdir: str) -> str:
  """Checks that `<workdir>/eval` (and `eval/pairs`) can be written, before
  anything is loaded or evaluated; returns `<workdir>/eval`."""
  out = os.path.join(workdir, EVAL_FOLDER)
  for folder in (out, os.path.join(out, 'pairs')):
    try:
      if folder == out or os.path.lexists(folder):
        output_paths.check_writable_dir(folder, '--workdir')
    except SemcorrError as e:
      if output_paths.is_remote(folder):  # its own reason: bucket, access
        raise
      raise SemcorrError(
          f'semcorr-eval cannot write its results into {folder}: it, or the '
          'folder it goes in, is a file or not writable (permissions or a '
          'read-only disk); evaluate a writable copy of the workdir') from e
  return out


def evaluate(workdir: str, make: MakeEvaluators, *, step: int | None = None,
             best: bool = False, progress: bool = False,
             echo: Callable[[str], Any] | None = None
             ) -> dict[str, dict[str, Any]]:
  """Runs evaluators on a trained workdir and writes their files.

  Args:
    workdir: a `semcorr-train` workdir.
    make: `(config, flows) -> evaluators`.
    step: checkpoint step; None = the latest.
    best: restore from `<workdir>/best/` (the selected model).
    progress: progress bars on stderr.
    echo: prints the reports and the files written (None: silent).

  Returns:
    {name: {'evaluator', 'type', 'step', 'trained', 'untrained'}} (what
    each `<name>.json` holds).

  Raises:
    SemcorrError: not a workdir, an unwritable `<workdir>/eval`, a bad
      evaluator, missing data, a missing or unreadable checkpoint; checked
      in that order, before any evaluation.
  """
  config = read_config(workdir)
  check_results_folder(workdir)
  evals = make(config, _declared_flows(config))
  with common.native_stderr_held():  # TFDS and Orbax: one line on failure
    for ev in evals:
      ev.check()
    restored = api.restore_workdir(
        workdir, step, folder='best' if best else checkpointing.CHECKPOINT_DIR)
  if tuple(restored.method.flows) != _declared_flows(config):
    evals = make(config, restored.method.flows)
  predict_fn = jax.jit(restored.method.predict)  # shared by all evaluators
  untrained_vars = None
  docs = {}
  for ev in evals:
    size = getattr(ev, 'model_size', None)
    trained_size = tuple(int(s) for s in config.data.image_size)
    if echo and size is not None and tuple(size) != trained_size:
      echo(f'note: {ev.name} evaluates at {size[0]}x{size[1]}; the model '
           f'was trained at {trained_size[0]}x{trained_size[1]}')
    results = ev.run(predict_fn, restored.variables, progress)
    untrained = None
    if ev.untrained_baseline:
      if untrained_vars is None:
        untrained_vars = untrained_variables(restored)
      untrained = ev.run(predict_fn, untrained_vars, progress)
    written = ev.write(workdir, results, untrained, restored.step)
    docs[ev.name] = {'evaluator': ev.name, 'type': ev.type,
                     'step': restored.step, 'trained': _kept(results),
                     'untrained': untrained and _kept(untrained)}
    if echo:
      echo(f'\n## {ev.name}, step {restored.step}\n')
      echo(ev.markdown(results, untrained, restored.step))
      echo('\n'.join(f'wrote {path}' for path in written))
  return docs


def _kept(results: dict[str, Any]) -> dict[str, Any]:
  """The results without their in-memory artefacts."""
  return {k: v for k, v in results.items() if k != reports.ARTEFACTS}


def _named_or_default(name: str, defaults: dict[str, Any]
                      ) -> MakeEvaluators:
  """The config's evaluator `name`, or one built from `defaults`."""

  def make(config, flows):
    if name in (config.get('evals') or {}):
      return evaluators.build(config, flows, [name], overrides)
    return [evaluators.from_settings(name, defaults, config, flows)]

  overrides = {k: v for k, v in defaults.items() if k != 'type'}
  return make


def evaluate_workdir(workdir: str, benchmark: str = 'synthetic',
                     step: int | None = None, num_pairs: int | None = None,
                     *, num_pictures: int | None = None, best: bool = False,
                     settings: dict[str, Any] | None = None,
                     progress: bool = False,
                     echo: Callable[[str], Any] | None = None
                     ) -> dict[str, Any]:
  """Scores a workdir on one benchmark and writes the files.

  'synthetic' is the config's evaluator of that name (the synthetic
  defaults if it has none) beside the untrained model; a real benchmark is
  a 'benchmark' evaluator named `<benchmark>_<split>` with `settings`
  (`benchmark_settings`; default: the benchmark's own protocol).

  Returns:
    {'evaluator', 'type', 'step', 'trained', 'untrained'} as written to
    `<workdir>/eval/<name>.json`.
  """
  if benchmark == 'synthetic':
    defaults = {'type': 'synthetic', 'untrained_baseline': True,
                'num_pairs': num_pairs, 'num_pictures': num_pictures}
    make = _named_or_default('synthetic', defaults)
  else:
    settings = dict(settings or {'type': 'benchmark',
                                 'benchmark': benchmark})
    if settings.get('num_pairs') is None:
      settings['num_pairs'] = num_pairs
    if benchmark == pairs_benchmark.NAME:  # one folder, no splits
      settings['type'], name = benchmark, benchmark
      settings.pop('benchmark', None)
    else:
      split = settings.get('split') or runner.default_split(benchmark)
      name = f'{benchmark}_{split}'

    def make(config, flows):
      return [evaluators.from_settings(name, settings, config, flows)]

  docs = evaluate(workdir, make, step=step, best=best, progress=progress,
                  echo=echo)
  return next(iter(docs.values()))


# --- the command line ---------------------------------------------------------
def _main_evals() -> None:
  given = [f'--{n}' for n in _REAL_ONLY if FLAGS[n].present]
  if given:
    raise SemcorrError(f'{", ".join(given)} apply to --benchmark=<a real '
                       f'benchmark> ({", ".join(REAL_BENCHMARKS)}) only')
  names = flag_parsing.name_list('evals', FLAGS.evals)
  overrides = {'num_pairs': FLAGS.num_pairs,
               'num_pictures': FLAGS.num_pictures}
  evaluate(FLAGS.workdir,
           lambda config, flows: evaluators.build(config, flows, names,
                                                  overrides),
           step=FLAGS.step, best=FLAGS.best, progress=True, echo=print)


def _main_benchmark(benchmark: str) -> None:
  if FLAGS.evals is not None:
    raise SemcorrError('--evals and --benchmark exclude each other')
  if benchmark == 'synthetic':
    given = [f'--{n}' for n in _REAL_ONLY if FLAGS[n].present]
    if given:
      raise SemcorrError(f'--benchmark=synthetic takes no {", ".join(given)}'
                         '; these flags are for the real benchmarks '
                         f'({", ".join(REAL_BENCHMARKS)})')
    settings = None
  else:
    settings = benchmark_settings(benchmark)
    if FLAGS.num_pairs is not None and FLAGS.num_pairs < 1:
      raise SemcorrError(f'--num_pairs must be >= 1, got {FLAGS.num_pairs}')
    # Before anything slow: a missing folder is the commonest mistake.
    if benchmark == pairs_benchmark.NAME:
      settings = pairs_benchmark.settings_from_flags(settings)
      pairs_folder.list_pairs(FLAGS.data_dir)
    else:
      runner.check_data_dir(benchmark, FLAGS.data_dir)
  evaluate_workdir(FLAGS.workdir, benchmark, FLAGS.step, FLAGS.num_pairs,
                   num_pictures=FLAGS.num_pictures, best=FLAGS.best,
                   settings=settings, progress=True, echo=print)


@common.main_wrapper
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.benchmark is not None and FLAGS.benchmark not in BENCHMARKS:
    raise SemcorrError(f'unknown benchmark {FLAGS.benchmark!r}; '
                       f"supported: {', '.join(BENCHMARKS)}")
  common.hide_gpus_from_tensorflow()
  tfds.disable_progress_bar()  # the benchmark runner shows pairs/s
  if FLAGS.benchmark is None:
    _main_evals()
  else:
    _main_benchmark(FLAGS.benchmark)


def run() -> None:
  """Console-script entry point."""
  flags.mark_flag_as_required('workdir')
  common.run(main)


if __name__ == '__main__':
  run()
