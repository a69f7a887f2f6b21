"""AXM-Net: visual and textual branches joined by AXM-blocks, attention heads and the shared classifier (SPEC §1)."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from axm_jax.models.blocks import AXMBlock, BatchNorm, ConvUnit, apply_mask, global_average_pool, l2_normalize
from axm_jax.models.plain_encoders import plain_text_encoder, plain_visual_outputs

# OSNet x1.0 layout: stem channels, then the output channels of stages 1-3 (each of two blocks); x `width`.
STAGE_CHANNELS = (64, 256, 384, 512)
BLOCKS_PER_STAGE = 2
MAX_CONTRASTIVE_SCALE = 100.0  # CLIP's cap on the learned 1 / temperature


def loss_parameters(module: nn.Module, config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """The learned scalars of the losses, created as parameters of `module` (call from its compact method).

  affinity_scale / affinity_bias (SPEC §2) and, with config.learn_temperature, contrastive_scale = 1 / tau of SDM
  and ITC (SPEC §2.1), learned as its log from 1 / config.contrastive_temperature and capped at
  MAX_CONTRASTIVE_SCALE as in CLIP.
  """
  scalars = {
      'affinity_scale': module.param('affinity_scale', nn.initializers.constant(config.affinity_scale_init), ()),
      'affinity_bias': module.param('affinity_bias', nn.initializers.constant(config.affinity_bias_init), ())}
  if config.learn_temperature:
    log_scale = module.param('contrastive_log_scale',
                             nn.initializers.constant(-math.log(config.contrastive_temperature)), ())
    scalars['contrastive_scale'] = jnp.minimum(jnp.exp(log_scale), MAX_CONTRASTIVE_SCALE)
  return scalars


def image_text_query(image_embedding: jax.Array, text_embedding: jax.Array) -> jax.Array:
  """The image+text (VT->V) query embedding: normalise(n(image embedding) + n(text embedding)) (SPEC §1.4)."""
  return l2_normalize(l2_normalize(image_embedding) + l2_normalize(text_embedding))


def pool_text_pairs(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Masked 1x2 average pooling with stride 2 along the sequence; the mask is pooled with `any`.

  A window holding one token and one padding position keeps the token's value. An odd length gets one padding
  position appended first, so no token is dropped.
  """
  if x.shape[1] % 2:
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 0)))
    mask = jnp.pad(mask, ((0, 0), (0, 1)))
  batch, length, channels = x.shape
  counts = mask.reshape(batch, length // 2, 2).sum(axis=-1)
  sums = x.reshape(batch, length // 2, 2, channels).sum(axis=2)
  return sums / jnp.maximum(counts, 1)[..., None].astype(x.dtype), counts > 0


class PartAttention(nn.Module):
  """Channel attention per horizontal stripe, one module shared by all stripes (SPEC §1.2).

  Stripe s gets a_s = sigmoid(FC(ReLU(FC([GMP(X_s); GAP(X)])))), hidden size C // reduction, and the map is
  returned with every stripe re-weighted.
  """
  stripes: int
  reduction: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    batch, height, width, channels = x.shape
    if height % self.stripes:
      raise ValueError(f'config.model.stripes={self.stripes} does not divide the final visual map height '
                       f'{height}')
    parts = x.reshape(batch, self.stripes, height // self.stripes, width, channels)
    part_max = parts.max(axis=(2, 3))
    global_mean = jnp.broadcast_to(x.mean(axis=(1, 2))[:, None, :], part_max.shape)
    context = jnp.concatenate([part_max, global_mean], axis=-1)
    hidden = nn.relu(nn.Dense(max(channels // self.reduction, 1), dtype=self.dtype, name='hidden')(context))
    attention = nn.sigmoid(nn.Dense(channels, dtype=self.dtype, name='output')(hidden))
    return (parts * attention[:, :, None, None, :]).reshape(x.shape)


class TextContextAttention(nn.Module):
  """Global-context block over the words (SPEC §1.3): masked softmax pooling, bottleneck transform, broadcast add.

  zero_init_output starts the transform's last layer at zero (GCNet's choice), so the block starts as the identity.
  """
  ratio: int
  zero_init_output: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    logits = nn.Dense(1, use_bias=False, dtype=self.dtype, name='position_logits')(x)[..., 0]
    logits = jnp.where(mask, logits.astype(jnp.float32), jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(x.dtype)
    context = jnp.einsum('bl,blc->bc', weights, x)
    hidden = nn.Dense(max(channels // self.ratio, 1), dtype=self.dtype, name='transform_hidden')(context)
    hidden = nn.relu(nn.LayerNorm(dtype=self.dtype, name='transform_norm')(hidden))
    output_init = nn.initializers.zeros if self.zero_init_output else nn.linear.default_kernel_init
    transform = nn.Dense(channels, kernel_init=output_init, dtype=self.dtype, name='transform_output')(hidden)
    return apply_mask(x + transform[:, None, :], mask)


class AXMNet(nn.Module):
  """The whole network. Either modality may be None: encode_image / encode_text run the same code on one side.

  Outputs (float32): global_visual, part_visual, text (embeddings before the BN-neck), their logits from the
  one shared classifier, image_embedding / text_embedding (SPEC §1.4), and, when both modalities are given,
  the learned scalars of the losses (loss_parameters). A ladder rung between AXM-Net and the dual encoder,
  config.plain_branch = 'visual' or 'text' encodes that modality with the plain encoder of the dual encoder
  instead; the AXM-blocks then carry the other modality alone.
  """
  config: ml_collections.ConfigDict
  num_classes: int
  axis_name: str | None = None

  def __post_init__(self):
    # A frozen copy keeps the module hashable (jit static arguments, flax transforms) and resolves references.
    if not isinstance(self.config, ml_collections.FrozenConfigDict):
      object.__setattr__(self, 'config', ml_collections.FrozenConfigDict(self.config))
    super().__post_init__()

  @property
  def _dtype(self) -> jnp.dtype:
    return jnp.dtype(self.config.dtype)

  def _channels(self, index: int) -> int:
    return max(int(round(STAGE_CHANNELS[index] * self.config.width)), 1)

  def _conv(self, features: int, kernel: int, name: str, strides: int = 1) -> ConvUnit:
    return ConvUnit(features, kernel, strides, axis_name=self.axis_name, dtype=self._dtype, name=name)

  def _batch_norm(self, name: str, use_bias: bool = True, dtype: jnp.dtype = jnp.float32) -> BatchNorm:
    return BatchNorm(self.axis_name, use_bias=use_bias, dtype=dtype, name=name)

  @nn.compact
  def __call__(self, image: jax.Array | None, text_ids: jax.Array | None, text_mask: jax.Array | None,
               train: bool = False) -> dict[str, jax.Array]:
    config = self.config
    axm_image = image if config.plain_branch != 'visual' else None
    axm_text = text_ids if config.plain_branch != 'text' else None
    image_map = text_map = mask = None
    if axm_image is not None:
      image_map = self._conv(self._channels(0), 7, 'visual_stem', strides=2)(image.astype(self._dtype), None, train)
      image_map = nn.max_pool(image_map, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    if axm_text is not None:
      mask = text_mask.astype(bool)
      words = nn.Embed(config.vocab_size, config.word_dim, name='word_embedding')(text_ids)
      text_map = self._conv(self._channels(0), 3, 'text_stem')(apply_mask(words.astype(self._dtype), mask),
                                                               mask, train)
    image_map, text_map, mask = self._backbone(image_map, text_map, mask, train)

    classifier = nn.Dense(self.num_classes, use_bias=False, kernel_init=nn.initializers.normal(0.01),
                          name='classifier')
    scalars = loss_parameters(self, config)
    outputs = {}
    if image_map is not None:
      outputs.update(self._visual_heads(image_map, classifier, train))
    elif image is not None:
      outputs.update(plain_visual_outputs(config, image, classifier, self.axis_name, train))
    if text_map is not None:
      outputs.update(self._text_head(text_map, mask, classifier, train))
    elif text_ids is not None:
      text = plain_text_encoder(config, text_ids, text_mask.astype(bool), self.axis_name, train)
      outputs.update(self._text_outputs(text, classifier, train))
    if image is not None and text_ids is not None:
      outputs.update(scalars)
    return outputs

  def encode_image(self, image: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Image-only forward: the image keys of __call__'s output."""
    return self(image, None, None, train)

  def encode_text(self, text_ids: jax.Array, text_mask: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Text-only forward: the text keys of __call__'s output."""
    return self(None, text_ids, text_mask, train)

  def _backbone(self, image_map: jax.Array | None, text_map: jax.Array | None, mask: jax.Array | None,
                train: bool) -> tuple[jax.Array | None, jax.Array | None, jax.Array | None]:
    """Three stages of AXM-blocks with transitions after stages 1 and 2, then the final 1x1 conv."""
    config = self.config
    for stage in range(1, 4):
      features = self._channels(stage)
      for block in range(1, BLOCKS_PER_STAGE + 1):
        axm_block = AXMBlock(features, config.streams, config.share_gate, config.gate_reduction, config.zero_gamma,
                             self.axis_name, self._dtype, name=f'stage{stage}_block{block}')
        image_map, text_map = axm_block(image_map, text_map, mask, train)
      if stage < 3:
        if image_map is not None:
          image_map = self._conv(features, 1, f'visual_transition{stage}')(image_map, None, train)
          image_map = nn.avg_pool(image_map, (2, 2), strides=(2, 2))
        if text_map is not None:
          text_map = self._conv(features, 1, f'text_transition{stage}')(text_map, mask, train)
          text_map, mask = pool_text_pairs(text_map, mask)
    if image_map is not None:
      image_map = self._conv(self._channels(3), 1, 'visual_final')(image_map, None, train)
    if text_map is not None:
      text_map = self._conv(self._channels(3), 1, 'text_final')(text_map, mask, train)
    return image_map, text_map, mask

  def _visual_heads(self, image_map: jax.Array, classifier: nn.Dense, train: bool) -> dict[str, jax.Array]:
    """V_G (GAP -> FC-BN-ReLU -> FC) and, with part attention, V_P (stripes -> GMP -> FC); image embedding."""
    config = self.config
    hidden = nn.Dense(config.embed_dim, dtype=self._dtype, name='global_visual_hidden')(image_map.mean(axis=(1, 2)))
    hidden = nn.relu(self._batch_norm('global_visual_hidden_bn', dtype=self._dtype)(hidden, train))
    global_visual = nn.Dense(config.embed_dim, dtype=self._dtype, name='global_visual_output')(hidden)
    global_visual = global_visual.astype(jnp.float32)
    outputs = {'global_visual': global_visual,
               'global_visual_logits': classifier(self._batch_norm('global_visual_neck', False)(global_visual, train))}
    if not config.part_attention:
      outputs['image_embedding'] = l2_normalize(global_visual)
      return outputs
    attended = PartAttention(config.stripes, config.part_reduction, self._dtype, name='part_attention')(image_map)
    part_visual = nn.Dense(config.embed_dim, dtype=self._dtype, name='part_visual_output')(attended.max(axis=(1, 2)))
    part_visual = part_visual.astype(jnp.float32)
    outputs['part_visual'] = part_visual
    outputs['part_visual_logits'] = classifier(self._batch_norm('part_visual_neck', False)(part_visual, train))
    outputs['image_embedding'] = jnp.concatenate(
        [l2_normalize(global_visual), l2_normalize(part_visual)], axis=-1) / math.sqrt(2.0)
    return outputs

  def _text_head(self, text_map: jax.Array, mask: jax.Array, classifier: nn.Dense,
                 train: bool) -> dict[str, jax.Array]:
    """T: optional contextual attention, masked average pool, FC; text embedding."""
    config = self.config
    if config.text_attention:
      text_map = TextContextAttention(config.text_attention_ratio, config.text_attention_zero_init, self._dtype,
                                      name='text_attention')(text_map, mask)
    text = nn.Dense(config.embed_dim, dtype=self._dtype, name='text_output')(global_average_pool(text_map, mask))
    return self._text_outputs(text.astype(jnp.float32), classifier, train)

  def _text_outputs(self, text: jax.Array, classifier: nn.Dense, train: bool) -> dict[str, jax.Array]:
    """T, its logits and the text embedding, [n(T), n(T)] / sqrt(2) beside a part-attention image embedding."""
    normalized = l2_normalize(text)
    embedding = (jnp.concatenate([normalized, normalized], axis=-1) / math.sqrt(2.0)
                 if self.config.part_attention else normalized)
    return {'text': text,
            'text_logits': classifier(self._batch_norm('text_neck', False)(text, train)),
            'text_embedding': embedding}
