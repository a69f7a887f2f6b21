"""AXM-Net on CUHK-PEDES at paper scale (SPEC §3). `configs/cuhk_pedes.py:tpu` selects the TPU variant.

Set the dataset directory with --config.data.manual_dir=DIR (see `python -m axm_jax.data.validate`).
An epoch is (train images) / (batch 64) steps, from the published train split size; the schedule is 5 warm-up
epochs and 60 epochs in all.
"""
import importlib.util
import math
import os

import ml_collections

TRAIN_IMAGES = 34_054  # published CUHK-PEDES train split
EPOCHS = 60
WARMUP_EPOCHS = 5
EVAL_EVERY_EPOCHS = 5


def _load_sibling(file_name: str):
  """Imports a config file next to this one (config files are loaded by path, not as a package)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), file_name)
  spec = importlib.util.spec_from_file_location(f'_axm_config_{file_name[:-3]}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def paper_scale_config(name: str, train_images: int, variant: str = '') -> ml_collections.ConfigDict:
  """configs/synthetic.py's tree at paper scale for dataset `name` with `train_images` training images.

  Args:
    name: TFDS builder name (cuhk_pedes | icfg_pedes | rstpreid).
    train_images: images in the training split; sets the number of steps per epoch.
    variant: '' (GPU / CPU, float32) or 'tpu' (bfloat16 compute, larger evaluation batches).
  """
  config = _load_sibling('synthetic.py').get_config()
  config.data.name = name
  config.data.builder_config = 'default'
  config.data.manual_dir = ''  # set --config.data.manual_dir=DIR
  config.data.image_size = (384, 128)
  config.data.text_length = 64
  config.data.vocab_size = 5000
  config.data.identities_per_batch = 16
  config.data.images_per_identity = 4
  config.data.crop_padding = 10
  config.data.eval_batch_size = 256

  config.model.width = 1.0
  config.model.stripes = 6
  config.model.embed_dim = 512

  batch_size = config.data.identities_per_batch * config.data.images_per_identity
  steps = lambda epochs: math.ceil(epochs * train_images / batch_size)
  config.optim.learning_rate = 3.5e-4
  config.optim.warmup_steps = steps(WARMUP_EPOCHS)
  config.loss.triplet_warmup_steps = config.optim.warmup_steps
  config.train.num_steps = steps(EPOCHS)
  config.train.log_every = 100
  config.train.checkpoint_every = steps(EVAL_EVERY_EPOCHS)
  config.train.eval_every = steps(EVAL_EVERY_EPOCHS)

  if variant == 'tpu':
    config.model.dtype = 'bfloat16'
    config.data.eval_batch_size = 1024
  elif variant:
    raise ValueError(f"unknown config variant '{variant}'; expected 'tpu' or none")
  return config


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  return paper_scale_config('cuhk_pedes', TRAIN_IMAGES, variant)
