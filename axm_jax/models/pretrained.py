"""ImageNet OSNet x1.0 weights for the visual branch, and word vectors for the text embedding.

Convert a torchreid checkpoint once (torch is needed for this step only; see requirements-convert.txt):

  python -m axm_jax.models.pretrained osnet --input=osnet_x1_0_imagenet.pth --output=osnet_x1_0.npz

then set config.model.pretrained_visual to the .npz (and config.model.pretrained_words to a word2vec text file)
and call `load_pretrained(variables, config.model, vocab)` on the output of model.init. The .npz holds one array
per model variable, named by its path ('params/stage1_block1/visual/reduce/conv/kernel', 'batch_stats/...').
With width 1.0 the visual branch is layer-for-layer OSNet x1.0: stem conv1, stage s = torchreid conv{s+1} (two
OSBlocks, then the transition conv{s+1}.2.0 for s = 1, 2), conv5 = visual_final, fc = the first FC-BN of the V_G
head. An OSBlock's gate becomes the block's shared context gate (the visual gate when share_gate is False).
"""
from collections.abc import Callable, Mapping, Sequence
import os

from absl import app
from absl import flags
from absl import logging
import flax
import jax.numpy as jnp
import ml_collections
import numpy as np

STREAM_LETTERS = 'abcd'  # torchreid's conv2a..conv2d: OSNet's four streams
WORD_PREFIX = '\u2581'  # sentencepiece's word-start marker


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
  """torch Conv2d weight [out, in/groups, kh, kw] -> flax Conv kernel [kh, kw, in/groups, out]."""
  return np.transpose(weight, (2, 3, 1, 0))


def _linear_kernel(weight: np.ndarray) -> np.ndarray:
  """torch Linear weight [out, in] -> flax Dense kernel [in, out]."""
  return np.transpose(weight)


def _pointwise_dense_kernel(weight: np.ndarray) -> np.ndarray:
  """torch 1x1 Conv2d weight [out, in, 1, 1] applied to a pooled map -> flax Dense kernel [in, out]."""
  return np.transpose(weight[:, :, 0, 0])


def _same(value: np.ndarray) -> np.ndarray:
  return value


Converter = tuple[str, Callable[[np.ndarray], np.ndarray]]


def _batch_norm(torch_prefix: str, flax_prefix: str) -> dict[str, Converter]:
  return {f'{torch_prefix}.weight': (f'params/{flax_prefix}/scale', _same),
          f'{torch_prefix}.bias': (f'params/{flax_prefix}/bias', _same),
          f'{torch_prefix}.running_mean': (f'batch_stats/{flax_prefix}/mean', _same),
          f'{torch_prefix}.running_var': (f'batch_stats/{flax_prefix}/var', _same)}


def _conv_unit(torch_prefix: str, flax_prefix: str) -> dict[str, Converter]:
  """torchreid ConvLayer / Conv1x1 / Conv1x1Linear (conv, bn) -> blocks.ConvUnit (conv, bn)."""
  return {f'{torch_prefix}.conv.weight': (f'params/{flax_prefix}/conv/kernel', _conv_kernel),
          **_batch_norm(f'{torch_prefix}.bn', f'{flax_prefix}/bn')}


def _lite_conv(torch_prefix: str, flax_prefix: str) -> dict[str, Converter]:
  """torchreid LightConv3x3 (conv1, conv2, bn) -> blocks.LiteConv (pointwise, depthwise, bn)."""
  return {f'{torch_prefix}.conv1.weight': (f'params/{flax_prefix}/pointwise/kernel', _conv_kernel),
          f'{torch_prefix}.conv2.weight': (f'params/{flax_prefix}/depthwise/kernel', _conv_kernel),
          **_batch_norm(f'{torch_prefix}.bn', f'{flax_prefix}/bn')}


