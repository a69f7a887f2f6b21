"""The run directory: its layout, its files, the one-run-per-workdir lock, and opening a trained run.

No other module builds a path inside a workdir. The workdir is a local folder or a `gs://` URI; every read and
write goes through axm_jax.storage.

  config.json                       the full config of the run
  tokenizer.model, label_map.json   the sentencepiece model and person id -> class map the checkpoints need
  checkpoints/<step>/               periodic checkpoints (checkpointing.Checkpoints)
  checkpoints_best/<step>/          the best checkpoint by val
  checkpoints_damaged/<step>/       checkpoints that no longer restore, moved aside
  metrics.jsonl                     one JSON object per evaluation
  time_budget.json                  the step count a time budget was turned into
  run.lock                          while a run trains: host, pid, heartbeat
  tb/                               TensorBoard events
  eval/<split>_<step>.*             evaluation reports and pictures
  eval/<dataset>_<split>_<step>.*   the same of a cross-dataset evaluation (config.eval.dataset)
"""
from collections.abc import Iterator
import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
from typing import Any

from absl import logging
from etils import epath
from flax import linen as nn
import ml_collections

from axm_jax import checkpointing
from axm_jax import storage
from axm_jax.data import tokenizer as tokenizer_lib
from axm_jax.models import factory

PyTree = Any
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0  # a lock of another host whose heartbeat is older than this is stale
# Config fields newer than some saved runs, with the values that reproduce what those runs did.
FIELDS_ADDED_LATER = {
    'model.architecture': 'axm_net', 'model.dual_encoder_channels': (32, 64, 128, 256),
    'model.dual_encoder_text_channels': 256, 'model.contrastive_temperature': 0.02,
    'model.learn_temperature': False, 'loss.sdm_weight': 0.0, 'loss.itc_weight': 0.0,
    'loss.contrastive_temperature': 0.02, 'loss.learn_temperature': False, 'train.time_budget_minutes': 0.0,
    'model.init_from': '', 'model.plain_branch': '', 'eval.dataset': '', 'eval.max_unknown_token_fraction': 0.05,
    'model.text_attention_zero_init': False, 'model.zero_gamma': True}
# Fields of config.data / config.model that a resumed run may change: where files are, how evaluation batches,
# the compute dtype and what the parameters were initialised from. Every other data or model field, and the seed
# that fixes the data order, changes what the checkpoints mean.
RESUMABLE_MODEL_DATA_FIELDS = frozenset({
    'data.data_dir', 'data.manual_dir', 'data.eval_batch_size', 'model.dtype', 'model.pretrained_visual',
    'model.pretrained_words', 'model.init_from', 'model.affinity_scale_init', 'model.affinity_bias_init',
    'model.contrastive_temperature', 'model.text_attention_zero_init', 'model.zero_gamma'})
FIXED_SECTIONS = ('data', 'model')
FIXED_FIELDS = frozenset({'train.seed'})
# What a command that evaluates a trained run may set: the eval section and where this machine keeps the data.
MACHINE_DATA_FIELDS = ('data_dir', 'manual_dir', 'eval_batch_size')


class WorkdirLockedError(RuntimeError):
  """Another live run trains in this workdir."""


class ConfigMismatchError(ValueError):
  """The command's config changes the model or the data of the run in the workdir."""


class CrossDatasetError(ValueError):
  """config.eval.dataset asks for an evaluation whose result would be meaningless."""


class RunDirectory:
  """The paths of one run directory."""

  def __init__(self, workdir: str | os.PathLike):
    self.root = storage.path(workdir)
    self.config = self.root / 'config.json'
    self.tokenizer = self.root / 'tokenizer.model'
    self.label_map = self.root / 'label_map.json'
    self.periodic_checkpoints = self.root / 'checkpoints'
    self.best_checkpoints = self.root / 'checkpoints_best'
    self.damaged_checkpoints = self.root / 'checkpoints_damaged'
    self.metrics = self.root / 'metrics.jsonl'
    self.time_budget = self.root / 'time_budget.json'
    self.lock = self.root / 'run.lock'
    self.tensorboard = self.root / 'tb'
    self.eval = self.root / 'eval'

  def __str__(self) -> str:
    return os.fspath(self.root)

  def eval_report(self, split_name: str, step: int, suffix: str, dataset: str = '') -> epath.Path:
    """eval/<split>_<step><suffix>, e.g. suffix '.json' or '_cmc.png'; a cross-dataset evaluation's
    (config.eval.dataset, '/' written '-') eval/<dataset>_<split>_<step><suffix>."""
    prefix = f'{dataset.replace("/", "-")}_' if dataset else ''
    return self.eval / f'{prefix}{split_name}_{step}{suffix}'

  def checkpoints(self, keep: int) -> checkpointing.Checkpoints:
    return checkpointing.Checkpoints(self.periodic_checkpoints, self.best_checkpoints, self.damaged_checkpoints, keep)

  def restore_variables(self, which: str | int = 'best',
                        choose_another: str = checkpointing.CHOOSE_ANOTHER) -> tuple[int, PyTree]:
    """{'params', 'batch_stats'} as host arrays at checkpoint 'best' (else latest), 'latest' or a step."""
    return checkpointing.restore_variables(self.best_checkpoints, self.periodic_checkpoints, which, choose_another)

  def checkpoint_steps(self) -> list[int]:
    """The steps of its periodic and best checkpoints, sorted."""
    return checkpointing.saved_steps(self.best_checkpoints, self.periodic_checkpoints)


