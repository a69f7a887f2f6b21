"""OSNet conversion on a synthetic torchreid state dict (torchreid's key names, a narrow OSNet's shapes)."""
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from axm_jax import config_files
from axm_jax.models import blocks
from axm_jax.models import pretrained
from axm_jax.models.axm_net import AXMNet

CHANNELS = (8, 32, 48, 64)  # OSNet x1.0's 64-256-384-512 at width 0.125
FEATURE_DIM = 16
TORCH_EPSILON = 1e-5


def torch_osnet_state_dict(channels=CHANNELS, feature_dim=FEATURE_DIM, seed=0) -> dict[str, np.ndarray]:
  """A state dict shaped like torchreid's OSNet(blocks=[OSBlock]*3, layers=[2, 2, 2], channels=channels).

  Weights have fan-in scaled variance and BatchNorm statistics are near (0, 1), so activations stay finite
  through the whole network.
  """
  rng = np.random.default_rng(seed)
  state = {}
  def tensor(name, *shape):
    fan_in = np.prod(shape[1:]) if len(shape) > 1 else 100
    state[name] = rng.normal(0, 1 / np.sqrt(fan_in), shape).astype(np.float32)
  def batch_norm(prefix, channels):
    state[f'{prefix}.weight'] = rng.uniform(0.5, 1.5, channels).astype(np.float32)
    tensor(f'{prefix}.bias', channels)
    tensor(f'{prefix}.running_mean', channels)
    state[f'{prefix}.running_var'] = rng.uniform(0.5, 2.0, channels).astype(np.float32)
    state[f'{prefix}.num_batches_tracked'] = np.array(100)
  def conv_layer(prefix, cin, cout, kernel=1):
    tensor(f'{prefix}.conv.weight', cout, cin, kernel, kernel)
    batch_norm(f'{prefix}.bn', cout)
  def light_conv(prefix, channels):
    tensor(f'{prefix}.conv1.weight', channels, channels, 1, 1)
    tensor(f'{prefix}.conv2.weight', channels, 1, 3, 3)
    batch_norm(f'{prefix}.bn', channels)
  def os_block(prefix, cin, cout):
    middle = cout // 4
    conv_layer(f'{prefix}.conv1', cin, middle)
    light_conv(f'{prefix}.conv2a', middle)
    for letter, depth in (('b', 2), ('c', 3), ('d', 4)):
      for index in range(depth):
        light_conv(f'{prefix}.conv2{letter}.{index}', middle)
    hidden = max(middle // 16, 1)
    tensor(f'{prefix}.gate.fc1.weight', hidden, middle, 1, 1)
    tensor(f'{prefix}.gate.fc1.bias', hidden)
    tensor(f'{prefix}.gate.fc2.weight', middle, hidden, 1, 1)
    tensor(f'{prefix}.gate.fc2.bias', middle)
    conv_layer(f'{prefix}.conv3', middle, cout)
    if cin != cout:
      conv_layer(f'{prefix}.downsample', cin, cout)
  conv_layer('conv1', 3, channels[0], 7)
  for stage in range(1, 4):
    os_block(f'conv{stage + 1}.0', channels[stage - 1], channels[stage])
    os_block(f'conv{stage + 1}.1', channels[stage], channels[stage])
    if stage < 3:
      conv_layer(f'conv{stage + 1}.2.0', channels[stage], channels[stage])
  conv_layer('conv5', channels[3], channels[3])
  tensor('fc.0.weight', feature_dim, channels[3])
  tensor('fc.0.bias', feature_dim)
  batch_norm('fc.1', feature_dim)
  tensor('classifier.weight', 10, feature_dim)
  tensor('classifier.bias', 10)
  return state


def model_config(**overrides):
  config = config_files.load_config('configs/synthetic.py').model
  config.update(width=0.125, embed_dim=FEATURE_DIM, vocab_size=12, word_dim=4, stripes=2)
  config.update(overrides)
  return config


def zero_variables(config) -> dict:
  model = AXMNet(config, num_classes=5)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 32, 3)),
                                             jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), bool)))
  return jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)


def visual_paths(variables) -> set[str]:
  """The model variables a torchreid OSNet has counterparts for."""
  visual = ('visual_stem', 'visual_transition1', 'visual_transition2', 'visual_final', 'global_visual_hidden',
            'global_visual_hidden_bn')
  paths = set()
  for path in flax.traverse_util.flatten_dict(variables, sep='/'):
    parts = path.split('/')
    if parts[1] in visual or (parts[1].startswith('stage') and parts[2] in ('visual', 'gate')):
      paths.add(path)
  return paths


@pytest.fixture(scope='module')
def state_dict():
  return torch_osnet_state_dict()


@pytest.fixture(scope='module')
def converted(state_dict):
  return pretrained.convert_osnet(state_dict)


