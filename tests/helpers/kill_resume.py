"""Train, SIGKILL after the first committed checkpoint, train again (resume).

Shared by the kill-and-resume tests of every method.
"""

import pathlib
import signal
import subprocess
import time


def committed_steps(workdir: pathlib.Path) -> list[int]:
  """Steps whose Orbax checkpoint is complete, read from the folder.

  Reads the folder rather than opening a second Orbax manager on a live run;
  in-progress saves live in temporary folders whose names are not integers.
  """
  folder = workdir / 'checkpoints'
  if not folder.exists():
    return []
  return [int(p.name) for p in folder.iterdir()
          if p.name.isdigit() and (p / '_CHECKPOINT_METADATA').exists()]


def kill_then_resume(cmd: list[str], workdir: pathlib.Path, steps: int,
                     env: dict[str, str], timeout: float = 600
                     ) -> tuple[int, subprocess.CompletedProcess]:
  """Runs `cmd`, kills it mid-run, reruns it to the end.

  Returns:
    (the last committed step before the kill, the resumed run's result).
  """
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  killed_at = None
  try:
    while time.time() < deadline and proc.poll() is None:
      done = committed_steps(workdir)
      if done and max(done) < steps:
        proc.send_signal(signal.SIGKILL)
        killed_at = max(done)
        break
      time.sleep(0.02)
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.wait()
  assert killed_at is not None, 'the run finished before it could be killed'
  result = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True,
                          text=True)
  assert result.returncode == 0, result.stderr[-2000:]
  assert f'Resumed from step {killed_at}' in result.stdout
  return killed_at, result
