"""Runs compared at equal wall time: `config.train.time_budget_minutes` becomes a step count, once per run.

The steps of the learning-rate warm-up (whose rates do not depend on the run's length) are timed; then
num_steps = the warm-up steps + the steps that fit in the rest of the budget at the measured rate, and that count
is recorded in the run's time_budget.json. From there the run is a step-count run of that length: the cosine schedule,
evaluation, checkpoints and resume depend on the step count only, so a resumed run reads the recorded count and the
result is deterministic given it. The budget covers the training loop from its first step (the first step's
compilation, and once more for the program of the final length); start-up, evaluation and checkpoint saves are
not in the estimate.
"""
import json
import time
from typing import Any

from absl import logging
import jax
import ml_collections

from axm_jax import run
from axm_jax import storage


def enabled(config: ml_collections.ConfigDict) -> bool:
  return config.train.time_budget_minutes > 0


def recorded_steps(config: ml_collections.ConfigDict, directory: run.RunDirectory) -> int | None:
  """The step count this budget run's budget was turned into, once it has been."""
  path = directory.time_budget
  if not enabled(config) or not path.exists():
    return None
  record = json.loads(path.read_text())
  logging.info('Time budget of %.4g minutes: %d steps, as measured when the run started (%s).',
               record['time_budget_minutes'], record['num_steps'], path)
  return int(record['num_steps'])


def with_num_steps(config: ml_collections.ConfigDict, num_steps: int) -> ml_collections.ConfigDict:
  resolved = config.copy_and_resolve_references()
  resolved.train.num_steps = num_steps
  return resolved


class Calibration:
  """Times the warm-up steps of a budget run and turns the budget into a step count."""

  def __init__(self, config: ml_collections.ConfigDict, start_step: int):
    self.last_step = max(config.optim.warmup_steps, start_step + 2)
    self._budget_s = 60.0 * config.train.time_budget_minutes
    self._start_step = start_step
    self._times = {start_step: time.monotonic()}

  def observe(self, step: int, outputs: Any) -> None:
    """Called at the first step and at `last_step` with the step's outputs, which it waits for."""
    jax.block_until_ready(outputs)
    self._times[step] = time.monotonic()

  def num_steps(self) -> int:
    """Steps that fit in the budget: those run so far plus the rest at the rate after the first step (>= 1)."""
    first = self._start_step + 1
    first_step_s = self._times[first] - self._times[self._start_step]
    rate = (self.last_step - first) / max(self._times[self.last_step] - self._times[first], 1e-9)
    elapsed = self._times[self.last_step] - self._times[self._start_step]
    remaining = self._budget_s - elapsed - first_step_s  # the program of the final length compiles once more
    return self.last_step + max(int(rate * remaining), 1)  # at least one step after the warm-up


def record(directory: run.RunDirectory, config: ml_collections.ConfigDict, num_steps: int) -> None:
  storage.atomic_write(directory.time_budget, json.dumps(
      {'time_budget_minutes': config.train.time_budget_minutes, 'num_steps': num_steps}, indent=2))
  logging.info('Time budget of %.4g minutes: %d steps at the measured rate.', config.train.time_budget_minutes,
               num_steps)