@pytest.fixture
def loaded(converted, tmp_path):
  path = tmp_path / 'osnet.npz'
  np.savez(path, **converted[0])
  return pretrained.load_pretrained(zero_variables(model_config()), model_config(pretrained_visual=str(path)))


def test_every_tensor_is_mapped_and_the_classifier_is_reported(state_dict, converted):
  arrays, unmapped = converted
  assert unmapped == ['classifier.weight', 'classifier.bias']
  counters = [key for key in state_dict if key.endswith('num_batches_tracked')]
  assert len(arrays) == len(state_dict) - len(counters) - len(unmapped)
  assert set(arrays) == visual_paths(zero_variables(model_config()))  # and every visual variable is covered


def test_loaded_variables_hold_the_converted_tensors(converted, loaded):
  flat = flax.traverse_util.flatten_dict(loaded, sep='/')
  for path, value in converted[0].items():
    np.testing.assert_array_equal(flat[path], value, err_msg=path)
  assert not np.any(flat['params/stage1_block1/text/reduce/conv/kernel'])  # the text branch is left alone


def numpy_torch_conv(x, weight, stride=1, padding=0, groups=1):
  """torch.nn.functional.conv2d on NCHW input and an [out, in/groups, kh, kw] weight, from its definition."""
  x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  batch, _, height, width = x.shape
  out_channels, group_in, kh, kw = weight.shape
  out_h, out_w = (height - kh) // stride + 1, (width - kw) // stride + 1
  out = np.zeros((batch, out_channels, out_h, out_w))
  group_out = out_channels // groups
  for o in range(out_channels):
    group = o // group_out
    for y in range(out_h):
      for z in range(out_w):
        window = x[:, group * group_in:(group + 1) * group_in, y * stride:y * stride + kh, z * stride:z * stride + kw]
        out[:, o, y, z] = np.sum(window * weight[o], axis=(1, 2, 3))
  return out


def numpy_torch_batch_norm(x, state, prefix):
  shape = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
  def get(name):
    return state[f'{prefix}.{name}'].reshape(shape)
  return (x - get('running_mean')) / np.sqrt(get('running_var') + TORCH_EPSILON) * get('weight') + get('bias')


def select(loaded, name):
  return {collection: loaded[collection][name] for collection in ('params', 'batch_stats')
          if name in loaded[collection]}


def test_stem_conv_reproduces_torch(state_dict, loaded):
  x = np.random.default_rng(1).normal(size=(2, 3, 12, 10)).astype(np.float32)
  expected = np.maximum(numpy_torch_batch_norm(numpy_torch_conv(x, state_dict['conv1.conv.weight'], 2, 3),
                                               state_dict, 'conv1.bn'), 0)
  unit = blocks.ConvUnit(CHANNELS[0], 7, strides=2)
  out = unit.apply(select(loaded, 'visual_stem'), x.transpose(0, 2, 3, 1), None, False)
  np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-4)


def test_light_conv_reproduces_torch(state_dict, loaded):
  middle = CHANNELS[1] // 4
  x = np.random.default_rng(2).normal(size=(2, middle, 5, 4)).astype(np.float32)
  prefix = 'conv2.0.conv2b.1'
  y = numpy_torch_conv(x, state_dict[f'{prefix}.conv1.weight'])
  y = numpy_torch_conv(y, state_dict[f'{prefix}.conv2.weight'], padding=1, groups=middle)
  expected = np.maximum(numpy_torch_batch_norm(y, state_dict, f'{prefix}.bn'), 0)
  visual = select(loaded, 'stage1_block1')
  variables = {collection: tree['visual']['stream2_lite2'] for collection, tree in visual.items()}
  out = blocks.LiteConv(middle).apply(variables, x.transpose(0, 2, 3, 1), None, False)
  np.testing.assert_allclose(np.asarray(out).transpose(0, 3, 1, 2), expected, rtol=1e-4, atol=1e-4)


def test_gate_and_fc_reproduce_torch(state_dict, loaded):
  middle = CHANNELS[3] // 4
  pooled = np.random.default_rng(3).normal(size=(2, middle)).astype(np.float32)
  prefix = 'conv4.1.gate'
  hidden = np.maximum(pooled @ state_dict[f'{prefix}.fc1.weight'][:, :, 0, 0].T + state_dict[f'{prefix}.fc1.bias'], 0)
  logits = hidden @ state_dict[f'{prefix}.fc2.weight'][:, :, 0, 0].T + state_dict[f'{prefix}.fc2.bias']
  gate = blocks.ContextGate(middle, 16)
  out = gate.apply({'params': loaded['params']['stage3_block2']['gate']}, pooled)
  np.testing.assert_allclose(out, 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)
  features = np.random.default_rng(4).normal(size=(3, CHANNELS[3])).astype(np.float32)
  fc = loaded['params']['global_visual_hidden']
  np.testing.assert_allclose(features @ fc['kernel'] + fc['bias'],
                             features @ state_dict['fc.0.weight'].T + state_dict['fc.0.bias'], rtol=1e-5, atol=1e-5)


