"""The one place that talks to orbax: periodic, best-by-val and restored checkpoints.

Checkpoints hold host (unreplicated) arrays, so a run saved on N devices restores on any device count.
The directories come from axm_jax.run: `<periodic>/<step>/{variables,opt_state}` and `<best>/<step>/variables`,
on a local disk or in Cloud Storage (orbax writes arrays with tensorstore and the rest through epath).
Saves are synchronous: orbax writes a step into a temporary directory and renames it when complete, so a kill at
any moment leaves the earlier steps restorable. A step that no longer restores is moved to `checkpoints_damaged/`.
"""
from collections.abc import Iterable, Iterator
import contextlib
import itertools
from typing import Any

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from axm_jax import storage

BEST_METRIC = 't2i_r1'

PyTree = Any


# How a command that evaluates a run chooses another checkpoint (restore_variables's advice).
CHOOSE_ANOTHER = '--config.eval.checkpoint=latest or a step number'


class CheckpointError(RuntimeError):
  """No checkpoint that was asked for can be restored."""


class Checkpoints:
  """Periodic checkpoints (keep N) plus the single best checkpoint by a val metric."""

  def __init__(self, periodic: epath.Path, best: epath.Path, damaged: epath.Path, keep: int):
    self._damaged = damaged
    self._periodic = ocp.CheckpointManager(
        periodic,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=False))
    self._best = ocp.CheckpointManager(
        best,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda metrics: metrics[BEST_METRIC], best_mode='max',
            enable_async_checkpointing=False))

  def latest_step(self) -> int | None:
    return self._periodic.latest_step()

  def save(self, step: int, variables: PyTree, opt_state: PyTree) -> None:
    """Saves training state at `step` (no-op if that step is already saved)."""
    if step in self._periodic.all_steps():
      return
    with _storage_errors(self._periodic, step, self._periodic.all_steps()):
      self._periodic.save(step, args=ocp.args.Composite(
          variables=ocp.args.StandardSave(variables), opt_state=ocp.args.StandardSave(opt_state)))

  def restore_latest(self, variables: PyTree, opt_state: PyTree,
                     is_writer: bool) -> tuple[int, PyTree, PyTree] | None:
    """Restores the newest periodic checkpoint that restores into the given targets' structure, as NumPy arrays.

    The targets' leaves give shapes and dtypes (arrays or jax.ShapeDtypeStruct). NumPy, not device arrays: the
    caller replicates the state onto its devices anyway, and orbax reads a paper-size state to NumPy in half the time.
    Newer ones that fail are logged with their reason and (by the writer) moved to the damaged directory.
    None when there is no checkpoint; a CheckpointError listing every failure when none restores.
    """
    variables, opt_state = _host_targets(variables), _host_targets(opt_state)
    failures = []
    for step in sorted(self._periodic.all_steps(), reverse=True):
      try:
        restored = self._periodic.restore(step, args=ocp.args.Composite(
            variables=ocp.args.StandardRestore(variables), opt_state=ocp.args.StandardRestore(opt_state)))
        _check_shapes('variables', restored['variables'], variables)
        _check_shapes('opt_state', restored['opt_state'], opt_state)
      except Exception as error:  # pylint: disable=broad-except  (orbax and tensorstore raise many kinds)
        failures.append((step, storage.describe_error(error)))
        logging.warning('The checkpoint of step %d in %s cannot be restored (%s); trying the one before.', step,
                        self._periodic.directory, failures[-1][1])
        continue
      if is_writer:
        self._quarantine(step for step, _ in failures)
      return step, restored['variables'], restored['opt_state']
    if failures:
      listing = '\n'.join(f'  step {step}: {reason}' for step, reason in failures)
      raise CheckpointError(
          f'no checkpoint in {self._periodic.directory} can be restored:\n{listing}\nIf the config changed, rerun '
          'with the config the run was started with; otherwise move these checkpoints away to start over.')
    return None

  def _quarantine(self, steps: Iterable[int]) -> None:
    for step in steps:
      target = self._damaged / str(step)
      for copy in itertools.count(1):
        if not target.exists():
          break
        target = self._damaged / f'{step}.{copy}'
      storage.move_tree(epath.Path(self._periodic.directory) / str(step), target)
      logging.warning('Moved the damaged checkpoint of step %d to %s.', step, target)

  def reload(self) -> None:
    """Rereads the saved steps (after the writer moved damaged ones away)."""
    self._periodic.reload()

  def best_score(self) -> float | None:
    step = self._best.best_step()
    return None if step is None else float(self._best.metrics(step)[BEST_METRIC])

  def save_if_best(self, step: int, variables: PyTree, metrics: dict[str, float]) -> bool:
    """Saves `variables` as the best checkpoint when `metrics[BEST_METRIC]` beats every earlier one."""
    best = self.best_score()
    if step in self._best.all_steps() or (best is not None and metrics[BEST_METRIC] <= best):
      return False
    with _storage_errors(self._best, step, self._periodic.all_steps()):
      self._best.save(step, args=ocp.args.Composite(variables=ocp.args.StandardSave(variables)),
                      metrics={BEST_METRIC: float(metrics[BEST_METRIC])})
    return True

  def close(self) -> None:
    self._periodic.wait_until_finished()
    self._best.wait_until_finished()
    self._periodic.close()
    self._best.close()


