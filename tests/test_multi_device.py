"""`axm_jax.train_step.TrainStep` on 8 CPU devices computes what it computes on 1 device (SPEC §2, §2.1).

The step under test is the project's own: train_step.TrainStep (its gradients and update programs, pmapped with
axis_name=train_step.AXIS) as axm_jax/train.py runs it, on a model built with axis_name=train_step.AXIS as
train.py builds it. The same two global batches go through it on 8 devices (2 examples each) and on 1 device
(16 examples). Every objective is on, SDM and ITC with a learned temperature, the triplet ramp gives it weight 0
then 1/2 (so the step counter reaches the losses), and devices hold different numbers of text tokens; both
architectures.

The optimizer is SGD (passed into TrainStep like the real AdamW), so that the parameter update is
-LEARNING_RATE * (the gradient after the cross-device reduction): Adam would nearly cancel a constant factor such
as the 8 of a psum where a pmean belongs. Its momentum 0 trace holds that reduced gradient exactly, so the gradient
is read from the optimizer state instead of being recovered from float32 parameter differences.
What must agree, with the tolerances stated at the constants below:
  * the loss terms and grad_norm reported by every device,
  * the reduced gradient and the parameter update on every device (replicas must also stay identical),
  * the new BatchNorm running statistics (they differ per device if the cross-replica psum is dropped),
  * and (dual encoder) the 1-device step against jax.grad of losses.compute_losses on the global batch, which
    pins the 1-device side itself to the definition.
Float32 summation order differs between the two device counts, so nothing is compared for exact equality.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from axm_jax import config_files
from axm_jax import losses
from axm_jax import train_step
from axm_jax.models import factory
from test_axm_net import random_variables

DEVICES, PER_DEVICE, HEIGHT, WIDTH, LENGTH, CLASSES = 8, 2, 64, 32, 16, 9
STEPS = 2
LEARNING_RATE = 0.01
# Float32 noise from the other summation order, observed on both architectures (also with the triplet at full
# weight): below 1e-6 relative on the loss terms, 1e-5 on grad_norm, 4e-6 on the BatchNorm statistics and 5e-3 on
# the gradients (max_relative_difference, whose per-leaf normalisation magnifies leaves with small gradients).
# Wrong reductions give far larger errors: x8 gradients and grad_norm from a psum (7 on these measures); per-device
# BatchNorm statistics (2e-2 on the terms, 0.3 on the statistics, 3 on the gradients).
TERM_RTOL, TERM_ATOL = 1e-5, 1e-6
GRAD_NORM_RTOL = 1e-4
GRAD_TOLERANCE = 2e-2  # on max_relative_difference
STATS_RTOL = 1e-4  # on max_relative_difference


def max_difference(a, b) -> float:
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b)))


def max_relative_difference(a, b) -> float:
  """Largest over leaves of max |a - b| / max(max |b|, 0.01).

  The floor covers leaves whose exact gradient is zero (a bias followed by a training-mode BatchNorm), where both
  sides hold rounding noise only.
  """
  return max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 0.01)), a, b)))


def reduced_gradient(state: train_step.TrainState):
  """The gradient that the step handed to the optimizer: optax.sgd(momentum=0.0)'s trace is exactly it."""
  return state.opt_state[0].trace


