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

import contextlib
import os
import shutil
import sys

from absl import flags
import jax
from ml_collections import config_flags

from semcorr_jax import checkpointing
from semcorr_jax import methods
from semcorr_jax import output_paths
from semcorr_jax import parallel
from semcorr_jax import workdirs
from semcorr_jax.cli import common
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
  if config.method != 'sfnet':
    raise SemcorrError(f'config.method is {config.method!r}; the SFNet '
                       "release needs an 'sfnet' config")
  workdir = output_paths.check_writable_dir(workdir, '--workdir')
  ckpt_dir = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise SemcorrError(f'{workdir} already has checkpoints; use a new '
                       'workdir')
  if not config.backbone.get('weights') and config.backbone.name == 'resnet':
    print('warning: config.backbone.weights is not set: the backbone stays '
          'random and the release will not match well (SFNet used '
          'torchvision ImageNet ResNet-101)', file=sys.stderr)
  # Read (and fail) before any work.
  release = sfnet_release.read_release(checkpoint)
  method = methods.get('sfnet')(config, total_steps=1)
  state = jax.jit(method.init_state)(jax.random.key(config.seed),
                                     workdirs.image_batch(config))
  variables = method.load_pretrained(
      parallel.to_host(method.state_variables(state)))
  variables = sfnet_release.import_sfnet_release(release, variables,
                                                 method.model.levels)
  # The fresh optimiser state does not depend on the parameter values.
  state = method.with_state_variables(state, variables)
  source = (os.path.abspath(checkpoint)
            if isinstance(checkpoint, (str, os.PathLike)) else 'mapping')
  undo = _Undo(workdir)
  try:
    checkpointing.save_config(workdir, config)
    ckpt = checkpointing.Checkpointer(workdir)
    try:
      ckpt.save(0, state, {'step': 0, 'data_index': 0, 'seed': config.seed,
                           'imported_from': source}, force=True)
      ckpt.wait()
    finally:
      ckpt.close()
  except BaseException:
    undo()
    raise
  return workdir


class _Undo:
  """Removes what a failed import wrote, leaving the workdir as it was."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.created = not os.path.lexists(workdir)
    self.config = os.path.join(workdir, checkpointing.CONFIG_FILE)
    self.old_config = None
    if os.path.isfile(self.config):
      with open(self.config, 'rb') as f:
        self.old_config = f.read()
    self.ckpt_dir = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
    self.had_ckpt_dir = os.path.isdir(self.ckpt_dir)

  def __call__(self) -> None:
    if self.created:
      shutil.rmtree(self.workdir, ignore_errors=True)
      return
    if not self.had_ckpt_dir:
      shutil.rmtree(self.ckpt_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
      os.unlink(output_paths.temporary_path(self.config))
    with contextlib.suppress(OSError):
      if self.old_config is None:
        os.unlink(self.config)
      else:
        with open(self.config, 'wb') as f:
          f.write(self.old_config)


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
  # Defined here, not on import: other tools sharing a process (tests) define
  # their own --config.
  config_flags.DEFINE_config_file('config', None,
                                  'e.g. configs/sfnet.py:paper',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'the new workdir to write')
  flags.mark_flags_as_required(['config', 'workdir'])
  common.run(main)


if __name__ == '__main__':
  run()
