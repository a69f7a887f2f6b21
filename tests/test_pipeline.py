"""The pipeline on SynthPedes 'tiny': loading, identity-balanced batches, restarts, sharding, eval streams."""
import io
import itertools

import numpy as np
import PIL.Image
import pytest
import tensorflow as tf

from axm_jax import config_files
from axm_jax.data import pipeline
from axm_jax.data.tokenizer import BOS_ID, Tokenizer, train_tokenizer

P, K = 4, 3


@pytest.fixture(scope='session')
def data_config(tmp_path_factory):
  config = config_files.load_config('configs/synthetic.py').data
  config.builder_config = 'tiny'
  config.data_dir = str(tmp_path_factory.mktemp('tfds'))
  config.identities_per_batch = P
  config.images_per_identity = K
  config.text_length = 48
  return config


@pytest.fixture(scope='session')
def splits(data_config) -> dict[str, pipeline.SplitData]:
  return {split: pipeline.load_split(data_config, split) for split in ('train', 'val', 'test')}


@pytest.fixture(scope='session')
def tokenizer(splits, data_config) -> Tokenizer:
  return Tokenizer(train_tokenizer(pipeline.flat_captions(splits['train']), data_config.vocab_size))


def _take(batches, count: int) -> list[dict]:
  return list(itertools.islice(batches, count))


def _assert_batches_equal(first: list[dict], second: list[dict]) -> None:
  assert len(first) == len(second)
  for one, other in zip(first, second):
    assert one.keys() == other.keys()
    for key in one:
      np.testing.assert_array_equal(one[key], other[key], err_msg=key)


def test_load_split_is_sorted_and_complete(splits):
  train = splits['train']
  count = len(train.images)
  assert count > 0 and train.person_ids.shape == train.camera_ids.shape == (count,)
  assert train.person_ids.dtype == np.int64 and train.camera_ids.dtype == np.int64
  assert train.images.dtype == object and isinstance(train.images[0], bytes)
  assert len(train.image_keys) == len(train.captions) == count
  assert all(len(captions) >= 1 and all(isinstance(c, str) for c in captions) for captions in train.captions)
  order = list(zip(train.person_ids.tolist(), train.image_keys))
  assert order == sorted(order)
  image = np.asarray(PIL.Image.open(io.BytesIO(train.images[0])))
  assert image.shape == (256, 128, 3)
  ids = [set(split.person_ids.tolist()) for split in splits.values()]
  assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def test_unknown_dataset_name_raises(data_config):
  config = data_config.copy_and_resolve_references()
  config.name = 'market1501'
  with pytest.raises(ValueError, match=r"^Unknown config\.data\.name 'market1501'; valid names: cuhk_pedes, "
                                       r'icfg_pedes, rstpreid, synth_pedes$'):
    pipeline.load_split(config, 'train')


def test_unknown_split_raises(data_config):
  with pytest.raises(ValueError, match=r"^Split 'validation' is not in synth_pedes; splits: "):
    pipeline.load_split(data_config, 'validation')


def test_class_labels():
  labels, mapping = pipeline.class_labels(np.array([12, 5, 12, 40, 5]))
  np.testing.assert_array_equal(labels, [1, 0, 1, 2, 0])
  assert labels.dtype == np.int32
  assert mapping == {5: 0, 12: 1, 40: 2}


