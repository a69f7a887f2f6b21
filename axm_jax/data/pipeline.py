"""Input pipelines: a split in memory, identity-balanced training batches and padded evaluation streams.

Training batches are a pure function of (seed, step): P identities x K images per step, drawn in NumPy; images are
decoded and augmented in tf.data with stateless random ops keyed by (seed, step, row), so a pipeline restarted at
any step yields exactly what an uninterrupted one yields there, and the global batch does not depend on the number
of processes. Every batch is a dict of NumPy arrays with leading axes [local_devices, per_device_batch].
"""
import dataclasses
import itertools
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from axm_jax.data.synthetic.builder import SynthPedes
from axm_jax.data.tokenizer import Tokenizer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REAL_DATASET_BUILDERS = {'cuhk_pedes': 'CuhkPedes', 'icfg_pedes': 'IcfgPedes', 'rstpreid': 'RstpReid'}
DATASET_NAMES = tuple(sorted(('synth_pedes',) + tuple(REAL_DATASET_BUILDERS)))
ERASING_AREA = (0.02, 0.4)  # share of the image a random erasing rectangle covers
ERASING_ASPECT = (0.3, 1 / 0.3)  # its height / width
_PERMUTATION_STREAM = 0  # NumPy seed tags: identity order of an epoch, and a step's images and captions
_DRAW_STREAM = 1


@dataclasses.dataclass
class SplitData:
  """One split in memory, one entry per image, sorted by (person_id, image_key)."""
  images: np.ndarray  # object array of encoded image bytes (PNG/JPEG), [num_images]
  person_ids: np.ndarray  # int64 [num_images]
  camera_ids: np.ndarray  # int64 [num_images]
  image_keys: list[str]
  captions: list[list[str]]  # per image


def dataset_builder(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder named by config.data.name (SynthPedes with config.data.builder_config)."""
  name = data_config.name
  data_dir = data_config.data_dir or None
  if name == 'synth_pedes':
    return SynthPedes(config=data_config.builder_config, data_dir=data_dir)
  if name in REAL_DATASET_BUILDERS:
    from axm_jax.data import pedes  # pylint: disable=g-import-not-at-top  (only needed for real data)
    return getattr(pedes, REAL_DATASET_BUILDERS[name])(data_dir=data_dir)
  raise ValueError(f'Unknown config.data.name {name!r}; valid names: {", ".join(DATASET_NAMES)}')


def prepare_dataset(data_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Builds the dataset unless it is built (real data from config.data.manual_dir); returns its builder."""
  builder = dataset_builder(data_config)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=data_config.manual_dir or None))
  return builder


def load_split(data_config: ml_collections.ConfigDict, split: str) -> SplitData:
  """Builds the dataset if needed and loads one split into memory."""
  builder = prepare_dataset(data_config)
  if split not in builder.info.splits:
    raise ValueError(f'Split {split!r} is not in {data_config.name}; splits: {", ".join(builder.info.splits)}')
  dataset = builder.as_dataset(split=split, shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()})
  examples = sorted(
      ((int(example['person_id']), example['image_key'].decode(), example) for example in tfds.as_numpy(dataset)),
      key=lambda item: item[:2])
  images = np.empty(len(examples), dtype=object)
  images[:] = [example['image'] for _, _, example in examples]
  return SplitData(
      images=images,
      person_ids=np.array([person_id for person_id, _, _ in examples], np.int64),
      camera_ids=np.array([int(example['camera_id']) for _, _, example in examples], np.int64),
      image_keys=[key for _, key, _ in examples],
      captions=[[caption.decode() for caption in example['captions']] for _, _, example in examples])


