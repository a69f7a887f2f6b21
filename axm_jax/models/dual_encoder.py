"""The plain dual-encoder reference: two independent small encoders, no AXM-blocks, no cross-modal sharing.

It answers the paper's central question at equal compute: what the AXM-blocks buy over two separate encoders
(a 4-layer CNN and a one-block 1-D conv text encoder, axm_jax/models/plain_encoders.py).

The modalities share no layer; the one ID classifier (each embedding through its own BN-neck first) belongs to
the losses, as in AXMNet. The outputs are AXMNet's with part attention off (global_visual, text, their logits,
image_embedding = n(V_G), text_embedding = n(T), and the learned loss scalars when both modalities are given), so
training, evaluation and checkpoints treat both models alike. Text maps are zero on padding after every unit and
BatchNorm statistics are masked and cross-replica (axm_jax.models.blocks), so padding tokens change nothing and
N devices compute what one device computes.
"""
import flax.linen as nn
import jax
import ml_collections

from axm_jax.models.axm_net import loss_parameters
from axm_jax.models.blocks import BatchNorm, l2_normalize
from axm_jax.models.plain_encoders import plain_text_encoder, plain_visual_outputs


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
      outputs.update(plain_visual_outputs(self.config, image, classifier, self.axis_name, train))
    if text_ids is not None:
      text = plain_text_encoder(self.config, text_ids, text_mask.astype(bool), self.axis_name, train)
      outputs.update(text=text, text_embedding=l2_normalize(text),
                     text_logits=classifier(BatchNorm(self.axis_name, use_bias=False, name='text_neck')(text, train)))
    if image is not None and text_ids is not None:
      outputs.update(scalars)
    return outputs

  def encode_image(self, image: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Image-only forward: the image keys of __call__'s output."""
    return self(image, None, None, train)

  def encode_text(self, text_ids: jax.Array, text_mask: jax.Array, train: bool = False) -> dict[str, jax.Array]:
    """Text-only forward: the text keys of __call__'s output."""
    return self(None, text_ids, text_mask, train)
