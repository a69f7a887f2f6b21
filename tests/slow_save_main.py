"""`python tests/slow_save_main.py FLAGS`: the main command with a 1 s pause inside every commit of a checkpoint save.

The pause falls after orbax has written a step into its temporary directory and before the rename that commits
it, so a test can kill the run in the middle of a save.
"""
import runpy
import time

from orbax.checkpoint._src.path import atomicity

_commit = atomicity.AtomicRenameTemporaryPath.finalize


async def _slow_commit(self, *args, **kwargs):
  time.sleep(1)
  return await _commit(self, *args, **kwargs)


if __name__ == '__main__':
  atomicity.AtomicRenameTemporaryPath.finalize = _slow_commit
  runpy.run_module('axm_jax.main', run_name='__main__')
