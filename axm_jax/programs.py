"""Programs compiled ahead of time in background threads, so that a run compiles while it loads its data.

jaxlib releases the GIL while XLA compiles, so these compiles run beside the dataset loading and the tokenizer
training of the main thread, and beside each other. Tracing and lowering hold the GIL: two at once take as long as
one after the other, so they take turns (first asked, first lowered) and the first program starts compiling sooner.
"""
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

# Two at a time, in the order they are asked for: XLA also compiles each program on several threads.
_THREADS = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix='axm_compile')
_LOWERING = threading.Lock()


def compiler_options() -> dict[str, str]:
  """XLA options for the programs compiled here: on CPU, XLA's fast-compile preset.

  Measured on the default config's train step (2-core AMD EPYC, 2026-12-07): 51 s against 58 s to compile, the same
  step time; see the README's start-up section for the paper config.
  """
  return {'xla_cpu_opt_preset': 'CPU_OPT_PRESET_FAST_COMPILE'} if jax.default_backend() == 'cpu' else {}


def lower_and_compile(function: Any, *abstract_args: Any, options: dict[str, Any] | None = None) -> Any:
  """function.lower(*abstract_args) (one lowering at a time), compiled with compiler_options() and `options`."""
  with _LOWERING:
    lowered = function.lower(*abstract_args)
  return lowered.compile(dict(compiler_options(), **(options or {})))


def in_background(function: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
  """Runs function(*args) in a compile thread."""
  return _THREADS.submit(function, *args)


def _signature(args: tuple[Any, ...]) -> tuple[Any, ...]:
  leaves, treedef = jax.tree.flatten(args)
  return treedef, tuple((tuple(leaf.shape), np.dtype(leaf.dtype)) for leaf in leaves)


class Precompiled:
  """A jax.pmap'd function, with its programs for announced input shapes compiled in background threads.

  A call runs the program of its arguments' shapes and dtypes: an announced one is compiled in the background
  ahead of the call, any other at the call, the same way (lower_and_compile: the same compiler options, so a
  program compiled later computes what an announced one does). In a multi-process run nothing is compiled here
  and the pmapped function compiles at its first call: pmap lowers abstract arguments of one process only.
  """

  def __init__(self, function: Callable[..., Any]):
    self.function = function
    self._programs: dict[tuple[Any, ...], concurrent.futures.Future] = {}
    self._last: Callable[..., Any] | None = None  # the program of the previous call

  def precompile(self, *abstract_args: Any) -> None:
    """Starts compiling for arguments shaped like `abstract_args` (jax.ShapeDtypeStruct trees)."""
    key = _signature(abstract_args)
    if key not in self._programs and jax.process_count() == 1:
      self._programs[key] = in_background(lower_and_compile, self.function, *abstract_args)

  def wait(self) -> None:
    """Returns when every announced compile is done (raising its error, if any)."""
    for program in self._programs.values():
      program.result()

  def __call__(self, *args: Any) -> Any:
    if self._last is not None:
      try:  # a compiled program checks its arguments itself, in C++, before it runs (and donates) anything
        return self._last(*args)
      except TypeError:  # arguments of another signature
        pass
    key = _signature(args)
    if key not in self._programs:
      self.precompile(*jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype), args))
    program = self._programs.get(key)
    if program is None:  # a multi-process run
      return self.function(*args)
    self._last = program.result()
    return self._last(*args)


def per_device(tree: Any, devices: int) -> Any:
  """Abstract arrays with a leading axis of `devices`, as pmap takes them (ShapeDtypeStructs, no sharding)."""
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct((devices,) + tuple(leaf.shape), leaf.dtype), tree)