# Files of a run.

def save_config(directory: RunDirectory, config: ml_collections.ConfigDict) -> None:
  storage.atomic_write(directory.config, config.to_json(indent=2))


def load_config(directory: RunDirectory) -> ml_collections.ConfigDict:
  """The config the run was trained with; fields added to the code since then read as before."""
  try:
    tree = json.loads(directory.config.read_text())
  except FileNotFoundError:
    raise FileNotFoundError(
        f'{directory.config} not found: --workdir must be a directory written by training.') from None
  for name, value in FIELDS_ADDED_LATER.items():
    section, field = name.split('.')
    tree.setdefault(section, {}).setdefault(field, value)
  return ml_collections.ConfigDict(tree)


def evaluation_config(run_config: ml_collections.ConfigDict,
                      command_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The run's config with the command's eval section and data location / eval batch size.

  With config.eval.dataset ('NAME' or 'synth_pedes/BUILDER_CONFIG'), that dataset's name and builder config
  replace the run's: a cross-dataset evaluation of the run's model and tokenizer at the run's image size.
  """
  merged = ml_collections.ConfigDict(run_config.to_dict())
  merged.eval = ml_collections.ConfigDict(command_config.eval.to_dict())
  for field in MACHINE_DATA_FIELDS:
    merged.data[field] = command_config.data[field]
  dataset = command_config.eval.dataset
  if dataset:
    _check_cross_dataset_image_size(run_config, command_config)
    name, _, builder_config = dataset.partition('/')
    merged.data.name, merged.data.builder_config = name, builder_config or 'default'
  return merged


def _check_cross_dataset_image_size(run_config: ml_collections.ConfigDict,
                                    command_config: ml_collections.ConfigDict) -> None:
  """Refuses a cross-dataset evaluation whose command asks for another image size than the run was trained at."""
  trained, asked = tuple(run_config.data.image_size), tuple(command_config.data.image_size)
  if asked != trained:
    raise CrossDatasetError(
        f'config.eval.dataset = {command_config.eval.dataset!r}: config.data.image_size is {asked} in the command, '
        f'{trained} in the run; its model is evaluated at the size it was trained at (its stripes and learned maps '
        "fix it), and the other dataset's images are resized to it. Rerun with "
        f'--config.data.image_size="{trained}".')


def save_label_map(directory: RunDirectory, label_map: dict[int, int]) -> None:
  storage.atomic_write(directory.label_map, json.dumps({str(k): int(v) for k, v in label_map.items()}, indent=2))


def save_tokenizer(directory: RunDirectory, model_proto: bytes) -> None:
  storage.atomic_write(directory.tokenizer, model_proto)


def load_tokenizer(directory: RunDirectory) -> tokenizer_lib.Tokenizer | None:
  """The run's tokenizer, None before training wrote one."""
  try:
    return tokenizer_lib.Tokenizer(directory.tokenizer.read_bytes())
  except FileNotFoundError:
    return None


def record_metrics(directory: RunDirectory, step: int, split: str, metrics: dict[str, float]) -> None:
  """Adds one evaluation to metrics.jsonl (rewritten whole, so a full disk cannot leave half a line)."""
  earlier = directory.metrics.read_text() if directory.metrics.exists() else ''
  storage.atomic_write(directory.metrics, earlier + json.dumps({'step': step, 'split': split, **metrics}) + '\n')


def truncate_metrics(directory: RunDirectory, last_step: int) -> None:
  """Keeps the val rows up to `last_step`; the test row is written again when a resumed run ends."""
  if not directory.metrics.exists():
    return
  rows = [json.loads(line) for line in directory.metrics.read_text().splitlines() if line.strip()]
  kept = [json.dumps(row) + '\n' for row in rows if row['split'] != 'test' and row['step'] <= last_step]
  storage.atomic_write(directory.metrics, ''.join(kept))


# Opening a trained run: evaluation, search and error analysis.

@dataclasses.dataclass(frozen=True)
class TrainedRun:
  """A run's config, model, tokenizer and the variables (host arrays) of one checkpoint."""
  directory: RunDirectory
  config: ml_collections.ConfigDict
  model: nn.Module
  tokenizer: tokenizer_lib.Tokenizer
  step: int
  variables: PyTree


def open_trained(workdir: str | os.PathLike, checkpoint: str | int = 'best',
                 command_config: ml_collections.ConfigDict | None = None) -> TrainedRun:
  """The run in `workdir` at checkpoint 'best', 'latest' or a step.

  The model and the data come from the run's own config; with `command_config`, its eval section and this
  machine's data location and eval batch size (evaluation_config).
  """
  directory = RunDirectory(workdir)
  config = load_config(directory)
  if command_config is not None:
    config = evaluation_config(config, command_config)
  step, variables = directory.restore_variables(checkpoint)
  num_classes = len(json.loads(directory.label_map.read_text()))
  tokenizer = load_tokenizer(directory)
  if tokenizer is None:
    raise FileNotFoundError(f'{directory.tokenizer} not found: the run in {directory} has no tokenizer.')
  model = factory.build_model(config.model, num_classes=num_classes)
  return TrainedRun(directory=directory, config=config, model=model, tokenizer=tokenizer, step=step,
                    variables=variables)


# Starting or resuming training in a workdir.

def check_config_compatible(directory: RunDirectory, config: ml_collections.ConfigDict) -> None:
  """Refuses a config that changes the model or the data of the run saved here; logs other changes."""
  if not directory.config.exists():
    return
  saved = _flatten(json.loads(directory.config.read_text()))
  current = _flatten(json.loads(config.to_json()))
  changed = sorted(name for name in saved.keys() & current.keys() if saved[name] != current[name])
  fixed = [name for name in changed if _is_fixed(name)]
  if fixed:
    lines = '\n'.join(f'  config.{name}: {saved[name]!r} in the workdir, {current[name]!r} now' for name in fixed)
    raise ConfigMismatchError(
        f'{directory.config} was written by a run with another model or data; its checkpoints cannot continue '
        f'with:\n{lines}\nUse a new --workdir, or rerun with the values of the workdir.')
  for name in changed:
    logging.info('config.%s changed from %r to %r since the run in %s started.', name, saved[name], current[name],
                 directory)
  for name in sorted(current.keys() - saved.keys()):  # options added to the code since the run started
    logging.info('config.%s is new since the run in %s started; using %r.', name, directory, current[name])


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
def exclusive_run(directory: RunDirectory) -> Iterator[None]:
  """Holds run.lock while training: a second run refuses to start, a dead run's lock is taken over.

  The lock is created only where it does not exist (storage.create_new: exclusive locally and on GCS).
  """
  holder = _read_lock(directory.lock)
  if holder is not None:
    if _is_alive(holder):
      raise WorkdirLockedError(
          f'{directory} is in use by another run (host {holder.get("host")}, pid {holder.get("pid")}, started '
          f'{holder.get("started")}). Wait for it to finish or stop it, or pass another --workdir.')
    logging.warning('Taking over the stale lock %s of a run that is no longer running (host %s, pid %s).',
                    directory.lock, holder.get('host'), holder.get('pid'))
    storage.remove(directory.lock)
  mine = _create_lock(directory)
  stop = threading.Event()
  heartbeat = threading.Thread(target=_beat, args=(directory.lock, mine, stop), daemon=True)
  heartbeat.start()
  try:
    yield
  finally:
    stop.set()
    heartbeat.join()
    if (_read_lock(directory.lock) or {}).get('token') == mine['token']:
      storage.remove(directory.lock)


def _create_lock(directory: RunDirectory) -> dict[str, Any]:
  now = time.time()
  mine = {'host': socket.gethostname(), 'pid': os.getpid(), 'process_start': _process_start(os.getpid()),
          'started': time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(now)), 'heartbeat': now,
          'token': f'{socket.gethostname()}:{os.getpid()}:{now}'}
  if not storage.create_new(directory.lock, json.dumps(mine)):
    holder = _read_lock(directory.lock) or {}
    raise WorkdirLockedError(f'{directory} is in use by another run (host {holder.get("host")}, pid '
                             f'{holder.get("pid")}) that started at the same moment; pass another --workdir.')
  return mine


def _beat(path: epath.Path, mine: dict[str, Any], stop: threading.Event) -> None:
  while not stop.wait(HEARTBEAT_S):
    with contextlib.suppress(storage.StorageError):
      storage.atomic_write(path, json.dumps(dict(mine, heartbeat=time.time())))


def _read_lock(path: epath.Path) -> dict[str, Any] | None:
  try:
    return json.loads(path.read_text())
  except FileNotFoundError:
    return None
  except Exception:  # pylint: disable=broad-except  (unreadable; writes are atomic, so it is stale)
    return {'host': 'unknown', 'pid': 'unknown', 'heartbeat': 0.0}


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
    with open(f'/proc/{pid}/stat') as f:  # the operating system's process table, not a run path
      return int(f.read().rsplit(')', 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None

