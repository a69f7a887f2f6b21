"""AXMNet: parameter tree per switch, output contract, single-modality paths, padding, gates (SPEC §1)."""
import functools
import math

import flax
import jax
import jax.extend
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from axm_jax import config_files
from axm_jax import losses
from axm_jax.models import axm_net
from axm_jax.models import blocks
from axm_jax.models.axm_net import AXMNet

BATCH, HEIGHT, WIDTH, LENGTH, CLASSES = 4, 64, 32, 16, 7
EMBED = 16


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  config = config_files.load_config('configs/synthetic.py').model
  config.update(width=0.0625, stripes=2, embed_dim=EMBED, vocab_size=40, streams=2)
  config.update(overrides)
  return config


def random_variables(model: AXMNet, image, text_ids, text_mask, seed: int = 0) -> dict:
  """Variables with model.init's structure filled from NumPy (XLA compiles ~300 random inits slowly on CPU).

  BatchNorm statistics are random too, so evaluation-mode tests exercise them.
  """
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), image, text_ids, text_mask))
  rng = np.random.default_rng(seed)
  fixed = {'affinity_scale': 10.0, 'affinity_bias': -5.0}
  def fill(path, leaf):
    name = path[-1].key
    if name in fixed:
      return jnp.full(leaf.shape, fixed[name], leaf.dtype)
    if name == 'var' or name == 'scale':
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
    if name in ('mean', 'bias'):
      return jnp.asarray(rng.normal(0, 0.1, leaf.shape), leaf.dtype)
    std = 1.0 if name == 'embedding' else 1 / math.sqrt(np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.normal(0, std, leaf.shape), leaf.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.lru_cache(maxsize=None)
def jitted(model: AXMNet, method: str = '__call__', train: bool = False):
  """One compiled apply per (model, method, mode); train mode also returns the new batch_stats."""
  function = getattr(AXMNet, method)
  if train:
    return jax.jit(lambda v, *args: model.apply(v, *args, train=True, method=function, mutable=['batch_stats']))
  return jax.jit(lambda v, *args: model.apply(v, *args, method=function))


def param_shapes(config: ml_collections.ConfigDict) -> dict:
  """{'path/to/leaf': ShapeDtypeStruct} of the params, from tracing init only."""
  model = AXMNet(config, CLASSES)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, HEIGHT, WIDTH, 3)),
                                             jnp.zeros((1, LENGTH), jnp.int32), jnp.ones((1, LENGTH), bool)))
  return flax.traverse_util.flatten_dict(shapes['params'], sep='/')


def param_paths(config: ml_collections.ConfigDict) -> set[str]:
  return set(param_shapes(config))


def normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope='module')
def inputs():
  rng = np.random.default_rng(0)
  image = rng.normal(size=(BATCH, HEIGHT, WIDTH, 3)).astype(np.float32)
  text_ids = rng.integers(4, 40, size=(BATCH, LENGTH)).astype(np.int32)
  text_mask = np.arange(LENGTH)[None] < np.array([16, 11, 6, 1])[:, None]
  return image, np.where(text_mask, text_ids, 0), text_mask


@pytest.fixture(scope='module')
def model():
  return AXMNet(tiny_config(), CLASSES)


@pytest.fixture(scope='module')
def variables(model, inputs):
  return random_variables(model, *inputs)


@pytest.fixture(scope='module')
def joint_outputs(model, variables, inputs):
  return jitted(model)(variables, *inputs)


def test_one_shared_gate_per_block():
  paths = param_paths(tiny_config())
  gates = {path.split('/')[0] for path in paths if path.split('/')[1:2] == ['gate']}
  assert gates == {f'stage{stage}_block{block}' for stage in (1, 2, 3) for block in (1, 2)}
  assert not [path for path in paths if 'gate' in path.split('/')[2:]]  # none inside the modality paths
  assert len([path for path in paths if '/gate/' in path]) == 6 * 4  # hidden/output kernel+bias, once per block


