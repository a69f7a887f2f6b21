"""Blocks against NumPy references written from their definitions (SPEC §1.1)."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from axm_jax.models import blocks

EPSILON = 1e-5


def numpy_conv(x, kernel, padding=0, stride=1, groups=1):
  """Cross-correlation of x [B, H, W, Cin] with kernel [kh, kw, Cin/groups, Cout], zero padding on each side."""
  kh, kw, group_in, out_channels = kernel.shape
  x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0))) if kh > 1 else x
  batch, height, width, _ = x.shape
  out_h, out_w = (height - kh) // stride + 1, (width - kw) // stride + 1
  group_out = out_channels // groups
  out = np.zeros((batch, out_h, out_w, out_channels))
  for group in range(groups):
    inputs = x[..., group * group_in:(group + 1) * group_in]
    weights = kernel[..., group * group_out:(group + 1) * group_out]
    for i in range(kh):
      for j in range(kw):
        window = inputs[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride]
        out[..., group * group_out:(group + 1) * group_out] += window @ weights[i, j]
  return out


def numpy_text_conv(x, kernel, groups=1):
  """1x3 conv along a text map [B, L, C] (kernel [3, Cin/g, Cout]) via the image reference at height 1."""
  padded = np.pad(x, ((0, 0), (1, 1), (0, 0)))[:, None]
  return numpy_conv(padded, kernel[None], groups=groups)[:, 0]


def numpy_batch_norm_eval(x, params, stats):
  return (x - stats['mean']) / np.sqrt(stats['var'] + EPSILON) * params['scale'] + params['bias']


def numpy_modality_path(x, mask, params, stats, gate, streams):
  """OSNet-style path with the given gate params; text when mask is not None (then x is [B, L, C])."""
  keep = np.ones(x.shape[:-1]) if mask is None else mask.astype(float)
  def conv(y, kernel, groups=1):
    if mask is None:
      return numpy_conv(y, kernel, padding=kernel.shape[0] // 2, groups=groups)
    return numpy_text_conv(y, kernel, groups) if kernel.shape[0] == 3 else y @ kernel[0]
  def unit(y, name, relu=True):
    y = numpy_batch_norm_eval(conv(y, params[name]['conv']['kernel']), params[name]['bn'], stats[name]['bn'])
    return (np.maximum(y, 0) if relu else y) * keep[..., None]
  def lite(y, name):
    y = conv(conv(y, params[name]['pointwise']['kernel']), params[name]['depthwise']['kernel'], groups=y.shape[-1])
    y = numpy_batch_norm_eval(y, params[name]['bn'], stats[name]['bn'])
    return np.maximum(y, 0) * keep[..., None]
  reduced = unit(x, 'reduce')
  combined = 0
  for stream in range(1, streams + 1):
    y = reduced
    for depth in range(1, stream + 1):
      y = lite(y, f'stream{stream}_lite{depth}')
    spatial = tuple(range(1, y.ndim - 1))
    pooled = y.sum(axis=spatial) / keep.sum(axis=spatial)[:, None]
    hidden = np.maximum(pooled @ gate['hidden']['kernel'] + gate['hidden']['bias'], 0)
    scale = 1 / (1 + np.exp(-(hidden @ gate['output']['kernel'] + gate['output']['bias'])))
    combined = combined + y * scale.reshape(scale.shape[:1] + (1,) * len(spatial) + scale.shape[1:])
  identity = unit(x, 'projection', relu=False) if 'projection' in params else x
  return np.maximum(unit(combined, 'expand', relu=False) + identity, 0)


def randomize(variables, seed):
  """Random BatchNorm statistics and affine parameters, random gate biases; kernels kept from init."""
  rng = np.random.default_rng(seed)
  flat = flax.traverse_util.flatten_dict(variables)
  for path, value in flat.items():
    if path[-1] == 'var':
      flat[path] = jnp.asarray(rng.uniform(0.5, 1.5, value.shape), jnp.float32)
    elif path[-1] in ('mean', 'bias'):
      flat[path] = jnp.asarray(rng.normal(0, 0.3, value.shape), jnp.float32)
    elif path[-1] == 'scale':
      flat[path] = jnp.asarray(rng.uniform(0.5, 1.5, value.shape), jnp.float32)
  return flax.traverse_util.unflatten_dict(flat)


def block_inputs(channels: int, seed: int):
  """An image map [2, 6, 4, C], a text map [2, 7, C] zero on padding, and its mask (lengths 7 and 4)."""
  rng = np.random.default_rng(seed)
  image = rng.normal(size=(2, 6, 4, channels)).astype(np.float32)
  mask = np.arange(7)[None] < np.array([7, 4])[:, None]
  text = rng.normal(size=(2, 7, channels)).astype(np.float32) * mask[..., None]
  return image, text, mask


@pytest.fixture(scope='module')
def block_case():
  image, text, mask = block_inputs(channels=4, seed=0)
  block = blocks.AXMBlock(features=8, streams=2, share_gate=True, gate_reduction=2)
  variables = jax.jit(block.init, static_argnums=4)(jax.random.key(0), image, text, mask, False)
  return block, randomize(variables, 1), image, text, mask


def test_axm_block_matches_numpy_reference_with_one_shared_gate(block_case):
  block, variables, image, text, mask = block_case
  params, stats = variables['params'], variables['batch_stats']
  assert sorted(params) == ['gate', 'text', 'visual']
  image_out, text_out = jax.jit(block.apply, static_argnums=4)(variables, image, text, mask, False)
  expected_image = numpy_modality_path(image, None, params['visual'], stats['visual'], params['gate'], 2)
  expected_text = numpy_modality_path(text, mask, params['text'], stats['text'], params['gate'], 2)
  np.testing.assert_allclose(image_out, expected_image, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(text_out, expected_text, rtol=1e-4, atol=1e-5)
  assert np.all(np.asarray(text_out)[~mask] == 0)


def test_axm_block_single_modality_equals_joint(block_case):
  block, variables, image, text, mask = block_case
  joint_image, joint_text = block.apply(variables, image, text, mask, False)
  image_only, missing_text = block.apply(variables, image, None, None, False)
  missing_image, text_only = block.apply(variables, None, text, mask, False)
  assert missing_text is None and missing_image is None
  np.testing.assert_allclose(image_only, joint_image, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(text_only, joint_text, rtol=1e-6, atol=1e-6)


def test_every_block_starts_as_its_shortcut_with_zero_gamma_and_not_without():
  image, text, mask = block_inputs(channels=8, seed=2)  # as many channels as the block: identity shortcut
  for zero_gamma in (True, False):
    block = blocks.AXMBlock(features=8, streams=2, share_gate=True, gate_reduction=2, zero_gamma=zero_gamma)
    variables = block.init(jax.random.key(0), image, text, mask, False)
    for modality in ('visual', 'text'):
      scale = np.asarray(variables['params'][modality]['expand']['bn']['scale'])
      np.testing.assert_array_equal(scale, np.full(8, 0.0 if zero_gamma else 1.0))
    image_out, text_out = block.apply(variables, image, text, mask, True, mutable=['batch_stats'])[0]
    for out, x in ((image_out, image), (text_out, text)):
      distance = float(np.abs(np.asarray(out) - np.maximum(x, 0)).max())
      assert (distance < 1e-6) == zero_gamma, (zero_gamma, distance)


def test_unshared_gates_are_one_per_modality():
  block = blocks.AXMBlock(features=8, streams=1, share_gate=False, gate_reduction=2)
  shapes = jax.eval_shape(lambda: block.init(jax.random.key(0), jnp.zeros((1, 4, 4, 8)), jnp.zeros((1, 5, 8)),
                                             jnp.ones((1, 5), bool), False))
  assert sorted(shapes['params']) == ['text', 'text_gate', 'visual', 'visual_gate']
  assert 'projection' not in shapes['params']['visual']  # same channels in and out: identity residual
  assert shapes['params']['visual_gate']['hidden']['kernel'].shape == (2, 1)


def numpy_masked_stats(x, mask):
  weights = mask.astype(float)[..., None]
  count = weights.sum()
  mean = (x * weights).sum(axis=(0, 1)) / count
  var = (((x - mean) ** 2) * weights).sum(axis=(0, 1)) / count
  return mean, var


def test_batch_norm_train_uses_masked_statistics_and_updates_running_averages():
  rng = np.random.default_rng(2)
  x = rng.normal(2.0, 3.0, size=(3, 5, 4)).astype(np.float32)
  mask = rng.random((3, 5)) < 0.6
  norm = blocks.BatchNorm()
  variables = norm.init(jax.random.key(0), x, False)
  out, state = norm.apply(variables, x, True, mask, mutable=['batch_stats'])
  mean, var = numpy_masked_stats(x, mask)
  np.testing.assert_allclose(out, (x - mean) / np.sqrt(var + EPSILON), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(state['batch_stats']['mean'], 0.1 * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(state['batch_stats']['var'], 0.9 + 0.1 * var, rtol=1e-5, atol=1e-6)
  evaluated = norm.apply({'params': variables['params'], 'batch_stats': state['batch_stats']}, x, False)
  expected = (x - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var + EPSILON)
  np.testing.assert_allclose(evaluated, expected, rtol=1e-4, atol=1e-4)


def test_batch_norm_cross_replica_statistics_equal_global_batch_with_unequal_masks():
  devices = 4
  rng = np.random.default_rng(3)
  x = rng.normal(size=(devices * 2, 6, 3)).astype(np.float32)
  mask = np.arange(6)[None] < np.array([6, 1, 2, 6, 3, 0, 5, 4])[:, None]  # different token counts per device
  single = blocks.BatchNorm()
  variables = single.init(jax.random.key(0), x, False)
  expected, expected_state = single.apply(variables, x, True, mask, mutable=['batch_stats'])
  replicated = jax.tree.map(lambda a: jnp.stack([a] * devices), variables)
  sharded = blocks.BatchNorm(axis_name='batch')
  out, state = jax.pmap(lambda v, a, m: sharded.apply(v, a, True, m, mutable=['batch_stats']),
                        axis_name='batch', devices=jax.devices()[:devices])(
                            replicated, x.reshape(devices, 2, 6, 3), mask.reshape(devices, 2, 6))
  np.testing.assert_allclose(np.asarray(out).reshape(x.shape), expected, rtol=1e-5, atol=1e-5)
  for device in range(devices):
    np.testing.assert_allclose(state['batch_stats']['mean'][device], expected_state['batch_stats']['mean'],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state['batch_stats']['var'][device], expected_state['batch_stats']['var'],
                               rtol=1e-5, atol=1e-6)


def test_lite_conv_on_text_is_depthwise_along_the_sequence_and_zero_on_padding():
  rng = np.random.default_rng(4)
  mask = np.arange(6)[None] < np.array([6, 3])[:, None]
  x = rng.normal(size=(2, 6, 3)).astype(np.float32) * mask[..., None]
  lite = blocks.LiteConv(features=5)
  variables = randomize(lite.init(jax.random.key(1), x, mask, False), 5)
  out = lite.apply(variables, x, mask, False)
  params = variables['params']
  assert params['depthwise']['kernel'].shape == (3, 1, 5)
  pointwise = x @ np.asarray(params['pointwise']['kernel'][0])
  depthwise = numpy_text_conv(pointwise, np.asarray(params['depthwise']['kernel']), groups=5)
  expected = np.maximum(numpy_batch_norm_eval(depthwise, params['bn'], variables['batch_stats']['bn']), 0)
  np.testing.assert_allclose(out, expected * mask[..., None], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('shape', [(2, 5, 4, 6), (2, 7, 6)])
def test_depthwise_implementations_agree(shape):
  rng = np.random.default_rng(5)
  x = rng.normal(size=shape).astype(np.float32)
  kernel = rng.normal(size=(3,) * (len(shape) - 2) + shape[-1:]).astype(np.float32)
  grouped_kernel = kernel[..., None, :]
  expected = (numpy_conv(x, grouped_kernel, padding=1, groups=shape[-1]) if len(shape) == 4
              else numpy_text_conv(x, grouped_kernel, groups=shape[-1]))
  for implementation in ('shifted', 'grouped'):
    np.testing.assert_allclose(blocks.depthwise_conv(x, kernel, implementation), expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="depthwise implementation 'fft'; expected 'auto', 'shifted' or 'grouped'"):
    blocks.depthwise_conv(x, kernel, 'fft')


def test_global_average_pool_ignores_padding():
  x = np.arange(12, dtype=np.float32).reshape(1, 4, 3)
  mask = np.array([[True, True, False, False]])
  np.testing.assert_allclose(blocks.global_average_pool(x * mask[..., None], mask), [[1.5, 2.5, 3.5]])
  np.testing.assert_allclose(blocks.global_average_pool(x[:, None], None), [x[0].mean(axis=0)])
