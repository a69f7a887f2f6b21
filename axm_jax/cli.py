"""The process set-up that every command shares; it defines no flags itself.

A command module defines its flags in a function that only its `__main__` block calls, so that any of them can be
imported together, and runs through `run`:

  if __name__ == '__main__':
    define_flags()
    cli.run(main)
"""
import logging as pylogging
import os
import sys
from collections.abc import Callable, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from axm_jax import checkpointing
from axm_jax import config_files
from axm_jax import preemption
from axm_jax import run as run_lib
from axm_jax import storage
from axm_jax import warm_start

# Errors that say what to fix; shown as one message, without a traceback.
USER_ERRORS = (checkpointing.CheckpointError, storage.StorageError, run_lib.WorkdirLockedError,
               run_lib.ConfigMismatchError, run_lib.CrossDatasetError, warm_start.WarmStartError)

flags.disclaim_key_flags()  # a flag that define_config_flag defines belongs to the command that calls it


class _ConfigFileParser(flags.ArgumentParser):
  """`--config=PATH[:ARGUMENT]` through config_files.load_config; the config comes back locked."""

  def parse(self, argument: str) -> ml_collections.ConfigDict:
    config = config_files.load_config(argument)
    config.lock()
    return config

  def flag_type(self) -> str:
    return 'config object'


def define_config_flag(name: str, help_string: str) -> flags.FlagHolder:
  """ml_collections' config-file flag (with its `--NAME.a.b=value` overrides), loaded by config_files."""
  holder = config_flags.DEFINE_config_file(name, None, help_string, lock_config=True)
  flags.FLAGS[name].parser = _ConfigFileParser()
  return holder


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
  """Reuses compiled XLA programs across runs in ~/.cache/axm_jax/xla; JAX_COMPILATION_CACHE_DIR overrides."""
  if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    jax.config.update('jax_compilation_cache_dir', os.path.expanduser('~/.cache/axm_jax/xla'))


def initialize_distributed() -> None:
  """Joins a multi-process run when the environment describes one.

  JAX_COORDINATOR_ADDRESS (with JAX_NUM_PROCESSES and JAX_PROCESS_ID) selects an explicit cluster, e.g. two
  local processes; on a Cloud TPU pod slice (several TPU_WORKER_HOSTNAMES) JAX detects everything itself.
  Processes other than 0 then log warnings only.
  """
  if 'JAX_COORDINATOR_ADDRESS' in os.environ:
    jax.distributed.initialize(num_processes=int(os.environ['JAX_NUM_PROCESSES']),
                               process_id=int(os.environ['JAX_PROCESS_ID']))
  elif ',' in os.environ.get('TPU_WORKER_HOSTNAMES', ''):
    jax.distributed.initialize()
  else:
    return
  if jax.process_count() > 1 and jax.devices()[0].platform == 'cpu':
    # Only process 0 writes the persistent cache, so with a warm cache it loads programs that the others compile,
    # and CPU collectives (gloo) fail when processes arrive more than 30 s apart.
    jax.config.update('jax_enable_compilation_cache', False)
  if jax.process_index() != 0:
    logging.set_verbosity(logging.WARNING)


def set_up(distributed: bool = False) -> None:
  """The library log filter, no accelerators for TensorFlow, the compilation cache, and `distributed` start-up.

  TensorFlow (tf.data, image decoding) gets no GPU when the command has imported it; it is never imported here.
  """
  logging.get_absl_handler().addFilter(_LibraryInfoFilter())
  if 'tensorflow' in sys.modules:
    sys.modules['tensorflow'].config.set_visible_devices([], 'GPU')  # the accelerators belong to JAX
  enable_compilation_cache()
  if distributed:
    initialize_distributed()
  logging.debug('persistent compilation cache: %s', jax.config.jax_compilation_cache_dir
                if jax.config.jax_enable_compilation_cache else 'off')


def run(main: Callable[[Sequence[str]], int | None], distributed: bool = False) -> None:
  """absl `app.run(main)` after set_up(distributed), with parse_flags; main's return value is the exit status.

  A user error (USER_ERRORS) ends the process with the one line `FATAL <error>` (status 1); a preemption with
  128 + its signal, so that a preempted run never looks finished.
  """

  def set_up_and_main(argv: Sequence[str]) -> int | None:
    set_up(distributed)
    try:
      return main(argv)
    except preemption.Preempted as stopped:
      sys.exit(128 + stopped.signal_number)
    except USER_ERRORS as error:
      sys.exit(f'FATAL {error}')

  app.run(set_up_and_main, flags_parser=parse_flags)
