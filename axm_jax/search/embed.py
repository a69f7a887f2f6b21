"""A run's model for search: restored once, embedding images, sentences and image+sentence queries.

Images go through the evaluation's own preprocessing (pipeline.eval_image_preprocessing) and encoders
(encoders.make_encoders), in batches over all local devices (pmap), the last one padded.
"""
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from absl import logging
import flax
from flax import linen as nn
import jax
import ml_collections
import numpy as np
import tensorflow as tf

from axm_jax import encoders
from axm_jax import run
from axm_jax.data import pipeline
from axm_jax.data import tokenizer as tokenizer_lib
from axm_jax.models import axm_net
from axm_jax.search import images

PROGRESS_SECONDS = 10.0  # between progress lines while embedding a folder
_TF_REJECTED = "not decodable by the evaluation's decoder (tf.io.decode_image)"


@dataclasses.dataclass(frozen=True)
class Model:
  """A restored checkpoint with its config and tokenizer; `variables` are replicated over the local devices."""
  workdir: str
  step: int
  config: ml_collections.ConfigDict
  network: nn.Module  # run.open_trained's model
  tokenizer: tokenizer_lib.Tokenizer
  variables: Any
  fingerprint: str  # sha256 of config, tokenizer, label map and parameters: which model made an embedding

  @property
  def batch_size(self) -> int:
    """config.data.eval_batch_size rounded up to a multiple of the local device count."""
    devices = jax.local_device_count()
    return -(-self.config.data.eval_batch_size // devices) * devices


def load_model(workdir: str, checkpoint: str | int = 'best') -> Model:
  """The run's model at checkpoint 'best', 'latest' or a step, with its own config and tokenizer."""
  trained = run.open_trained(workdir, checkpoint)
  digest = hashlib.sha256(trained.config.to_json(sort_keys=True).encode())
  for path in (trained.directory.tokenizer, trained.directory.label_map):
    digest.update(path.read_bytes())
  for leaf in jax.tree.leaves(trained.variables):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return Model(workdir=str(trained.directory), step=trained.step, config=trained.config, network=trained.model,
               tokenizer=trained.tokenizer, variables=flax.jax_utils.replicate(trained.variables),
               fingerprint=digest.hexdigest())


def embed_files(model: Model, read: Callable[[int], bytes], count: int,
                on_error: Callable[[int, str], None]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Embeds items 0..count-1, where read(i) gives item i's image bytes (or raises images.BadImageError).

  Yields (item numbers int64 [n], embeddings float32 [n, E]) per batch; an item that `read` rejects or the
  evaluation's decoder fails on is reported through on_error(i, reason) and yields nothing. Logs images/s.
  """
  errors: dict[int, str] = {}

  def encoded() -> Iterator[tuple[bytes, int]]:
    for item in range(count):
      try:
        yield read(item), item
      except images.BadImageError as error:
        errors[item] = str(error)

  process = pipeline.eval_image_preprocessing(model.config.data)
  dataset = (tf.data.Dataset.from_generator(encoded, output_signature=(tf.TensorSpec([], tf.string),
                                                                       tf.TensorSpec([], tf.int64)))
             .map(lambda data, item: (process(data), item), num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True)
             .ignore_errors()
             .batch(model.batch_size)
             .prefetch(2))
  encode_image, _ = encoders.make_encoders(model.network)
  done, seen, start, last_log = 0, 0, time.perf_counter(), time.perf_counter()
  for batch_images, items in dataset.as_numpy_iterator():
    vectors = _apply(encode_image, model.variables, [batch_images], model.batch_size)
    # Items missing between two embedded ones were rejected, by `read` or by TF's decoder.
    for item in sorted(set(range(seen, int(items[-1]) + 1)) - set(items.tolist())):
      on_error(item, errors.pop(item, _TF_REJECTED))
    seen = int(items[-1]) + 1
    done += len(items)
    yield items, vectors
    now = time.perf_counter()
    if now - last_log >= PROGRESS_SECONDS:
      logging.info('embedded %d/%d images, %.1f images/s', done, count, done / (now - start))
      last_log = now
  for item in range(seen, count):
    on_error(item, errors.pop(item, _TF_REJECTED))
  elapsed = time.perf_counter() - start
  logging.info('embedded %d images in %.1f s, %.1f images/s', done, elapsed, done / max(elapsed, 1e-9))


def embed_images(model: Model, encoded: Sequence[bytes]) -> np.ndarray:
  """Embeddings float32 [n, E] of image bytes (already passed through images.model_bytes)."""
  process = pipeline.eval_image_preprocessing(model.config.data)
  arrays = np.stack([process(tf.constant(data)).numpy() for data in encoded])
  encode_image, _ = encoders.make_encoders(model.network)
  return _apply(encode_image, model.variables, [arrays], _query_batch(len(encoded), model.batch_size))


def embed_texts(model: Model, texts: Sequence[str]) -> np.ndarray:
  """Embeddings float32 [n, E] of sentences, tokenized as the evaluation tokenizes captions."""
  for number, text in enumerate(texts):
    if not text.strip():
      raise ValueError(f'sentence {number + 1} is empty: a text query needs at least one word')
  ids, mask = model.tokenizer.encode(list(texts), model.config.data.text_length)
  _, encode_text = encoders.make_encoders(model.network)
  return _apply(encode_text, model.variables, [ids, mask], _query_batch(len(texts), model.batch_size))


def combine(image_vectors: np.ndarray, text_vectors: np.ndarray) -> np.ndarray:
  """The evaluation's image+text (VT->V) query embedding."""
  return np.asarray(axm_net.image_text_query(image_vectors, text_vectors), np.float32)


def embedding_dim(model: Model) -> int:
  """The length of the model's retrieval embeddings (SPEC §1.4: twice embed_dim with part attention)."""
  variables = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), model.variables)
  length = model.config.data.text_length
  outputs = jax.eval_shape(
      lambda v, ids, mask: model.network.apply(v, ids, mask, method='encode_text'), variables,
      jax.ShapeDtypeStruct((1, length), np.int32), jax.ShapeDtypeStruct((1, length), np.bool_))
  return outputs['text_embedding'].shape[-1]


def config_dict(model: Model) -> dict[str, Any]:
  return json.loads(model.config.to_json())


def _query_batch(count: int, batch_size: int) -> int:
  """Rows per encoder call for `count` queries: a power-of-two multiple of the device count, at most batch_size,
  so few shapes are ever compiled."""
  devices = jax.local_device_count()
  per_device = 1
  while per_device * devices < min(count, batch_size):
    per_device *= 2
  return min(per_device * devices, batch_size)


def _apply(encoder: encoders.Encoder, variables: Any, arrays: Sequence[np.ndarray], batch_rows: int) -> np.ndarray:
  """Runs a pmapped encoder over rows of `arrays` in batches of `batch_rows`, the last one padded with zeros."""
  devices = jax.local_device_count()
  count, outputs = len(arrays[0]), []
  for start in range(0, count, batch_rows):
    parts = []
    for array in arrays:
      part = array[start:start + batch_rows]
      padding = np.zeros((batch_rows - len(part), *array.shape[1:]), array.dtype)
      parts.append(np.concatenate([part, padding]).reshape(devices, batch_rows // devices, *array.shape[1:]))
    output = np.asarray(encoder(variables, *parts), np.float32)
    outputs.append(output.reshape(batch_rows, -1)[:count - start])
  return np.concatenate(outputs)
