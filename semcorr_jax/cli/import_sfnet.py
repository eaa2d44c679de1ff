r"""`semcorr-import-sfnet`: the official SFNet release as a workdir.

Turns SFNet's released `best_checkpoint.pt` (adaptation layers only; read by
`semcorr_jax.weights.sfnet_release`) into a step-0 checkpoint of the `sfnet`
method plus config.json, which `semcorr-eval` scores and `semcorr-train`
fine-tunes:

  semcorr-fetch-weights resnet101 --output ~/w/resnet101.npz
  semcorr-import-sfnet best_checkpoint.pt \
    --workdir=runs/sfnet_release --config=configs/sfnet.py:paper \
    --config.backbone.weights=$HOME/w/resnet101.npz
  semcorr-eval --workdir=runs/sfnet_release --benchmark=pf_pascal \
    --data_dir=~/data/pf_pascal --protocol=sfnet

(`python -m semcorr_jax.cli.import_sfnet` is the same tool.)
"""

from __future__ import annotations

import sys

from absl import flags

from semcorr_jax.cli import common
from semcorr_jax.cli import release_workdir
from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import sfnet_release

FLAGS = flags.FLAGS


def import_to_workdir(checkpoint, config, workdir: str) -> str:
  """Writes a `semcorr-eval`-ready workdir holding the release at step 0.

  The backbone comes from `config.backbone.weights` (as in training); the
  adaptation layers from the release; the optimiser state is fresh, so
  `semcorr-train` on the workdir fine-tunes from the release.

  Args:
    checkpoint: the release file (or its content, see
      `sfnet_release.import_sfnet_release`).
    config: an `sfnet` config, e.g. configs/sfnet.py:paper.
    workdir: a new folder, or one without checkpoints; checked to be
      writable before anything is read. If writing fails, what was written
      is removed (a workdir created here, with it).

  Returns:
    The absolute workdir.

  Raises:
    SemcorrError: not an `sfnet` config, an unwritable workdir or one with
      checkpoints, or a release that does not fit the model.
    OSError: writing failed (e.g. a full disk).
  """
  def warn():
    if (not config.backbone.get('weights') and
        config.backbone.name == 'resnet'):
      print('warning: config.backbone.weights is not set: the backbone stays '
            'random and the release will not match well (SFNet used '
            'torchvision ImageNet ResNet-101)', file=sys.stderr)

  def fill(release, variables, method):
    return sfnet_release.import_sfnet_release(
        release, method.load_pretrained(variables), method.model.levels)

  return release_workdir.import_to_workdir(
      config, workdir, method='sfnet', release='the SFNet release',
      read=lambda: sfnet_release.read_release(checkpoint), fill=fill,
      source=release_workdir.source_of(checkpoint), before_read=warn)


@common.main_wrapper
def main(argv: list[str]) -> None:
  if len(argv) != 2:
    raise SemcorrError('usage: semcorr-import-sfnet best_checkpoint.pt '
                       '--workdir=DIR --config=configs/sfnet.py:paper '
                       '[--config.backbone.weights=...]')
  workdir = import_to_workdir(argv[1], FLAGS.config, FLAGS.workdir)
  print(f'wrote {workdir} (step 0); evaluate it with: semcorr-eval '
        f'--workdir={workdir} --benchmark=pf_pascal --data_dir=... '
        '--protocol=sfnet')


def run() -> None:
  """Console-script entry point."""
  release_workdir.run_importer(main, 'configs/sfnet.py:paper')


if __name__ == '__main__':
  run()
