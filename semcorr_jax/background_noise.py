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
import warnings

VERBOSE_ENV = 'SEMCORR_VERBOSE'


def verbose() -> bool:
  """Whether every error, log and traceback is to be shown."""
  return os.environ.get(VERBOSE_ENV, '').strip().lower() not in (
      '', '0', 'false', 'no')


# The traceback frame of the asyncio call that fails on a closed event loop.
_CLOSED_LOOP_CALL = 'call_soon_threadsafe'
_QUIET_HOOK = '_semcorr_quiet_reads'  # marks the installed hook
_NEVER_AWAITED = r"coroutine '.*' was never awaited"


def drop_failed_io_noise() -> None:
  """Drops the leftovers of failed TensorStore reads and writes from stderr.

  When one array of an Orbax restore (or save) fails, the operation fails
  at once while TensorStore's threads finish the other reads or writes.
  Those then report through `sys.unraisablehook` ("Event loop is closed"
  when they call back into the closed loop; "Exception ignored in
  <coroutine ...>" for read coroutines that were never awaited), and
  asyncio logs "... exception was never retrieved" for every read error it
  collects: up to thousands of traceback lines after the error itself
  reached the caller, or after a damaged checkpoint was skipped. Only
  reports of TensorStore errors and of the closed loop are dropped; the
  hook and the log filter are installed once (again if replaced since).
  """
  if verbose():
    return
  if not getattr(sys.unraisablehook, _QUIET_HOOK, False):
    previous = sys.unraisablehook

    def hook(unraisable):
      if not (_closed_loop_callback(unraisable.exc_value,
                                    unraisable.exc_traceback) or
              _tensorstore_error(unraisable.exc_value)):
        previous(unraisable)

    setattr(hook, _QUIET_HOOK, True)
    sys.unraisablehook = hook
  # The same abandoned reads, collected before they started, warn through
  # `warnings` ("coroutine '_read_...' was never awaited").
  warnings.filterwarnings('ignore', message=_NEVER_AWAITED,
                          category=RuntimeWarning)
  asyncio_logger = logging.getLogger('asyncio')
  if _not_a_lost_read_error not in asyncio_logger.filters:
    asyncio_logger.addFilter(_not_a_lost_read_error)


def _closed_loop_callback(error: BaseException | None, tb) -> bool:
  if not (isinstance(error, RuntimeError)
          and str(error) == 'Event loop is closed'):
    return False
  return any(frame.f_code.co_name == _CLOSED_LOOP_CALL
             for frame, _ in traceback.walk_tb(tb))


# TensorStore raises its errors as ValueError('<absl status code>: ...'),
# and not every message names TensorStore ("OUT_OF_RANGE: Error reading ...
# in OCDBT database at local file ...").
_STATUS_CODES = frozenset((
    'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED',
    'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED',
    'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED',
    'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'))


def _tensorstore_error(error: BaseException | None) -> bool:
  """An error of a TensorStore read or write (itself or a cause)."""
  for _ in range(8):
    if error is None:
      return False
    text = str(error)
    if ('tensorstore' in text.lower() or
        text.split(':', 1)[0] in _STATUS_CODES and ':' in text):
      return True
    error = error.__cause__ or error.__context__
  return False


def _not_a_lost_read_error(record: logging.LogRecord) -> bool:
  """False for asyncio's report of a TensorStore error nobody awaited."""
  error = record.exc_info[1] if record.exc_info else None
  return not ('exception was never retrieved' in str(record.msg)
              and _tensorstore_error(error))


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
