"""Preemption: on SIGTERM or SIGINT the loop finishes its step, saves it and stops; every process agrees on the step.

One process: our own handlers set a flag. Several processes: `jax.distributed.initialize` starts JAX's preemption
service, whose SIGTERM handler tells the coordination service, and `reached_preemption_sync_point(step)` returns
True on every process at the same step; SIGINT is passed on as SIGTERM so it takes the same path.
"""
import os
import signal
import types

from absl import logging
import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
  """Training stopped on a signal after saving the checkpoint of `step`; the exit status is 128 + signal."""

  def __init__(self, step: int, signal_number: int):
    super().__init__(f'preempted at step {step} by {signal.Signals(signal_number).name}')
    self.step, self.signal_number = step, signal_number


class PreemptionWatcher:
  """Installs the handlers for the lifetime of a `with` block; `should_stop(step)` is asked after every step."""

  def __init__(self):
    self.signal_number: int | None = None
    self._multi_process = jax.process_count() > 1
    self._previous: dict[int, object] = {}

  def __enter__(self) -> 'PreemptionWatcher':
    handled = (signal.SIGINT,) if self._multi_process else (signal.SIGTERM, signal.SIGINT)
    for number in handled:
      self._previous[number] = signal.signal(number, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for number, handler in self._previous.items():
      signal.signal(number, handler)

  def _handle(self, number: int, frame: types.FrameType | None) -> None:
    del frame
    if self.signal_number is not None:
      logging.warning('%s received again: still saving the checkpoint of the current step; the run stops after '
                      'that.', signal.Signals(number).name)
      return
    self.signal_number = number
    logging.warning('%s received: finishing the current step, saving its checkpoint, then stopping.',
                    signal.Signals(number).name)
    if self._multi_process:
      os.kill(os.getpid(), signal.SIGTERM)  # through JAX's preemption service, so that every process agrees

  def should_stop(self, step: int) -> bool:
    if self._multi_process:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_number = self.signal_number or signal.SIGTERM
        return True
      return False
    return self.signal_number is not None