def _os_block(torch_prefix: str, flax_prefix: str, projection: bool) -> dict[str, Converter]:
  """torchreid OSBlock -> the visual half of an AXM-block plus its gate."""
  mapping = {**_conv_unit(f'{torch_prefix}.conv1', f'{flax_prefix}/visual/reduce'),
             **_conv_unit(f'{torch_prefix}.conv3', f'{flax_prefix}/visual/expand')}
  if projection:
    mapping.update(_conv_unit(f'{torch_prefix}.downsample', f'{flax_prefix}/visual/projection'))
  for stream, letter in enumerate(STREAM_LETTERS, start=1):
    for depth in range(1, stream + 1):
      torch_name = f'{torch_prefix}.conv2{letter}' + ('' if stream == 1 else f'.{depth - 1}')
      mapping.update(_lite_conv(torch_name, f'{flax_prefix}/visual/stream{stream}_lite{depth}'))
  for torch_layer, flax_layer in (('fc1', 'hidden'), ('fc2', 'output')):
    mapping[f'{torch_prefix}.gate.{torch_layer}.weight'] = (f'params/{flax_prefix}/gate/{flax_layer}/kernel',
                                                            _pointwise_dense_kernel)
    mapping[f'{torch_prefix}.gate.{torch_layer}.bias'] = (f'params/{flax_prefix}/gate/{flax_layer}/bias', _same)
  return mapping


def osnet_key_map() -> dict[str, Converter]:
  """Every torchreid OSNet x1.0 state-dict key the visual branch uses -> (variable path, weight transform).

  Only the first block of a stage changes channels, so only it has a downsample (the residual projection).
  """
  mapping = {**_conv_unit('conv1', 'visual_stem'), **_conv_unit('conv5', 'visual_final'),
             'fc.0.weight': ('params/global_visual_hidden/kernel', _linear_kernel),
             'fc.0.bias': ('params/global_visual_hidden/bias', _same),
             **_batch_norm('fc.1', 'global_visual_hidden_bn')}
  for stage in range(1, 4):
    for block in range(1, 3):
      mapping.update(_os_block(f'conv{stage + 1}.{block - 1}', f'stage{stage}_block{block}', block == 1))
    if stage < 3:
      mapping.update(_conv_unit(f'conv{stage + 1}.2.0', f'visual_transition{stage}'))
  return mapping


def convert_osnet(state_dict: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str]]:
  """Converts a torchreid OSNet state dict (NumPy arrays) to {variable path: array}.

  Returns the converted arrays and the keys that have no counterpart in the visual branch (the ImageNet
  classifier); BatchNorm's num_batches_tracked counters are dropped silently. A 'module.' prefix (DataParallel)
  is stripped. Raises ValueError when a tensor the visual branch needs is absent.
  """
  mapping = osnet_key_map()
  converted, unmapped = {}, []
  for key, value in state_dict.items():
    key = key.removeprefix('module.')
    if key.endswith('.num_batches_tracked'):
      continue
    if key not in mapping:
      unmapped.append(key)
      continue
    path, transform = mapping[key]
    converted[path] = np.asarray(transform(np.asarray(value)), np.float32)
  missing = [key for key, (path, _) in mapping.items() if path not in converted]
  if missing:
    raise ValueError(f'not an OSNet x1.0 state dict: missing {missing[:5]} ({len(missing)} tensors)')
  return converted, unmapped


def _model_path(path: str, share_gate: bool) -> str:
  """Variable path in the model: an OSBlock gate is the shared gate, or the visual gate without sharing."""
  parts = path.split('/')
  if not share_gate and len(parts) > 2 and parts[2] == 'gate':
    parts[2] = 'visual_gate'
  return '/'.join(parts)


def read_word_vectors(path: str, words: set[str], dim: int) -> dict[str, np.ndarray]:
  """Reads the vectors of `words` from a word2vec text file (optional 'count dim' header line)."""
  found = {}
  with open(path, encoding='utf-8', errors='replace') as lines:
    for line_number, line in enumerate(lines, start=1):
      fields = line.rstrip().split(' ')
      if line_number == 1 and len(fields) == 2 and all(field.isdigit() for field in fields):
        continue
      if fields[0] not in words or fields[0] in found:
        continue
      if len(fields) - 1 != dim:
        raise ValueError(f'{path}:{line_number}: vector has {len(fields) - 1} values, config.model.word_dim is '
                         f'{dim}')
      found[fields[0]] = np.asarray(fields[1:], np.float32)
  return found