def test_unshared_gates_give_one_gate_per_modality():
  paths = param_paths(tiny_config(share_gate=False))
  for stage in (1, 2, 3):
    for block in (1, 2):
      prefix = f'stage{stage}_block{block}'
      assert f'{prefix}/visual_gate/hidden/kernel' in paths and f'{prefix}/text_gate/hidden/kernel' in paths
      assert f'{prefix}/gate/hidden/kernel' not in paths
  assert paths - {path for path in paths if 'visual_gate' in path or 'text_gate' in path} == {
      path for path in param_paths(tiny_config()) if '/gate/' not in path}


def test_switches_change_the_param_tree():
  default = param_paths(tiny_config())
  without_parts = param_paths(tiny_config(part_attention=False))
  assert default - without_parts == {path for path in default if path.split('/')[0] in (
      'part_attention', 'part_visual_output', 'part_visual_neck')}
  assert without_parts < default
  without_text_attention = param_paths(tiny_config(text_attention=False))
  assert default - without_text_attention == {path for path in default if path.startswith('text_attention/')}
  assert without_text_attention < default
  three_streams = param_paths(tiny_config(streams=3))
  lite = {path.split('/')[2] for path in three_streams if path.startswith('stage1_block1/visual/stream')}
  assert lite == {'stream1_lite1', 'stream2_lite1', 'stream2_lite2', 'stream3_lite1', 'stream3_lite2',
                  'stream3_lite3'}


def test_sizes_follow_width_embed_dim_and_reductions():
  shapes = param_shapes(tiny_config(width=0.125, embed_dim=24))
  assert shapes['visual_stem/conv/kernel'].shape == (7, 7, 3, 8)
  assert shapes['text_stem/conv/kernel'].shape == (3, 300, 8)
  assert shapes['word_embedding/embedding'].shape == (40, 300)
  assert shapes['stage1_block1/visual/reduce/conv/kernel'].shape == (1, 1, 8, 8)  # C_mid = 32 / 4
  assert shapes['stage1_block1/visual/stream1_lite1/depthwise/kernel'].shape == (3, 3, 1, 8)
  assert shapes['stage1_block1/text/stream1_lite1/depthwise/kernel'].shape == (3, 1, 8)
  assert shapes['stage3_block1/gate/hidden/kernel'].shape == (16, 1)  # C_mid 16 / reduction 16
  assert shapes['stage3_block2/visual/expand/conv/kernel'].shape == (1, 1, 16, 64)
  assert 'projection' not in {path.split('/')[2] for path in shapes if path.startswith('stage3_block2/visual/')}
  assert shapes['visual_final/conv/kernel'].shape == (1, 1, 64, 64)
  assert shapes['global_visual_hidden/kernel'].shape == (64, 24)
  assert shapes['part_attention/hidden/kernel'].shape == (128, 4)  # [GMP(stripe); GAP(map)] -> 64 / 16
  assert shapes['text_attention/transform_hidden/kernel'].shape == (64, 16)  # ratio 4
  assert shapes['classifier/kernel'].shape == (24, CLASSES)
  assert 'classifier/bias' not in shapes
  assert all(leaf.dtype == jnp.float32 for leaf in param_shapes(tiny_config(dtype='bfloat16')).values())


def test_output_contract(joint_outputs):
  assert sorted(joint_outputs) == sorted([
      'global_visual', 'part_visual', 'text', 'global_visual_logits', 'part_visual_logits', 'text_logits',
      'image_embedding', 'text_embedding', 'affinity_scale', 'affinity_bias'])
  for key in ('global_visual', 'part_visual', 'text'):
    assert joint_outputs[key].shape == (BATCH, EMBED)
    assert joint_outputs[f'{key}_logits'].shape == (BATCH, CLASSES)
  assert joint_outputs['image_embedding'].shape == joint_outputs['text_embedding'].shape == (BATCH, 2 * EMBED)
  assert float(joint_outputs['affinity_scale']) == 10.0 and float(joint_outputs['affinity_bias']) == -5.0


