r"""`semcorr-import-ncnet`: the official NCNet release as a workdir.

Turns NCNet's released `ncnet_pfpascal.pth.tar` (backbone and
neighbourhood consensus; read without torch by
`semcorr_jax.weights.ncnet_release`) into a step-0 checkpoint of the `ncnet`
method plus config.json, which `semcorr-eval` scores and `semcorr-train`
fine-tunes:

  semcorr-import-ncnet ncnet_pfpascal.pth.tar \
    --workdir=runs/ncnet_release --config=configs/ncnet.py:paper
  semcorr-eval --workdir=runs/ncnet_release --benchmark=pf_pascal \
    --data_dir=~/data/pf_pascal --protocol=resize --input_size=400

The release holds the whole ResNet-101 to layer3, so
`config.backbone.weights` is not needed (and not read). The release's
`ncons_kernel_sizes` / `ncons_channels` must be the config's
`model.kernel_sizes` / `model.channels`, and its consensus is symmetric
(`model.symmetric=True`). (`python -m semcorr_jax.cli.import_ncnet` is the
same tool.)
"""

from __future__ import annotations

from absl import flags

from semcorr_jax.cli import common
from semcorr_jax.cli import release_workdir
from semcorr_jax.errors import SemcorrError
from semcorr_jax.weights import ncnet_release

FLAGS = flags.FLAGS
USAGE = ('usage: semcorr-import-ncnet ncnet_pfpascal.pth.tar --workdir=DIR '
         '--config=configs/ncnet.py:paper')


def import_to_workdir(checkpoint, config, workdir) -> str:
  """Writes a `semcorr-eval`-ready workdir holding the release at step 0.

  Backbone and consensus come from the release; the optimiser state is
  fresh, so `semcorr-train` on the workdir fine-tunes from the release.

  Args:
    checkpoint: the release file (or its content, see
      `ncnet_release.read_release`).
    config: an `ncnet` config with a ResNet-101 layer3 backbone and the
      release's consensus, e.g. configs/ncnet.py:paper.
    workdir: a new folder, or one without checkpoints; checked to be
      writable before anything is read. If writing fails, what was written
      is removed (a workdir created here, with it).

  Returns:
    The absolute workdir.

  Raises:
    SemcorrError: not an `ncnet` config, an unwritable workdir or one with
      checkpoints, a config that does not match the release, or a release
      that does not fit the model.
    OSError: writing failed (e.g. a full disk).
  """
  def read():
    release = ncnet_release.read_release(checkpoint)
    ncnet_release.check_config(config, release.args)  # Before building.
    return release

  def fill(release, variables, method):
    del method  # The release holds the backbone: nothing pretrained to load.
    return ncnet_release.import_ncnet_release(release, variables)

  return release_workdir.import_to_workdir(
      config, workdir, method='ncnet', release=ncnet_release.WHAT, read=read,
      fill=fill, source=release_workdir.source_of(checkpoint))


@common.main_wrapper
def main(argv: list[str]) -> None:
  if len(argv) != 2:
    raise SemcorrError(USAGE)
  workdir = import_to_workdir(argv[1], FLAGS.config, FLAGS.workdir)
  print(f'wrote {workdir} (step 0); evaluate it with: semcorr-eval '
        f'--workdir={workdir} --benchmark=pf_pascal --data_dir=...')


def run() -> None:
  """Console-script entry point."""
  release_workdir.run_importer(main, 'configs/ncnet.py:paper')


if __name__ == '__main__':
  run()
