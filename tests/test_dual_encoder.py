"""The plain dual-encoder reference: AXMNet's output contract, no shared layers, padding, training end to end."""
import functools
import json
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from axm_jax import config_files
from axm_jax import train
from axm_jax import train_step as train_step_lib
from axm_jax.models import factory
from conftest import read_jsonl, run_main

BATCH, HEIGHT, WIDTH, LENGTH, PADDING, CLASSES, VOCAB = 4, 64, 32, 12, 5, 5, 40


def tiny_config(architecture: str = 'dual_encoder', **overrides):
  config = config_files.load_config('configs/synthetic.py')
  config.model.update(architecture=architecture, dual_encoder_channels=(8, 16), dual_encoder_text_channels=16,
                      vocab_size=VOCAB, embed_dim=16, word_dim=8, width=0.0625, stripes=2, streams=1)
  config.model.update(overrides)
  return config


@pytest.fixture(scope='module')
def inputs():
  rng = np.random.default_rng(0)
  image = rng.normal(size=(BATCH, HEIGHT, WIDTH, 3)).astype(np.float32)
  text_mask = np.arange(LENGTH)[None] < np.array([12, 7, 3, 1])[:, None]
  text_ids = np.where(text_mask, rng.integers(4, VOCAB, size=(BATCH, LENGTH)), 0).astype(np.int32)
  return image, text_ids, text_mask


@pytest.fixture(scope='module')
def model_and_variables(inputs):
  model = factory.build_model(tiny_config().model, CLASSES)
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), *inputs)
  # Non-trivial BatchNorm statistics, so that evaluation mode exercises them.
  rng = np.random.default_rng(1)
  variables['batch_stats'] = jax.tree.map(lambda leaf: jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype),
                                          variables['batch_stats'])
  return model, variables


def output_shapes(config, inputs, method: str) -> dict:
  model = factory.build_model(config.model, CLASSES)
  image, text_ids, text_mask = inputs
  arguments = {'__call__': (image, text_ids, text_mask), 'encode_image': (image,),
               'encode_text': (text_ids, text_mask)}[method]
  def apply(*args):
    variables = model.init(jax.random.key(0), image, text_ids, text_mask)
    return model.apply(variables, *args, method=method)
  return jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), jax.eval_shape(apply, *arguments))


@pytest.mark.parametrize('method', ['__call__', 'encode_image', 'encode_text'])
def test_outputs_are_axm_nets_without_part_attention(inputs, method):
  expected = output_shapes(tiny_config('axm_net', part_attention=False), inputs, method)
  assert output_shapes(tiny_config(), inputs, method) == expected


def test_modalities_share_no_parameters(inputs, model_and_variables):
  model, variables = model_and_variables
  image, text_ids, text_mask = inputs

  def used_parameters(method, *args):
    """Top-level parameter names whose gradient of the method's embedding is non-zero."""
    key = 'image_embedding' if method == 'encode_image' else 'text_embedding'
    loss = lambda params: model.apply({**variables, 'params': params}, *args, method=method)[key].sum() ** 2
    grads = jax.jit(jax.grad(loss))(variables['params'])
    return {name for name, grad in grads.items() if any(np.any(leaf != 0) for leaf in jax.tree.leaves(grad))}

  assert used_parameters('encode_image', image) == {'visual_conv1', 'visual_conv2', 'global_visual_output'}
  assert used_parameters('encode_text', text_ids, text_mask) == {'word_embedding', 'text_projection', 'text_conv',
                                                                 'text_output'}


