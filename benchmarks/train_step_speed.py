"""Throughput of the compiled pmap train step alone (no input pipeline), in image-text pairs per second.

  python benchmarks/train_step_speed.py --scale=paper --dtypes=float32,bfloat16 --per_device_batch=64
`paper`: width 1.0, 384x128 images, 64 tokens, 512-d embeddings, 11,003 classes (CUHK-PEDES);
`synthetic`: the configs/synthetic.py default.
"""
import argparse
import time

import jax
import numpy as np

from axm_jax import config_files
from axm_jax import train_step as train_step_lib
from axm_jax.models import axm_net


def load_config(scale: str, dtype: str, per_device_batch: int):
  config = config_files.load_config('configs/synthetic.py')
  if scale == 'paper':
    config.data.image_size, config.data.text_length = (384, 128), 64
    config.model.width, config.model.stripes, config.model.embed_dim = 1.0, 6, 512
  config.model.dtype = dtype
  config.data.images_per_identity = 4
  config.data.identities_per_batch = per_device_batch * jax.local_device_count() // 4
  return config


def random_batch(config, num_classes: int) -> dict[str, np.ndarray]:
  devices = jax.local_device_count()
  batch = config.data.identities_per_batch * config.data.images_per_identity // devices
  rng = np.random.default_rng(0)
  height, width = config.data.image_size
  length = config.data.text_length
  labels = np.repeat(np.arange(batch // 4), 4) % num_classes
  lengths = rng.integers(length // 4, length, size=(devices, batch))
  return {
      'image': rng.standard_normal((devices, batch, height, width, 3), dtype=np.float32),
      'text_ids': rng.integers(4, config.data.vocab_size, (devices, batch, length), dtype=np.int32),
      'text_mask': np.arange(length)[None, None] < lengths[..., None],
      'label': np.broadcast_to(labels, (devices, batch)).astype(np.int32),
  }


def measure(config, num_classes: int, steps: int) -> tuple[float, float]:
  """Returns (compile seconds, pairs per second)."""
  model = axm_net.AXMNet(config.model, num_classes=num_classes, axis_name=train_step_lib.AXIS)
  optimizer = train_step_lib.make_optimizer(config)
  state = train_step_lib.replicate(train_step_lib.create_state(config, model, optimizer, []))
  step = train_step_lib.pmapped_train_step(config, model)
  host = random_batch(config, num_classes)
  batch = jax.pmap(lambda x: x)(host)  # resident on the devices, as after prefetching
  start = time.perf_counter()
  state, terms = step(state, batch)
  jax.block_until_ready(terms)
  compile_seconds = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps):
    state, terms = step(state, batch)
  jax.block_until_ready(terms)
  pairs = steps * config.data.identities_per_batch * config.data.images_per_identity
  return compile_seconds, pairs / (time.perf_counter() - start)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--scale', choices=('paper', 'synthetic'), default='synthetic')
  parser.add_argument('--dtypes', default='float32')
  parser.add_argument('--per_device_batch', type=int, default=16)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--num_classes', type=int, default=11003)
  args = parser.parse_args()
  print(f'{jax.device_count()} x {jax.devices()[0].device_kind}, scale={args.scale}, '
        f'per-device batch {args.per_device_batch}')
  for dtype in args.dtypes.split(','):
    config = load_config(args.scale, dtype, args.per_device_batch)
    compile_seconds, pairs_per_second = measure(config, args.num_classes, args.steps)
    print(f'{dtype:>9}: compile {compile_seconds:6.1f} s | {pairs_per_second:8.1f} image-text pairs/s | '
          f'{1000 * config.data.identities_per_batch * config.data.images_per_identity / pairs_per_second:7.1f}'
          ' ms/step')


if __name__ == '__main__':
  main()
