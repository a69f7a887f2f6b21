"""Map shapes, parameter counts per part and XLA FLOPs per image-text pair of AXM-Net.

  python -m benchmarks.model_cost                 # paper scale: configs/cuhk_pedes.py, 11,003 classes
  python -m benchmarks.model_cost --scale=synthetic --num_classes=500

FLOPs come from XLA's cost analysis of the compiled programs (a multiply-add counts as 2 FLOPs): the
evaluation-mode forward of one image and one caption, and a training step's forward + backward with the losses
(no optimizer update), both divided by the batch size. Nothing runs; the counts are those of the backend that
compiles (CPU unless an accelerator is present).
"""
import argparse

import flax
import jax
import jax.numpy as jnp
import numpy as np

from axm_jax import config_files
from axm_jax import losses
from axm_jax.models.axm_net import AXMNet

CONFIGS = {'paper': 'configs/cuhk_pedes.py', 'synthetic': 'configs/synthetic.py'}


def part_of(path: tuple[str, ...]) -> str:
  """Which part of the network a variable belongs to."""
  top = path[0]
  if top.startswith('stage'):
    return {'visual': 'visual branch', 'text': 'text branch'}.get(path[1], 'shared gates')
  if top.startswith('visual'):
    return 'visual branch'
  if top == 'word_embedding':
    return 'word embedding'
  if top.startswith('text_') and top not in ('text_attention', 'text_output', 'text_neck'):
    return 'text branch'
  if top == 'classifier':
    return 'classifier'
  return 'heads'


def flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis['flops'])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--scale', choices=sorted(CONFIGS), default='paper')
  parser.add_argument('--num_classes', type=int, default=11003)
  parser.add_argument('--batch', type=int, default=8, help='pairs per compiled program')
  args = parser.parse_args()
  config = config_files.load_config(CONFIGS[args.scale])
  height, width = config.data.image_size
  length = config.data.text_length
  model = AXMNet(config.model, args.num_classes)
  image = jax.ShapeDtypeStruct((args.batch, height, width, 3), jnp.float32)
  text_ids = jax.ShapeDtypeStruct((args.batch, length), jnp.int32)
  text_mask = jax.ShapeDtypeStruct((args.batch, length), jnp.bool_)
  variables = jax.eval_shape(lambda *inputs: model.init(jax.random.key(0), *inputs), image, text_ids, text_mask)

  finals = lambda module, method_name: module.name in ('visual_final', 'text_final')
  _, captured = jax.eval_shape(
      lambda v, *inputs: model.apply(v, *inputs, capture_intermediates=finals, mutable=['intermediates']),
      variables, image, text_ids, text_mask)
  maps = captured['intermediates']
  print(f'config: {args.scale} (width {config.model.width}, image {height}x{width}, text {length} tokens, '
        f'embed {config.model.embed_dim}, vocab {config.model.vocab_size}, {args.num_classes} classes, '
        f'dtype {config.model.dtype})')
  print(f'visual map: {"x".join(map(str, maps["visual_final"]["__call__"][0].shape[1:]))}')
  print(f'text map:   {"x".join(map(str, maps["text_final"]["__call__"][0].shape[1:]))}')

  counts = {}
  for path, leaf in flax.traverse_util.flatten_dict(variables['params']).items():
    counts[part_of(path)] = counts.get(part_of(path), 0) + int(np.prod(leaf.shape))
  print('\n| part | parameters |\n| --- | ---: |')
  for part in ('visual branch', 'text branch', 'word embedding', 'shared gates', 'heads', 'classifier'):
    print(f'| {part} | {counts.get(part, 0):,} |')
  print(f'| total | {sum(counts.values()):,} |')

  forward = lambda method: jax.jit(lambda v, *inputs: model.apply(v, *inputs, method=method))
  image_flops = flops(forward(AXMNet.encode_image).lower(variables, image).compile()) / args.batch
  text_flops = flops(forward(AXMNet.encode_text).lower(variables, text_ids, text_mask).compile()) / args.batch
  pair_flops = flops(forward(AXMNet.__call__).lower(variables, image, text_ids, text_mask).compile()) / args.batch

  def loss(params, batch_stats, *inputs, labels):
    outputs, _ = model.apply({'params': params, 'batch_stats': batch_stats}, *inputs, train=True,
                             mutable=['batch_stats'])
    return losses.compute_losses(outputs, labels, config.loss)[0]
  labels = jax.ShapeDtypeStruct((args.batch,), jnp.int32)
  train_flops = flops(jax.jit(lambda p, s, *inputs, labels: jax.grad(loss)(p, s, *inputs, labels=labels)).lower(
      variables['params'], variables['batch_stats'], image, text_ids, text_mask, labels=labels).compile()) / args.batch
  print('\n| program (per image-text pair) | GFLOPs |\n| --- | ---: |')
  print(f'| encode_image (eval) | {image_flops / 1e9:.3f} |')
  print(f'| encode_text (eval) | {text_flops / 1e9:.3f} |')
  print(f'| joint forward (eval) | {pair_flops / 1e9:.3f} |')
  print(f'| training forward + backward + losses | {train_flops / 1e9:.3f} |')


if __name__ == '__main__':
  main()
