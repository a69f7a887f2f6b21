"""`python tests/slow_save_main.py FLAGS`: the main command with a 1 s pause inside every commit of a checkpoint save.

The pause falls after orbax has written a step into its temporary directory and before the rename that commits
it, so a test can kill the run in the middle of a save.
"""
import time

from absl import app
from orbax.checkpoint._src.path import atomicity

from axm_jax import main

_commit = atomicity.AtomicRenameTemporaryPath.finalize


async def _slow_commit(self, *args, **kwargs):
  time.sleep(1)
  return await _commit(self, *args, **kwargs)


if __name__ == '__main__':
  atomicity.AtomicRenameTemporaryPath.finalize = _slow_commit
  app.run(main.main, flags_parser=main.parse_flags)
