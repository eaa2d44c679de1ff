"""What `background_noise` drops from stderr, and what it keeps."""

import logging
import warnings

import pytest

from semcorr_jax import background_noise

_OCDBT_READ = ('OUT_OF_RANGE: Error reading "params.backbone.layer4_0.conv1.'
               'kernel/0.0.0.0" in OCDBT database at local file "/tmp/ckpt/'
               'state/": Requested byte range [4644461, 4674793) is not valid '
               'for value of size 2338816')


def _asyncio_record(error):
  return logging.LogRecord(
      'asyncio', logging.ERROR, __file__, 1,
      'Future exception was never retrieved\nfuture: %s', ('<Future>',),
      (type(error), error, None))


@pytest.mark.parametrize('message', [
    _OCDBT_READ,
    'DATA_LOSS: Error reading local file "/tmp/x/d/abc": Unexpected end',
    'Error opening "zarr" driver: [tensorstore_spec=...]',
])
def test_lost_tensorstore_reads_are_dropped(message):
  record = _asyncio_record(ValueError(message))
  assert not background_noise._not_a_lost_read_error(record)


def test_a_tensorstore_error_as_the_cause_is_dropped():
  try:
    try:
      raise ValueError(_OCDBT_READ)
    except ValueError as cause:
      raise RuntimeError('restore failed') from cause
  except RuntimeError as error:
    record = _asyncio_record(error)
  assert not background_noise._not_a_lost_read_error(record)


@pytest.mark.parametrize('message', [
    'division by zero',
    'Note: this is not a status code',
    'OUT_OF_RANGE',  # a code without a message is no TensorStore error
])
def test_other_lost_errors_are_kept(message):
  record = _asyncio_record(ValueError(message))
  assert background_noise._not_a_lost_read_error(record)


def test_other_asyncio_reports_of_tensorstore_errors_are_kept():
  record = logging.LogRecord('asyncio', logging.ERROR, __file__, 1,
                             'Task was destroyed but it is pending!', (),
                             (ValueError, ValueError(_OCDBT_READ), None))
  assert background_noise._not_a_lost_read_error(record)


def test_never_awaited_read_coroutines_are_dropped():
  background_noise.drop_failed_io_noise()
  with warnings.catch_warnings(record=True) as caught:
    # catch_warnings keeps the installed filters; 'default' is appended.
    warnings.warn("coroutine '_read_array_index_and_device_put' was never "
                  'awaited', RuntimeWarning)
    warnings.warn('something else', RuntimeWarning)
  assert [str(w.message) for w in caught] == ['something else']