def test_unshared_gates_take_the_osblock_gate_as_the_visual_gate(converted, tmp_path):
  path = tmp_path / 'osnet.npz'
  np.savez(path, **converted[0])
  config = model_config(share_gate=False, pretrained_visual=str(path))
  loaded = pretrained.load_pretrained(zero_variables(config), config)
  block = loaded['params']['stage2_block1']
  np.testing.assert_array_equal(block['visual_gate']['hidden']['kernel'],
                                converted[0]['params/stage2_block1/gate/hidden/kernel'])
  assert not np.any(block['text_gate']['hidden']['kernel'])


def test_shape_mismatch_names_the_tensor(converted, tmp_path):
  path = tmp_path / 'osnet.npz'
  np.savez(path, **converted[0])
  config = model_config(width=0.0625, pretrained_visual=str(path))
  with pytest.raises(ValueError, match=(
      r'osnet\.npz: tensor params/visual_stem/conv/kernel has shape \(7, 7, 3, 8\), the model expects '
      r'\(7, 7, 3, 4\) \(OSNet x1\.0 needs config\.model\.width=1\.0, embed_dim=512\)$')):
    pretrained.load_pretrained(zero_variables(config), config)


def test_fewer_streams_than_osnet_is_rejected(converted, tmp_path):
  path = tmp_path / 'osnet.npz'
  np.savez(path, **converted[0])
  config = model_config(streams=2, pretrained_visual=str(path))
  with pytest.raises(ValueError, match=r'osnet\.npz: tensor params/stage1_block1/visual/stream3_lite1/\S+ is not a '
                                       r'variable of the model \(OSNet has config\.model\.streams=4\)$'):
    pretrained.load_pretrained(zero_variables(config), config)


def test_incomplete_state_dict_is_rejected(state_dict):
  partial = {key: value for key, value in state_dict.items() if not key.startswith('conv5.')}
  with pytest.raises(ValueError, match=r"^not an OSNet x1\.0 state dict: missing \['conv5\.conv\.weight', "):
    pretrained.convert_osnet(partial)


def test_data_parallel_prefix_is_stripped(state_dict, converted):
  arrays, unmapped = pretrained.convert_osnet({f'module.{key}': value for key, value in state_dict.items()})
  assert unmapped == converted[1] and set(arrays) == set(converted[0])


def test_command_line_writes_the_npz_and_reports_unmapped_keys(state_dict, tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(pretrained, '_load_torch_state_dict', lambda path: state_dict)
  output = tmp_path / 'out' / 'osnet.npz'
  pretrained.convert_osnet_file('osnet_x1_0_imagenet.pth', str(output))
  printed = capsys.readouterr().out
  with np.load(output) as arrays:
    assert len(arrays.files) == len(pretrained.convert_osnet(state_dict)[0])
  assert f'wrote {len(arrays.files)} tensors to {output}' in printed
  assert 'not used by the visual branch: classifier.weight, classifier.bias' in printed


def test_word_vectors_fill_matching_tokens(tmp_path):
  vectors = tmp_path / 'words.txt'
  vectors.write_text('4 4\nred 1 2 3 4\nshirt 5 6 7 8\nShirt 9 9 9 9\nblue 0.5 0.5 0.5 0.5\n')
  vocab = ['<pad>', '<unk>', '<s>', '</s>', '\u2581red', '\u2581SHIRT', 'ing', '\u2581blue', '\u2581Shirt']
  config = model_config(pretrained_words=str(vectors))
  variables = zero_variables(config)
  variables['params']['word_embedding']['embedding'][:] = -1.0
  table = np.asarray(pretrained.load_pretrained(variables, config, vocab)['params']['word_embedding']['embedding'])
  np.testing.assert_array_equal(table[4], [1, 2, 3, 4])
  np.testing.assert_array_equal(table[5], [5, 6, 7, 8])  # lower-cased fallback
  np.testing.assert_array_equal(table[7], [0.5, 0.5, 0.5, 0.5])
  np.testing.assert_array_equal(table[8], [9, 9, 9, 9])  # exact match first
  for token in (0, 1, 2, 3, 6, 9, 10, 11):
    np.testing.assert_array_equal(table[token], -1.0)


def test_word_vectors_of_the_wrong_size_are_rejected(tmp_path):
  vectors = tmp_path / 'words.txt'
  vectors.write_text('red 1 2 3\n')
  config = model_config(pretrained_words=str(vectors))
  with pytest.raises(ValueError, match=r'words\.txt:1: vector has 3 values, config\.model\.word_dim is 4$'):
    pretrained.load_pretrained(zero_variables(config), config, ['<pad>', '\u2581red'])
  with pytest.raises(ValueError, match=r'^config\.model\.pretrained_words needs the vocabulary'):
    pretrained.load_pretrained(zero_variables(config), config)
