"""Alias of benchmarks/throughput.py, the script's old name: same flags, same
output. `sfnet_throughput.py --configs=quick ...` runs
`throughput.py --configs=quick ...`; importing this file gives the
`throughput` module's names (`run_one`, `benchmark`, ...).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from throughput import *  # noqa: E402,F401,F403  pylint: disable=wildcard-import,g-import-not-at-top
from throughput import define_flags  # noqa: E402  pylint: disable=g-import-not-at-top
from throughput import main  # noqa: E402  pylint: disable=g-import-not-at-top

if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)
