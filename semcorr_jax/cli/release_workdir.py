"""Writing an official release as a workdir: what every importer shares.

`import_to_workdir` checks the method and the workdir before reading
anything, reads the release, builds the method's fresh train state (for
the optimiser state), lets the importer fill the model's variables, and
saves them as step 0 with config.json, so that `semcorr-eval` scores the
workdir and `semcorr-train` fine-tunes it. If writing fails, what was
written is removed (a workdir created here, with it). The command-line
tools (`semcorr-import-sfnet`, `-ncnet`, `-cats`) differ only in how they
read and fill.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any, Callable

from absl import flags
import jax
import ml_collections
from ml_collections import config_flags

from semcorr_jax import checkpointing
from semcorr_jax import methods
from semcorr_jax import output_paths
from semcorr_jax import parallel
from semcorr_jax import workdirs
from semcorr_jax.cli import common
from semcorr_jax.errors import SemcorrError

PyTree = Any


def check_workdir(workdir, config: ml_collections.ConfigDict, method: str,
                  release: str) -> str:
  """The absolute workdir, after the checks that need no reading.

  Raises:
    SemcorrError: `config.method` is not `method`, the workdir is not
      writable, or it has checkpoints.
  """
  if config.method != method:
    raise SemcorrError(f'config.method is {config.method!r}; {release} '
                       f"needs config.method='{method}' (configs/"
                       f'{method}.py)')
  workdir = output_paths.check_writable_dir(workdir, '--workdir')
  ckpt_dir = os.path.join(workdir, checkpointing.CHECKPOINT_DIR)
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise SemcorrError(f'{workdir} already has checkpoints; use a new '
                       'workdir')
  return workdir


def import_to_workdir(config: ml_collections.ConfigDict, workdir,
                      *, method: str, release: str,
                      read: Callable[[], Any],
                      fill: Callable[[Any, PyTree, methods.Method], PyTree],
                      source: str,
                      before_read: Callable[[], None] | None = None) -> str:
  """Writes a `semcorr-eval`-ready workdir holding a release at step 0.

  Args:
    config: the run config (its method must be `method`).
    workdir: a new folder, or one without checkpoints; checked before
      anything is read.
    method: the registered method name, e.g. 'ncnet'.
    release: the release's name in errors, e.g. 'the NCNet release'.
    read: reads the release (called after the workdir checks, so that a
      bad workdir fails first); may raise SemcorrError.
    fill: (what `read` returned, the model's variables, the Method) -> the
      variables to save; called first on the abstract variables
      (ShapeDtypeStructs, to check the release before compiling), then on
      the fresh ones (host arrays).
    source: recorded as the checkpoint's `imported_from`.
    before_read: called after the workdir checks (e.g. to warn).

  Returns:
    The absolute workdir.

  Raises:
    SemcorrError: a wrong method, an unwritable workdir or one with
      checkpoints, or whatever `read` / `fill` raise.
    OSError: writing failed (e.g. a full disk); what was written is gone.
  """
  workdir = check_workdir(workdir, config, method, release)
  if before_read is not None:
    before_read()
  content = read()
  m = methods.get(method)(config, total_steps=1)
  rng, batch = jax.random.key(config.seed), workdirs.image_batch(config)
  # Names and shapes first, on the abstract state: a release that does not
  # fit fails in seconds, before the model is compiled.
  fill(content, m.state_variables(jax.eval_shape(m.init_state, rng, batch)),
       m)
  state = jax.jit(m.init_state)(rng, batch)
  variables = fill(content, parallel.to_host(m.state_variables(state)), m)
  # The fresh optimiser state does not depend on the parameter values.
  state = m.with_state_variables(state, variables)
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


def source_of(checkpoint) -> str:
  """The absolute path of a release file, or 'mapping' for content."""
  if isinstance(checkpoint, (str, os.PathLike)):
    return os.path.abspath(checkpoint)
  return 'mapping'


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


def run_importer(main: Callable[[list[str]], None], example_config: str
                 ) -> None:
  """Console-script entry point of an importer: --config, --workdir, main.

  The flags are defined here, not on import: other tools sharing a process
  (tests) define their own --config.
  """
  config_flags.DEFINE_config_file(
      'config', None, f'config file and variant, FILE:VARIANT, or a packaged '
      f'config by name (e.g. {example_config}); override fields with '
      '--config.<field>=VALUE', lock_config=True)
  flags.DEFINE_string('workdir', None, 'the new workdir to write')
  flags.mark_flags_as_required(['config', 'workdir'])
  common.run(main)
