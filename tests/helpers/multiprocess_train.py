"""One process of a 2-process training job on 127.0.0.1 (see test_multiprocess).

Usage: multiprocess_train.py PORT PROCESS_ID WORKDIR CONFIG_PATH
"""

import os
import sys

os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'

import jax  # noqa: E402  pylint: disable=g-import-not-at-top


def main():
  port, process_id, workdir, config_path = sys.argv[1:5]
  jax.distributed.initialize(coordinator_address=f'127.0.0.1:{port}',
                             num_processes=2, process_id=int(process_id))
  import importlib.util  # pylint: disable=g-import-not-at-top
  from semcorr_jax import train  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('cfg', config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('test')
  with config.unlocked():
    config.optimizer.name = 'sgd'
    config.optimizer.lr = 0.1
    config.eval.untrained = False
  print(f'process {jax.process_index()}/{jax.process_count()} devices '
        f'{jax.device_count()} local {jax.local_device_count()}', flush=True)
  results = train.train_and_evaluate(config, workdir)
  print('final step', results['step'], flush=True)


if __name__ == '__main__':
  main()
