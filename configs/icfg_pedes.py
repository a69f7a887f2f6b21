"""AXM-Net on ICFG-PEDES at paper scale; `configs/icfg_pedes.py:tpu` selects the TPU variant.

The builder's val split is the 100 largest train person ids (about 3% of the train images), so 60 epochs counted
from the published train size are about 62 passes over the remaining train split.
"""
import importlib.util
import os

import ml_collections

TRAIN_IMAGES = 34_674  # published ICFG-PEDES train split


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cuhk_pedes.py')
  spec = importlib.util.spec_from_file_location('_axm_config_cuhk_pedes', path)
  paper_scale = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(paper_scale)
  return paper_scale.paper_scale_config('icfg_pedes', TRAIN_IMAGES, variant)
