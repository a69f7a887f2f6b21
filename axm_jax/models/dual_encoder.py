"""The plain dual-encoder reference: two independent small encoders, no AXM-blocks, no cross-modal sharing.

It answers the paper's central question at equal compute: what the AXM-blocks buy over two separate encoders.

  image    -> len(dual_encoder_channels) x (3x3 conv, stride 2 - BN - ReLU) -> GAP -> FC(embed_dim)       = V_G
  text ids -> embedding (word_dim) -> 1x1 conv-BN to dual_encoder_text_channels
           -> x + (1x3 conv-BN-ReLU)(x) -> masked mean -> FC(embed_dim)                                    = T

The modalities share no layer; the one ID classifier (each embedding through its own BN-neck first) belongs to
the losses, as in AXMNet. The outputs are AXMNet's with part attention off (global_visual, text, their logits,
image_embedding = n(V_G), text_embedding = n(T), and the learned loss scalars when both modalities are given), so
training, evaluation and checkpoints treat both models alike. Text maps are zero on padding after every unit and
BatchNorm statistics are masked and cross-replica (axm_jax.models.blocks), so padding tokens change nothing and
N devices compute what one device computes.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from axm_jax.models.axm_net import l2_normalize, loss_parameters
from axm_jax.models.blocks import BatchNorm, ConvUnit, apply_mask, global_average_pool


class DualEncoder(nn.Module):
  """Image CNN and text 1-D conv encoder; either modality may be None, like AXMNet."""
  config: ml_collections.ConfigDict
  num_classes: int
  axis_name: str | None = None

  def __post_init__(self):
    # A frozen copy keeps the module hashable (jit static arguments, flax transforms) and resolves references.
    if not isinstance(self.config, ml_collections.FrozenConfigDict):
      object.__setattr__(self, 'config', ml_collections.FrozenConfigDict(self.config))
    super().__post_init__()

  @nn.compact
  def __call__(self, image: jax.Array | None, text_ids: jax.Array | None, text_mask: jax.Array | None,
               train: bool = False) -> dict[str, jax.Array]:
    classifier = nn.Dense(self.num_classes, use_bias=False, kernel_init=nn.initializers.normal(0.01),
                          name='classifier')
    scalars = loss_parameters(self, self.config)
    outputs = {}
    if image is not None:
      global_visual = self._encode_image(image, train)
      outputs.update(global_visual=global_visual, image_embedding=l2_normalize(global_visual),
                     global_visual_logits=classifier(self._neck('global_visual_neck', global_visual, train)))
    if text_ids is not None:
      text = self._encode_text(text_ids, text_mask.astype(bool), train)
      outputs.update(text=text, text_embedding=l2_normalize(text),
                     text_logits=classifier(self._neck('text_neck', text, train)))
    if image is not None and text_ids is not None:
      outputs.update(scalars)
    return outputs

  def encode_image(self, image: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Image-only forward: the image keys of __call__'s output."""
    return self(image, None, None, train)

  def encode_text(self, text_ids: jax.Array, text_mask: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Text-only forward: the text keys of __call__'s output."""
    return self(None, text_ids, text_mask, train)

  @property
  def _dtype(self) -> jnp.dtype:
    return jnp.dtype(self.config.dtype)

  def _encode_image(self, image: jax.Array, train: bool) -> jax.Array:
    x = image.astype(self._dtype)
    for index, features in enumerate(self.config.dual_encoder_channels, start=1):
      x = ConvUnit(features, 3, strides=2, axis_name=self.axis_name, dtype=self._dtype,
                   name=f'visual_conv{index}')(x, None, train)
    return nn.Dense(self.config.embed_dim, dtype=self._dtype, name='global_visual_output')(
        x.mean(axis=(1, 2))).astype(jnp.float32)

  def _encode_text(self, text_ids: jax.Array, mask: jax.Array, train: bool) -> jax.Array:
    channels = self.config.dual_encoder_text_channels
    words = nn.Embed(self.config.vocab_size, self.config.word_dim, name='word_embedding')(text_ids)
    x = ConvUnit(channels, 1, relu=False, axis_name=self.axis_name, dtype=self._dtype, name='text_projection')(
        apply_mask(words.astype(self._dtype), mask), mask, train)
    x = x + ConvUnit(channels, 3, axis_name=self.axis_name, dtype=self._dtype, name='text_conv')(x, mask, train)
    return nn.Dense(self.config.embed_dim, dtype=self._dtype, name='text_output')(
        global_average_pool(x, mask)).astype(jnp.float32)

  def _neck(self, name: str, embedding: jax.Array, train: bool) -> jax.Array:
    return BatchNorm(self.axis_name, use_bias=False, name=name)(embedding, train)