def test_retrieval_embeddings_and_score(joint_outputs):
  out = {key: np.asarray(value, np.float64) for key, value in joint_outputs.items()}
  global_visual, part_visual, text = normalize(out['global_visual']), normalize(out['part_visual']), normalize(
      out['text'])
  np.testing.assert_allclose(out['image_embedding'], np.concatenate([global_visual, part_visual], 1) / math.sqrt(2),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out['text_embedding'], np.concatenate([text, text], 1) / math.sqrt(2), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(out['image_embedding'] @ out['text_embedding'].T,
                             (global_visual @ text.T + part_visual @ text.T) / 2, rtol=1e-5, atol=1e-6)
  query = axm_net.image_text_query(out['image_embedding'], out['text_embedding'])
  expected = normalize(out['image_embedding'] + out['text_embedding'])
  np.testing.assert_allclose(query, expected, rtol=1e-5, atol=1e-6)


def test_single_modality_encoders_equal_the_joint_forward(model, variables, inputs, joint_outputs):
  image, text_ids, text_mask = inputs
  image_only = jitted(model, 'encode_image')(variables, image)
  text_only = jitted(model, 'encode_text')(variables, text_ids, text_mask)
  assert sorted(image_only) == ['global_visual', 'global_visual_logits', 'image_embedding', 'part_visual',
                                'part_visual_logits']
  assert sorted(text_only) == ['text', 'text_embedding', 'text_logits']
  for key, value in {**image_only, **text_only}.items():
    np.testing.assert_allclose(value, joint_outputs[key], rtol=1e-5, atol=1e-5, err_msg=key)


def test_appended_padding_changes_nothing(model, variables, inputs):
  _, text_ids, text_mask = inputs
  rng = np.random.default_rng(1)
  garbage = rng.integers(4, 40, size=text_ids.shape)  # padding positions hold arbitrary ids, the mask decides
  longer_ids = np.concatenate([np.where(text_mask, text_ids, garbage), rng.integers(4, 40, size=(BATCH, 3))], 1)
  longer_mask = np.concatenate([text_mask, np.zeros((BATCH, 3), bool)], 1)  # odd length 19
  short = jitted(model, 'encode_text')(variables, text_ids, text_mask)
  long = jitted(model, 'encode_text')(variables, longer_ids, longer_mask)
  for key in short:
    np.testing.assert_allclose(long[key], short[key], rtol=1e-5, atol=1e-5, err_msg=key)
  # Training mode too: BatchNorm statistics are masked, so the updated running averages agree.
  short_train, short_state = jitted(model, 'encode_text', True)(variables, text_ids, text_mask)
  long_train, long_state = jitted(model, 'encode_text', True)(variables, longer_ids, longer_mask)
  np.testing.assert_allclose(long_train['text'], short_train['text'], rtol=1e-4, atol=1e-4)
  for short_leaf, long_leaf in zip(jax.tree.leaves(short_state), jax.tree.leaves(long_state)):
    np.testing.assert_allclose(long_leaf, short_leaf, rtol=1e-4, atol=1e-5)


def gate_gradients(model, variables, method, *args):
  """Gradient of a random projection of one modality's embedding; returns {block: gate gradient leaves}."""
  def loss(params):
    outputs = model.apply({**variables, 'params': params}, *args, method=getattr(AXMNet, method))
    embedding = outputs['image_embedding' if method == 'encode_image' else 'text_embedding']
    return jnp.sum(embedding * jnp.linspace(-1.0, 1.0, embedding.size).reshape(embedding.shape))
  grads = jax.device_get(jax.jit(jax.grad(loss))(variables['params']))
  return {name: grads[name] for name in grads if name.startswith('stage')}, grads


def test_shared_gate_gets_gradient_from_both_modalities(model, variables, inputs):
  image, text_ids, text_mask = inputs
  params = dict(variables['params'])
  for block in [name for name in params if name.startswith('stage')]:  # live ReLUs in the 1-unit gate bottleneck
    gate = params[block]['gate']
    params[block] = {**params[block], 'gate': {**gate, 'hidden': {**gate['hidden'], 'bias': jnp.ones(1)}}}
  variables = {**variables, 'params': params}
  image_grads, all_image_grads = gate_gradients(model, variables, 'encode_image', image)
  text_grads, all_text_grads = gate_gradients(model, variables, 'encode_text', text_ids, text_mask)
  for block in image_grads:
    for grads in (image_grads[block]['gate'], text_grads[block]['gate']):
      assert all(np.abs(leaf).max() > 0 for leaf in jax.tree.leaves(grads)), block
  # Each modality's loss reaches only its own branch and the shared gates.
  assert all(np.abs(leaf).max() == 0 for leaf in jax.tree.leaves(all_image_grads['text_stem']))
  assert all(np.abs(leaf).max() == 0 for leaf in jax.tree.leaves(all_text_grads['visual_stem']))


def test_unshared_gates_equal_shared_ones_when_their_values_agree(inputs, variables, joint_outputs):
  model = AXMNet(tiny_config(share_gate=False), CLASSES)
  params = dict(variables['params'])
  for block in [name for name in params if name.startswith('stage')]:
    entry = dict(params[block])
    gate = entry.pop('gate')
    params[block] = {**entry, 'visual_gate': gate, 'text_gate': gate}
  unshared = {**variables, 'params': params}
  outputs = jitted(model)(unshared, *inputs)
  for key in ('image_embedding', 'text_embedding', 'text_logits'):
    np.testing.assert_allclose(outputs[key], joint_outputs[key], rtol=1e-5, atol=1e-5)
  # Changing the text gate now moves only the text side.
  params['stage2_block1'] = {**params['stage2_block1'], 'text_gate': jax.tree.map(
      lambda leaf: leaf + 0.5, params['stage2_block1']['text_gate'])}
  moved = jitted(model)({**variables, 'params': params}, *inputs)
  np.testing.assert_allclose(moved['image_embedding'], joint_outputs['image_embedding'], rtol=1e-5, atol=1e-5)
  assert float(np.abs(np.asarray(moved['text_embedding']) - np.asarray(joint_outputs['text_embedding'])).max()) > 1e-3


def test_text_attention_off_equals_the_block_as_identity(variables, inputs):
  _, text_ids, text_mask = inputs
  with_attention = AXMNet(tiny_config(), CLASSES)
  without = AXMNet(tiny_config(text_attention=False), CLASSES)
  params = dict(variables['params'])
  plain = {**variables, 'params': {key: value for key, value in params.items() if key != 'text_attention'}}
  zeroed = dict(params['text_attention'])
  zeroed['transform_output'] = jax.tree.map(jnp.zeros_like, zeroed['transform_output'])
  identity_block = {**variables, 'params': {**params, 'text_attention': zeroed}}
  expected = jitted(with_attention, 'encode_text')(identity_block, text_ids, text_mask)['text']
  off = jitted(without, 'encode_text')(plain, text_ids, text_mask)['text']
  on = jitted(with_attention, 'encode_text')(variables, text_ids, text_mask)['text']
  np.testing.assert_allclose(off, expected, rtol=1e-5, atol=1e-5)
  assert float(np.abs(np.asarray(on) - np.asarray(off)).max()) > 1e-3


def test_part_attention_off_drops_part_outputs(variables, inputs, joint_outputs):
  model = AXMNet(tiny_config(part_attention=False), CLASSES)
  params = {key: value for key, value in variables['params'].items() if not key.startswith('part_')}
  stats = {key: value for key, value in variables['batch_stats'].items() if not key.startswith('part_')}
  outputs = jitted(model)({'params': params, 'batch_stats': stats}, *inputs)
  assert sorted(outputs) == sorted(['global_visual', 'text', 'global_visual_logits', 'text_logits',
                                    'image_embedding', 'text_embedding', 'affinity_scale', 'affinity_bias'])
  np.testing.assert_allclose(outputs['global_visual'], joint_outputs['global_visual'], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(outputs['image_embedding'], normalize(np.asarray(joint_outputs['global_visual'])),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(outputs['text_embedding'], normalize(np.asarray(joint_outputs['text'])), rtol=1e-5,
                             atol=1e-5)


def test_bfloat16_compute_keeps_float32_outputs_close(variables, inputs, joint_outputs):
  model = AXMNet(tiny_config(dtype='bfloat16'), CLASSES)
  outputs = jitted(model)(variables, *inputs)
  for key in ('image_embedding', 'text_embedding', 'global_visual_logits'):
    assert outputs[key].dtype == jnp.float32
  for key in ('image_embedding', 'text_embedding'):
    agreement = np.sum(np.asarray(outputs[key]) * np.asarray(joint_outputs[key]), axis=1)  # cosine
    assert np.all(agreement > 0.97), (key, agreement)


def matmul_flops_by_dtype(jaxpr: jax.extend.core.Jaxpr) -> dict[str, float]:
  """FLOPs of every dot_general and convolution in `jaxpr` (and its sub-jaxprs), by operand dtype."""
  flops = {}
  for eqn in jaxpr.eqns:
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      for dtype, count in matmul_flops_by_dtype(sub).items():
        flops[dtype] = flops.get(dtype, 0.0) + count
    if eqn.primitive.name not in ('dot_general', 'conv_general_dilated'):
      continue
    lhs, rhs = (v.aval for v in eqn.invars)
    if eqn.primitive.name == 'dot_general':
      (contracting, _), _ = eqn.params['dimension_numbers']
      inner = np.prod([lhs.shape[d] for d in contracting])
    else:
      kernel_spec = eqn.params['dimension_numbers'].rhs_spec  # (out, in, *spatial)
      inner = rhs.shape[kernel_spec[1]] * np.prod([rhs.shape[d] for d in kernel_spec[2:]])
    dtype = str(jnp.promote_types(lhs.dtype, rhs.dtype))
    flops[dtype] = flops.get(dtype, 0.0) + 2.0 * np.prod(eqn.outvars[0].aval.shape) * inner
  return flops


def test_bfloat16_runs_matmuls_in_bfloat16_and_keeps_losses_statistics_and_gradients_float32(variables, inputs,
                                                                                             joint_outputs):
  model = AXMNet(tiny_config(dtype='bfloat16'), CLASSES)
  labels = np.array([0, 1, 0, 1])
  loss_config = config_files.load_config('configs/synthetic.py').loss

  def loss_fn(params):
    outputs, mutated = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, *inputs,
                                   train=True, mutable=['batch_stats'])
    total, terms = losses.compute_losses(outputs, labels, loss_config)
    return total, (terms, mutated['batch_stats'])

  grad_fn = jax.grad(loss_fn, has_aux=True)
  # Forward and backward convolutions and matmuls are bf16, but for the classifier and the loss similarities.
  flops = matmul_flops_by_dtype(jax.make_jaxpr(grad_fn)(variables['params']).jaxpr)
  assert flops['bfloat16'] / sum(flops.values()) > 0.9, flops
  grads, (terms, batch_stats) = jax.jit(grad_fn)(variables['params'])
  for leaf in jax.tree.leaves((grads, terms, batch_stats)):
    assert leaf.dtype == jnp.float32
  # The loss terms of a bf16 forward are within 5% of float32's (4-channel maps at this width: the worst case).
  bf16_terms = losses.compute_losses(jitted(model)(variables, *inputs), labels, loss_config)[1]
  reference = losses.compute_losses(joint_outputs, labels, loss_config)[1]
  for key in ('id', 'triplet', 'affinity', 'total'):
    np.testing.assert_allclose(bf16_terms[key], reference[key], rtol=0.05, atol=1e-3, err_msg=key)


def test_stripes_must_divide_the_final_map_height(inputs):
  model = AXMNet(tiny_config(stripes=3), CLASSES)
  message = r'^config\.model\.stripes=3 does not divide the final visual map height 4(\n|$)'
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs))


