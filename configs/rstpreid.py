"""AXM-Net on RSTPReid at paper scale (configs/paper_scale.py); `configs/rstpreid.py:tpu` selects the TPU variant."""
import os

import ml_collections

from axm_jax import config_files


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  return config_files.load_config(f'{os.path.dirname(__file__)}/paper_scale.py:rstpreid,{variant}')
