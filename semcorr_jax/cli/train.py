r"""semcorr-train: train a method from a config file.

  semcorr-train --config=configs/sfnet.py:quick --workdir=runs/sfnet_quick \
      [--config.batch_size=16 --config.optimizer.lr=3e-4 ...]
  semcorr-train --config=sfnet:quick --workdir=runs/sfnet_quick

`--config=FILE:VARIANT` runs FILE's `get_config(VARIANT)`
(ml_collections); a FILE that does not exist but names a packaged config
(`sfnet`, `sfnet.py`, `configs/sfnet.py`; camnet, cats, gsf, jlfc, ncnet
too) is the one installed with the package, so the second line works from
any folder. `--config.<field>=VALUE` overrides a field; a misspelt field or
variant, or a value the field does not take, is one error line naming the
closest one.

An existing run in `--workdir` is resumed from its latest checkpoint. For a
multi-host job, start the same command on every host with
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`
(or let `jax.distributed.initialize()` detect a TPU pod / SLURM job with
`--distributed`).
"""

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from semcorr_jax import train
from semcorr_jax.cli import common

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Config file and variant, FILE:VARIANT (e.g. '
    'configs/<method>.py:quick), or a packaged config by name (e.g. '
    'sfnet:quick); override fields with --config.<field>=VALUE.',
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (resumed).')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize() with '
    'auto-detection (TPU pods, SLURM, ...).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'HOST:PORT of process 0 for multi-host runs.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Number of processes (hosts).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process.')


@common.main_wrapper
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  common.hide_gpus_from_tensorflow()
  if _COORDINATOR.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


def run():
  flags.mark_flags_as_required(['config', 'workdir'])
  common.run(main)


if __name__ == '__main__':
  run()
