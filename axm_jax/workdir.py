"""The run directory: atomic writes, storage errors, the one-run-per-workdir lock, resumable config changes."""
from collections.abc import Iterator
import contextlib
import json
import os
import socket
import threading
import time
from typing import Any

from absl import logging
import ml_collections
import tensorflow as tf

CONFIG_FILE = 'config.json'
LOCK_FILE = 'run.lock'
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0  # a lock of another host whose heartbeat is older than this is stale
# Fields of config.data / config.model that a resumed run may change: where files are, how evaluation batches,
# the compute dtype and what the parameters were initialised from. Every other data or model field, and the seed
# that fixes the data order, changes what the checkpoints mean.
RESUMABLE_MODEL_DATA_FIELDS = frozenset({
    'data.data_dir', 'data.manual_dir', 'data.eval_batch_size', 'model.dtype', 'model.pretrained_visual',
    'model.pretrained_words', 'model.affinity_scale_init', 'model.affinity_bias_init',
    'model.contrastive_temperature'})
FIXED_SECTIONS = ('data', 'model')
FIXED_FIELDS = frozenset({'train.seed'})
OS_REASONS = ('No space left on device', 'Disk quota exceeded', 'Read-only file system', 'Permission denied')


class StorageError(OSError):
  """The workdir cannot be written (read-only, full, no permission)."""


class WorkdirLockedError(RuntimeError):
  """Another live run trains in this workdir."""


class ConfigMismatchError(ValueError):
  """The command's config changes the model or the data of the run in the workdir."""