def global_batch(rng):
  size = DEVICES * PER_DEVICE
  return {
      'image': rng.normal(size=(size, HEIGHT, WIDTH, 3)).astype(np.float32),
      'text_ids': rng.integers(4, 50, size=(size, LENGTH)).astype(np.int32),
      # Devices hold different numbers of tokens: cross-replica text statistics must still be global.
      'text_mask': np.arange(LENGTH)[None] < rng.integers(1, LENGTH + 1, size=size)[:, None],
      'label': rng.permutation(np.repeat(np.arange(size // 2), 2)).astype(np.int32),
  }


def shard(batch, devices: int):
  return {key: value.reshape((devices, -1) + value.shape[1:]) for key, value in batch.items()}


def replicate(tree, devices: int):
  return jax.tree.map(lambda leaf: np.stack([np.asarray(leaf)] * devices), tree)


def first(tree):
  return jax.tree.map(lambda leaf: leaf[0], tree)


def run_steps(make_step, state, batches):
  """STEPS train steps on 1 device, and each step again on DEVICES devices from the same 1-device state.

  Starting every 8-device step from the 1-device state keeps float32 differences from compounding over steps
  (a near-tie in batch-hard mining flipped by rounding would change the next gradient by far more than rounding).
  Returns (sharded, single): per step (state, terms) on the host, every leaf with a leading device axis.
  """
  single_step, sharded_step = make_step(jax.devices()[:1]), make_step(jax.devices()[:DEVICES])
  single, sharded = [], []
  for batch in batches:
    sharded.append(jax.device_get(sharded_step(replicate(state, DEVICES), shard(batch, DEVICES))))
    single.append(jax.device_get(single_step(replicate(state, 1), shard(batch, 1))))
    state = first(single[-1][0])
  return sharded, single


@pytest.fixture(scope='module', params=['axm_net', 'dual_encoder'])
def setup(request):
  config = config_files.load_config('configs/synthetic.py')
  config.model.update(architecture=request.param, width=0.0625, stripes=2, embed_dim=16, vocab_size=50, streams=1,
                      dual_encoder_channels=(4, 8), dual_encoder_text_channels=8)
  # Step 0 has triplet weight 0, step 1 weight 0.5: the step counter reaches the losses.
  config.loss.update(sdm_weight=0.5, itc_weight=0.5, learn_temperature=True, triplet_warmup_steps=2)
  rng = np.random.default_rng(0)
  batches = [global_batch(rng) for _ in range(STEPS)]
  model = factory.build_model(config.model, CLASSES, axis_name=train_step.AXIS)  # as axm_jax/train.py builds it
  variables = random_variables(model, batches[0]['image'][:2], batches[0]['text_ids'][:2],
                               batches[0]['text_mask'][:2])
  variables['params']['contrastive_log_scale'] = jnp.log(jnp.float32(20.0))
  optimizer = optax.sgd(LEARNING_RATE, momentum=0.0)
  state = train_step.TrainState.from_variables(jnp.zeros((), jnp.int32), variables, optimizer.init(variables['params']))
  # As axm_jax/train.py's train_step_lib.pmapped_train_step, with SGD in place of AdamW.
  make_step = lambda devices: train_step.TrainStep(model, optimizer, config.loss, devices)
  return (config, variables, batches) + run_steps(make_step, state, batches)


def test_terms_and_grad_norm_equal_one_device(setup):
  _, _, _, sharded, single = setup
  for index, ((_, terms), (_, reference)) in enumerate(zip(sharded, single)):
    assert set(terms) == {'id', 'triplet', 'affinity', 'sdm', 'itc', 'total', 'grad_norm'}
    assert reference['grad_norm'][0] > 0.1 and reference['triplet'][0] > 0.01
    for device in range(DEVICES):
      for key in terms:
        rtol = GRAD_NORM_RTOL if key == 'grad_norm' else TERM_RTOL
        np.testing.assert_allclose(terms[key][device], reference[key][0], rtol=rtol, atol=TERM_ATOL,
                                   err_msg=f'step {index}, device {device}, {key}')


def test_gradients_and_sgd_updates_equal_one_device(setup):
  _, variables, _, sharded, single = setup
  before = variables['params']
  for index, ((state, _), (reference, _)) in enumerate(zip(sharded, single)):
    np.testing.assert_array_equal(state.step, np.full(DEVICES, index + 1))
    reference_gradient = first(reduced_gradient(reference))
    scale = max(jax.tree.leaves(jax.tree.map(lambda leaf: float(np.max(np.abs(leaf))), reference_gradient)))
    assert scale > 0.1 and abs(reference_gradient['contrastive_log_scale']) > 1e-4
    for device in range(DEVICES):
      on_device = lambda tree: jax.tree.map(lambda leaf: leaf[device], tree)
      # Every replica holds the same reduced gradient and applies the same update, bit for bit.
      assert max_difference(on_device(reduced_gradient(state)), first(reduced_gradient(state))) == 0.0
      assert max_difference(on_device(state.params), first(state.params)) == 0.0, (index, device)
    gradient = first(reduced_gradient(state))
    assert max_relative_difference(gradient, reference_gradient) < GRAD_TOLERANCE, index
    # The update is -LEARNING_RATE * that gradient (float32 rounding of before - update: 1e-6 relative).
    expected = jax.tree.map(lambda p, g: p - np.float32(LEARNING_RATE) * g, before, gradient)
    assert max_relative_difference(first(state.params), expected) < 1e-5, index
    before = first(reference.params)


def test_batch_stats_equal_one_device(setup):
  _, variables, _, sharded, single = setup
  before = variables['batch_stats']
  for index, ((state, _), (reference, _)) in enumerate(zip(sharded, single)):
    reference_stats = first(reference.batch_stats)
    # The statistics moved (momentum 0.9 towards the batch statistics), so the comparison is not vacuous.
    assert max_difference(reference_stats, before) > 1e-2
    for device in range(DEVICES):
      stats = jax.tree.map(lambda leaf: leaf[device], state.batch_stats)
      assert max_relative_difference(stats, reference_stats) < STATS_RTOL, (index, device)
    before = reference_stats


def test_one_device_step_is_the_gradient_of_the_global_loss(setup):
  """The 1-device train_step against jax.grad of losses.compute_losses on the global batch, with no pmap at all.

  What this checks is train_step's own logic, the same for both architectures: it runs on the dual encoder only,
  whose extra compilation takes seconds rather than AXM-Net's half minute.
  """
  config, variables, batches, _, single = setup
  if config.model.architecture != 'dual_encoder':
    pytest.skip('architecture-independent; checked on the dual encoder')
  model = factory.build_model(config.model, CLASSES)

  @jax.jit
  def value_and_grad(params, batch_stats, batch, step):
    def loss_fn(params):
      outputs, mutated = model.apply({'params': params, 'batch_stats': batch_stats}, batch['image'],
                                     batch['text_ids'], batch['text_mask'], train=True, mutable=['batch_stats'])
      total, terms = losses.compute_losses(outputs, batch['label'], config.loss, step)
      return total, (terms, mutated['batch_stats'])
    return jax.value_and_grad(loss_fn, has_aux=True)(params)

  before = variables
  for index, (batch, (state, step_terms)) in enumerate(zip(batches, single)):
    (_, (terms, batch_stats)), grads = jax.device_get(
        value_and_grad(before['params'], before['batch_stats'], batch, jnp.int32(index)))
    assert max_relative_difference(first(reduced_gradient(state)), grads) < GRAD_TOLERANCE, index
    for key in terms:
      np.testing.assert_allclose(step_terms[key][0], terms[key], rtol=TERM_RTOL, atol=TERM_ATOL,
                                 err_msg=f'step {index}, {key}')
    np.testing.assert_allclose(step_terms['grad_norm'][0], optax.tree.norm(grads), rtol=GRAD_NORM_RTOL)
    assert max_relative_difference(first(state.batch_stats), batch_stats) < STATS_RTOL, index
    before = first(state.variables)


def test_replicate_copies_to_every_device_with_the_sharding_the_step_returns():
  tree = {'kernel': np.arange(6, dtype=np.float32).reshape(2, 3), 'step': np.int32(4)}
  replicated = train_step.replicate(tree)
  returned = jax.pmap(lambda t: t, axis_name=train_step.AXIS)(replicated)  # as a pmapped step returns its state
  for key, leaf in tree.items():
    assert replicated[key].sharding == returned[key].sharding  # else the step would compile again for its own output
    np.testing.assert_array_equal(replicated[key], np.broadcast_to(leaf, (DEVICES,) + np.shape(leaf)))
