"""The one place that turns config.model into a model: AXM-Net or the plain dual-encoder reference."""
import flax.linen as nn
import ml_collections

from axm_jax.models.axm_net import AXMNet
from axm_jax.models.dual_encoder import DualEncoder

ARCHITECTURES = {'axm_net': AXMNet, 'dual_encoder': DualEncoder}


def build_model(model_config: ml_collections.ConfigDict, num_classes: int, axis_name: str | None = None) -> nn.Module:
  """The model of config.model.architecture; both have AXMNet's call signature, methods and outputs."""
  if model_config.architecture not in ARCHITECTURES:
    raise ValueError(f'config.model.architecture = {model_config.architecture!r}; expected one of '
                     f'{tuple(ARCHITECTURES)}.')
  return ARCHITECTURES[model_config.architecture](model_config, num_classes=num_classes, axis_name=axis_name)
