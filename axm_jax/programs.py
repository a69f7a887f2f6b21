"""Programs compiled ahead of time in background threads, so that a run compiles while it loads its data.

jaxlib releases the GIL while XLA compiles, so these compiles run beside the dataset loading and the tokenizer
training of the main thread, and beside each other. Tracing and lowering hold the GIL: two at once take as long as
one after the other, so they take turns in the order the work was queued (first asked, first lowered) and the first
program starts compiling sooner.
"""
import concurrent.futures
import contextlib
import functools
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from axm_jax import program_store

# A fresh run queues three programs (init, gradients, update): each gets a thread at once, so a program compiles as
# soon as it is lowered. XLA also compiles each program on several threads.
_THREADS = concurrent.futures.ThreadPoolExecutor(max_workers=3, thread_name_prefix='axm_compile')


class _Turns:
  """Lowering, one at a time, in the order of tickets; a ticket is taken when the work is queued."""

  def __init__(self):
    self._condition = threading.Condition()
    self._tickets = itertools.count()
    self._waiting: set[int] = set()
    self._local = threading.local()  # .ticket: the ticket of the work this thread runs, until it lowers

  def submit(self, function: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
    """function(*args) in a compile thread, with the next ticket (taken and queued at once: threads start in
    ticket order, so a thread never waits for work that no thread runs)."""
    with self._condition:
      ticket = self._take()
      return _THREADS.submit(self._run, ticket, function, *args)

  def _take(self) -> int:
    ticket = next(self._tickets)
    self._waiting.add(ticket)
    return ticket

  def _release(self, ticket: int) -> None:
    """Ends `ticket`'s turn, or its wait."""
    with self._condition:
      self._waiting.discard(ticket)
      self._condition.notify_all()

  def _run(self, ticket: int, function: Callable[..., Any], *args: Any) -> Any:
    """function(*args) in this thread; its first lowering waits for `ticket`'s turn."""
    self._local.ticket = ticket
    try:
      return function(*args)
    finally:
      self._claim()
      self._release(ticket)

  def _claim(self) -> int | None:
    """This thread's ticket, once (None after its first use or outside queued work)."""
    ticket, self._local.ticket = getattr(self._local, 'ticket', None), None
    return ticket

  def pass_turn(self) -> None:
    """Gives up this thread's ticket: its work lowers nothing (e.g. its program was loaded)."""
    if (ticket := self._claim()) is not None:
      self._release(ticket)

  @contextlib.contextmanager
  def turn(self) -> Iterator[None]:
    """Holds the lowering turn: this thread's ticket (the first time), else a new one."""
    ticket = self._claim()
    with self._condition:
      if ticket is None:
        ticket = self._take()
      self._condition.wait_for(lambda: min(self._waiting) == ticket)
    try:
      yield
    finally:
      self._release(ticket)


_TURNS = _Turns()


def compiler_options() -> dict[str, str]:
  """XLA options for the programs compiled here. On CPU: XLA's fast-compile preset, and reductions in XLA's own
  kernels rather than YNNPACK's.

  Measured on a 2-core AMD EPYC (2026-12-07): the preset compiled the default config's train step in 51 s against
  58 s at the same step time. Without YNNPACK's reductions the paper config's step (batch 16) took 6.6 s against
  11.4 s, and loading its stored gradient program 6.7 s against 17.4 s; the default config's, 299-318 against
  345 ms and 8-11 against 22-24 s, but its compile took about 5 s longer (38-42 against 33-36 s).
  """
  if jax.default_backend() != 'cpu':
    return {}
  return {'xla_cpu_opt_preset': 'CPU_OPT_PRESET_FAST_COMPILE', 'xla_cpu_experimental_ynn_fusion_type': ''}


def lower_and_compile(function: Any, *abstract_args: Any, options: dict[str, Any] | None = None,
                      identity: str | None = None) -> Any:
  """function.lower(*abstract_args) (one lowering at a time), compiled with compiler_options() and `options`.

  With an `identity` (a description of `function` that fixes its program, e.g. its config), the compiled program is
  kept in the program store and a later process with the same identity loads it without tracing.
  """
  options = dict(compiler_options(), **(options or {}))
  name = program_store.key(identity, abstract_args, options) if identity is not None else None
  if name is not None and (compiled := program_store.load(name)) is not None:
    _TURNS.pass_turn()
    return compiled
  with _TURNS.turn():
    lowered = function.lower(*abstract_args)
  return lowered.compile(options) if name is None else program_store.compile_and_save(name, lowered, options)


def in_background(function: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
  """Runs function(*args) in a compile thread; its lowering comes after those of the work queued before it."""
  return _TURNS.submit(function, *args)


class Precompiled:
  """A jax.pmap'd function, with its programs for announced input shapes compiled in background threads.

  A call runs the program of its arguments' shapes and dtypes: an announced one is compiled in the background
  ahead of the call, any other at the call, the same way (lower_and_compile: the same compiler options, so a
  program compiled later computes what an announced one does). In a multi-process run nothing is compiled here
  and the pmapped function compiles at its first call: pmap lowers abstract arguments of one process only.
  """

  def __init__(self, function: Callable[..., Any], identity: str | None = None):
    self.function = function
    self.identity = identity  # see lower_and_compile
    self._programs: dict[tuple[Any, ...], concurrent.futures.Future] = {}
    self._last: Callable[..., Any] | None = None  # the program of the previous call

  def precompile(self, *abstract_args: Any) -> None:
    """Starts compiling for arguments shaped like `abstract_args` (jax.ShapeDtypeStruct trees)."""
    key = program_store.signature(abstract_args)
    if key not in self._programs and jax.process_count() == 1:
      self._programs[key] = in_background(
          functools.partial(lower_and_compile, self.function, identity=self.identity), *abstract_args)

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
    key = program_store.signature(args)
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
