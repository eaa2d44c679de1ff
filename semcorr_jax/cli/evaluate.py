r"""`semcorr-eval`: score a trained workdir beside its untrained twin.

  semcorr-eval --workdir=runs/sfnet_quick [--benchmark=synthetic] \
    [--step=300] [--num_pairs=64]

Evaluates the checkpoint (default: the latest) and the same architecture at
initialisation on the benchmark, prints both side by side and writes, under
`<workdir>/eval/`: `<benchmark>.json` ({'benchmark', 'step', 'trained',
'untrained'}), `<benchmark>.md`, `<benchmark>_pairs.png` (held-out pairs with
the trained model's matches) and `pairs/pair_00{0,1}_{source,target}.png`
(two held-out pairs as image files, e.g. for `semcorr-match`).
"""

from __future__ import annotations

import os

from absl import app
from absl import flags

from semcorr_jax.cli import common
from semcorr_jax.errors import SemcorrError

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defines the flags once (several tools may share a process in tests)."""
  defs = (
      ('string', 'workdir', None, 'a semcorr-train workdir'),
      ('string', 'benchmark', 'synthetic',
       'benchmark to run; supported: synthetic'),
      ('integer', 'step', None, 'checkpoint step (default: the latest)'),
      ('integer', 'num_pairs', None,
       'held-out pairs (default: config.eval.num_pairs)'),
      ('integer', 'num_pictures', 4, 'held-out pairs drawn in the picture'),
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


@common.main_wrapper
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Imported here: JAX and the models load only once the flags are fine.
  from semcorr_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from semcorr_jax.evaluation import synthetic  # pylint: disable=g-import-not-at-top
  if FLAGS.benchmark not in synthetic.BENCHMARKS:
    raise SemcorrError(f'benchmark {FLAGS.benchmark!r} is not available yet; '
                       f"supported: {', '.join(synthetic.BENCHMARKS)}")
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


def run() -> None:
  """Console-script entry point."""
  flags.mark_flag_as_required('workdir')
  common.run(main)


if __name__ == '__main__':
  run()
