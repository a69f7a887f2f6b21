"""axm_jax.checkpointing on its own: what a resume reads back."""
import re

import jax
import numpy as np
import pytest
from etils import epath

from axm_jax import checkpointing


def _saved_checkpoints(folder: epath.Path, variables, opt_state) -> checkpointing.Checkpoints:
  checkpoints = checkpointing.Checkpoints(folder / 'periodic', folder / 'best', folder / 'damaged', keep=2)
  checkpoints.save(5, variables, opt_state)
  return checkpoints


def _abstract(tree):
  """The targets a resume passes: shapes and dtypes on the first device (train_step.abstract_state's form)."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(np.shape(leaf), np.asarray(leaf).dtype, sharding=device),
                      tree)


def _state():
  rng = np.random.default_rng(0)
  variables = {'params': {'kernel': rng.normal(size=(3, 4)).astype(np.float32)},
               'batch_stats': {'mean': rng.normal(size=(4,)).astype(np.float32)}}
  return variables, {'count': np.int32(7), 'mu': {'kernel': rng.normal(size=(3, 4)).astype(np.float32)}}


def test_restore_latest_reads_the_saved_values_as_numpy_arrays_from_abstract_targets(tmp_path):
  variables, opt_state = _state()
  checkpoints = _saved_checkpoints(epath.Path(tmp_path), variables, opt_state)
  step, restored_variables, restored_opt_state = checkpoints.restore_latest(_abstract(variables),
                                                                            _abstract(opt_state), is_writer=True)
  checkpoints.close()
  assert step == 5
  for saved, restored in ((variables, restored_variables), (opt_state, restored_opt_state)):
    assert jax.tree.structure(restored) == jax.tree.structure(saved)
    for saved_leaf, restored_leaf in zip(jax.tree.leaves(saved), jax.tree.leaves(restored)):
      assert type(restored_leaf) is np.ndarray  # pylint: disable=unidiomatic-typecheck
      assert restored_leaf.dtype == np.asarray(saved_leaf).dtype
      np.testing.assert_array_equal(restored_leaf, saved_leaf)


def test_a_stored_shape_that_is_not_the_targets_fails_the_restore_and_names_the_leaf(tmp_path):
  variables, opt_state = _state()
  checkpoints = _saved_checkpoints(epath.Path(tmp_path), variables, opt_state)
  wider = dict(opt_state, mu={'kernel': np.zeros((3, 5), np.float32)})
  with pytest.raises(checkpointing.CheckpointError, match=re.escape(
      "step 5: opt_state['mu']['kernel'] has the shape (3, 4) in the checkpoint; expected (3, 5)")):
    checkpoints.restore_latest(_abstract(variables), _abstract(wider), is_writer=True)
  checkpoints.close()
  assert (tmp_path / 'periodic' / '5').exists()  # nothing moved when no checkpoint restores
