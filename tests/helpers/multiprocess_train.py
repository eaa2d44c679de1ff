"""One process of a 2-process training job on 127.0.0.1 (see test_multiprocess).

Usage: multiprocess_train.py PORT PROCESS_ID WORKDIR CONFIG_PATH
"""

import os
import sys

os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'

import jax  # noqa: E402  pylint: disable=g-import-not-at-top

# Shared with the single-process reference run of the test.
OVERRIDES = {'optimizer.name': 'sgd', 'optimizer.lr': 0.1,
             'evals.synthetic.untrained_baseline': False}


def main():
  port, process_id, workdir, config_path = sys.argv[1:5]
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                             num_processes=2, process_id=int(process_id))
  from semcorr_jax import config_files  # pylint: disable=g-import-not-at-top
  from semcorr_jax import train  # pylint: disable=g-import-not-at-top
  config = config_files.load(config_path + ':test', OVERRIDES)
  print(f'process {jax.process_index()}/{jax.process_count()} devices '
        f'{jax.device_count()} local {jax.local_device_count()}', flush=True)
  results = train.train_and_evaluate(config, workdir)
  print('final step', results['step'], flush=True)


if __name__ == '__main__':
  main()
