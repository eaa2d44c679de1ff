"""Scripts of benchmarks/ imported and run in-process by the tests."""

import importlib
import sys

from absl import flags

from helpers import paths

BENCHMARKS = str(paths.REPO / 'benchmarks')


def load(name: str):
  """The module benchmarks/<name>.py."""
  sys.path.insert(0, BENCHMARKS)
  try:
    return importlib.import_module(name)
  finally:
    sys.path.remove(BENCHMARKS)


def run_main(script, *args):
  """The script's main on its own flag values (absl's global ones
  untouched)."""
  flag_values = flags.FlagValues()
  script.define_flags(flag_values)
  rest = flag_values([f'{script.__name__}.py', *args])
  return script.main(rest, flag_values)
