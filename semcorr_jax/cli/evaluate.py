r"""`semcorr-eval`: score a trained workdir on a benchmark.

Synthetic held-out pairs (no download; always beside the untrained twin):

  semcorr-eval --workdir=runs/sfnet_quick [--benchmark=synthetic] \
    [--step=300] [--num_pairs=64]

writes, under `<workdir>/eval/`: `synthetic.json` ({'benchmark', 'step',
'trained', 'untrained'}), `synthetic.md`, `synthetic_pairs.png` (held-out
pairs with the trained model's matches) and
`pairs/pair_00{0,1}_{source,target}.png` (two held-out pairs as image files,
e.g. for `semcorr-match`).

Real benchmarks (download them first; docs/benchmarks.md says what and
where; `--data_dir` is the folder holding the downloaded files, the TFDS
dataset is prepared into `<data_dir>/tensorflow_datasets` on first use):

  semcorr-eval --workdir=runs/sfnet --benchmark=pf_pascal \
    --data_dir=~/data/pf_pascal                 # alpha_img, 224 square, ts
  semcorr-eval --workdir=runs/sfnet --benchmark=pf_pascal \
    --data_dir=~/data/pf_pascal --protocol=sfnet   # 288 + 16 px pad input
  semcorr-eval --workdir=runs/sfnet --benchmark=pf_willow \
    --data_dir=~/data/pf_willow [--kps_padding_bug]  # L = kps extent
  semcorr-eval --workdir=runs/sfnet --benchmark=spair71k \
    --data_dir=~/data/spair [--split=validation]     # alpha_bbox (source)
  semcorr-eval --workdir=runs/sfnet --benchmark=tss --data_dir=~/data/tss
  semcorr-eval --workdir=runs/sfnet --benchmark=caltech101 \
    --data_dir=~/data/caltech101 --untrained

Protocol flags (defaults per benchmark: `semcorr_jax.evaluation.protocol`):
`--protocol=resize|sfnet`, `--input_size=H,W` (evaluation resolution; the
model runs at input_size + 2 pad), `--direction=ts|st`,
`--threshold=img|bbox|kps`, `--frame=square|original`, `--alphas=0.05,0.1,0.15`, `--kps_padding_bug`,
`--eval_batch_size`. `--num_pairs=N` scores the first N pairs only.

A real benchmark writes, under `<workdir>/eval/`, `<benchmark>_<split>.json`
({'benchmark', 'split', 'label', 'step', 'protocol', 'summary'}), `.md`
(protocol + tables), `_pairs.csv` (one row per pair) and `_worst.png` (the
worst pairs); `--untrained` also scores the same architecture at
initialisation into `<benchmark>_<split>_untrained.*`. Files are replaced
only when a run completes: a failing run keeps earlier results.
"""

from __future__ import annotations

import os

from absl import app
from absl import flags

from semcorr_jax.cli import common
from semcorr_jax.errors import SemcorrError

FLAGS = flags.FLAGS
REAL_BENCHMARKS = ('pf_pascal', 'pf_willow', 'spair71k', 'tss',
                   'caltech101')
BENCHMARKS = ('synthetic',) + REAL_BENCHMARKS
# Flags that only apply to the real benchmarks.
_REAL_ONLY = ('data_dir', 'tfds_dir', 'split', 'protocol', 'input_size',
              'direction',
              'threshold', 'frame', 'alphas', 'kps_padding_bug',
              'eval_batch_size', 'untrained', 'num_worst')