def class_labels(person_ids: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
  """Maps person ids to contiguous labels: sorted unique ids -> 0..C-1. Returns (labels int32, mapping)."""
  unique_ids, labels = np.unique(np.asarray(person_ids), return_inverse=True)
  return labels.astype(np.int32), {int(person_id): label for label, person_id in enumerate(unique_ids)}


def _tokenize_captions(split: SplitData, tokenizer: Tokenizer, length: int):
  """Every caption encoded once, in query order: (ids [C, L], mask [C, L], first caption of each image, counts)."""
  counts = np.array([len(captions) for captions in split.captions])
  if counts.size and counts.min() < 1:
    raise ValueError(f'image {split.image_keys[int(np.argmin(counts))]!r} has no caption')
  ids, mask = tokenizer.encode(flat_captions(split), length)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
  return ids, mask, starts, counts


def _image_pipeline(data_config: ml_collections.ConfigDict, train: bool):
  """Returns fn(encoded bytes, seed [2]) -> float32 [H, W, 3], normalised (and augmented when `train`)."""
  height, width = data_config.image_size
  mean = tf.constant(IMAGENET_MEAN, tf.float32)
  std = tf.constant(IMAGENET_STD, tf.float32)

  def process(encoded: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), (height, width), antialias=True)
    if not train:
      return tf.ensure_shape((image / 255.0 - mean) / std, (height, width, 3))
    flip_seed, crop_seed, erase_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    if data_config.flip:
      image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    padding = data_config.crop_padding
    if padding > 0:  # zero (black) padding, then a random crop back to the image size
      image = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
      image = tf.image.stateless_random_crop(image, (height, width, 3), crop_seed)
    image = (image / 255.0 - mean) / std
    if data_config.erasing_probability > 0:
      image = _random_erasing(image, erase_seed, data_config.erasing_probability)
    return tf.ensure_shape(image, (height, width, 3))
  return process


def eval_image_preprocessing(data_config: ml_collections.ConfigDict):
  """The evaluation's image preprocessing: fn(encoded PNG/JPEG/BMP bytes) -> float32 [H, W, 3], normalised.

  Decoded by TF, resized to config.data.image_size (antialiased bilinear), ImageNet-normalised; no augmentation.
  """
  process = _image_pipeline(data_config, train=False)
  no_seed = tf.zeros([2], tf.int64)
  return lambda encoded: process(encoded, no_seed)


def _random_erasing(image: tf.Tensor, seed: tf.Tensor, probability: float) -> tf.Tensor:
  """With `probability`, sets one random rectangle to 0 (the mean colour after normalisation).

  Area share uniform in ERASING_AREA, log aspect ratio uniform in log(ERASING_ASPECT); a rectangle larger than
  the image is clipped to it (one draw, no retries).
  """
  height, width = image.shape[0], image.shape[1]
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 6))
  apply = tf.random.stateless_uniform([], seeds[0]) < probability
  area = tf.random.stateless_uniform([], seeds[1], *ERASING_AREA) * height * width
  aspect = tf.exp(tf.random.stateless_uniform([], seeds[2], *np.log(ERASING_ASPECT)))
  erase_height = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32), 1, height)
  erase_width = tf.clip_by_value(tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32), 1, width)
  top = _uniform_int(seeds[3], height - erase_height + 1)
  left = _uniform_int(seeds[4], width - erase_width + 1)
  rows = tf.range(height)[:, None]
  columns = tf.range(width)[None, :]
  inside = (rows >= top) & (rows < top + erase_height) & (columns >= left) & (columns < left + erase_width)
  return tf.where((inside & apply)[..., None], 0.0, image)


