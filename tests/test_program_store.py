"""Compiled programs stored and loaded again without tracing (axm_jax.program_store via axm_jax.programs)."""
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from axm_jax import program_store
from axm_jax import programs
from tests.conftest import REPO


@pytest.fixture
def store(tmp_path):
  """A fresh program store (in a fresh compilation cache directory) for the test."""
  previous = jax.config.jax_compilation_cache_dir
  jax.config.update('jax_compilation_cache_dir', str(tmp_path))
  yield tmp_path / program_store.SUBDIRECTORY
  jax.config.update('jax_compilation_cache_dir', previous)


class Traced:
  """tanh(x @ w), counting its tracings."""

  def __init__(self):
    self.traces = 0

  def __call__(self, x, w):
    self.traces += 1
    return jnp.tanh(x @ w)


def arguments(rows: int = 3):
  devices = jax.local_device_count()
  rng = np.random.default_rng(0)
  return (rng.standard_normal((devices, rows, 4)).astype(np.float32),
          rng.standard_normal((devices, 4, 2)).astype(np.float32))


def run(function: Traced, identity: str, args: tuple[np.ndarray, ...]) -> np.ndarray:
  """Runs `function` through a new Precompiled with `identity`, announced first, as train.py does."""
  precompiled = programs.Precompiled(jax.pmap(function), identity=identity)
  precompiled.precompile(*jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args))
  return np.asarray(precompiled(*args))


def expected(args: tuple[np.ndarray, ...]) -> np.ndarray:
  x, w = args
  return np.tanh(np.einsum('drk,dkc->drc', x, w))


def test_a_stored_program_is_loaded_without_tracing_and_computes_the_same(store):
  args = arguments()
  first = Traced()
  np.testing.assert_allclose(run(first, 'tanh v1', args), expected(args), rtol=1e-5, atol=1e-6)
  assert first.traces == 1 and len(list(store.iterdir())) == 1
  second = Traced()
  np.testing.assert_allclose(run(second, 'tanh v1', args), expected(args), rtol=1e-5, atol=1e-6)
  assert second.traces == 0  # loaded from the store
  unannounced = Traced()  # a call with shapes nobody announced goes through the store too
  np.testing.assert_allclose(programs.Precompiled(jax.pmap(unannounced), identity='tanh v1')(*args), expected(args),
                             rtol=1e-5, atol=1e-6)
  assert unannounced.traces == 0


@pytest.mark.parametrize('identity, rows, stored', [('tanh v2', 3, 2), ('tanh v1', 5, 2), (None, 3, 1)])
def test_another_identity_or_shape_or_none_is_compiled_not_loaded(store, identity, rows, stored):
  run(Traced(), 'tanh v1', arguments())
  other_args, other = arguments(rows), Traced()
  np.testing.assert_allclose(run(other, identity, other_args), expected(other_args), rtol=1e-5, atol=1e-6)
  assert other.traces == 1
  assert len(list(store.iterdir())) == stored


def test_a_program_from_jax_persistent_cache_is_not_stored(store):
  """XLA's CPU executables read back from JAX's cache serialise without some kernels: such a copy must not be
  stored (it failed with 'Function ... not found' when a later process ran it)."""
  previous = jax.config.jax_persistent_cache_min_compile_time_secs
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  try:
    args = arguments(rows=6)
    run(Traced(), 'tanh v1', args)  # compiled: stored here and in JAX's cache
    run(Traced(), 'tanh v2', args)  # the same program under another identity: from JAX's cache, not stored
    assert len(list(store.iterdir())) == 1
    again = Traced()
    np.testing.assert_allclose(run(again, 'tanh v2', args), expected(args), rtol=1e-5, atol=1e-6)
    assert again.traces == 1
  finally:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', previous)


def test_a_damaged_entry_is_compiled_again_and_replaced(store, caplog):
  args = arguments()
  run(Traced(), 'tanh v1', args)
  (entry,) = store.iterdir()
  entry.write_bytes(b'not a program')
  again = Traced()
  with caplog.at_level(logging.WARNING):
    np.testing.assert_allclose(run(again, 'tanh v1', args), expected(args), rtol=1e-5, atol=1e-6)
  assert again.traces == 1
  assert f'cannot load {entry} from the program store' in caplog.text and 'compiling it again' in caplog.text
  replaced = Traced()
  run(replaced, 'tanh v1', args)
  assert replaced.traces == 0


