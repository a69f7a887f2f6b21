"""Warm starts: config.model.init_from = 'WORKDIR[:STEP]' initialises a fresh run from another run's checkpoint.

The checkpoint is STEP, else the run's best, else its latest; WORKDIR is a local path or a `gs://` URI, read through
axm_jax.run. Every variable whose path and shape match the fresh model's is loaded bit for bit; everything else
keeps its initialisation and is named in the log with the reason:
  - the shared classifier, when the source classified other identities (another dataset or identity count);
  - a variable of another shape (a width that differs), or one the source does not have;
  - the word embedding is matched by piece: when the two runs' tokenizers differ (the same pieces in another order,
    or another vocabulary), row i takes the source's row of this run's piece i, and the rows of pieces the source
    lacks keep their initialisation (the log says how many were carried over).
A source of another config.model.architecture, and one of which no variable fits, are refused; train.py checks the
source (check_source) before a fresh run writes or loads anything.

train_step.create_state applies it to a fresh run only, after the pretrained files (models/pretrained.py): the
source run's trained values win wherever they fit, and the pretrained files keep what it skips (e.g. the word vectors
of pieces the source vocabulary lacks). Fine-tuning then starts at step 0 with a fresh optimizer state; a resumed
run restores its own checkpoint and does not read config.model.init_from. No TensorFlow.
"""
from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

from absl import logging
import flax
import jax.numpy as jnp
import ml_collections
import numpy as np

from axm_jax import run

EMBEDDING = 'params/word_embedding/embedding'
CLASSIFIER = 'params/classifier/kernel'


class WarmStartError(ValueError):
  """config.model.init_from names no usable run or checkpoint, or nothing of it fits the model."""


@dataclasses.dataclass(frozen=True)
class Source:
  """The checkpoint a warm start reads, with what it needs of its run."""
  init_from: str
  directory: run.RunDirectory
  config: ml_collections.ConfigDict
  vocabulary: list[str]  # the piece of every token id of its tokenizer
  step: int
  variables: dict[str, np.ndarray]  # flat: 'params/...' or 'batch_stats/...' -> host array


@dataclasses.dataclass(frozen=True)
class Carried:
  """One variable of the fresh model after the warm start."""
  value: Any
  values_loaded: int  # elements taken from the source; 0 = kept as initialised
  note: str = ''  # why it was kept, or how it was remapped


def parse_init_from(init_from: str) -> tuple[str, int | None]:
  """'WORKDIR[:STEP]' -> (WORKDIR, STEP or None); the colon of a URI scheme ('gs://') separates no step."""
  workdir, separator, step = init_from.rpartition(':')
  if separator and workdir and step.isdigit():
    return workdir, int(step)
  return init_from, None


def check_source(config: ml_collections.ConfigDict) -> tuple[run.RunDirectory, int | None, ml_collections.ConfigDict]:
  """The run, STEP and the run's config that config.model.init_from names, checked without reading a checkpoint.

  WarmStartError when it holds no run, no checkpoint (of STEP), or a model of another config.model.architecture.
  """
  init_from = config.model.init_from
  workdir, step = parse_init_from(init_from)
  directory = run.RunDirectory(workdir)
  fail = lambda problem: WarmStartError(f'config.model.init_from = {init_from!r}: {problem}')
  if not directory.config.exists():
    raise fail(f'{directory} holds no run (no config.json); expected the workdir of a trained run, optionally '
               'followed by :STEP.')
  steps = directory.checkpoint_steps()
  if not steps:
    raise fail(f'the run in {directory} has no checkpoint; expected a run that saved at least one.')
  if step is not None and step not in steps:
    raise fail(f'the run in {directory} has no checkpoint of step {step}; its checkpoints are of steps {steps}.')
  source_config = run.load_config(directory)
  architecture = source_config.model.architecture
  if architecture != config.model.architecture:
    raise fail(f'the run in {directory} has config.model.architecture = {architecture!r}, this run '
               f'{config.model.architecture!r}; none of its variables would load. Start from a run of the same '
               'architecture.')
  return directory, step, source_config


def read_source(config: ml_collections.ConfigDict) -> Source:
  """The checkpoint config.model.init_from names (check_source): STEP, else the run's best, else its latest."""
  directory, step, source_config = check_source(config)
  tokenizer = run.load_tokenizer(directory)
  if tokenizer is None:
    raise WarmStartError(f'config.model.init_from = {config.model.init_from!r}: the run in {directory} has no '
                         'tokenizer.model, which its word embedding needs.')
  step, variables = directory.restore_variables('best' if step is None else step,
                                                choose_another=f'--config.model.init_from={directory}:STEP')
  return Source(init_from=config.model.init_from, directory=directory, config=source_config,
                vocabulary=tokenizer.vocabulary(), step=step,
                variables=flax.traverse_util.flatten_dict(variables, sep='/'))


