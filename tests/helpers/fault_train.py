"""`semcorr-train` that signals itself at a chosen step.

  python fault_train.py <step> <semcorr-train flags...>
  python fault_train.py term:<step> <semcorr-train flags...>

`<step>`: a SIGKILL right after `Checkpointer.save(<step>)` has handed the
write to Orbax's background thread, before the checkpoint is committed: what
a power cut or an OOM kill during a save leaves behind.

`term:<step>`: a SIGTERM (a preemption notice) once the metrics of `<step>`
are written, i.e. while step `<step>` is the last one finished; the signal
is only noted there, so the run stops after the next step.
"""

import os
import signal
import sys

from semcorr_jax import checkpointing
from semcorr_jax import metric_writers
from semcorr_jax.cli import train as train_cli


def main():
  mode, _, step = sys.argv.pop(1).rpartition(':')
  at_step = int(step)
  if mode == 'term':
    write = metric_writers.MetricWriter.write

    def write_then_term(self, step, *args, **kwargs):
      write(self, step, *args, **kwargs)
      if step == at_step:
        os.kill(os.getpid(), signal.SIGTERM)

    metric_writers.MetricWriter.write = write_then_term
  else:
    save = checkpointing.Checkpointer.save

    def save_then_die(self, step, *args, **kwargs):
      save(self, step, *args, **kwargs)
      if step == at_step:
        os.kill(os.getpid(), signal.SIGKILL)

    checkpointing.Checkpointer.save = save_then_die
  train_cli.run()


if __name__ == '__main__':
  main()