def _define_flags() -> None:
  """Defines the flags once (several tools may share a process in tests)."""
  defs = (
      ('string', 'workdir', None, 'a semcorr-train workdir'),
      ('string', 'benchmark', 'synthetic',
       f'benchmark to run: {", ".join(BENCHMARKS)}'),
      ('integer', 'step', None, 'checkpoint step (default: the latest)'),
      ('integer', 'num_pairs', None,
       'pairs to score (synthetic default: config.eval.num_pairs; real '
       'benchmarks: all)'),
      ('integer', 'num_pictures', 4,
       'synthetic: held-out pairs drawn in the picture'),
      ('string', 'data_dir', None,
       'real benchmarks: the folder with the downloaded files'),
      ('string', 'tfds_dir', None,
       'where the TFDS dataset is prepared (default: '
       '<data_dir>/tensorflow_datasets)'),
      ('string', 'split', None, 'dataset split (default: test)'),
      ('string', 'protocol', None, 'protocol preset: resize or sfnet'),
      ('string', 'input_size', None,
       'evaluation resolution H,W (or N) the images are resized to before '
       'padding; the model then runs at input_size + 2 pad (default: the '
       "model's training size)"),
      ('string', 'direction', None,
       "'ts' (target points -> source) or 'st'"),
      ('string', 'threshold', None, 'PCK length: img, bbox or kps'),
      ('string', 'frame', None, 'PCK frame: square or original'),
      ('string', 'alphas', None, 'PCK alphas, e.g. 0.05,0.1,0.15'),
      ('bool', 'kps_padding_bug', False,
       'PF-WILLOW: reproduce the DHPF/CATs -1 padding of the kps extent'),
      ('integer', 'eval_batch_size', None, 'pairs per model call'),
      ('bool', 'untrained', False,
       'also score the untrained model (same architecture at init)'),
      ('integer', 'num_worst', 6, 'pairs drawn in <...>_worst.png'),
  )
  for kind, name, default, help_text in defs:
    if name not in FLAGS:
      getattr(flags, f'DEFINE_{kind}')(name, default, help_text)


_define_flags()


def evaluate_workdir(workdir, benchmark='synthetic', step=None,
                     num_pairs=None, **kwargs):
  """See `semcorr_jax.evaluation.synthetic.evaluate_workdir`."""
  from semcorr_jax.evaluation import synthetic  # pylint: disable=g-import-not-at-top
  return synthetic.evaluate_workdir(workdir, benchmark, step, num_pairs,
                                    **kwargs)


def _numbers(flag: str, text: str | None, cast, expected: str):
  """'a,b,...' -> tuple of `cast` values (None when the flag is unset)."""
  if text is None:
    return None
  try:
    values = tuple(cast(v) for v in text.split(',') if v.strip())
  except ValueError:
    values = ()
  if not values:
    raise SemcorrError(f'--{flag}={text!r}: expected {expected}')
  return values


def _alphas(text: str | None):
  return _numbers('alphas', text, float,
                  'numbers separated by commas, e.g. 0.05,0.1,0.15')


def _size(text: str | None):
  values = _numbers('input_size', text, int, 'H,W or N, e.g. 288,288')
  if values is not None and len(values) == 1:
    values = values * 2
  if values is not None and (len(values) != 2 or min(values) < 2):
    raise SemcorrError(f'--input_size={text!r}: expected H,W or N (>= 2), '
                       'e.g. 288,288')
  return values


def _protocol_from_flags(benchmark: str):
  from semcorr_jax.evaluation import runner  # pylint: disable=g-import-not-at-top
  bug = FLAGS.kps_padding_bug if FLAGS['kps_padding_bug'].present else None
  return runner.build_protocol(
      benchmark, FLAGS.protocol, input_size=_size(FLAGS.input_size),
      direction=FLAGS.direction,
      threshold=FLAGS.threshold, frame=FLAGS.frame,
      alphas=_alphas(FLAGS.alphas), kps_padding_bug=bug,
      batch_size=FLAGS.eval_batch_size)


def _main_synthetic() -> None:
  from semcorr_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from semcorr_jax.evaluation import synthetic  # pylint: disable=g-import-not-at-top
  given = [f'--{n}' for n in _REAL_ONLY if FLAGS[n].present]
  if given:
    raise SemcorrError(f'--benchmark=synthetic takes no {", ".join(given)}'
                       '; these flags are for the real benchmarks '
                       f'({", ".join(REAL_BENCHMARKS)})')
  common.hide_gpus_from_tensorflow()
  with common.native_stderr_held():  # a failed restore is one line
    restored = checkpointing.restore_for_inference(FLAGS.workdir, FLAGS.step)
  results = synthetic.evaluate_workdir(
      FLAGS.workdir, benchmark=FLAGS.benchmark, step=FLAGS.step,
      num_pairs=FLAGS.num_pairs, num_pictures=FLAGS.num_pictures,
      restored=restored)
  out_dir = os.path.join(FLAGS.workdir, 'eval')
  trained = results['trained']
  print(f"{FLAGS.benchmark}: step {results['step']}, "
        f"{trained['num_pairs']} held-out pairs, "
        f"{trained['num_keypoints']} keypoints "
        '(untrained = same architecture at initialisation)')
  print(synthetic.format_comparison(trained, results.get('untrained')))
  for name in (f'{FLAGS.benchmark}.json', f'{FLAGS.benchmark}.md',
               f'{FLAGS.benchmark}_pairs.png', 'pairs/'):
    print(f'wrote {os.path.join(out_dir, name)}')