def load_word_vectors(table: np.ndarray, path: str, vocab: Sequence[str]) -> tuple[np.ndarray, int]:
  """Returns a copy of the embedding table with the rows of tokens found in the word2vec file, and their count.

  A token matches its word (sentencepiece's leading word-start marker removed) exactly, else lower-cased.
  """
  if len(vocab) > table.shape[0]:
    raise ValueError(f'vocabulary has {len(vocab)} tokens, config.model.vocab_size is {table.shape[0]}')
  candidates = [(piece.removeprefix(WORD_PREFIX), piece.removeprefix(WORD_PREFIX).lower()) for piece in vocab]
  vectors = read_word_vectors(path, {word for pair in candidates for word in pair if word}, table.shape[1])
  table = table.copy()
  matched = 0
  for token, (word, lower) in enumerate(candidates):
    vector = vectors.get(word, vectors.get(lower))
    if word and vector is not None:
      table[token] = vector
      matched += 1
  return table, matched


def load_pretrained(variables: Mapping, model_config: ml_collections.ConfigDict,
                    vocab: Sequence[str] | None = None) -> dict:
  """Replaces leaves of model.init's variables with config.model.pretrained_visual / pretrained_words.

  `vocab` lists the token string of every id (needed for pretrained_words). Raises ValueError naming the tensor
  when a converted tensor has no counterpart in the model or a different shape.
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables), sep='/')
  if model_config.pretrained_visual:
    with np.load(model_config.pretrained_visual) as arrays:
      converted = {name: arrays[name] for name in arrays.files}
    for name, value in converted.items():
      target = _model_path(name, model_config.share_gate)
      if target not in flat:
        raise ValueError(f'{model_config.pretrained_visual}: tensor {name} is not a variable of the model (OSNet '
                         'has config.model.streams=4)')
      if flat[target].shape != value.shape:
        raise ValueError(f'{model_config.pretrained_visual}: tensor {name} has shape {value.shape}, the model '
                         f'expects {flat[target].shape} (OSNet x1.0 needs config.model.width=1.0, embed_dim=512)')
      flat[target] = jnp.asarray(value, flat[target].dtype)
    logging.info('Loaded %d visual tensors from %s', len(converted), model_config.pretrained_visual)
  if model_config.pretrained_words:
    if vocab is None:
      raise ValueError('config.model.pretrained_words needs the vocabulary (the token string of every id)')
    name = 'params/word_embedding/embedding'
    table, matched = load_word_vectors(np.asarray(flat[name]), model_config.pretrained_words, vocab)
    flat[name] = jnp.asarray(table)
    logging.info('Word vectors for %d of %d tokens from %s', matched, len(vocab), model_config.pretrained_words)
  return flax.traverse_util.unflatten_dict(flat, sep='/')


def _load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a torch checkpoint (a state dict, or a dict holding one under 'state_dict') as NumPy arrays."""
  import torch  # pylint: disable=g-import-not-at-top  # only the conversion step needs torch

  checkpoint = torch.load(path, map_location='cpu', weights_only=True)
  state_dict = checkpoint.get('state_dict', checkpoint)
  return {key: value.detach().cpu().numpy() for key, value in state_dict.items()}


def convert_osnet_file(input_path: str, output_path: str) -> None:
  """Converts torchreid checkpoint `input_path` to the .npz `output_path`; prints what it wrote and left out."""
  converted, unmapped = convert_osnet(_load_torch_state_dict(input_path))
  os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
  np.savez(output_path, **converted)
  print(f'wrote {len(converted)} tensors to {output_path}')
  if unmapped:
    print(f'not used by the visual branch: {", ".join(unmapped)}')


def define_flags() -> None:
  """The flags of `python -m axm_jax.models.pretrained osnet` (its __main__ block defines them)."""
  flags.DEFINE_string('input', None, 'osnet: torchreid osnet_x1_0 .pth state dict.', required=True)
  flags.DEFINE_string('output', None, 'osnet: .npz to write.', required=True)


def main(argv: Sequence[str]) -> None:
  if list(argv[1:]) != ['osnet']:
    raise app.UsageError(f'expected the command osnet (convert a torchreid OSNet x1.0 checkpoint to .npz); got '
                         f'{list(argv[1:])}')
  convert_osnet_file(flags.FLAGS.input, flags.FLAGS.output)


if __name__ == '__main__':
  # Imported here: train_step imports this module, and the library part needs none of cli's (run, orbax).
  from axm_jax import cli  # pylint: disable=g-import-not-at-top
  define_flags()
  cli.run(main)