def initialise(variables: Mapping, config: ml_collections.ConfigDict, vocabulary: Sequence[str]) -> dict:
  """`variables` (a fresh model's) with config.model.init_from's checkpoint loaded wherever it fits.

  `vocabulary` is this run's piece of every token id. Logs what was loaded and names every variable kept as
  initialised, with the reason.
  """
  source = read_source(config)
  fresh = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables), sep='/')
  carried = {path: carry(path, value, source, config, vocabulary) for path, value in fresh.items()}
  if not any(item.values_loaded for item in carried.values()):
    raise WarmStartError(
        f'config.model.init_from = {source.init_from!r}: none of the {len(fresh)} variables of this model fits the '
        f'checkpoint of step {source.step} in {source.directory}; nothing would be warm-started.')
  _log(source, fresh, carried)
  return flax.traverse_util.unflatten_dict({path: item.value for path, item in carried.items()}, sep='/')


def carry(path: str, fresh: Any, source: Source, config: ml_collections.ConfigDict,
          vocabulary: Sequence[str]) -> Carried:
  """The variable at `path`: the source's where it fits, else `fresh` with the reason."""
  if path not in source.variables:
    return Carried(fresh, 0, 'the source has no such variable')
  value = source.variables[path]
  if path == CLASSIFIER and (dataset_name(source.config) != dataset_name(config) or value.shape != fresh.shape):
    return Carried(fresh, 0, f"the source's classifier has the {value.shape[-1]} identities of "
                   f"{dataset_name(source.config)}, this run's the {fresh.shape[-1]} of {dataset_name(config)}")
  vocabularies_differ = list(vocabulary) != source.vocabulary
  if path == EMBEDDING and value.shape[1:] == fresh.shape[1:] and (vocabularies_differ or value.shape != fresh.shape):
    return remap_embedding(fresh, value, source.vocabulary, vocabulary)
  if value.shape != fresh.shape:
    return Carried(fresh, 0, f'shape {value.shape} in the source, {tuple(fresh.shape)} here')
  return Carried(jnp.asarray(value, fresh.dtype), value.size)


def remap_embedding(fresh: Any, table: np.ndarray, source_vocabulary: Sequence[str],
                    vocabulary: Sequence[str]) -> Carried:
  """Word embedding rows by piece: row i gets the source's row of vocabulary[i] where the source has that piece."""
  source_rows = {piece: row for row, piece in enumerate(source_vocabulary[:table.shape[0]])}
  pairs = [(row, source_rows[piece]) for row, piece in enumerate(vocabulary[:fresh.shape[0]]) if piece in source_rows]
  rows = np.array(fresh)
  if pairs:
    targets, origins = map(list, zip(*pairs))
    rows[targets] = table[origins]
  if list(vocabulary) == list(source_vocabulary):
    relation = f'the same {len(vocabulary)} pieces, {table.shape[0]} rows in the source and {fresh.shape[0]} here'
  elif sorted(vocabulary) == sorted(source_vocabulary):
    relation = f'the same {len(vocabulary)} pieces in another order'
  else:
    relation = f'another vocabulary ({len(source_vocabulary)} pieces in the source, {len(vocabulary)} here)'
  return Carried(jnp.asarray(rows, fresh.dtype), len(pairs) * table.shape[1],
                 f'{relation}: the rows of {len(pairs)} pieces carried over by piece, '
                 f'{len(vocabulary) - len(pairs)} kept as initialised')


def dataset_name(config: ml_collections.ConfigDict) -> str:
  """'NAME/BUILDER_CONFIG' of the dataset a run trains on: its classifier's identities."""
  return f'{config.data.name}/{config.data.builder_config}'


def _log(source: Source, fresh: Mapping[str, Any], carried: Mapping[str, Carried]) -> None:
  loaded = sum(1 for item in carried.values() if item.values_loaded)
  values = sum(item.values_loaded for item in carried.values())
  logging.info('Warm start from the checkpoint of step %d in %s (config.model.init_from): %d of %d variables '
               'loaded, %s of %s values; %d kept as initialised.', source.step, source.directory, loaded,
               len(carried), f'{values:,}', f'{sum(np.size(value) for value in fresh.values()):,}',
               len(carried) - loaded)
  for path, item in sorted(carried.items()):
    if item.note:
      logging.info('Warm start: %s %s: %s.', path, 'loaded in part' if item.values_loaded else 'kept as initialised',
                   item.note)
  unused = sorted(source.variables.keys() - fresh.keys())
  if unused:
    logging.info('Warm start: %d variables of the source have no counterpart in this model: %s.', len(unused),
                 ', '.join(unused))