def test_a_store_that_cannot_be_written_costs_a_compile_not_the_run(store, caplog):
  store.parent.mkdir(parents=True, exist_ok=True)
  store.write_text('a file where the store directory should be')
  args = arguments()
  with caplog.at_level(logging.WARNING):
    np.testing.assert_allclose(run(Traced(), 'tanh v1', args), expected(args), rtol=1e-5, atol=1e-6)
  assert 'in the program store' in caplog.text and 'the next run computes it again' in caplog.text


def test_the_store_is_off_with_the_compilation_cache(store):
  jax.config.update('jax_enable_compilation_cache', False)
  try:
    assert program_store.directory() is None
    run(Traced(), 'tanh v1', arguments())
  finally:
    jax.config.update('jax_enable_compilation_cache', True)
  assert not store.exists()


def test_the_key_follows_source_environment_and_options(monkeypatch):
  abstract = (jax.ShapeDtypeStruct((2, 3), jnp.float32),)
  base = program_store.key('f', abstract, {})
  assert program_store.key('f', abstract, {}) == base
  assert program_store.key('g', abstract, {}) != base
  assert program_store.key('f', (jax.ShapeDtypeStruct((2, 3), jnp.bfloat16),), {}) != base
  assert program_store.key('f', abstract, {'xla_backend_optimization_level': 0}) != base
  monkeypatch.setenv('XLA_FLAGS', os.environ.get('XLA_FLAGS', '') + ' --xla_cpu_enable_fast_math=true')
  assert program_store.key('f', abstract, {}) != base
  monkeypatch.undo()
  monkeypatch.setattr(program_store, '_source_fingerprint', lambda: 'edited source')
  assert program_store.key('f', abstract, {}) != base


KEY_SCRIPT = """
import jax
from axm_jax import config_files, program_store, programs
from axm_jax import train_step
from axm_jax.models import factory
config = config_files.load_config('configs/synthetic.py:smoke')
model = factory.build_model(config.model, num_classes=7, axis_name=train_step.AXIS)
abstract = programs.per_device(train_step.abstract_state(config, model), 8)
print(program_store.key(train_step.pmapped_train_step(config, model).update.identity, (abstract,), {}))
"""


def test_a_train_step_has_the_same_key_in_every_process():
  """The identity holds no addresses or other per-process text: a new process finds what an earlier one stored."""
  keys = [subprocess.run([sys.executable, '-c', KEY_SCRIPT], cwd=REPO, env=dict(os.environ, PYTHONHASHSEED=seed),
                         capture_output=True, text=True, check=True).stdout.strip() for seed in ('1', '2')]
  assert keys[0] == keys[1] and len(keys[0]) == 64


def test_shapes_are_traced_once_then_read_with_their_tree(store):
  traces = []

  def state():
    traces.append(1)
    return {'params': (jax.ShapeDtypeStruct((3, 4), jnp.float32), jax.ShapeDtypeStruct((), jnp.int32)),
            'stats': [jax.ShapeDtypeStruct((2,), jnp.bfloat16)]}

  first = program_store.shapes('state v1', state)
  second = program_store.shapes('state v1', state)
  assert len(traces) == 1
  assert jax.tree.structure(second) == jax.tree.structure(state())
  assert [(leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(second)] == [
      ((3, 4), jnp.float32), ((), jnp.int32), ((2,), jnp.bfloat16)] == [
          (leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(first)]
  program_store.shapes('state v2', state)
  assert len(traces) == 3  # state() above, then another identity


def test_a_one_device_program_is_loaded_onto_its_device(store):
  """A jitted program (e.g. the init program) runs on one of the 8 devices, not on all of them, once loaded."""
  x = np.linspace(0, 1, 6, dtype=np.float32)
  first = programs.lower_and_compile(jax.jit(jnp.sin), x, identity='sin')
  second = programs.lower_and_compile(jax.jit(jnp.sin), x, identity='sin')
  assert first is not second  # the second is the stored copy
  np.testing.assert_allclose(second(x), np.sin(x), rtol=1e-6)
