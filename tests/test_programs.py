"""Programs compiled ahead of time in background threads (axm_jax.programs)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from axm_jax import programs


@pytest.fixture
def compiles():
  """Counts XLA backend compiles while the test runs."""
  events = []
  listener = lambda event, seconds, **_: events.append(event)
  jax.monitoring.register_event_duration_secs_listener(listener)
  yield lambda: events.count('/jax/core/compile/backend_compile_duration')
  jax.monitoring.unregister_event_duration_listener(listener)


def scaled_sums(x, y):
  return jax.lax.psum(x.sum(), 'batch') * y


def test_an_announced_call_runs_the_background_program_and_others_compile_as_usual(compiles):
  devices = jax.local_device_count()
  function = programs.Precompiled(jax.pmap(scaled_sums, axis_name='batch'))
  x = np.arange(devices * 6, dtype=np.float32).reshape(devices, 2, 3)
  y = np.linspace(1, 2, devices * 4).astype(np.float32).reshape(devices, 4)
  function.precompile(*programs.per_device((jax.ShapeDtypeStruct((2, 3), jnp.float32),
                                            jax.ShapeDtypeStruct((4,), jnp.float32)), devices))
  function.wait()
  before = compiles()
  np.testing.assert_allclose(function(x, y), x.sum() * y, rtol=1e-6)
  assert compiles() == before  # the program compiled in the background ran
  np.testing.assert_allclose(function(x, y[:, :2]), x.sum() * y[:, :2], rtol=1e-6)
  assert compiles() == before + 1  # another shape: pmap compiled it


def test_wait_raises_the_error_of_a_background_compile():
  def needs_two_columns(x):
    if x.shape[-1] != 2:
      raise ValueError(f'expected 2 columns, got {x.shape[-1]}')
    return x
  function = programs.Precompiled(jax.pmap(needs_two_columns))
  function.precompile(jax.ShapeDtypeStruct((jax.local_device_count(), 3), jnp.float32))
  with pytest.raises(ValueError, match='expected 2 columns, got 3'):
    function.wait()