def _uniform_int(seed: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
  """A stateless integer uniform in [0, count)."""
  return tf.cast(tf.random.stateless_uniform([], seed) * tf.cast(count, tf.float32), tf.int32)


def _to_devices(batch: dict, num_devices: int) -> dict:
  return {key: tf.reshape(value, [num_devices, -1, *value.shape[1:]]) for key, value in batch.items()}


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------

class _BatchPlan:
  """Which image and caption each row of the global batch at a step holds (NumPy, a pure function of the step).

  The identity order is a fresh permutation per epoch of floor(C / P) steps (the last C mod P identities of each
  permutation sit the epoch out); each of the P identities of a step gives K images, without replacement when it
  has at least K, otherwise all of its images and then draws with replacement; each image gets one of its
  captions at random.
  """

  def __init__(self, split: SplitData, data_config: ml_collections.ConfigDict, seed: int):
    self.labels, mapping = class_labels(split.person_ids)
    self.num_classes = len(mapping)
    self.identities_per_batch = data_config.identities_per_batch
    self.images_per_identity = data_config.images_per_identity
    if self.identities_per_batch > self.num_classes:
      raise ValueError(f'config.data.identities_per_batch ({self.identities_per_batch}) exceeds the '
                       f'{self.num_classes} identities of the split')
    self.steps_per_epoch = self.num_classes // self.identities_per_batch
    self.images_by_class = [np.flatnonzero(self.labels == label) for label in range(self.num_classes)]
    self.caption_counts = np.array([len(captions) for captions in split.captions])
    self.seed = seed

  def rows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(image index, caption number within the image) for every row of the step's global batch."""
    epoch, position = divmod(step, self.steps_per_epoch)
    order = np.random.default_rng([self.seed, _PERMUTATION_STREAM, epoch]).permutation(self.num_classes)
    classes = order[position * self.identities_per_batch:(position + 1) * self.identities_per_batch]
    rng = np.random.default_rng([self.seed, _DRAW_STREAM, step])
    images = []
    for label in classes:
      members = rng.permutation(self.images_by_class[label])
      missing = self.images_per_identity - len(members)
      if missing > 0:
        members = np.concatenate([members, rng.choice(members, missing)])
      images.append(members[:self.images_per_identity])
    image_index = np.concatenate(images)
    return image_index, rng.integers(self.caption_counts[image_index])


def train_batches(split: SplitData, tokenizer: Tokenizer, data_config: ml_collections.ConfigDict, seed: int,
                  start_step: int, num_devices: int, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict]:
  """Endless identity-balanced training batches from `start_step` on, this process's rows of the global batch.

  Keys: image float32 [D, B, H, W, 3], text_ids int32 [D, B, L], text_mask bool [D, B, L], label int32 (contiguous
  class index in this split), person_id int32, camera_id int32; D = num_devices, B = P * K / process_count / D.
  """
  plan = _BatchPlan(split, data_config, seed)
  global_batch = data_config.identities_per_batch * data_config.images_per_identity
  if global_batch % (process_count * num_devices):
    raise ValueError(
        f'config.data.identities_per_batch * config.data.images_per_identity ({global_batch}) must be divisible '
        f'by process_count * num_devices ({process_count} * {num_devices})')
  local_batch = global_batch // process_count
  first_row = process_index * local_batch
  text_ids, text_mask, caption_starts, _ = _tokenize_captions(split, tokenizer, data_config.text_length)
  process = _image_pipeline(data_config, train=True)

  def steps() -> Iterator[dict]:
    for step in itertools.count(start_step):
      image_index, caption_number = plan.rows(step)
      image_index = image_index[first_row:first_row + local_batch]
      caption_index = caption_starts[image_index] + caption_number[first_row:first_row + local_batch]
      yield {
          'encoded': split.images[image_index],
          'seed': np.stack([np.full(local_batch, seed), np.full(local_batch, step)], axis=1).astype(np.int64),
          'row': np.arange(first_row, first_row + local_batch, dtype=np.int64),
          'text_ids': text_ids[caption_index],
          'text_mask': text_mask[caption_index],
          'label': plan.labels[image_index],
          'person_id': split.person_ids[image_index].astype(np.int32),
          'camera_id': split.camera_ids[image_index].astype(np.int32),
      }

  length = data_config.text_length
  signature = {
      'encoded': tf.TensorSpec([local_batch], tf.string),
      'seed': tf.TensorSpec([local_batch, 2], tf.int64),
      'row': tf.TensorSpec([local_batch], tf.int64),
      'text_ids': tf.TensorSpec([local_batch, length], tf.int32),
      'text_mask': tf.TensorSpec([local_batch, length], tf.bool),
      'label': tf.TensorSpec([local_batch], tf.int32),
      'person_id': tf.TensorSpec([local_batch], tf.int32),
      'camera_id': tf.TensorSpec([local_batch], tf.int32),
  }

  def augment(example: dict) -> dict:
    example = dict(example)
    row_seed = tf.random.experimental.stateless_fold_in(example.pop('seed'), example.pop('row'))
    example['image'] = process(example.pop('encoded'), row_seed)
    return example

  dataset = (tf.data.Dataset.from_generator(steps, output_signature=signature)
             .unbatch()
             .map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
             .batch(local_batch, drop_remainder=True)
             .map(lambda batch: _to_devices(batch, num_devices))
             .prefetch(2))
  return dataset.as_numpy_iterator()


def train_batch_spec(data_config: ml_collections.ConfigDict, num_devices: int,
                     process_count: int = 1) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of the batches of train_batches, for compiling the train step before any batch exists."""
  batch = data_config.identities_per_batch * data_config.images_per_identity // process_count // num_devices
  height, width = data_config.image_size
  rows, tokens = (num_devices, batch), (num_devices, batch, data_config.text_length)
  return {'image': jax.ShapeDtypeStruct(rows + (height, width, 3), np.float32),
          'text_ids': jax.ShapeDtypeStruct(tokens, np.int32), 'text_mask': jax.ShapeDtypeStruct(tokens, np.bool_),
          'label': jax.ShapeDtypeStruct(rows, np.int32), 'person_id': jax.ShapeDtypeStruct(rows, np.int32),
          'camera_id': jax.ShapeDtypeStruct(rows, np.int32)}


# ----------------------------------------------------------------------------------------------------------------
# Evaluation streams
# ----------------------------------------------------------------------------------------------------------------

def _check_eval_batch(batch_size: int, num_devices: int) -> None:
  if batch_size <= 0 or batch_size % num_devices:
    raise ValueError(f'config.data.eval_batch_size ({batch_size}) must be a positive multiple of the number of '
                     f'devices ({num_devices})')


def _padded_length(count: int, batch_size: int) -> int:
  return max(-(-count // batch_size), 1) * batch_size


def gallery_batches(split: SplitData, data_config: ml_collections.ConfigDict, batch_size: int,
                    num_devices: int) -> Iterator[dict]:
  """Every image once, in split order, resized and normalised; the last batch padded with valid=False rows.

  Keys: image float32 [D, B/D, H, W, 3] (zeros in padding), person_id, camera_id, index (image index in the
  split) int32 (-1 in padding), valid bool.
  """
  _check_eval_batch(batch_size, num_devices)
  height, width = data_config.image_size
  process = eval_image_preprocessing(data_config)
  count = len(split.images)
  total = _padded_length(count, batch_size)

  def rows() -> Iterator[dict]:
    for position in range(total):
      valid = position < count
      yield {
          'encoded': split.images[position] if valid else b'',
          'person_id': np.int32(split.person_ids[position] if valid else -1),
          'camera_id': np.int32(split.camera_ids[position] if valid else -1),
          'index': np.int32(position if valid else -1),
          'valid': valid,
      }

  signature = {
      'encoded': tf.TensorSpec([], tf.string), 'person_id': tf.TensorSpec([], tf.int32),
      'camera_id': tf.TensorSpec([], tf.int32), 'index': tf.TensorSpec([], tf.int32),
      'valid': tf.TensorSpec([], tf.bool),
  }

  def decode(example: dict) -> dict:
    example = dict(example)
    encoded = example.pop('encoded')
    example['image'] = tf.cond(example['valid'], lambda: process(encoded),
                               lambda: tf.zeros((height, width, 3), tf.float32))
    return example

  dataset = (tf.data.Dataset.from_generator(rows, output_signature=signature)
             .map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
             .batch(batch_size, drop_remainder=True)
             .map(lambda batch: _to_devices(batch, num_devices))
             .prefetch(2))
  return dataset.as_numpy_iterator()


def query_batches(split: SplitData, tokenizer: Tokenizer, data_config: ml_collections.ConfigDict, batch_size: int,
                  num_devices: int) -> Iterator[dict]:
  """Every caption once, in split order (captions of image 0, image 1, ...); the last batch padded.

  Keys: text_ids int32 [D, B/D, L], text_mask bool, person_id, camera_id, image_index (the image the caption
  describes), index (caption number in this order) int32 (-1 in padding), valid bool.
  """
  _check_eval_batch(batch_size, num_devices)
  text_ids, text_mask, _, counts = _tokenize_captions(split, tokenizer, data_config.text_length)
  image_index = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
  columns = {
      'text_ids': text_ids, 'text_mask': text_mask,
      'person_id': split.person_ids[image_index].astype(np.int32),
      'camera_id': split.camera_ids[image_index].astype(np.int32),
      'image_index': image_index,
      'index': np.arange(len(image_index), dtype=np.int32),
      'valid': np.ones(len(image_index), bool),
  }
  total = _padded_length(len(image_index), batch_size)
  padded = {key: _pad_rows(value, total) for key, value in columns.items()}
  return _numpy_batches(padded, batch_size, num_devices)


def _pad_rows(values: np.ndarray, total: int) -> np.ndarray:
  """Pads axis 0 to `total` rows: False for booleans, 0 for token ids, -1 for the rest."""
  fill = False if values.dtype == bool else 0 if values.ndim > 1 else -1
  padding = np.full((total - len(values), *values.shape[1:]), fill, values.dtype)
  return np.concatenate([values, padding])


def _numpy_batches(columns: dict, batch_size: int, num_devices: int) -> Iterator[dict]:
  total = len(next(iter(columns.values())))
  for start in range(0, total, batch_size):
    yield {key: value[start:start + batch_size].reshape(num_devices, batch_size // num_devices, *value.shape[1:])
           for key, value in columns.items()}


def flat_captions(split: SplitData) -> list[str]:
  """The split's captions in query order (captions of image 0, then image 1, ...): a tokenizer's corpus."""
  return [caption for captions in split.captions for caption in captions]
