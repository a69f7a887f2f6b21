"""Depthwise 3x3 / 1x3 convolution: blocks.depthwise_conv's two implementations, shifted sum and grouped lax conv.

  python -m benchmarks.depthwise_conv [--batch=64] [--repeats=5]

For the map shapes of the paper config (384x128 images, 64 tokens, width 1.0) it prints the compile seconds and the
median run milliseconds of the forward and of forward + backward (gradients of a sum of squares with respect to
the input and the kernel), for both implementations, on the default backend.
"""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from axm_jax.models.blocks import depthwise_conv

# (name, map shape without the batch): the lite-conv inputs of stages 1-3 (C_mid = C_out / 4).
SHAPES = (('image stage1', (96, 32, 64)), ('image stage2', (48, 16, 96)), ('image stage3', (24, 8, 128)),
          ('text stage1', (64, 64)), ('text stage3', (16, 128)))


def timed(function, *args, repeats: int) -> tuple[float, float]:
  """(compile seconds, median run milliseconds) of jax.jit(function)(*args)."""
  start = time.perf_counter()
  compiled = jax.jit(function).lower(*args).compile()
  compile_seconds = time.perf_counter() - start
  jax.block_until_ready(compiled(*args))
  runs = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    runs.append(1000 * (time.perf_counter() - start))
  return compile_seconds, float(np.median(runs))


def measure(batch: int, repeats: int) -> list[dict]:
  """One row per map shape: compile seconds and run milliseconds of both implementations, forward and f+b."""
  rows = []
  for name, shape in SHAPES:
    x = jax.random.normal(jax.random.key(0), (batch,) + shape)
    kernel = jax.random.normal(jax.random.key(1), (3,) * (len(shape) - 1) + shape[-1:]) / 3
    shifted = lambda x, k: depthwise_conv(x, k, 'shifted')
    grouped_conv = lambda x, k: depthwise_conv(x, k, 'grouped')
    np.testing.assert_allclose(shifted(x, kernel), grouped_conv(x, kernel), rtol=1e-4, atol=1e-4)
    row = {'map': name, 'shape': list(shape), 'batch': batch}
    for label, forward in (('shifted', shifted), ('grouped', grouped_conv)):
      row[f'{label}_forward'] = timed(forward, x, kernel, repeats=repeats)
      both = jax.grad(lambda x, k, f=forward: jnp.sum(f(x, k) ** 2), argnums=(0, 1))
      row[f'{label}_backward'] = timed(both, x, kernel, repeats=repeats)
    rows.append(row)
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--repeats', type=int, default=5)
  args = parser.parse_args()
  print(f'{jax.devices()[0].device_kind}, batch {args.batch}; compile s / run ms')
  print(f'{"map":>14} {"shape":>12} | {"shifted fwd":>14} {"grouped fwd":>14} | {"shifted f+b":>14} '
        f'{"grouped f+b":>14}')
  for row in measure(args.batch, args.repeats):
    cells = [row[key] for key in ('shifted_forward', 'grouped_forward', 'shifted_backward', 'grouped_backward')]
    print(f'{row["map"]:>14} {"x".join(map(str, row["shape"])):>12} | ' +
          ' '.join(f'{c:5.2f} /{r:7.1f}' for c, r in cells[:2]) + ' | ' +
          ' '.join(f'{c:5.2f} /{r:7.1f}' for c, r in cells[2:]))


if __name__ == '__main__':
  main()