def atomic_write(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file and a rename, so `path` is either old or new, never cut."""
  temporary = f'{path}.tmp'
  try:
    with tf.io.gfile.GFile(temporary, 'w') as f:
      f.write(text)
    tf.io.gfile.rename(temporary, path, overwrite=True)
  except (OSError, tf.errors.OpError) as error:
    with contextlib.suppress(OSError, tf.errors.OpError):
      tf.io.gfile.remove(temporary)
    raise StorageError(f'cannot write {path}: {describe_error(error)}. Files written earlier are unchanged; free space '
                       'or fix the permissions and rerun the same command.') from error


def ensure_writable(workdir: str) -> None:
  """Creates the workdir and proves it takes a file, or raises a StorageError naming it."""
  probe = os.path.join(workdir, '.write_probe')
  try:
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(probe, 'w') as f:
      f.write('ok')
    tf.io.gfile.remove(probe)
  except (OSError, tf.errors.OpError) as error:
    raise StorageError(f'cannot write to the workdir {workdir}: {describe_error(error)}. Pass a writable --workdir, or '
                       'free space / fix its permissions.') from error


def describe_error(error: BaseException) -> str:
  """The operating system's reason when the message carries one, else the message's first line."""
  text = str(error).strip() or type(error).__name__
  for reason in OS_REASONS:
    if reason in text:
      return reason
  return text.splitlines()[0][:300]


def check_config_compatible(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Refuses a config that changes the model or the data of the run saved in `workdir`; logs other changes."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return
  with tf.io.gfile.GFile(path) as f:
    saved = _flatten(json.load(f))
  current = _flatten(json.loads(config.to_json()))
  changed = sorted(name for name in saved.keys() & current.keys() if saved[name] != current[name])
  fixed = [name for name in changed if _is_fixed(name)]
  if fixed:
    lines = '\n'.join(f'  config.{name}: {saved[name]!r} in the workdir, {current[name]!r} now' for name in fixed)
    raise ConfigMismatchError(
        f'{path} was written by a run with another model or data; its checkpoints cannot continue with:\n{lines}\n'
        'Use a new --workdir, or rerun with the values of the workdir.')
  for name in changed:
    logging.info('config.%s changed from %r to %r since the run in %s started.', name, saved[name], current[name],
                 workdir)
  for name in sorted(current.keys() - saved.keys()):  # options added to the code since the run started
    logging.info('config.%s is new since the run in %s started; using %r.', name, workdir, current[name])


def _is_fixed(name: str) -> bool:
  return name in FIXED_FIELDS or (name.split('.')[0] in FIXED_SECTIONS and name not in RESUMABLE_MODEL_DATA_FIELDS)


def _flatten(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


@contextlib.contextmanager
def exclusive_run(workdir: str) -> Iterator[None]:
  """Holds DIR/run.lock while training: a second run refuses to start, a dead run's lock is taken over."""
  path = os.path.join(workdir, LOCK_FILE)
  holder = _read_lock(path)
  if holder is not None:
    if _is_alive(holder):
      raise WorkdirLockedError(
          f'{workdir} is in use by another run (host {holder.get("host")}, pid {holder.get("pid")}, started '
          f'{holder.get("started")}). Wait for it to finish or stop it, or pass another --workdir.')
    logging.warning('Taking over the stale lock %s of a run that is no longer running (host %s, pid %s).', path,
                    holder.get('host'), holder.get('pid'))
    with contextlib.suppress(OSError, tf.errors.OpError):
      tf.io.gfile.remove(path)
  mine = _create_lock(path, workdir)
  stop = threading.Event()
  heartbeat = threading.Thread(target=_beat, args=(path, mine, stop), daemon=True)
  heartbeat.start()
  try:
    yield
  finally:
    stop.set()
    heartbeat.join()
    if (_read_lock(path) or {}).get('token') == mine['token']:
      with contextlib.suppress(OSError, tf.errors.OpError):
        tf.io.gfile.remove(path)


def _create_lock(path: str, workdir: str) -> dict[str, Any]:
  now = time.time()
  mine = {'host': socket.gethostname(), 'pid': os.getpid(), 'process_start': _process_start(os.getpid()),
          'started': time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(now)), 'heartbeat': now,
          'token': f'{socket.gethostname()}:{os.getpid()}:{now}'}
  if '://' in path:  # object stores have no exclusive create; the check above is the guard
    atomic_write(path, json.dumps(mine))
    return mine
  try:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
  except FileExistsError:
    holder = _read_lock(path) or {}
    raise WorkdirLockedError(f'{workdir} is in use by another run (host {holder.get("host")}, pid '
                             f'{holder.get("pid")}) that started at the same moment; pass another --workdir.')
  except OSError as error:
    raise StorageError(f'cannot write {path}: {describe_error(error)}.') from error
  with os.fdopen(descriptor, 'w') as f:
    f.write(json.dumps(mine))
  return mine


def _beat(path: str, mine: dict[str, Any], stop: threading.Event) -> None:
  while not stop.wait(HEARTBEAT_S):
    with contextlib.suppress(StorageError):
      atomic_write(path, json.dumps(dict(mine, heartbeat=time.time())))


def _read_lock(path: str) -> dict[str, Any] | None:
  try:
    with tf.io.gfile.GFile(path) as f:
      return json.loads(f.read())
  except tf.errors.NotFoundError:
    return None
  except (ValueError, OSError, tf.errors.OpError):
    return {'host': 'unknown', 'pid': 'unknown', 'heartbeat': 0.0}  # unreadable (writes are atomic): stale


def _is_alive(holder: dict[str, Any]) -> bool:
  if holder.get('host') == socket.gethostname() and isinstance(holder.get('pid'), int):
    if holder.get('process_start') is not None:
      return _process_start(holder['pid']) == holder['process_start']
    try:
      os.kill(holder['pid'], 0)
    except ProcessLookupError:
      return False
    except PermissionError:
      pass  # it exists, under another user
    return True
  return time.time() - float(holder.get('heartbeat', 0.0)) < STALE_AFTER_S


def _process_start(pid: int) -> int | None:
  """The kernel's start time of `pid` (tells a live process from a later one with the same pid)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return int(f.read().rsplit(')', 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None