@pytest.mark.parametrize('train', [False, True])
def test_padding_leaves_the_text_embedding_unchanged(inputs, model_and_variables, train):
  model, variables = model_and_variables
  _, text_ids, text_mask = inputs
  rng = np.random.default_rng(2)
  padded_mask = np.pad(text_mask, ((0, 0), (0, PADDING)))
  # Ids at padding positions are arbitrary: the mask alone says what is a token.
  padded_ids = np.where(padded_mask, np.pad(text_ids, ((0, 0), (0, PADDING))),
                        rng.integers(1, VOCAB, size=padded_mask.shape)).astype(np.int32)
  encode = jax.jit(lambda ids, mask: model.apply(variables, ids, mask, train, method='encode_text',
                                                 mutable=['batch_stats'])[0])
  padded, unpadded = encode(padded_ids, padded_mask), encode(text_ids, text_mask)
  for key in ('text', 'text_embedding'):  # `text` before normalisation: a mean over all positions shows there
    np.testing.assert_allclose(padded[key], unpadded[key], atol=1e-5, err_msg=key)


def test_loss_falls_in_train_steps_on_one_batch(inputs):
  config = tiny_config()
  config.loss.update(itc_weight=1.0, learn_temperature=True)
  assert {'itc', 'id', 'triplet', 'affinity'} <= set(assert_loss_falls(config, inputs))


def assert_loss_falls(config, inputs) -> dict:
  """Eight train steps on one batch at a high learning rate bring the total loss below 0.7 of the first; the terms."""
  config.optim.update(learning_rate=1e-2, warmup_steps=0)
  config.train.num_steps = 100  # the learning rate stays near its peak over the steps below
  model = factory.build_model(config.model, CLASSES, axis_name=train_step_lib.AXIS)
  optimizer = train_step_lib.make_optimizer(config)
  image, text_ids, text_mask = inputs
  height, width = image.shape[1:3]
  config.data.update(image_size=(height, width), text_length=LENGTH)
  state = train_step_lib.create_state(config, model, optimizer, vocab=[])
  step = train_step_lib.TrainStep(model, optimizer, config.loss, devices=jax.devices()[:1])
  batch = {'image': image[None], 'text_ids': text_ids[None], 'text_mask': text_mask[None],
           'label': np.array([[0, 0, 1, 1]], np.int32)}
  state = flax.jax_utils.replicate(state, devices=jax.devices()[:1])
  totals = []
  for _ in range(8):
    state, terms = step(state, batch)
    totals.append(float(terms['total'][0]))
  assert np.all(np.isfinite(totals)) and totals[-1] < 0.7 * totals[0], totals
  return terms


@pytest.mark.parametrize('plain_branch, method, attention', [('visual', 'encode_image', 'part_attention'),
                                                              ('text', 'encode_text', 'text_attention')])
