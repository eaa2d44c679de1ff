"""Keeping the leftovers of failed background I/O off stderr, and only them.

A failed Orbax restore or save (a damaged checkpoint, a full disk) reaches
the caller as one exception, and the trainer and the CLIs report it in one
line. Meanwhile Orbax logs the same error from its threads, and TensorStore's
pending reads and writes print a traceback each when they finish on a closed
event loop. `drop_failed_io_noise` and `orbax_errors_raised_not_logged` drop
exactly those; `SEMCORR_VERBOSE=1` keeps everything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback

VERBOSE_ENV = 'SEMCORR_VERBOSE'


def verbose() -> bool:
  """Whether every error, log and traceback is to be shown."""
  return os.environ.get(VERBOSE_ENV, '').strip().lower() not in (
      '', '0', 'false', 'no')


# The traceback frame of the asyncio call that fails on a closed event loop.
_CLOSED_LOOP_CALL = 'call_soon_threadsafe'
_QUIET_HOOK = '_semcorr_quiet_reads'  # marks the installed hook


def drop_failed_io_noise() -> None:
  """Drops the leftovers of failed TensorStore reads and writes from stderr.

  When one array of an Orbax restore (or save) fails, the operation fails
  at once and its event loop closes while TensorStore's threads finish the
  other reads or writes: each then reports "Event loop is closed" through
  `sys.unraisablehook`, and asyncio logs "Future exception was never
  retrieved" for every read error it collects, dozens of tracebacks after
  the error itself reached the caller. Only those two are dropped; the
  hook and the log filter are installed once (again if replaced since).
  """
  if verbose():
    return
  if not getattr(sys.unraisablehook, _QUIET_HOOK, False):
    previous = sys.unraisablehook

    def hook(unraisable):
      if not _closed_loop_callback(unraisable.exc_value,
                                   unraisable.exc_traceback):
        previous(unraisable)

    setattr(hook, _QUIET_HOOK, True)
    sys.unraisablehook = hook
  asyncio_logger = logging.getLogger('asyncio')
  if _not_a_lost_read_error not in asyncio_logger.filters:
    asyncio_logger.addFilter(_not_a_lost_read_error)


def _closed_loop_callback(error: BaseException | None, tb) -> bool:
  if not (isinstance(error, RuntimeError)
          and str(error) == 'Event loop is closed'):
    return False
  return any(frame.f_code.co_name == _CLOSED_LOOP_CALL
             for frame, _ in traceback.walk_tb(tb))


def _not_a_lost_read_error(record: logging.LogRecord) -> bool:
  """False for asyncio's report of a TensorStore read error nobody awaited."""
  error = record.exc_info[1] if record.exc_info else None
  return not (str(record.msg).startswith('Future exception was never '
                                         'retrieved')
              and error is not None and 'tensorstore' in str(error).lower())


class _OrbaxFilter(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return '/orbax/' not in record.pathname.replace(os.sep, '/')


@contextlib.contextmanager
def orbax_errors_raised_not_logged():
  """Drops Orbax's log records inside the block: the trainer raises the
  errors of its saves instead (`Checkpointer.check_for_errors`)."""
  if verbose():
    yield
    return
  log_filter = _OrbaxFilter()
  logger = logging.getLogger('absl')
  logger.addFilter(log_filter)
  try:
    yield
  finally:
    logger.removeFilter(log_filter)
