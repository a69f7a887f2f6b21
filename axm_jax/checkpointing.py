"""The one place that talks to orbax: periodic, best-by-val and restored checkpoints.

Checkpoints hold host (unreplicated) arrays, so a run saved on N devices restores on any device count.
Layout under the workdir: `checkpoints/<step>/{variables,opt_state}` and `checkpoints_best/<step>/variables`.
"""
import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
import tensorflow as tf

PERIODIC_DIR = 'checkpoints'
BEST_DIR = 'checkpoints_best'
CONFIG_FILE = 'config.json'
TOKENIZER_FILE = 'tokenizer.model'
LABEL_MAP_FILE = 'label_map.json'
BEST_METRIC = 't2i_r1'

PyTree = Any


class Checkpoints:
  """Periodic checkpoints (keep N) plus the single best checkpoint by a val metric."""

  def __init__(self, workdir: str, keep: int):
    self._periodic = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), PERIODIC_DIR),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    self._best = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), BEST_DIR),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda metrics: metrics[BEST_METRIC], best_mode='max'))

  def latest_step(self) -> int | None:
    return self._periodic.latest_step()

  def save(self, step: int, variables: PyTree, opt_state: PyTree) -> None:
    """Saves training state at `step` (no-op if that step is already saved)."""
    if step in self._periodic.all_steps():
      return
    self._periodic.save(step, args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables), opt_state=ocp.args.StandardSave(opt_state)))

  def restore(self, step: int, variables: PyTree, opt_state: PyTree) -> tuple[PyTree, PyTree]:
    """Restores the training state of `step` into the structure of the given targets."""
    restored = self._periodic.restore(step, args=ocp.args.Composite(
        variables=ocp.args.StandardRestore(variables), opt_state=ocp.args.StandardRestore(opt_state)))
    return restored['variables'], restored['opt_state']

  def best_score(self) -> float | None:
    step = self._best.best_step()
    return None if step is None else float(self._best.metrics(step)[BEST_METRIC])

  def save_if_best(self, step: int, variables: PyTree, metrics: dict[str, float]) -> bool:
    """Saves `variables` as the best checkpoint when `metrics[BEST_METRIC]` beats every earlier one."""
    best = self.best_score()
    if step in self._best.all_steps() or (best is not None and metrics[BEST_METRIC] <= best):
      return False
    self._best.save(step, args=ocp.args.Composite(variables=ocp.args.StandardSave(variables)),
                    metrics={BEST_METRIC: float(metrics[BEST_METRIC])})
    return True

  def close(self) -> None:
    self._periodic.wait_until_finished()
    self._best.wait_until_finished()
    self._periodic.close()
    self._best.close()


def save_run_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  with tf.io.gfile.GFile(os.path.join(workdir, CONFIG_FILE), 'w') as f:
    f.write(config.to_json(indent=2))


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was trained with (DIR/config.json)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{path} not found: --workdir must be a directory written by training.')
  with tf.io.gfile.GFile(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_variables(workdir: str, which: str | int = 'best') -> tuple[int, PyTree]:
  """Restores {'params', 'batch_stats'} as host arrays: 'best' (else latest), 'latest' or a step."""
  workdir = os.path.abspath(workdir)
  best = ocp.CheckpointManager(os.path.join(workdir, BEST_DIR),
                               options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  periodic = ocp.CheckpointManager(os.path.join(workdir, PERIODIC_DIR),
                                   options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  manager, step = _choose_checkpoint(best, periodic, which)
  if step is None:
    raise FileNotFoundError(f'no checkpoint in {workdir}/{PERIODIC_DIR} or {workdir}/{BEST_DIR}: '
                            'train first, or pass --workdir of a trained run.')
  restored = manager.restore(step, args=ocp.args.Composite(variables=ocp.args.StandardRestore()))
  return step, _to_host(restored['variables'])


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
                   f'{sorted(set(periodic.all_steps()) | set(best.all_steps()))}.')


def _to_host(tree: PyTree) -> PyTree:
  return jax.tree.map(jax.device_get, tree)