def test_part_attention_matches_numpy_reference():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 6, 3, 32)).astype(np.float32)
  module = axm_net.PartAttention(stripes=3, reduction=16)
  variables = module.init(jax.random.key(0), x)
  params = jax.tree.map(np.asarray, variables['params'])
  out = module.apply(variables, x)
  expected = np.empty_like(x)
  for stripe in range(3):
    rows = slice(2 * stripe, 2 * stripe + 2)
    context = np.concatenate([x[:, rows].max(axis=(1, 2)), x.mean(axis=(1, 2))], axis=-1)
    hidden = np.maximum(context @ params['hidden']['kernel'] + params['hidden']['bias'], 0)
    attention = 1 / (1 + np.exp(-(hidden @ params['output']['kernel'] + params['output']['bias'])))
    expected[:, rows] = x[:, rows] * attention[:, None, None, :]
  assert params['hidden']['kernel'].shape == (64, 2)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_text_context_attention_matches_numpy_reference():
  rng = np.random.default_rng(3)
  mask = np.arange(5)[None] < np.array([5, 2])[:, None]
  x = rng.normal(size=(2, 5, 8)).astype(np.float32) * mask[..., None]
  module = axm_net.TextContextAttention(ratio=4)
  variables = module.init(jax.random.key(0), x, mask)
  p = jax.tree.map(np.asarray, variables['params'])
  out = module.apply(variables, x, mask)
  logits = np.where(mask, (x @ p['position_logits']['kernel'])[..., 0], -np.inf)
  weights = np.exp(logits - logits.max(axis=1, keepdims=True))
  weights /= weights.sum(axis=1, keepdims=True)
  context = np.einsum('bl,blc->bc', weights, x)
  hidden = context @ p['transform_hidden']['kernel'] + p['transform_hidden']['bias']
  hidden = (hidden - hidden.mean(-1, keepdims=True)) / np.sqrt(hidden.var(-1, keepdims=True) + 1e-6)
  hidden = np.maximum(hidden * p['transform_norm']['scale'] + p['transform_norm']['bias'], 0)
  transform = hidden @ p['transform_output']['kernel'] + p['transform_output']['bias']
  np.testing.assert_allclose(out, (x + transform[:, None]) * mask[..., None], rtol=1e-5, atol=1e-5)


