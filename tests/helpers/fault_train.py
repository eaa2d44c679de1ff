"""`semcorr-train` that SIGKILLs itself while a checkpoint is being written.

  python fault_train.py <step> <semcorr-train flags...>

The kill comes right after `Checkpointer.save(<step>)` has handed the write
to Orbax's background thread, before the checkpoint is committed: what a
power cut or an OOM kill during a save leaves behind.
"""

import os
import signal
import sys

from semcorr_jax import checkpointing
from semcorr_jax.cli import train as train_cli


def main():
  kill_step = int(sys.argv.pop(1))
  save = checkpointing.Checkpointer.save

  def save_then_die(self, step, *args, **kwargs):
    save(self, step, *args, **kwargs)
    if step == kill_step:
      os.kill(os.getpid(), signal.SIGKILL)

  checkpointing.Checkpointer.save = save_then_die
  train_cli.run()


if __name__ == '__main__':
  main()
