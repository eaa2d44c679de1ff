"""A Google Cloud Storage emulator on 127.0.0.1 for `gs://` workdir tests.

`gcs_emulator(bucket)` starts `gcp-storage-emulator` (in memory, in a thread
of this process, on a free port of 127.0.0.1) and points every client the
package uses at it, through the environment:

* TensorStore, which writes Orbax's arrays (`TENSORSTORE_GCS_HTTP_URL`; a
  fixed token `GOOGLE_AUTH_TOKEN_FOR_TESTING`, so no credentials are
  looked up);
* `etils.epath`, which writes every other file, through fsspec's `gcsfs`
  (`EPATH_USE_TF=false`: with TensorFlow installed epath would use
  `tf.io.gfile`, whose GCS endpoint is fixed; `STORAGE_EMULATOR_HOST`,
  anonymous access, no listing cache, no gRPC bucket-type probe);
* `google-cloud-storage`, which Orbax asks whether a bucket has a
  hierarchical namespace before it deletes a checkpoint
  (`STORAGE_EMULATOR_HOST`).

The Compute Engine metadata server is pointed at a closed local port, so no
credential lookup leaves the machine.

The emulator lacks what TensorStore's OCDBT format relies on for its
manifest: object generations in download headers (`x-goog-generation`) and
the generation preconditions (`ifGenerationMatch`, `ifGenerationNotMatch`)
of reads, uploads and deletes. `_with_generations` adds them, as GCS
documents them, around the emulator's object routes (its server handles
one request at a time, so a check and its write cannot interleave).

TensorFlow's own GCS file system cannot be pointed anywhere else: what goes
through it (TensorBoard event files) is sent to a local folder instead by
`tf_gcs_to_local`, which the caller enables when it needs TensorFlow.

`gcp-storage-emulator` and `gcsfs` are imported where they are used: a test
that needs them is skipped where they are not installed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from http import HTTPStatus
import json
import logging
import os
import sys
from typing import Iterator

from etils.epath import backend as epath_backend
from etils.epath import gpath
import fsspec
from orbax.checkpoint._src.path import gcs_utils
import pytest

# The emulator's routes log every missing object (a normal probe) at ERROR.
_QUIET_LOGGERS = ('gcp_storage_emulator', 'gcp_storage_emulator.storage',
                  'gcp_storage_emulator.server')

CLOSED_PORT = '127.0.0.1:9'  # discard: nothing listens there


def _precondition_failed(request, storage) -> int | None:
  """The HTTP status GCS answers when the request's generation
  preconditions fail (412, or 304 for a read), else None."""
  # pylint: disable-next=g-import-not-at-top
  from gcp_storage_emulator.exceptions import NotFound
  name = (request.params or {}).get('object_id') or (
      request.query.get('name') or [None])[0]
  if not name:
    return None
  try:
    current = int(storage.get_file_obj(request.params['bucket_name'],
                                       name)['generation'])
  except NotFound:
    current = None
  match = request.query.get('ifGenerationMatch')
  if match is not None:
    wanted = int(match[0])
    if current != (wanted or None):
      return 412
  not_match = request.query.get('ifGenerationNotMatch')
  if not_match is not None and current == int(not_match[0]):
    return 304 if request.method == 'GET' else 412
  return None


def _with_generations(handler):
  """`handler` with GCS's generation preconditions and headers."""

  def wrapped(request, response, storage, *args, **kwargs):
    status = _precondition_failed(request, storage)
    if status is not None:
      response.status = HTTPStatus(status)
      return None
    result = handler(request, response, storage, *args, **kwargs)
    media = request.method == 'GET' and (
        'download' in request.path or
        (request.query.get('alt') or [''])[0] == 'media')
    if media and response.status.value in (200, 206):
      obj = storage.get_file_obj(request.params['bucket_name'],
                                 request.params['object_id'])
      response['x-goog-generation'] = str(obj['generation'])
      response['x-goog-metageneration'] = str(obj['metageneration'])
    return result

  wrapped.with_generations = True
  return wrapped


def _add_generations(server_module) -> None:
  """Wraps the object routes of the emulator's route table (once)."""
  objects = server_module.objects
  wanted = {objects.get, objects.download, objects.insert, objects.delete}
  for _, handlers in server_module.HANDLERS:
    for method, handler in handlers.items():
      if handler in wanted:
        handlers[method] = _with_generations(handler)


def _environment(url: str) -> dict[str, str]:
  return {
      'STORAGE_EMULATOR_HOST': url,
      'TENSORSTORE_GCS_HTTP_URL': url,
      'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',
      'EPATH_USE_TF': 'false',
      'FSSPEC_GS': json.dumps({'token': 'anon',
                               'use_listings_cache': False}),
      'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',
      'NO_GCE_CHECK': 'true',
      'GCE_METADATA_HOST': CLOSED_PORT,
      'GCE_METADATA_IP': CLOSED_PORT,
      'GCE_METADATA_ROOT': f'http://{CLOSED_PORT}',
      'GOOGLE_CLOUD_PROJECT': 'test-project',
  }