def attributes_seen_at_init(module_type: type, attribute: str, **overrides) -> list:
  """`attribute` of each `module_type` that the text branch of AXMNet(tiny_config(**overrides)) calls (no compile)."""
  seen = []

  def record(next_function, args, kwargs, context):
    if isinstance(context.module, module_type):
      seen.append(getattr(context.module, attribute))
    return next_function(*args, **kwargs)

  ids, text_mask = np.ones((2, 8), np.int32), np.arange(8)[None] < np.array([8, 3])[:, None]
  model = AXMNet(tiny_config(**overrides), CLASSES)
  with flax.linen.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.key(0), ids, text_mask, method=AXMNet.encode_text))
  return seen


def test_text_attention_zero_init_starts_as_the_identity_and_is_wired_from_the_config():
  rng = np.random.default_rng(4)
  mask = np.arange(5)[None] < np.array([5, 2])[:, None]
  x = rng.normal(size=(2, 5, 8)).astype(np.float32) * mask[..., None]
  for zero_init, moves in ((True, False), (False, True)):
    module = axm_net.TextContextAttention(ratio=4, zero_init_output=zero_init)
    out = np.asarray(module.apply(module.init(jax.random.key(0), x, mask), x, mask))
    assert (float(np.abs(out - x).max()) > 1e-3) == moves
    if not moves:
      np.testing.assert_array_equal(out, x)
  for zero_init in (True, False):
    seen = attributes_seen_at_init(axm_net.TextContextAttention, 'zero_init_output', text_attention_zero_init=zero_init)
    assert seen[-1] is zero_init


def test_zero_gamma_reaches_every_axm_block_from_the_config():
  for zero_gamma in (False, True):
    assert attributes_seen_at_init(blocks.AXMBlock, 'zero_gamma', zero_gamma=zero_gamma) == [zero_gamma] * 6


def test_text_pooling_is_masked_and_keeps_odd_tails():
  x = np.arange(10, dtype=np.float32).reshape(1, 5, 2)
  mask = np.array([[True, True, True, False, False]])
  pooled, pooled_mask = axm_net.pool_text_pairs(x * mask[..., None], mask)
  np.testing.assert_allclose(pooled, [[[1, 2], [4, 5], [0, 0]]])
  np.testing.assert_array_equal(pooled_mask, [[True, True, False]])
  pooled, pooled_mask = axm_net.pool_text_pairs(x, np.ones((1, 5), bool))
  np.testing.assert_allclose(pooled, [[[1, 2], [5, 6], [8, 9]]])
  np.testing.assert_array_equal(pooled_mask, [[True, True, True]])
