"""Alias of benchmarks/throughput.py, the script's old name: same flags, same
output, and its old defaults: bare `--configs` variants are of
configs/sfnet.py, and without `--config` or `--configs` it times `paper` and
`quick`. `sfnet_throughput.py --configs=quick ...` runs
`throughput.py --configs=sfnet:quick ...`; importing this file gives the
`throughput` module's names (`run_one`, `benchmark`, ...).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app  # noqa: E402  pylint: disable=g-import-not-at-top
from absl import flags  # noqa: E402  pylint: disable=g-import-not-at-top

from throughput import *  # noqa: E402,F401,F403  pylint: disable=wildcard-import,g-import-not-at-top
from throughput import CONFIG_DIR  # noqa: E402  pylint: disable=g-import-not-at-top
from throughput import define_flags  # noqa: E402  pylint: disable=g-import-not-at-top
from throughput import main  # noqa: E402  pylint: disable=g-import-not-at-top

CONFIG_FILE = os.path.join(CONFIG_DIR, 'sfnet.py')
CONFIGS = ['paper', 'quick']


def define_alias_flags() -> None:
  """`throughput.define_flags` with this script's old defaults."""
  define_flags()
  flags.FLAGS.set_default('config_file', CONFIG_FILE)
  flags.FLAGS.set_default('configs', CONFIGS)


if __name__ == '__main__':
  define_alias_flags()
  app.run(main)