def test_plain_branch_encodes_like_the_dual_encoder_and_keeps_the_other_axm_branch(inputs, model_and_variables,
                                                                                  plain_branch, method, attention):
  """The swapped modality is the dual encoder's (its parameters give its outputs); the other is AXM-Net's."""
  plain_model, plain_variables = model_and_variables
  image, text_ids, text_mask = inputs
  arguments = {'encode_image': (image,), 'encode_text': (text_ids, text_mask)}
  other = 'encode_text' if method == 'encode_image' else 'encode_image'
  axm_model = factory.build_model(tiny_config('axm_net', **{attention: False}).model, CLASSES)
  model = factory.build_model(tiny_config('axm_net', plain_branch=plain_branch, **{attention: False}).model, CLASSES)
  variables = flax.core.unfreeze(jax.jit(model.init)(jax.random.key(3), image, text_ids, text_mask))
  axm_variables = flax.core.unfreeze(jax.jit(axm_model.init)(jax.random.key(4), image, text_ids, text_mask))
  shapes = lambda tree: jax.tree.map(np.shape, tree)
  for collection in variables:  # each subtree from the dual encoder where it has one of that shape, else AXM-Net's
    for name, subtree in variables[collection].items():
      plain = plain_variables[collection].get(name)
      if plain is not None and shapes(plain) == shapes(subtree):
        if shapes(axm_variables[collection].get(name)) == shapes(plain):  # shared: classifier, necks, embedding
          axm_variables[collection][name] = plain
        variables[collection][name] = plain
      else:
        variables[collection][name] = axm_variables[collection][name]
  for target, source_model, source_variables, name in ((method, plain_model, plain_variables, plain_branch),
                                                       (other, axm_model, axm_variables, 'axm')):
    outputs = model.apply(variables, *arguments[target], method=target)
    expected = source_model.apply(source_variables, *arguments[target], method=target)
    if name == 'text':  # beside part attention's two-part image embedding, the text embedding is [n(T), n(T)] / sqrt 2
      expected['text_embedding'] = np.concatenate([expected['text_embedding']] * 2, axis=-1) / np.sqrt(2)
    assert set(outputs) == set(expected), name
    for key in outputs:
      np.testing.assert_allclose(outputs[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=f'{name}: {key}')


def test_plain_visual_branch_trains_with_the_axm_text_branch(inputs):
  config = tiny_config('axm_net', plain_branch='visual', part_attention=False)
  assert_loss_falls(config, inputs)


@pytest.mark.parametrize('overrides, message', [
    ({'plain_branch': 'audio'}, "config.model.plain_branch = 'audio'; expected one of ('', 'visual', 'text')."),
    ({'plain_branch': 'text'}, "config.model.plain_branch = 'text' swaps a branch of AXM-Net; set it to '' for "
                               "config.model.architecture = 'dual_encoder'."),
    ({'architecture': 'axm_net', 'plain_branch': 'visual'},
     "config.model.plain_branch = 'visual' has no AXM visual branch for its attention head: set "
     "config.model.part_attention=False."),
    ({'architecture': 'axm_net', 'plain_branch': 'text'},
     "config.model.plain_branch = 'text' has no AXM text branch for its attention head: set "
     "config.model.text_attention=False."),
    ({'architecture': 'axm_net', 'plain_branch': 'visual', 'part_attention': False,
      'pretrained_visual': 'osnet_x1_0.npz'},
     "config.model.pretrained_visual holds OSNet weights for AXM-Net's visual branch; set it to '' with "
     "config.model.plain_branch = 'visual'."),
])
def test_invalid_plain_branches_are_rejected(overrides, message):
  config = tiny_config(**overrides)
  with pytest.raises(ValueError, match=re.escape(message)):
    train.validate_config(config)


@pytest.mark.parametrize('field, value, message', [
    ('architecture', 'osnet', "config.model.architecture = 'osnet'; expected one of ('axm_net', 'dual_encoder')."),
    ('pretrained_visual', 'osnet_x1_0.npz', "config.model.pretrained_visual holds OSNet weights for AXM-Net's "
                                            "visual branch; set it to '' with config.model.architecture = "
                                            "'dual_encoder'."),
])
def test_invalid_architecture_fields_are_rejected(field, value, message):
  config = tiny_config()
  config.model[field] = value
  with pytest.raises(ValueError, match=re.escape(message)):
    train.validate_config(config)


def test_factory_rejects_an_unknown_architecture():
  with pytest.raises(ValueError, match=re.escape("config.model.architecture = 'osnet'; expected one of")):
    factory.build_model(tiny_config('osnet').model, CLASSES)


def test_main_command_trains_evaluates_and_tests_the_dual_encoder(tmp_path, tfds_dir):
  workdir = tmp_path / 'run'
  result = run_main(workdir, tfds_dir, '--config.model.architecture=dual_encoder', '--config.loss.itc_weight=1.0',
                    '--config.loss.learn_temperature=True', devices=2)
  assert json.loads((workdir / 'config.json').read_text())['model']['architecture'] == 'dual_encoder'
  assert re.search(r'step 6/6 .*itc=', result.stderr)
  records = read_jsonl(workdir / 'metrics.jsonl')
  val = [record for record in records if record['split'] == 'val']
  test = [record for record in records if record['split'] == 'test']
  assert [record['step'] for record in val] == [3, 6] and len(test) == 1
  # The test evaluation restores the best checkpoint by val t2i R@1 (the first of equals).
  assert test[0]['step'] == max(val, key=lambda record: record['t2i_r1'])['step']
