"""AXM-Net on RSTPReid at paper scale; `configs/rstpreid.py:tpu` selects the TPU variant."""
import importlib.util
import os

import ml_collections

TRAIN_IMAGES = 18_505  # published RSTPReid train split: 3,701 ids x 5 images


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cuhk_pedes.py')
  spec = importlib.util.spec_from_file_location('_axm_config_cuhk_pedes', path)
  paper_scale = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(paper_scale)
  return paper_scale.paper_scale_config('rstpreid', TRAIN_IMAGES, variant)
