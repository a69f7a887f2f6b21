"""AXM-Net on ICFG-PEDES at paper scale (configs/paper_scale.py); `configs/icfg_pedes.py:tpu` selects the TPU
variant.

The builder's val split is the 100 largest train person ids (about 3% of the train images), so 60 epochs counted
from the published train size are about 62 passes over the remaining train split.
"""
import os

import ml_collections

from axm_jax import config_files


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  return config_files.load_config(f'{os.path.dirname(__file__)}/paper_scale.py:icfg_pedes,{variant}')
