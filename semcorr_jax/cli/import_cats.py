r"""`semcorr-import-cats`: the official CATs release as a workdir.

Turns a CATs run folder's `model_best.pth` and `args.pkl` (read without
torch by `semcorr_jax.weights.cats_release`) into a step-0 checkpoint of
the `cats` method plus config.json, which `semcorr-eval` scores and
`semcorr-train` fine-tunes:

  semcorr-import-cats snapshots/spair/model_best.pth \
    --workdir=runs/cats_release --config=configs/cats.py:paper
  semcorr-eval --workdir=runs/cats_release --benchmark=spair \
    --data_dir=~/data/SPair-71k

`args.pkl` is read from the checkpoint's folder unless given as a second
argument. Its architecture flags (hyperpixel ids, depth, feature size,
embedding size, heads, MLP ratio) must be the config's; the error names the
`--config.` overrides that make them so (e.g. a PF-PASCAL release:
`--config.backbone.features="('hyper_2','hyper_17',...)"`). The release
holds the whole ResNet-101, so `config.backbone.weights` is not needed (and
not read). (`python -m semcorr_jax.cli.import_cats` is the same tool.)
"""

from __future__ import annotations

import os

from absl import flags

from semcorr_jax.cli import common
from semcorr_jax.cli import release_workdir
from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import cats_release

FLAGS = flags.FLAGS
USAGE = ('usage: semcorr-import-cats model_best.pth [args.pkl] '
         '--workdir=DIR --config=configs/cats.py:paper')
ARGS_FILE = 'args.pkl'


def default_args_path(checkpoint) -> str:
  """`args.pkl` beside the checkpoint, where CATs' train.py writes it."""
  return os.path.join(os.path.dirname(os.path.abspath(checkpoint)),
                      ARGS_FILE)


def import_to_workdir(checkpoint, config, workdir, args=None) -> str:
  """Writes a `semcorr-eval`-ready workdir holding the release at step 0.

  Backbone, appearance embeddings and aggregator come from the release; the
  optimiser state is fresh, so `semcorr-train` on the workdir fine-tunes
  from the release.

  Args:
    checkpoint: `model_best.pth` (or its content, see
      `cats_release.read_release`).
    config: a `cats` config whose architecture is the release's.
    workdir: a new folder, or one without checkpoints; checked to be
      writable before anything is read. If writing fails, what was written
      is removed (a workdir created here, with it).
    args: `args.pkl` or the run's flags; None: `args.pkl` beside
      `checkpoint`.

  Returns:
    The absolute workdir.

  Raises:
    SemcorrError: not a `cats` config, an unwritable workdir or one with
      checkpoints, a missing args.pkl, a config that does not match the
      release, or a release that does not fit the model.
    OSError: writing failed (e.g. a full disk).
  """
  def read():
    flags_source = args
    if flags_source is None:
      if not isinstance(checkpoint, (str, os.PathLike)):
        raise SemcorrError(f'{cats_release.WHAT} needs its args.pkl')
      if not os.path.isfile(checkpoint):
        raise SemcorrError(f'{checkpoint}: no such file')
      flags_source = default_args_path(checkpoint)
      if not os.path.isfile(flags_source):
        raise SemcorrError(
            f'no {ARGS_FILE} beside {checkpoint} ({flags_source}); pass the '
            f"run's {ARGS_FILE} as the second argument")
    release = cats_release.read_release(checkpoint, flags_source)
    cats_release.check_config(config, release.args)  # Before building.
    return release

  def fill(release, variables, method):
    del method  # The release holds the backbone: nothing pretrained to load.
    return cats_release.import_cats_release(release, variables)

  return release_workdir.import_to_workdir(
      config, workdir, method='cats', release=cats_release.WHAT, read=read,
      fill=fill, source=release_workdir.source_of(checkpoint))


@common.main_wrapper
def main(argv: list[str]) -> None:
  if len(argv) not in (2, 3):
    raise SemcorrError(USAGE)
  args = argv[2] if len(argv) == 3 else None
  workdir = import_to_workdir(argv[1], FLAGS.config, FLAGS.workdir, args)
  print(f'wrote {workdir} (step 0); evaluate it with: semcorr-eval '
        f'--workdir={workdir} --benchmark=spair --data_dir=...')


def run() -> None:
  """Console-script entry point."""
  release_workdir.run_importer(main, 'configs/cats.py:paper')


if __name__ == '__main__':
  run()
