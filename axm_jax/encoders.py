"""The evaluation encoders: image and text embeddings, pmapped over the local devices (no TensorFlow)."""
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from axm_jax import programs
from axm_jax.models import axm_net

Encoder = Callable[..., jax.Array]  # pmapped (replicated variables, *inputs) -> [devices, batch, E]


def make_encoders(model: axm_net.AXMNet) -> tuple[programs.Precompiled, programs.Precompiled]:
  """(image encoder, text encoder), pmapped over the local devices; compiled once per model definition.

  Models that differ only in axis_name share them: evaluation uses no cross-device statistics.
  """
  key = (model.config.to_json_best_effort(sort_keys=True), model.num_classes)
  if key not in _ENCODERS:

    def encode_image(variables, image):
      outputs = model.apply(variables, image, method='encode_image')
      return outputs['image_embedding'].astype(jnp.float32)

    def encode_text(variables, text_ids, text_mask):
      outputs = model.apply(variables, text_ids, text_mask, method='encode_text')
      return outputs['text_embedding'].astype(jnp.float32)

    _ENCODERS[key] = (programs.Precompiled(jax.pmap(encode_image, axis_name=model.axis_name),
                                           identity=f'encode_image {type(model).__name__} {key}'),
                      programs.Precompiled(jax.pmap(encode_text, axis_name=model.axis_name),
                                           identity=f'encode_text {type(model).__name__} {key}'))
  return _ENCODERS[key]


_ENCODERS: dict[tuple[str, int], tuple[programs.Precompiled, programs.Precompiled]] = {}


def precompile_encoders(model: axm_net.AXMNet, variables: Any, data_config: ml_collections.ConfigDict) -> None:
  """Starts compiling both encoders for the evaluation batches, given the variables' shapes."""
  encode_image, encode_text = make_encoders(model)
  devices = jax.local_device_count()
  rows = (devices, data_config.eval_batch_size // devices)
  replicated = programs.per_device(variables, devices)
  encode_image.precompile(replicated, jax.ShapeDtypeStruct(rows + tuple(data_config.image_size) + (3,), jnp.float32))
  tokens = jax.ShapeDtypeStruct(rows + (data_config.text_length,), jnp.int32)
  encode_text.precompile(replicated, tokens, jax.ShapeDtypeStruct(tokens.shape, jnp.bool_))
