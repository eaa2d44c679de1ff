"""An exclusive lock on a workdir for the run that writes it.

Two trainings on one workdir would log every step twice and delete each
other's checkpoints, so `semcorr-train` holds `workdir/.lock` for as long as
it runs. The lock is an `fcntl.flock` on that file: the kernel releases it
when the process dies, however it dies, so a killed run never blocks the
next one. The file records who holds it (`{"pid", "host", "started"}`); a
run that finds the record of a process that is gone reports the stale lock
and takes it over. The file is removed when the lock is released, so a run
refused before its first step leaves the workdir as it was.

Only process 0 of a multi-host job takes the lock.

Workdirs on object stores (`gs://...`) cannot be locked: there is no
`flock`, nothing releases an object when its writer dies, and writing a
record is not an atomic test-and-set through `etils.epath`. There the lock
is a record only: the run writes `.lock` with who it is and removes it
when it ends. A run that finds another run's record cannot tell whether
that run is alive (a preempted run leaves its record behind), so it warns,
naming it, and goes on: the record catches the common mistake of starting
a second run on a workdir that is in use, but it excludes nothing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time

from semcorr_jax import output_paths
from semcorr_jax.errors import SemcorrError

LOCK_FILE = '.lock'


def _process_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


def describe_holder(record: dict) -> str:
  started = record.get('started')
  when = (time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))
          if isinstance(started, (int, float)) else '?')
  return (f"pid {record.get('pid', '?')} on host {record.get('host', '?')} "
          f'(started {when})')


def _read_record(fd: int) -> dict:
  os.lseek(fd, 0, os.SEEK_SET)
  try:
    record = json.loads(os.read(fd, 4096).decode() or '{}')
  except (ValueError, UnicodeDecodeError):
    return {}
  return record if isinstance(record, dict) else {}


class WorkdirLock:
  """`with WorkdirLock(workdir):` holds the workdir for this process.

  Raises (on enter):
    SemcorrError: another live process holds the workdir.
  """

  def __init__(self, workdir: str, stream=None):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self.stream = stream
    self._fd = None
    self._record = None  # what this run wrote in a remote workdir's `.lock`
    self.stale = None  # the record of a dead holder this lock replaced

  def _acquire_record(self) -> 'WorkdirLock':
    """A remote workdir: replaces `.lock` by this run's record, warning
    about the record of another run found there."""
    lock = output_paths.as_path(self.path)
    try:
      previous = json.loads(lock.read_text())
    except FileNotFoundError:
      previous = {}
    except ValueError:  # JSON or UnicodeDecodeError: a damaged record
      previous = {'pid': '?'}
    if isinstance(previous, dict) and previous.get('pid'):
      self.stale = previous
      print(f'warning: {self.path} names {describe_holder(previous)} as the '
            'run writing this workdir; object stores cannot be locked, so '
            'whether it still runs is unknown (a preempted run leaves its '
            'record): if it does, stop one of them', file=self.stream or
            sys.stderr, flush=True)
    self._record = json.dumps({'pid': os.getpid(),
                               'host': socket.gethostname(),
                               'started': time.time()})
    with output_paths.atomic_write(self.path, 'w') as f:
      f.write(self._record)
    return self

  def _release_record(self) -> None:
    """Removes `.lock` if it still holds this run's record."""
    lock, self._record = output_paths.as_path(self.path), self._record
    try:
      if lock.read_text() == self._record:
        lock.unlink()
    except FileNotFoundError:
      pass

  def acquire(self) -> 'WorkdirLock':
    if output_paths.is_remote(self.workdir):
      return self._acquire_record()
    os.makedirs(self.workdir, exist_ok=True)
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError as e:
        record = _read_record(fd)
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
          raise
        raise SemcorrError(
            f'workdir {self.workdir} is in use by another semcorr-train, '
            f'{describe_holder(record)}: wait for it to end, stop it, or use '
            'another --workdir') from None
      # The holder before us may have removed the file between our open and
      # our flock: then we hold a lock on a file nobody else can see. Retry.
      try:
        same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
      except FileNotFoundError:
        same = False
      if same:
        break
      os.close(fd)
    previous = _read_record(fd)
    if previous.get('pid') and not (
        previous.get('pid') == os.getpid() and
        previous.get('host') == socket.gethostname()):
      self.stale = previous
      alive = (previous.get('host') == socket.gethostname() and
               _process_alive(int(previous['pid'])))
      state = 'ended without releasing it' if not alive else (
          'is alive but no longer holds it')
      print(f'warning: stale lock {self.path} of {describe_holder(previous)}, '
            f'which {state}; taking it over', file=self.stream or sys.stderr,
            flush=True)
    record = {'pid': os.getpid(), 'host': socket.gethostname(),
              'started': time.time()}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(record).encode())
    self._fd = fd
    return self

  def release(self) -> None:
    if self._record is not None:
      self._release_record()
    if self._fd is None:
      return
    try:
      os.unlink(self.path)  # while still held: nobody can take it half-way
    except FileNotFoundError:
      pass
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self) -> 'WorkdirLock':
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()
