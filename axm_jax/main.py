"""Command line: `python -m axm_jax.main --config=configs/NAME.py --workdir=DIR [--mode=...]`."""
import logging as pylogging
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags
import tensorflow as tf

from axm_jax import checkpointing
from axm_jax import evaluate
from axm_jax import preemption
from axm_jax import run
from axm_jax import storage
from axm_jax import train

# Errors that say what to fix; shown as one message, without a traceback.
USER_ERRORS = (checkpointing.CheckpointError, storage.StorageError, run.WorkdirLockedError, run.ConfigMismatchError)

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (a local path or gs://bucket/dir): checkpoints, '
                               'logs, results.', required=True)
_MODE = flags.DEFINE_enum('mode', 'train_and_eval', ['train_and_eval', 'train', 'eval'],
                          'train_and_eval: train, select on val, test the best checkpoint once; '
                          'train: train with val selection only; eval: evaluate a saved checkpoint.')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file defining get_config().',
                                          lock_config=True)


def initialize_distributed() -> None:
  """Joins a multi-process run when the environment describes one.

  JAX_COORDINATOR_ADDRESS (with JAX_NUM_PROCESSES and JAX_PROCESS_ID) selects an explicit cluster, e.g. two
  local processes; on a Cloud TPU pod slice (several TPU_WORKER_HOSTNAMES) JAX detects everything itself.
  """
  if 'JAX_COORDINATOR_ADDRESS' in os.environ:
    jax.distributed.initialize(num_processes=int(os.environ['JAX_NUM_PROCESSES']),
                               process_id=int(os.environ['JAX_PROCESS_ID']))
  elif ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''):
    jax.distributed.initialize()


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing that names an unknown `--config.a.b` field instead of showing a traceback."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as error:
    missing = str(error).strip('"\'')
    culprits = [a for a in argv if a.startswith('--config.') and missing in a.split('=')[0].split('.')]
    sys.exit(f'FATAL unknown config field {missing!r} in {" ".join(culprits) or argv}: '
             'every field must exist in the get_config() of --config.')


class _LibraryInfoFilter(pylogging.Filter):
  """Drops the INFO chatter of orbax, TFDS and fsspec, and orbax's notes on the read-only managers of evaluation."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    if '/orbax/' in record.pathname and 'read only' in record.getMessage().replace('_', ' '):
      return False
    return record.levelno >= pylogging.WARNING or not any(
        library in record.pathname for library in ('/orbax/', '/tensorflow_datasets/', '/fsspec/', '/gcsfs/'))


def enable_compilation_cache() -> None:
  """Reuses compiled XLA programs across runs (resume, evaluation); JAX_COMPILATION_CACHE_DIR overrides."""
  if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser('~/.cache/axm_jax/xla'))


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  enable_compilation_cache()
  logging.get_absl_handler().addFilter(_LibraryInfoFilter())
  tf.config.set_visible_devices([], 'GPU')  # tf.data only; the accelerators belong to JAX.
  initialize_distributed()
  if jax.process_count() > 1 and jax.devices()[0].platform == 'cpu':
    # Only process 0 writes the persistent cache, so with a warm cache it loads programs that the others compile,
    # and CPU collectives (gloo) fail when processes arrive more than 30 s apart.
    jax.config.update('jax_enable_compilation_cache', False)
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)
  logging.info('process %d/%d, %d local / %d global devices (%s)', jax.process_index(),
               jax.process_count(), jax.local_device_count(), jax.device_count(), jax.devices()[0].platform)
  config = _CONFIG.value
  try:
    if _MODE.value == 'eval':
      evaluate.evaluate(config, _WORKDIR.value)
    else:
      train.train_and_evaluate(config, _WORKDIR.value, evaluate_test=_MODE.value == 'train_and_eval')
  except preemption.Preempted as stopped:
    sys.exit(128 + stopped.signal_number)  # not 0: a preempted run must not look finished
  except USER_ERRORS as error:
    sys.exit(f'FATAL {error}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
