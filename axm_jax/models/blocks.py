"""Convolution units, the masked cross-replica BatchNorm and the AXM-block (SPEC §1.1).

Maps are channels-last. Images are [B, H, W, C]; text is [B, L, C] with a boolean mask [B, L] (True = token).
The same modules serve both modalities: spatial kernels have one axis per spatial dimension of the input, so a
"3x3" conv on an image is a "1x3" conv along the sequence on text. Text maps are kept at exactly zero on padding
positions after every unit, so a convolution sees padding the way it sees the zero border of the sequence, and
appending padding tokens changes nothing.
"""
import itertools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def apply_mask(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Zeroes the padding positions of a text map [B, L, C]; identity for images (mask None)."""
  if mask is None:
    return x
  return x * mask[..., None].astype(x.dtype)


def l2_normalize(x: jax.Array, epsilon: float = 1e-12) -> jax.Array:
  """Scales each row of x to unit L2 norm."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), epsilon)


def global_average_pool(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Mean over all spatial positions ([B, ..., C] -> [B, C]); over tokens only when a mask is given."""
  spatial_axes = tuple(range(1, x.ndim - 1))
  if mask is None:
    return x.mean(axis=spatial_axes)
  count = jnp.maximum(mask.sum(axis=-1, keepdims=True), 1).astype(x.dtype)
  return apply_mask(x, mask).sum(axis=spatial_axes) / count


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, with statistics summed over `axis_name` under pmap.

  The mean and variance come from sums and counts psum'd across devices, so they equal the statistics of the
  global batch even when devices hold different numbers of valid (unmasked) positions. Statistics and the
  normalisation run in float32; the result is cast to `dtype`. Variable names follow flax.linen.BatchNorm
  (params scale/bias, batch_stats mean/var). `zero_scale` starts the scale at 0 (the last BN of a residual branch).
  """
  axis_name: str | None = None
  momentum: float = 0.9
  epsilon: float = 1e-5
  use_bias: bool = True
  zero_scale: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> jax.Array:
    features = x.shape[-1]
    scale_init = nn.initializers.zeros if self.zero_scale else nn.initializers.ones
    scale = self.param('scale', scale_init, (features,), jnp.float32)
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,), jnp.float32)
    values = x.astype(jnp.float32)
    if train:
      # Plain reductions, not dot products: default matmul precision on accelerators would truncate them.
      axes = tuple(range(x.ndim - 1))
      if mask is None:
        weighted, count = values, jnp.float32(values.size // features)
      else:
        weights = mask.astype(jnp.float32)[..., None]
        weighted, count = values * weights, weights.sum()
      sums = jnp.stack([weighted.sum(axes), (weighted * values).sum(axes), jnp.broadcast_to(count, (features,))])
      if self.axis_name is not None:
        sums = jax.lax.psum(sums, self.axis_name)
      count = jnp.maximum(sums[2], 1.0)
      mean = sums[0] / count
      var = jnp.maximum(sums[1] / count - mean * mean, 0.0)
      if not self.is_initializing():
        running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
        running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
    else:
      mean, var = running_mean.value, running_var.value
    y = (values - mean) * (scale * jax.lax.rsqrt(var + self.epsilon))
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    return y.astype(self.dtype)


class ConvUnit(nn.Module):
  """Conv (no bias) -> BatchNorm -> optional ReLU; padding kernel // 2 on each side, as in torch."""
  features: int
  kernel: int
  strides: int = 1
  relu: bool = True
  zero_scale: bool = False
  axis_name: str | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None, train: bool) -> jax.Array:
    spatial = x.ndim - 2
    x = nn.Conv(self.features, (self.kernel,) * spatial, strides=(self.strides,) * spatial,
                padding=((self.kernel // 2, self.kernel // 2),) * spatial, use_bias=False,
                dtype=self.dtype, name='conv')(x)
    x = BatchNorm(self.axis_name, zero_scale=self.zero_scale, dtype=self.dtype, name='bn')(x, train, mask)
    if self.relu:
      x = nn.relu(x)
    return apply_mask(x, mask)


def depthwise_conv(x: jax.Array, kernel: jax.Array, implementation: str = 'auto') -> jax.Array:
  """Depthwise 3x3 (3 on sequences) conv of x [B, ..., C] with kernel [3.., C]: stride 1, zero padding 1, no bias.

  'shifted' is a sum of 9 (3) shifted products, elementwise work that XLA fuses: on CPU ~60x faster forward and
  ~13x with backward than a grouped convolution (4-24x with backward at the paper's map sizes,
  `python -m benchmarks.depthwise_conv`). 'grouped' is one lax convolution with feature_group_count = C, which
  TPUs run natively. 'auto' takes 'grouped' on TPU and 'shifted' elsewhere. The map is read and written in x's
  dtype; products and their sum are float32, as a convolution accumulates.
  """
  spatial = x.ndim - 2
  if implementation == 'auto':
    implementation = 'grouped' if jax.default_backend() == 'tpu' else 'shifted'
  if implementation == 'grouped':
    letters = 'HW' if spatial == 2 else 'W'
    return jax.lax.conv_general_dilated(
        x, kernel[..., None, :].astype(x.dtype), (1,) * spatial, ((1, 1),) * spatial,
        dimension_numbers=('N' + letters + 'C', letters + 'IO', 'N' + letters + 'C'),
        feature_group_count=x.shape[-1], preferred_element_type=jnp.float32).astype(x.dtype)
  if implementation != 'shifted':
    raise ValueError(f"depthwise implementation {implementation!r}; expected 'auto', 'shifted' or 'grouped'")
  # lax.slice, not jnp indexing: the same program, traced several times faster.
  padded = jnp.pad(x, ((0, 0),) + ((1, 1),) * spatial + ((0, 0),))
  total = jnp.zeros(x.shape, jnp.float32)
  for offset in itertools.product(range(3), repeat=spatial):
    window = jax.lax.slice(padded, (0, *offset, 0), (x.shape[0], *(o + n for o, n in zip(offset, x.shape[1:-1])),
                                                     x.shape[-1]))
    weight = jax.lax.squeeze(jax.lax.slice(kernel, (*offset, 0), (*(o + 1 for o in offset), x.shape[-1])),
                             tuple(range(spatial)))
    total = total + window.astype(jnp.float32) * weight
  return total.astype(x.dtype)


class DepthwiseConv(nn.Module):
  """Depthwise conv (depthwise_conv) holding a grouped nn.Conv's parameter, `kernel` [3.., 1, C]."""
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    spatial = x.ndim - 2
    kernel = self.param('kernel', nn.initializers.lecun_normal(), (3,) * spatial + (1, x.shape[-1]), jnp.float32)
    return depthwise_conv(x.astype(self.dtype), kernel.reshape((3,) * spatial + (x.shape[-1],)))


class LiteConv(nn.Module):
  """OSNet's light conv: 1x1 linear conv, depthwise 3x3 (1x3 on text), BatchNorm, ReLU."""
  features: int
  axis_name: str | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None, train: bool) -> jax.Array:
    spatial = x.ndim - 2
    x = nn.Conv(self.features, (1,) * spatial, use_bias=False, dtype=self.dtype, name='pointwise')(x)
    x = DepthwiseConv(dtype=self.dtype, name='depthwise')(x)
    x = BatchNorm(self.axis_name, dtype=self.dtype, name='bn')(x, train, mask)
    return apply_mask(nn.relu(x), mask)


class ContextGate(nn.Module):
  """The context mini-network C: pooled [B, C] -> FC(C/r, bias) -> ReLU -> FC(C, bias) -> sigmoid."""
  features: int
  reduction: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, pooled: jax.Array) -> jax.Array:
    hidden = nn.Dense(max(self.features // self.reduction, 1), dtype=self.dtype, name='hidden')(pooled)
    return nn.sigmoid(nn.Dense(self.features, dtype=self.dtype, name='output')(nn.relu(hidden)))


class ModalityPath(nn.Module):
  """One modality's half of an AXM-block: reduce, R gated streams, expand, residual.

  With zero_gamma the expand BatchNorm's scale starts at zero, so the block starts as its shortcut ("zero-gamma",
  Goyal et al. 2017): trained from scratch, the deep text branch otherwise barely learns (SynthPedes text ID loss
  after 600 steps: 5.1 with unit scales, 2.2 with zero).

  `gate` is a ContextGate owned by the enclosing AXMBlock; passing the same instance to both modalities' paths
  is what shares it.
  """
  features: int
  streams: int
  gate: nn.Module
  zero_gamma: bool = True
  axis_name: str | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None, train: bool) -> jax.Array:
    middle = max(self.features // 4, 1)
    reduced = ConvUnit(middle, 1, axis_name=self.axis_name, dtype=self.dtype, name='reduce')(x, mask, train)
    combined = jnp.zeros_like(reduced)
    for stream in range(1, self.streams + 1):
      y = reduced
      for depth in range(1, stream + 1):
        y = LiteConv(middle, self.axis_name, self.dtype, name=f'stream{stream}_lite{depth}')(y, mask, train)
      scale = self.gate(global_average_pool(y, mask))
      combined = combined + y * jnp.expand_dims(scale, tuple(range(1, y.ndim - 1)))
    out = ConvUnit(self.features, 1, relu=False, zero_scale=self.zero_gamma, axis_name=self.axis_name, dtype=self.dtype,
                   name='expand')(combined, mask, train)
    if x.shape[-1] != self.features:
      x = ConvUnit(self.features, 1, relu=False, axis_name=self.axis_name, dtype=self.dtype,
                   name='projection')(x, mask, train)
    return nn.relu(out + x)


class AXMBlock(nn.Module):
  """AXM-block over an image map and a text map; either may be None (single-modality evaluation).

  With share_gate=True one ContextGate named `gate` scales every stream of both modalities; with
  share_gate=False each modality has its own (`visual_gate`, `text_gate`).
  """
  features: int
  streams: int
  share_gate: bool
  gate_reduction: int
  zero_gamma: bool = True
  axis_name: str | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: jax.Array | None, text: jax.Array | None, text_mask: jax.Array | None,
               train: bool) -> tuple[jax.Array | None, jax.Array | None]:
    middle = max(self.features // 4, 1)
    if self.share_gate:
      visual_gate = text_gate = ContextGate(middle, self.gate_reduction, self.dtype, name='gate')
    else:
      visual_gate = ContextGate(middle, self.gate_reduction, self.dtype, name='visual_gate')
      text_gate = ContextGate(middle, self.gate_reduction, self.dtype, name='text_gate')
    if image is not None:
      image = ModalityPath(self.features, self.streams, visual_gate, self.zero_gamma, self.axis_name, self.dtype,
                           name='visual')(image, None, train)
    if text is not None:
      text = ModalityPath(self.features, self.streams, text_gate, self.zero_gamma, self.axis_name, self.dtype,
                          name='text')(text, text_mask, train)
    return image, text
