"""Prints the training pipeline's images per second on the synthetic default config (builds it if needed).

  python -m benchmarks.pipeline_throughput [--data_dir=DIR] [--steps=50]
"""
import os
import time

from absl import app, flags

from axm_jax import config_files
from axm_jax.data import pipeline
from axm_jax.data.tokenizer import Tokenizer, train_tokenizer

_DATA_DIR = flags.DEFINE_string('data_dir', '', "TFDS data dir ('' = the config's).")
_STEPS = flags.DEFINE_integer('steps', 50, 'Timed batches.')
_WARMUP = flags.DEFINE_integer('warmup', 5, 'Batches before the clock starts.')
_DEVICES = flags.DEFINE_integer('devices', 1, 'Leading device axis of the batches.')


def main(argv) -> None:
  del argv
  data_config = config_files.load_config('configs/synthetic.py').data
  if _DATA_DIR.value:
    data_config.data_dir = _DATA_DIR.value
  split = pipeline.load_split(data_config, 'train')
  tokenizer = Tokenizer(train_tokenizer(pipeline.flat_captions(split), data_config.vocab_size))
  batches = pipeline.train_batches(split, tokenizer, data_config, seed=0, start_step=0, num_devices=_DEVICES.value)
  for _ in range(_WARMUP.value):
    next(batches)
  start = time.perf_counter()
  images = 0
  for _ in range(_STEPS.value):
    images += _batch_images(next(batches))
  elapsed = time.perf_counter() - start
  print(f'{data_config.name}/{data_config.builder_config}: {images / elapsed:.0f} training images/s '
        f'({_STEPS.value} batches of {images // _STEPS.value}, {os.cpu_count()} CPUs)')


def _batch_images(batch: dict) -> int:
  devices, per_device = batch['image'].shape[:2]
  return devices * per_device


if __name__ == '__main__':
  app.run(main)
