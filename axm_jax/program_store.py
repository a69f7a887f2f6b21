"""Compiled programs, and the traced shapes of a run's state, kept beside JAX's persistent compilation cache and
found again without tracing.

JAX's cache keys a program by its lowered module, so even a hit pays for tracing and lowering (14-16 s for the default
train step on a 2-core CPU). This store keys a program by what fixes it before any tracing: the source files of this
package, the versions of jax, jaxlib, flax and optax, JAX's settings and XLA_FLAGS, the devices (and a CPU's
instruction set extensions), the caller's description of the function (`identity`: its config), the abstract
arguments and the compiler options. An entry that cannot be read or loaded is compiled again and replaced. Nothing
is evicted (as in JAX's cache by default): the directory may be deleted at any time.
"""
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
from jax.experimental import serialize_executable
import numpy as np

from axm_jax import storage

SUBDIRECTORY = 'axm_programs'
LOAD_EVENT = '/axm_jax/program_store/load_duration'  # seconds per loaded program (jax.monitoring)
_PACKAGES = ('jax', 'jaxlib', 'flax', 'optax')
_UNRELATED_SETTINGS = ('cache', 'log', 'dump')  # JAX settings that change no compiled program
_THREAD = threading.local()  # .cache_hit: the compile of this thread came from JAX's persistent cache


def _on_event(event: str, **_: Any) -> None:
  if event == '/jax/compilation_cache/cache_hits':  # recorded in the thread that compiles
    _THREAD.cache_hit = True


jax.monitoring.register_event_listener(_on_event)


@functools.cache
def _source_fingerprint() -> str:
  """sha256 of every Python file of this package, with its path."""
  package = pathlib.Path(__file__).resolve().parent
  digest = hashlib.sha256()
  for source in sorted(package.rglob('*.py')):
    digest.update(str(source.relative_to(package)).encode() + b'\0' + source.read_bytes() + b'\0')
  return digest.hexdigest()


@functools.cache
def _cpu_features() -> str:
  """The host CPU's feature flags (XLA compiles CPU code for them), '' where /proc/cpuinfo is missing."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as cpuinfo:
      return next((line for line in cpuinfo if line.startswith('flags')), '')
  except OSError:
    return ''


@functools.cache
def _package_versions() -> tuple[tuple[str, str], ...]:
  return tuple((package, importlib.metadata.version(package)) for package in _PACKAGES)


def _environment() -> str:
  """Everything outside the caller's arguments that shapes a compiled program (settings and XLA_FLAGS are read at
  each call: they may change within a process)."""
  settings = sorted((name, repr(value)) for name, value in jax.config.values.items()
                    if not any(word in name for word in _UNRELATED_SETTINGS))
  devices = [(d.platform, d.device_kind, d.id) for d in jax.local_devices()]
  backend = jax.local_devices()[0].client
  return repr((_source_fingerprint(), _package_versions(), settings,
               os.environ.get('XLA_FLAGS', ''), backend.platform_version, devices, jax.process_count(),
               _cpu_features() if backend.platform == 'cpu' else ''))


def signature(tree: Any) -> tuple[Any, tuple[tuple[tuple[int, ...], str], ...]]:
  """(tree structure, (shape, dtype name) of each leaf): what a compiled program's arguments must match."""
  leaves, treedef = jax.tree.flatten(tree)
  return treedef, tuple((tuple(np.shape(leaf)), np.dtype(leaf.dtype).name) for leaf in leaves)


def key(identity: str, abstract_args: tuple[Any, ...], options: dict[str, Any]) -> str:
  """The name of the program of `identity` for `abstract_args` (ShapeDtypeStruct trees) compiled with `options`."""
  treedef, leaves = signature(abstract_args)
  text = repr((identity, str(treedef), leaves, sorted(options.items()), _environment()))
  return hashlib.sha256(text.encode()).hexdigest()


def directory() -> storage.Path | None:
  """Where programs are kept: in JAX's persistent compilation cache directory; None while that cache is off."""
  cache = jax.config.jax_compilation_cache_dir
  if not cache or not jax.config.jax_enable_compilation_cache:
    return None
  return storage.path(cache) / SUBDIRECTORY


def load(name: str) -> jax.stages.Compiled | None:
  """The stored program `name`, or None when there is none or it cannot be loaded (then it is compiled again)."""
  start = time.monotonic()
  compiled = _read(name, _deserialize, 'compiling')
  if compiled is not None:
    jax.monitoring.record_event_duration_secs(LOAD_EVENT, time.monotonic() - start)
  return compiled


def compile_and_save(name: str, lowered: jax.stages.Lowered, options: dict[str, Any]) -> jax.stages.Compiled:
  """lowered.compile(options), stored as `name` unless JAX's persistent cache supplied it.

  XLA's CPU executables read back from JAX's cache serialise without some of their kernels ("Function ... not
  found" when the copy runs), so only a program compiled here is stored.
  """
  _THREAD.cache_hit = False
  compiled = lowered.compile(options)
  if not _THREAD.cache_hit:
    _write(name, lambda: _serialize(compiled))
  return compiled


def _serialize(compiled: jax.stages.Compiled) -> bytes:
  """The executable, its argument and result trees, and the ids of the devices it runs on, in order."""
  devices = compiled._executable._unloaded_executable.device_list  # pylint: disable=protected-access  (as serialize)
  return pickle.dumps((*serialize_executable.serialize(compiled), [device.id for device in devices]))


def _deserialize(data: bytes) -> jax.stages.Compiled:
  """Loads onto the devices it was compiled for (by default JAX would load a one-device program onto all)."""
  executable, in_tree, out_tree, device_ids = pickle.loads(data)
  devices = {device.id: device for device in jax.devices()}
  return serialize_executable.deserialize_and_load(executable, in_tree, out_tree,
                                                   execution_devices=[devices[i] for i in device_ids])


def shapes(identity: str, compute: Callable[[], Any]) -> Any:
  """compute()'s tree of jax.ShapeDtypeStructs (shardings dropped), stored under `identity`: a later process reads
  it instead of tracing `compute` again (e.g. the eval_shape of a model's init)."""
  name = key(identity, (), {})
  stored = _read(name, pickle.loads, 'tracing')
  if stored is None:
    stored = signature(compute())
    _write(name, lambda: pickle.dumps(stored))
  treedef, leaves = stored
  return jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(shape, jnp.dtype(dtype)) for shape, dtype in leaves])


def _read(name: str, decode: Callable[[bytes], Any], redo: str) -> Any:
  """decode(the bytes stored as `name`), or None when there are none or they cannot be decoded."""
  folder = directory()
  if folder is None or not (file := folder / name).exists():
    return None
  try:
    return decode(file.read_bytes())
  except Exception as error:  # pylint: disable=broad-except  (a damaged or foreign entry only costs its redoing)
    logging.warning('cannot load %s from the program store (%s); %s it again.', file, storage.describe_error(error),
                    redo)
    return None


def _write(name: str, encode: Callable[[], bytes]) -> None:
  """Stores encode() as `name`; a store that cannot be written costs the next run a compile, nothing else."""
  folder = directory()
  if folder is None:
    return
  try:
    folder.mkdir(parents=True, exist_ok=True)
    storage.atomic_write(folder / name, encode())
  except Exception as error:  # pylint: disable=broad-except  (serialisation or storage: the run goes on)
    logging.warning('cannot store %s in the program store %s (%s); the next run computes it again.', name, folder,
                    storage.describe_error(error))
