"""The plain encoders of the dual-encoder reference, as functions so that AXMNet can swap one in (model.plain_branch).

plain_visual_outputs adds what both models return for the plain image CNN: the BN-neck logits and n(V_G).

  image    -> len(dual_encoder_channels) x (3x3 conv, stride 2 - BN - ReLU) -> GAP -> FC(embed_dim)       = V_G
  text ids -> embedding (word_dim) -> 1x1 conv-BN to dual_encoder_text_channels
           -> x + (1x3 conv-BN-ReLU)(x) -> masked mean -> FC(embed_dim)                                    = T

Call them from a compact method: their layers are created in, and named within, the calling module.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from axm_jax.models.blocks import BatchNorm, ConvUnit, apply_mask, global_average_pool, l2_normalize


def plain_visual_encoder(config: ml_collections.ConfigDict, image: jax.Array, axis_name: str | None,
                         train: bool) -> jax.Array:
  """V_G of the plain image CNN (float32)."""
  dtype = jnp.dtype(config.dtype)
  x = image.astype(dtype)
  for index, features in enumerate(config.dual_encoder_channels, start=1):
    x = ConvUnit(features, 3, strides=2, axis_name=axis_name, dtype=dtype,
                 name=f'visual_conv{index}')(x, None, train)
  return nn.Dense(config.embed_dim, dtype=dtype, name='global_visual_output')(
      x.mean(axis=(1, 2))).astype(jnp.float32)


def plain_visual_outputs(config: ml_collections.ConfigDict, image: jax.Array, classifier: nn.Dense,
                         axis_name: str | None, train: bool) -> dict[str, jax.Array]:
  """V_G of the plain image CNN, its ID logits through a BN-neck, and the image embedding n(V_G)."""
  global_visual = plain_visual_encoder(config, image, axis_name, train)
  neck = BatchNorm(axis_name, use_bias=False, name='global_visual_neck')(global_visual, train)
  return {'global_visual': global_visual, 'image_embedding': l2_normalize(global_visual),
          'global_visual_logits': classifier(neck)}


def plain_text_encoder(config: ml_collections.ConfigDict, text_ids: jax.Array, mask: jax.Array,
                       axis_name: str | None, train: bool) -> jax.Array:
  """T of the plain 1-D conv text encoder (float32)."""
  dtype, channels = jnp.dtype(config.dtype), config.dual_encoder_text_channels
  words = nn.Embed(config.vocab_size, config.word_dim, name='word_embedding')(text_ids)
  x = ConvUnit(channels, 1, relu=False, axis_name=axis_name, dtype=dtype, name='text_projection')(
      apply_mask(words.astype(dtype), mask), mask, train)
  x = x + ConvUnit(channels, 3, axis_name=axis_name, dtype=dtype, name='text_conv')(x, mask, train)
  return nn.Dense(config.embed_dim, dtype=dtype, name='text_output')(
      global_average_pool(x, mask)).astype(jnp.float32)