def _reset_clients() -> None:
  """Forgets the clients built for another endpoint (epath and fsspec cache
  their file systems; Orbax its bucket handles)."""
  # pylint: disable=g-import-not-at-top,protected-access
  from gcsfs import core
  epath_backend.fsspec_backend._get_filesystem.cache_clear()
  gcs_utils.get_bucket.cache_clear()
  core.GCSFileSystem.clear_instance_cache()


@contextlib.contextmanager
def _plain_gcsfs() -> Iterator[None]:
  """fsspec's gs:// is gcsfs's plain JSON-API client: its default
  (`GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`, read when gcsfs is imported) first
  asks a gRPC service for the bucket's type, which an emulator lacks."""
  # pylint: disable-next=g-import-not-at-top
  from gcsfs import core
  saved = {p: fsspec.registry.get(p) for p in ('gs', 'gcs')}
  for protocol in saved:
    fsspec.register_implementation(protocol, core.GCSFileSystem,
                                   clobber=True)
  try:
    yield
  finally:
    for protocol, cls in saved.items():
      if cls is None:  # pylint: disable-next=protected-access
        sys.modules['fsspec.registry']._registry.pop(protocol, None)
      else:
        fsspec.register_implementation(protocol, cls, clobber=True)


@contextlib.contextmanager
def gcs_emulator(bucket: str = 'test-bucket') -> Iterator[str]:
  """Runs the emulator with `bucket`; yields its URL (http://127.0.0.1:N).

  Both `gcp-storage-emulator` and `gcsfs` are in the test extra: a missing
  one fails the test (ImportError) rather than skipping it.
  """
  server_lib = importlib.import_module('gcp_storage_emulator.server')
  importlib.import_module('gcsfs')
  if not any(getattr(h, 'with_generations', False)
             for _, handlers in server_lib.HANDLERS
             for h in handlers.values()):
    _add_generations(server_lib)
  for name in _QUIET_LOGGERS:
    logging.getLogger(name).setLevel(logging.CRITICAL)
  server = server_lib.create_server('127.0.0.1', 0, in_memory=True,
                                    default_bucket=bucket)
  server.start()
  # pylint: disable-next=protected-access
  port = server._api._httpd.server_address[1]  # the port the OS chose
  url = f'http://127.0.0.1:{port}'
  with pytest.MonkeyPatch.context() as mp:
    for key, value in _environment(url).items():
      mp.setenv(key, value)
    # A client that hung up early is no error worth a traceback.
    # pylint: disable-next=protected-access
    mp.setattr(server._api._httpd, 'handle_error', lambda *args: None)
    # epath caches whether gs:// goes through TensorFlow on its first use
    # (any earlier test's): a fresh cache reads EPATH_USE_TF=false above,
    # and the original one comes back with the other patches.
    # pylint: disable-next=protected-access
    uncached = gpath._is_tf_installed.__wrapped__
    mp.setattr(gpath, '_is_tf_installed', functools.cache(uncached))
    with _plain_gcsfs():
      _reset_clients()
      try:
        yield url
      finally:
        _reset_clients()
        server.stop()


@contextlib.contextmanager
def tf_gcs_to_local(mirror: str) -> Iterator[list[str]]:
  """TensorFlow's gs:// paths go to the local folder `mirror` instead.

  Covers what reaches TensorFlow's file system from Python: summary
  writers (`tf.summary.create_file_writer`, also under CLU) and
  `tf.io.gfile`. Yields the gs:// paths that were asked for.
  """
  tf = pytest.importorskip('tensorflow')
  asked = []

  def local(path):
    path = os.fspath(path)
    if path.startswith('gs://'):
      asked.append(path)
      return os.path.join(mirror, path[len('gs://'):])
    return path

  def wrap(fn, *path_args):
    def wrapped(*args, **kwargs):
      args = [local(a) if i in path_args else a for i, a in enumerate(args)]
      return fn(*args, **kwargs)
    return wrapped

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(tf.summary, 'create_file_writer',
               wrap(tf.summary.create_file_writer, 0))
    for name in ('exists', 'isdir', 'listdir', 'makedirs', 'remove', 'walk',
                 'glob', 'GFile'):
      mp.setattr(tf.io.gfile, name, wrap(getattr(tf.io.gfile, name), 0))
    mp.setattr(tf.io.gfile, 'rename', wrap(tf.io.gfile.rename, 0, 1))
    mp.setattr(tf.data, 'TFRecordDataset', wrap(tf.data.TFRecordDataset, 0))
    mp.setattr(tf.io, 'TFRecordWriter', wrap(tf.io.TFRecordWriter, 0))
    yield asked