@contextlib.contextmanager
def _storage_errors(manager: ocp.CheckpointManager, step: int, intact: list[int]) -> Iterator[None]:
  """Turns a failed save into a StorageError that names the checkpoint and the steps still intact."""
  try:
    yield
  except Exception as error:  # pylint: disable=broad-except  (orbax and tensorstore raise many kinds)
    raise storage.StorageError(
        f'cannot save the checkpoint of step {step} in {manager.directory}: {storage.describe_error(error)}. '
        f'The checkpoints saved before it (steps {sorted(intact)}) are intact; free space or fix the permissions '
        'and rerun the same command to resume.') from error


def saved_steps(best_dir: epath.Path, periodic_dir: epath.Path) -> list[int]:
  """The steps of every periodic and best checkpoint, sorted."""
  return _all_steps(*_read_only_managers(best_dir, periodic_dir))


def restore_variables(best_dir: epath.Path, periodic_dir: epath.Path, which: str | int = 'best',
                      choose_another: str = CHOOSE_ANOTHER) -> tuple[int, PyTree]:
  """Restores {'params', 'batch_stats'} as host arrays: 'best' (else latest), 'latest' or a step.

  A checkpoint that cannot be restored raises CheckpointError, whose advice is `choose_another`.
  """
  best, periodic = _read_only_managers(best_dir, periodic_dir)
  manager, step = _choose_checkpoint(best, periodic, which)
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {periodic_dir} or {best_dir}: '
                            'train first, or pass --workdir of a trained run.')
  try:
    restored = manager.restore(step, args=ocp.args.Composite(variables=ocp.args.StandardRestore()))
  except Exception as error:  # pylint: disable=broad-except  (orbax and tensorstore raise many kinds)
    raise CheckpointError(
        f'the checkpoint of step {step} in {manager.directory} cannot be restored: '
        f'{storage.describe_error(error)}. Choose another with {choose_another} '
        f'(saved steps: {_all_steps(best, periodic)}).') from error
  return step, _to_host(restored['variables'])


def _read_only_managers(best_dir: epath.Path,
                        periodic_dir: epath.Path) -> tuple[ocp.CheckpointManager, ocp.CheckpointManager]:
  return tuple(ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True, create=False))
               for directory in (best_dir, periodic_dir))


def _all_steps(best: ocp.CheckpointManager, periodic: ocp.CheckpointManager) -> list[int]:
  return sorted(set(periodic.all_steps()) | set(best.all_steps()))


def _choose_checkpoint(best: ocp.CheckpointManager, periodic: ocp.CheckpointManager,
                       which: str | int) -> tuple[ocp.CheckpointManager, int | None]:
  if which == 'best' and best.latest_step() is not None:
    return best, best.latest_step()
  if which in ('best', 'latest'):
    return periodic, periodic.latest_step()
  step = int(which)
  for manager in (periodic, best):
    if step in manager.all_steps():
      return manager, step
  raise ValueError(f'config.eval.checkpoint={which!r}: no checkpoint at step {step}; saved steps are '
                   f'{_all_steps(best, periodic)}.')


def _host_targets(tree: PyTree) -> PyTree:
  """Restore targets that make orbax read NumPy arrays: zeros of each leaf's shape and dtype (untouched pages)."""
  return jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), tree)


def _check_shapes(name: str, restored: PyTree, targets: PyTree) -> None:
  """Raises ValueError for the first leaf whose stored shape is not its target's (orbax reads NumPy as stored)."""
  for (path, leaf), target in zip(jax.tree_util.tree_leaves_with_path(restored), jax.tree.leaves(targets)):
    if np.shape(leaf) != np.shape(target):
      raise ValueError(f'{name}{jax.tree_util.keystr(path)} has the shape {np.shape(leaf)} in the checkpoint; '
                       f'expected {np.shape(target)}')


def _to_host(tree: PyTree) -> PyTree:
  return jax.tree.map(jax.device_get, tree)
