"""Command line: `python -m axm_jax.main --config=configs/NAME.py --workdir=DIR [--mode=...]`."""
from collections.abc import Sequence

from absl import app
from absl import flags
from absl import logging
import jax

from axm_jax import cli
from axm_jax import evaluate
from axm_jax import train

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags; only its __main__ block defines them, so the module imports with any other."""
  flags.DEFINE_string('workdir', None, 'Run directory (a local path or gs://bucket/dir): checkpoints, logs, '
                      'results.', required=True)
  flags.DEFINE_enum('mode', 'train_and_eval', ['train_and_eval', 'train', 'eval'],
                    'train_and_eval: train, select on val, test the best checkpoint once; '
                    'train: train with val selection only; eval: evaluate a saved checkpoint.')
  cli.define_config_flag('config', 'Config file defining get_config(): PATH or PATH:ARGUMENT.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.info('process %d/%d, %d local / %d global devices (%s)', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)
  if FLAGS.mode == 'eval':
    evaluate.evaluate(FLAGS.config, FLAGS.workdir)
  else:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir, evaluate_test=FLAGS.mode == 'train_and_eval')


if __name__ == '__main__':
  define_flags()
  cli.run(main, distributed=True)