def test_training_batches_are_identity_balanced(splits, tokenizer, data_config):
  train = splits['train']
  labels, mapping = pipeline.class_labels(train.person_ids)
  all_ids, all_mask = tokenizer.encode(pipeline.flat_captions(train), data_config.text_length)
  starts = np.cumsum([0] + [len(captions) for captions in train.captions])
  height, width = data_config.image_size
  for batch in _take(pipeline.train_batches(train, tokenizer, data_config, 0, 0, num_devices=2), 3):
    assert batch['image'].shape == (2, P * K // 2, height, width, 3) and batch['image'].dtype == np.float32
    assert batch['text_ids'].shape == (2, P * K // 2, 48) and batch['text_ids'].dtype == np.int32
    assert batch['text_mask'].dtype == bool
    for key in ('label', 'person_id', 'camera_id'):
      assert batch[key].shape == (2, P * K // 2) and batch[key].dtype == np.int32
    person_ids = batch['person_id'].reshape(-1)
    assert len(np.unique(person_ids)) == P
    np.testing.assert_array_equal(person_ids.reshape(P, K), np.repeat(person_ids[::K], K).reshape(P, K))
    np.testing.assert_array_equal(batch['label'].reshape(-1), [mapping[i] for i in person_ids])
    for row_ids, row_mask, person_id, camera_id in zip(batch['text_ids'].reshape(P * K, -1),
                                                       batch['text_mask'].reshape(P * K, -1), person_ids,
                                                       batch['camera_id'].reshape(-1)):
      images = np.flatnonzero((train.person_ids == person_id) & (train.camera_ids == camera_id))
      assert len(images) == 1  # one picture per camera and identity
      own = range(starts[images[0]], starts[images[0] + 1])
      assert any(np.array_equal(row_ids, all_ids[c]) and np.array_equal(row_mask, all_mask[c]) for c in own)
      assert row_ids[0] == BOS_ID


def test_identities_with_few_images_repeat_and_others_do_not(splits, data_config):
  train = splits['train']
  counts = dict(zip(*np.unique(train.person_ids, return_counts=True)))
  plan = pipeline._BatchPlan(train, data_config, seed=3)  # pylint: disable=protected-access
  for step in range(2 * plan.steps_per_epoch):
    image_index, caption_number = plan.rows(step)
    for group in image_index.reshape(P, K):
      person_id = train.person_ids[group[0]]
      assert (train.person_ids[group] == person_id).all()
      assert len(set(group.tolist())) == min(K, counts[person_id])
    assert (caption_number < np.array([len(train.captions[i]) for i in image_index])).all()
  epoch = [plan.rows(step)[0] for step in range(plan.steps_per_epoch)]
  epoch_ids = [train.person_ids[rows[0::K]] for rows in epoch]
  assert len(np.unique(np.concatenate(epoch_ids))) == P * plan.steps_per_epoch  # no identity twice per epoch


def test_restart_at_step_n_matches_uninterrupted(splits, tokenizer, data_config):
  uninterrupted = _take(pipeline.train_batches(splits['train'], tokenizer, data_config, 7, 0, num_devices=2), 4)
  restarted = _take(pipeline.train_batches(splits['train'], tokenizer, data_config, 7, 2, num_devices=2), 2)
  _assert_batches_equal(uninterrupted[2:], restarted)
  other_seed = _take(pipeline.train_batches(splits['train'], tokenizer, data_config, 8, 2, num_devices=2), 1)
  assert not np.array_equal(other_seed[0]['image'], restarted[0]['image'])


def test_process_shards_concatenate_to_the_global_batch(splits, tokenizer, data_config):
  config = data_config.copy_and_resolve_references()
  config.identities_per_batch = 4
  config.images_per_identity = 2  # global batch 8 = 2 processes x 2 devices x 2
  single = _take(pipeline.train_batches(splits['train'], tokenizer, config, 1, 5, num_devices=4), 2)
  shards = [_take(pipeline.train_batches(splits['train'], tokenizer, config, 1, 5, num_devices=2,
                                         process_index=index, process_count=2), 2) for index in range(2)]
  for step, batch in enumerate(single):
    for key in batch:
      np.testing.assert_array_equal(np.concatenate([shards[0][step][key], shards[1][step][key]]), batch[key])


def test_batch_size_must_divide_over_processes_and_devices(splits, tokenizer, data_config):
  with pytest.raises(ValueError, match=r'^config\.data\.identities_per_batch \* config\.data\.images_per_identity '
                                       r'\(12\) must be divisible by process_count \* num_devices \(1 \* 8\)$'):
    pipeline.train_batches(splits['train'], tokenizer, data_config, 0, 0, num_devices=8)


def test_more_identities_per_batch_than_the_split_raises(splits, tokenizer, data_config):
  config = data_config.copy_and_resolve_references()
  config.identities_per_batch = 100
  with pytest.raises(ValueError, match=r'^config\.data\.identities_per_batch \(100\) exceeds the 24 identities of '
                                       r'the split$'):
    pipeline.train_batches(splits['train'], tokenizer, config, 0, 0, num_devices=1)


def test_without_augmentation_training_images_equal_gallery_images(splits, tokenizer, data_config):
  config = data_config.copy_and_resolve_references()
  config.flip = False
  config.crop_padding = 0
  config.erasing_probability = 0.0
  batch = next(pipeline.train_batches(splits['test'], tokenizer, config, 0, 0, num_devices=1))
  gallery = next(pipeline.gallery_batches(splits['test'], config, 256, 1))
  for image, person_id, camera_id in zip(batch['image'][0], batch['person_id'][0], batch['camera_id'][0]):
    match = np.flatnonzero((gallery['person_id'][0] == person_id) & (gallery['camera_id'][0] == camera_id))
    np.testing.assert_array_equal(image, gallery['image'][0, match[0]])


def test_gallery_images_are_resized_and_normalised(splits, data_config):
  test = splits['test']
  batch = next(pipeline.gallery_batches(test, data_config, 8, 2))
  decoded = tf.io.decode_jpeg(test.images[0]).numpy().astype(np.float32)
  expected = tf.image.resize(decoded, data_config.image_size, antialias=True).numpy()
  expected = (expected / 255.0 - np.array(pipeline.IMAGENET_MEAN)) / np.array(pipeline.IMAGENET_STD)
  np.testing.assert_allclose(batch['image'][0, 0], expected, rtol=0, atol=1e-5)


def test_augmentation_flips_crops_and_erases(splits, tokenizer, data_config):
  config = data_config.copy_and_resolve_references()
  config.erasing_probability = 1.0
  config.crop_padding = 0
  config.flip = False
  batch = next(pipeline.train_batches(splits['train'], tokenizer, config, 0, 0, num_devices=1))
  erased = (batch['image'][0] == 0.0).all(axis=-1)  # erased pixels are exactly the normalised mean
  areas = erased.reshape(P * K, -1).mean(axis=1)
  assert (areas > 0).all() and (areas <= 0.4 + 1e-6).all()
  config.erasing_probability = 0.0
  config.flip = True
  flipped = next(pipeline.train_batches(splits['train'], tokenizer, config, 0, 0, num_devices=1))['image'][0]
  config.flip = False
  plain = next(pipeline.train_batches(splits['train'], tokenizer, config, 0, 0, num_devices=1))['image'][0]
  mirrored = [np.array_equal(a, b[:, ::-1]) for a, b in zip(flipped, plain)]
  same = [np.array_equal(a, b) for a, b in zip(flipped, plain)]
  assert all(m or s for m, s in zip(mirrored, same)) and any(mirrored) and any(same)


def test_gallery_covers_every_image_once_with_padding_masked(splits, data_config):
  test = splits['test']
  count = len(test.images)
  height, width = data_config.image_size
  batches = list(pipeline.gallery_batches(test, data_config, 16, 8))
  assert len(batches) == -(-count // 16)
  for batch in batches:
    assert batch['image'].shape == (8, 2, height, width, 3)
    assert batch['valid'].dtype == bool and batch['index'].dtype == np.int32
  valid = np.concatenate([batch['valid'].reshape(-1) for batch in batches])
  index = np.concatenate([batch['index'].reshape(-1) for batch in batches])
  person_ids = np.concatenate([batch['person_id'].reshape(-1) for batch in batches])
  camera_ids = np.concatenate([batch['camera_id'].reshape(-1) for batch in batches])
  images = np.concatenate([batch['image'].reshape(-1, height, width, 3) for batch in batches])
  assert valid.sum() == count and not valid[count:].any()
  np.testing.assert_array_equal(index[valid], np.arange(count))
  np.testing.assert_array_equal(person_ids[valid], test.person_ids)
  np.testing.assert_array_equal(camera_ids[valid], test.camera_ids)
  assert (index[~valid] == -1).all() and (images[~valid] == 0).all()


def test_queries_cover_every_caption_once_with_padding_masked(splits, tokenizer, data_config):
  test = splits['test']
  captions = pipeline.flat_captions(test)
  batches = list(pipeline.query_batches(test, tokenizer, data_config, 24, 4))
  assert len(batches) == -(-len(captions) // 24)
  for batch in batches:
    assert batch['text_ids'].shape == (4, 6, data_config.text_length)
    assert batch['image_index'].dtype == np.int32 and batch['valid'].dtype == bool
  merged = {key: np.concatenate([batch[key].reshape(24, *batch[key].shape[2:]) for batch in batches])
            for key in batches[0]}
  valid = merged['valid']
  assert valid.sum() == len(captions) and not valid[len(captions):].any()
  np.testing.assert_array_equal(merged['index'][valid], np.arange(len(captions)))
  expected_image = np.repeat(np.arange(len(test.captions)), [len(c) for c in test.captions])
  np.testing.assert_array_equal(merged['image_index'][valid], expected_image)
  np.testing.assert_array_equal(merged['person_id'][valid], test.person_ids[expected_image])
  np.testing.assert_array_equal(merged['camera_id'][valid], test.camera_ids[expected_image])
  ids, mask = tokenizer.encode(captions, data_config.text_length)
  np.testing.assert_array_equal(merged['text_ids'][valid], ids)
  np.testing.assert_array_equal(merged['text_mask'][valid], mask)
  assert not merged['text_mask'][~valid].any() and (merged['text_ids'][~valid] == 0).all()
  assert (merged['image_index'][~valid] == -1).all() and (merged['index'][~valid] == -1).all()


@pytest.mark.parametrize('stream', ['gallery', 'query'])
def test_eval_batch_size_must_divide_over_devices(splits, tokenizer, data_config, stream):
  message = (r'^config\.data\.eval_batch_size \(20\) must be a positive multiple of the number of devices '
             r'\(8\)$')
  with pytest.raises(ValueError, match=message):
    if stream == 'gallery':
      pipeline.gallery_batches(splits['test'], data_config, 20, 8)
    else:
      pipeline.query_batches(splits['test'], tokenizer, data_config, 20, 8)
