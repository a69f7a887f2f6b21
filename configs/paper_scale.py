"""AXM-Net at paper scale (SPEC §3) on a real dataset: `configs/paper_scale.py:DATASET[,tpu]`.

configs/cuhk_pedes.py, icfg_pedes.py and rstpreid.py name this file with their dataset. Set the dataset directory
with --config.data.manual_dir=DIR (see `python -m axm_jax.data.validate`). An epoch is (train images) / (batch 64)
steps, from the published train split size; the schedule is 5 warm-up epochs and 60 epochs in all.
"""
import math
import os

import ml_collections

from axm_jax import config_files

TRAIN_IMAGES = {  # published train splits
    'cuhk_pedes': 34_054,
    'icfg_pedes': 34_674,
    'rstpreid': 18_505,  # 3,701 ids x 5 images
}
EPOCHS = 60
WARMUP_EPOCHS = 5
EVAL_EVERY_EPOCHS = 5


def get_config(argument: str) -> ml_collections.ConfigDict:
  """configs/synthetic.py's tree at paper scale for 'DATASET' or 'DATASET,VARIANT'.

  Args:
    argument: the TFDS builder name (cuhk_pedes | icfg_pedes | rstpreid), then optionally a comma and the variant:
      none (GPU / CPU, float32) or 'tpu' (bfloat16 compute, larger evaluation batches).
  """
  name, _, variant = argument.partition(',')
  if name not in TRAIN_IMAGES:
    raise ValueError(f'unknown dataset {name!r}; expected one of {sorted(TRAIN_IMAGES)}')
  config = config_files.load_config(f'{os.path.dirname(__file__)}/synthetic.py')
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
  steps = lambda epochs: math.ceil(epochs * TRAIN_IMAGES[name] / batch_size)
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
