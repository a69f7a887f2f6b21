"""Programs compiled ahead of time in background threads (axm_jax.programs)."""
import time

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


def test_an_announced_call_runs_the_background_program_and_others_compile_at_the_call(compiles):
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
  assert compiles() == before + 1  # another shape: compiled at the call, once
  np.testing.assert_allclose(function(x, y[:, 2:]), x.sum() * y[:, 2:], rtol=1e-6)
  assert compiles() == before + 1  # that shape again: its program is kept


def test_wait_raises_the_error_of_a_background_compile():
  def needs_two_columns(x):
    if x.shape[-1] != 2:
      raise ValueError(f'expected 2 columns, got {x.shape[-1]}')
    return x
  function = programs.Precompiled(jax.pmap(needs_two_columns))
  function.precompile(jax.ShapeDtypeStruct((jax.local_device_count(), 3), jnp.float32))
  with pytest.raises(ValueError, match='expected 2 columns, got 3'):
    function.wait()


def test_background_lowerings_take_turns_first_asked_first():
  intervals = {}

  def traced_slowly(name):
    def function(x):
      start = time.perf_counter()
      time.sleep(0.3)  # runs while tracing, as a large model's tracing would
      intervals[name] = (start, time.perf_counter())
      return x + 1
    return programs.Precompiled(jax.pmap(function))

  first, second = traced_slowly('first'), traced_slowly('second')
  abstract = jax.ShapeDtypeStruct((jax.local_device_count(), 2), jnp.float32)
  first.precompile(abstract)
  second.precompile(abstract)
  first.wait()
  second.wait()
  assert intervals['first'][1] <= intervals['second'][0]  # the second was traced after the first, not beside it


def test_lowerings_follow_the_order_of_queueing_even_when_the_first_reaches_its_lowering_last():
  lowered = []

  def work(name, delay):
    def run():
      time.sleep(delay)  # work before the lowering, as the init program first builds its inputs
      function = jax.jit(lambda x: (lowered.append(name), x + 1)[1])
      return programs.lower_and_compile(function, jax.ShapeDtypeStruct((2,), jnp.float32))
    return run

  futures = [programs.in_background(work(name, delay)) for name, delay in (('first', 0.5), ('second', 0.0),
                                                                          ('third', 0.0))]
  for future in futures:
    np.testing.assert_array_equal(future.result()(np.zeros(2, np.float32)), np.ones(2, np.float32))
  assert lowered == ['first', 'second', 'third']


def test_the_compiler_options_are_valid_options_of_this_jaxlib_and_change_no_result():
  on_cpu = jax.default_backend() == 'cpu'
  assert programs.compiler_options() == ({'xla_cpu_opt_preset': 'CPU_OPT_PRESET_FAST_COMPILE',
                                          'xla_cpu_experimental_ynn_fusion_type': ''} if on_cpu else {})
  x = np.linspace(-1, 1, 256 * 128, dtype=np.float32).reshape(256, 128)
  function = jax.jit(lambda v: jnp.tanh(v) @ v.T + (v * v).sum(axis=0).mean())
  compiled = programs.lower_and_compile(function, jax.ShapeDtypeStruct(x.shape, x.dtype))  # XLA refuses unknown ones
  exact = x.astype(np.float64)
  np.testing.assert_allclose(compiled(x), np.tanh(exact) @ exact.T + (exact * exact).sum(axis=0).mean(),
                             rtol=1e-5, atol=1e-3)
  if on_cpu:  # XLA's default hands the reduction to YNNPACK; the options keep it in XLA's own kernels
    assert '"__ynn_fusion"' in function.lower(x).compile().as_text()
    assert '"__ynn_fusion"' not in compiled.as_text()
