"""AXM-Net on CUHK-PEDES at paper scale (configs/paper_scale.py); `configs/cuhk_pedes.py:tpu` selects the TPU
variant. Set the dataset directory with --config.data.manual_dir=DIR (see `python -m axm_jax.data.validate`).
"""
import os

import ml_collections

from axm_jax import config_files


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  return config_files.load_config(f'{os.path.dirname(__file__)}/paper_scale.py:cuhk_pedes,{variant}')
