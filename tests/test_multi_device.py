"""A pmap step over 8 CPU devices computes what one device computes on the same global batch (SPEC §2, §2.1).

The recipe under test is the one in axm_jax/losses.py: losses.gathered_loss_fn inside pmap, then
lax.pmean of the gradients. Every objective is on, SDM and ITC with a learned temperature, for both architectures.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from axm_jax import losses
from axm_jax.models import factory
from configs.synthetic import get_config
from test_axm_net import random_variables

DEVICES, PER_DEVICE, HEIGHT, WIDTH, LENGTH, CLASSES = 8, 2, 64, 32, 16, 9


def max_difference(a, b) -> float:
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b)))


def max_relative_difference(a, b) -> float:
  """Largest over leaves of max |a - b| / max(max |b|, 0.01); float32 summation-order noise is < 1e-4 here.

  The floor covers leaves whose exact gradient is zero (a bias followed by a training-mode BatchNorm), where both
  sides hold rounding noise only. A wrong reduction (psum, a missing cross-device term) gives errors of order 1.
  """
  return max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(x - y)) / max(np.max(np.abs(y)), 0.01)), a, b)))


@pytest.fixture(scope='module', params=['axm_net', 'dual_encoder'])
def setup(request):
  config = get_config()
  config.model.update(architecture=request.param, width=0.0625, stripes=2, embed_dim=16, vocab_size=50, streams=1,
                      dual_encoder_channels=(4, 8), dual_encoder_text_channels=8)
  config.loss.update(sdm_weight=0.5, itc_weight=0.5, learn_temperature=True)
  rng = np.random.default_rng(0)
  size = DEVICES * PER_DEVICE
  batch = {
      'image': rng.normal(size=(size, HEIGHT, WIDTH, 3)).astype(np.float32),
      'text_ids': rng.integers(4, 50, size=(size, LENGTH)).astype(np.int32),
      # Devices hold different numbers of tokens: cross-replica text statistics must still be global.
      'text_mask': np.arange(LENGTH)[None] < rng.integers(1, LENGTH + 1, size=size)[:, None],
      'label': rng.permutation(np.repeat(np.arange(size // 2), 2)).astype(np.int32),
  }
  variables = random_variables(factory.build_model(config.model, CLASSES), batch['image'][:2],
                               batch['text_ids'][:2], batch['text_mask'][:2])
  variables['params']['contrastive_log_scale'] = jnp.log(jnp.float32(20.0))
  return config, batch, variables


def test_pmap_step_equals_one_device_step(setup):
  config, batch, variables = setup
  single = factory.build_model(config.model, CLASSES)
  sharded = factory.build_model(config.model, CLASSES, axis_name='batch')

  def single_loss(params):
    outputs, state = single.apply({**variables, 'params': params}, batch['image'], batch['text_ids'],
                                  batch['text_mask'], train=True, mutable=['batch_stats'])
    total, terms = losses.compute_losses(outputs, jnp.asarray(batch['label']), config.loss)
    return total, (terms, state)

  (_, (terms, state)), grads = jax.device_get(
      jax.jit(jax.value_and_grad(single_loss, has_aux=True))(variables['params']))

  def step(params, batch_stats, image, text_ids, text_mask, labels):
    def loss_fn(params):
      outputs, state = sharded.apply({'params': params, 'batch_stats': batch_stats}, image, text_ids, text_mask,
                                     train=True, mutable=['batch_stats'])
      total, terms = losses.gathered_loss_fn(outputs, labels, config.loss, axis_name='batch')
      return total, (terms, state)
    (_, (terms, state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return terms, state, jax.lax.pmean(grads, 'batch'), jax.lax.psum(grads, 'batch')

  replicate = lambda tree: jax.tree.map(lambda leaf: jnp.stack([leaf] * DEVICES), tree)
  shard = lambda array: array.reshape((DEVICES, PER_DEVICE) + array.shape[1:])
  device_terms, device_state, mean_grads, summed_grads = jax.device_get(jax.pmap(step, axis_name='batch')(
      replicate(variables['params']), replicate(variables['batch_stats']),
      *(shard(batch[key]) for key in ('image', 'text_ids', 'text_mask', 'label'))))

  assert {'sdm', 'itc'} <= set(terms) and grads['contrastive_log_scale'] != 0
  for device in range(DEVICES):
    on_device = lambda tree: jax.tree.map(lambda leaf: leaf[device], tree)
    for key in terms:
      np.testing.assert_allclose(device_terms[key][device], terms[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert max_difference(on_device(device_state), state) < 1e-5
    assert max_relative_difference(on_device(mean_grads), grads) < 5e-4
  # psum would be DEVICES times too large: each device's gradient already sums all devices' cotangents.
  first = lambda tree: jax.tree.map(lambda leaf: leaf[0], tree)
  assert max_relative_difference(jax.tree.map(lambda leaf: leaf / DEVICES, first(summed_grads)), grads) < 5e-4
  scale = max(jax.tree.leaves(jax.tree.map(lambda leaf: float(np.max(np.abs(leaf))), grads)))
  assert scale > 0.1 and max_difference(first(summed_grads), grads) > scale
