"""Thin absl command-line tools (console scripts declared in pyproject.toml).

* `semcorr-train` (`cli.train`): train a method from a config.
* `semcorr-eval` (`cli.evaluate`): score a trained workdir beside its
  untrained twin on a benchmark; JSON + Markdown + pictures in workdir/eval.
* `semcorr-match` (`cli.match`): match two image files with a trained model
  (no TensorFlow needed).
* `semcorr-import-sfnet`, `-ncnet`, `-cats` (`cli.import_*`): an official
  release as a workdir.
* `semcorr-fetch-weights` (`cli.fetch_weights`): torchvision's
  ImageNet ResNets as `.npz`.

Every tool's `--help` prints its module docstring (with examples) and its
own flags (`cli.flag_parsing`); `--config=sfnet:quick` names a packaged
config. User errors, flag errors included, print one line
`error: <message>` (with the closest right answer where there is one) and
exit with status 1 (`cli.common`).

Importing this package (every tool does, before anything imports TensorFlow)
keeps TensorFlow's start-up logs off stderr: `TF_CPP_MIN_LOG_LEVEL` defaults
to 2, and the first `import tensorflow` runs with fd 2 held (`_QuietImport`).
While TensorFlow's libraries load, their static initialisers log through
Abseil before TensorFlow has applied `TF_CPP_MIN_LOG_LEVEL`, so on CPUs with
AVX512-VNNI / AMX (Intel Xeons) every process printed "oneDNN custom
operations are on" once per library that links it, each after Abseil's
"All log messages before absl::InitializeLog() ..." warning. No environment
variable reaches those messages (`TF_ENABLE_ONEDNN_OPTS=0` would only by
turning oneDNN off, which changes TensorFlow's numerics), so the held output
is written back less the records below `TF_CPP_MIN_LOG_LEVEL`.
"""

from __future__ import annotations

import importlib.abc
import os
import re
import sys
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

_ABSL_PRE_INIT = ('WARNING: All log messages before absl::InitializeLog() is '
                  'called are written to STDERR')
# An Abseil log record, `I0000 00:00:1796471993.802863    7149 port.cc:153] `
# before absl::InitializeLog (seconds since the epoch), `I0102 03:04:05.6 ...`
# after.
_ABSL_RECORD = re.compile(r'([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] ')
_SEVERITIES = 'IWEF'  # TF_CPP_MIN_LOG_LEVEL 0..3


def min_log_level() -> int:
  """`TF_CPP_MIN_LOG_LEVEL` as TensorFlow reads it (0 when unset or bad)."""
  try:
    return int(os.environ.get('TF_CPP_MIN_LOG_LEVEL', '0'))
  except ValueError:
    return 0


def filter_native_logs(text: str, level: int) -> str:
  """Drops Abseil records below `level` and Abseil's pre-init warning.

  Args:
    text: what native code wrote to stderr.
    level: TF_CPP_MIN_LOG_LEVEL; 0 keeps everything.

  Returns:
    `text` without those lines (every other line kept, in order).
  """
  if level <= 0:
    return text
  kept = []
  for line in text.splitlines(keepends=True):
    record = _ABSL_RECORD.match(line)
    if line.rstrip('\r\n') == _ABSL_PRE_INIT or (
        record and _SEVERITIES.index(record.group(1)) < level):
      continue
    kept.append(line)
  return ''.join(kept)


def _exec_with_stderr_filtered(exec_module):
  """Wraps a loader's `exec_module` to hold fd 2 and write back the rest."""

  def wrapped(module):
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
      os.dup2(held.fileno(), 2)
      try:
        exec_module(module)
      finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        held.seek(0)
        text = filter_native_logs(held.read().decode(errors='replace'),
                                  min_log_level())
        if text:
          os.write(2, text.encode())

  return wrapped


class _QuietImport(importlib.abc.MetaPathFinder):
  """Runs the first import of `tensorflow` with fd 2 held; then steps aside."""

  def find_spec(self, fullname, path, target=None):
    if fullname != 'tensorflow':
      return None
    sys.meta_path.remove(self)
    for finder in sys.meta_path:
      find = getattr(finder, 'find_spec', None)
      spec = find(fullname, path, target) if find else None
      if spec is not None:
        if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
          spec.loader.exec_module = _exec_with_stderr_filtered(
              spec.loader.exec_module)
        return spec
    return None


if 'tensorflow' not in sys.modules and not any(
    isinstance(f, _QuietImport) for f in sys.meta_path):
  sys.meta_path.insert(0, _QuietImport())