def _main_real(benchmark: str) -> None:
  from semcorr_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from semcorr_jax.evaluation import runner  # pylint: disable=g-import-not-at-top
  from semcorr_jax.evaluation import synthetic  # pylint: disable=g-import-not-at-top
  protocol = _protocol_from_flags(benchmark)
  split = FLAGS.split or runner.default_split(benchmark)
  if FLAGS.num_pairs is not None and FLAGS.num_pairs < 1:
    raise SemcorrError(f'--num_pairs must be >= 1, got {FLAGS.num_pairs}')
  runner.check_data_dir(benchmark, FLAGS.data_dir)
  common.hide_gpus_from_tensorflow()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()  # ours shows pairs/s
  # Check the dataset before the (slower) restore; TFDS's own messages are
  # held so that a missing file is one line.
  with common.native_stderr_held():
    runner.prepare_dataset(benchmark, split, data_dir=FLAGS.data_dir,
                           tfds_dir=FLAGS.tfds_dir)
  with common.native_stderr_held():
    config, method, variables, step = checkpointing.restore_for_inference(
        FLAGS.workdir, FLAGS.step)
  trained_size = tuple(int(s) for s in config.data.image_size)
  if protocol.input_size is None:
    model_size = trained_size
  else:  # The protocol fixes the resolution the model runs at.
    model_size = tuple(int(s) + 2 * int(protocol.pad)
                       for s in protocol.input_size)
    if model_size != trained_size:
      print(f'note: evaluating at {model_size[0]}x{model_size[1]} (input '
            f'{protocol.input_size[0]}x{protocol.input_size[1]} + '
            f'{protocol.pad} px padding); the model was trained at '
            f'{trained_size[0]}x{trained_size[1]}')
  out_dir = os.path.join(FLAGS.workdir, 'eval')
  kwargs = dict(model_size=model_size, split=split, data_dir=FLAGS.data_dir,
                tfds_dir=FLAGS.tfds_dir, protocol=protocol,
                num_pairs=FLAGS.num_pairs, out_dir=out_dir,
                num_worst=FLAGS.num_worst)
  runs = [('', runner.method_predict_fn(method, variables))]
  if FLAGS.untrained:
    runs.append(('untrained', runner.method_predict_fn(
        method, synthetic.untrained_variables(method, config))))
  scorer = runner.scorer_of(benchmark)
  written, lines = [], []
  for label, predict_fn in runs:
    results = runner.evaluate_benchmark(
        predict_fn, benchmark, label=label,
        step=None if label else step, **kwargs)
    summary = results['summary']
    name = label or f'step {step}'
    print(f'\n## {benchmark} {split}, {name}\n')
    print(runner.summary_markdown(benchmark, summary))
    lines.append(f'{name}: {scorer.PRIMARY_METRIC} = '
                 f'{float(summary.get(scorer.PRIMARY_METRIC, "nan")):.4f}')
    written += runner.output_paths(out_dir, benchmark, split,
                                   label).values()
  print('\n'.join(lines))
  for path in written:
    print(f'wrote {path}')


@common.main_wrapper
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.benchmark not in BENCHMARKS:
    raise SemcorrError(f'unknown benchmark {FLAGS.benchmark!r}; '
                       f"supported: {', '.join(BENCHMARKS)}")
  # Imported in the helpers: JAX and the models load once the flags are fine.
  if FLAGS.benchmark == 'synthetic':
    _main_synthetic()
  else:
    _main_real(FLAGS.benchmark)


def run() -> None:
  """Console-script entry point."""
  flags.mark_flag_as_required('workdir')
  common.run(main)


if __name__ == '__main__':
  run()
