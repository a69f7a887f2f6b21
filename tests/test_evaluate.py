"""Tests of axm_jax.evaluate (extraction over padded streams, protocols, reports) and axm_jax.plots."""
import io
import json
import os
import shutil

import fake_pedes
import flax
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from PIL import Image
import pytest

from axm_jax import checkpointing
from axm_jax import config_files
from axm_jax import evaluate
from axm_jax import metrics
from axm_jax import plots
from axm_jax import run
from axm_jax import train
from axm_jax.data import pipeline
from axm_jax.data import tokenizer as tokenizer_lib
from axm_jax.models import axm_net
from conftest import assert_metrics_close

PROTOCOLS = ('t2i', 'i2t', 'reid_v2v', 'reid_t2v', 'reid_vt2v')
NUM_CLASSES = 24  # SynthPedes 'tiny' train identities


# --- Hand-made embeddings -------------------------------------------------------------------------------------


def unit_rows(rng, rows, dim=8):
  x = rng.normal(size=(rows, dim)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def hand_made_embeddings():
  """6 images of 3 people (cameras 1, 2 and one unknown), 2 captions per image."""
  rng = np.random.default_rng(0)
  images = evaluate.Embeddings(vectors=unit_rows(rng, 6), person_ids=np.array([1, 1, 2, 2, 3, 3]),
                               camera_ids=np.array([1, 2, 1, 2, 1, 0]), image_index=np.arange(6))
  image_index = np.repeat(np.arange(6), 2)
  texts = evaluate.Embeddings(vectors=unit_rows(rng, 12), person_ids=images.person_ids[image_index],
                              camera_ids=images.camera_ids[image_index], image_index=image_index)
  return images, texts


def test_person_search_protocols_rank_all_captions_and_images():
  images, texts = hand_made_embeddings()
  statistics = evaluate.person_search_statistics(images, texts, query_chunk=5)
  t2i = metrics.retrieval_statistics(texts.vectors @ images.vectors.T, texts.person_ids, images.person_ids, 100)
  i2t = metrics.retrieval_statistics(images.vectors @ texts.vectors.T, images.person_ids, texts.person_ids, 100)
  for name, expected in (('t2i', t2i), ('i2t', i2t)):
    np.testing.assert_array_equal(statistics[name].first_hit_ranks, expected.first_hit_ranks)
    np.testing.assert_allclose(statistics[name].average_precisions, expected.average_precisions, rtol=1e-6)
  assert statistics['t2i'].num_queries == 12 and statistics['i2t'].num_queries == 6


def test_reid_protocols_use_query_cameras_and_image_text_queries():
  images, texts = hand_made_embeddings()
  statistics = evaluate.reid_statistics(images, texts, query_chunk=4)
  combined = np.asarray(axm_net.image_text_query(images.vectors[texts.image_index], texts.vectors))
  queries = {'reid_v2v': (images.vectors, images), 'reid_t2v': (texts.vectors, texts),
             'reid_vt2v': (combined, texts)}
  for name, (vectors, source) in queries.items():
    expected = metrics.reid_statistics(vectors @ images.vectors.T, source.person_ids, source.camera_ids,
                                       images.person_ids, images.camera_ids, 100)
    np.testing.assert_array_equal(statistics[name].first_hit_ranks, expected.first_hit_ranks)
    np.testing.assert_allclose(statistics[name].average_precisions, expected.average_precisions, rtol=1e-6)
  # Person 3 has one known-camera image: it has no cross-camera positive; its unknown-camera image is no query.
  assert (statistics['reid_v2v'].num_queries, statistics['reid_v2v'].skipped_queries,
          statistics['reid_v2v'].unknown_camera_queries) == (4, 1, 1)
  assert (statistics['reid_t2v'].num_queries, statistics['reid_t2v'].skipped_queries,
          statistics['reid_t2v'].unknown_camera_queries) == (8, 2, 2)
  # An image query's only positive is its person's other image (the gallery loses person 3's camera-0 image).
  np.testing.assert_array_equal(statistics['reid_v2v'].inverse_negative_penalties,
                                1.0 / statistics['reid_v2v'].first_hit_ranks)


def test_flat_metric_names():
  images, texts = hand_made_embeddings()
  statistics = evaluate.person_search_statistics(images, texts, 8)
  statistics.update(evaluate.reid_statistics(images, texts, 8))
  flat = evaluate.flat_metrics(statistics, (1, 5, 10), images)
  expected = {f'{p}_{m}' for p in PROTOCOLS
              for m in ('r1', 'r5', 'r10', 'map', 'minp', 'queries', 'skipped_queries')}
  assert set(flat) == expected | {'reid_unknown_camera_images'}
  assert flat['reid_unknown_camera_images'] == 1.0
  assert flat['t2i_queries'] == 12.0 and flat['reid_t2v_skipped_queries'] == 2.0
  assert all(isinstance(v, float) for v in flat.values())
  person_search_only = evaluate.flat_metrics(evaluate.person_search_statistics(images, texts, 8), (1,), images)
  assert set(person_search_only) == {f'{p}_{m}' for p in ('t2i', 'i2t')
                                     for m in ('r1', 'map', 'minp', 'queries', 'skipped_queries')}


def test_format_table():
  statistics = {'t2i': metrics.RankStatistics(np.array([1, 2]), np.array([1.0, 0.5]), np.array([1.0, 0.5]), 1)}
  table = evaluate.format_table(statistics, (1, 5), 'test split, checkpoint step 7')
  assert table.splitlines() == [
      'test split, checkpoint step 7',
      '  protocol       R@1       R@5       mAP      mINP   queries   skipped',
      '       t2i     50.00    100.00     75.00     75.00         2         1',
  ]


def test_evaluation_config_takes_eval_section_and_data_location_from_command_line():
  run_config = config_files.load_config('configs/synthetic.py:smoke')
  run_config.model.width = 0.5
  config = config_files.load_config('configs/synthetic.py')
  config.eval.splits = ('val', 'test')
  config.data.data_dir = '/elsewhere'
  merged = run.evaluation_config(run_config, config)
  assert merged.model.width == 0.5 and merged.data.image_size == (64, 32)
  assert merged.eval.splits == ('val', 'test') and merged.data.data_dir == '/elsewhere'
  assert merged.data.eval_batch_size == config.data.eval_batch_size
  assert (merged.data.name, merged.data.builder_config) == ('synth_pedes', 'tiny')  # the run's own dataset
  for dataset, name, builder_config in (('cuhk_pedes', 'cuhk_pedes', 'default'),
                                        ('synth_pedes/default', 'synth_pedes', 'default')):
    config.eval.dataset = dataset
    merged = run.evaluation_config(run_config, config)
    assert (merged.data.name, merged.data.builder_config, merged.data.text_length) == (name, builder_config, 16)
  assert run.RunDirectory('/runs/a').eval_report('test', 6, '_cmc.png', 'synth_pedes/tiny') == epath.Path(
      '/runs/a/eval/synth_pedes-tiny_test_6_cmc.png')
  assert run.RunDirectory('/runs/a').eval_report('test', 6, '.json') == epath.Path('/runs/a/eval/test_6.json')


# --- Extraction over padded streams ---------------------------------------------------------------------------


def stream(values, person_ids, batch_size, num_devices, order, pad_value):
  """A gallery-like stream of 1-d 'images' in the given order, padded with pad_value rows."""
  total = -(-len(order) // batch_size) * batch_size
  index = np.zeros(total, np.int32)
  index[:len(order)] = order
  valid = np.arange(total) < len(order)
  image = np.where(valid[:, None], values[index], pad_value).astype(np.float32)
  for start in range(0, total, batch_size):
    shard = lambda x: x[start:start + batch_size].reshape(num_devices, batch_size // num_devices, *x.shape[1:])
    yield {'image': shard(image), 'valid': shard(valid), 'index': shard(index),
           'person_id': shard(person_ids[index]), 'camera_id': shard(person_ids[index] + 10)}


def doubling_encoder():
  return jax.pmap(lambda variables, image: image * variables['scale'])


def test_extract_embeddings_orders_by_index_and_drops_padding():
  values = np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
  person_ids = np.arange(10) // 2
  order = np.random.default_rng(2).permutation(10)
  devices = jax.local_device_count()
  variables = flax.jax_utils.replicate({'scale': jnp.float32(2.0)})
  embeddings = evaluate.extract_embeddings(
      doubling_encoder(), variables, stream(values, person_ids, 2 * devices, devices, order, np.nan), ('image',))
  np.testing.assert_array_equal(embeddings.vectors, 2 * values)
  np.testing.assert_array_equal(embeddings.person_ids, person_ids)
  np.testing.assert_array_equal(embeddings.camera_ids, person_ids + 10)
  np.testing.assert_array_equal(embeddings.image_index, np.arange(10))


def test_extract_embeddings_rejects_incomplete_streams():
  values = np.ones((4, 3), np.float32)
  devices = jax.local_device_count()
  variables = flax.jax_utils.replicate({'scale': jnp.float32(1.0)})
  with pytest.raises(ValueError, match=r'^the evaluation stream must yield every example exactly once'):
    evaluate.extract_embeddings(doubling_encoder(), variables,
                                stream(values, np.arange(4), devices, devices, np.array([0, 1, 1, 3]), 0.0),
                                ('image',))
  with pytest.raises(ValueError, match=r'^the evaluation stream yielded no batch$'):
    evaluate.extract_embeddings(doubling_encoder(), variables, iter([]), ('image',))


# --- The real model on SynthPedes 'tiny' ----------------------------------------------------------------------


def random_variables(model, config, seed=0):
  """Random variables of the model's shapes, without the (slow on CPU) model.init: He-scaled kernels and
  embeddings, small biases, unit BN scales and variances, zero means."""
  height, width = config.data.image_size
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, height, width, 3)), jnp.zeros((1, config.data.text_length), jnp.int32),
      jnp.ones((1, config.data.text_length), bool), train=False))
  rng = np.random.default_rng(seed)

  def value(path, shape):
    name = jax.tree_util.keystr(path[-1:])
    if name in ("['kernel']", "['embedding']"):
      return (rng.normal(size=shape.shape) * np.sqrt(2.0 / np.prod(shape.shape[:-1]))).astype(np.float32)
    if name in ("['scale']", "['var']"):
      return np.ones(shape.shape, np.float32)
    if name == "['mean']":
      return np.zeros(shape.shape, np.float32)
    return (0.1 * rng.normal(size=shape.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(value, shapes)


@pytest.fixture(scope='module')
def tiny(tfds_dir):
  """(config, model, variables, test split, tokenizer, its model bytes): the smoke config, random variables."""
  config = config_files.load_config('configs/synthetic.py:smoke')
  config.data.data_dir = str(tfds_dir)
  train_split = pipeline.load_split(config.data, 'train')
  model_proto = tokenizer_lib.train_tokenizer(pipeline.flat_captions(train_split), config.data.vocab_size)
  model = axm_net.AXMNet(config.model, num_classes=NUM_CLASSES)
  split = pipeline.load_split(config.data, 'test')
  return (config, model, random_variables(model, config), split, tokenizer_lib.Tokenizer(model_proto),
          model_proto)


def single_device_embeddings(model, variables, split, tokenizer, config):
  """Embeddings through one-device pmaps and one-device streams."""
  one = jax.local_devices()[:1]
  encode_image = jax.pmap(
      lambda v, image: model.apply(v, image, method=axm_net.AXMNet.encode_image)['image_embedding'], devices=one)
  encode_text = jax.pmap(
      lambda v, ids, mask: model.apply(v, ids, mask, method=axm_net.AXMNet.encode_text)['text_embedding'],
      devices=one)
  replicated = flax.jax_utils.replicate(variables, devices=one)
  batch_size = config.data.eval_batch_size
  images = evaluate.extract_embeddings(encode_image, replicated,
                                       pipeline.gallery_batches(split, config.data, batch_size, 1), ('image',))
  texts = evaluate.extract_embeddings(encode_text, replicated,
                                      pipeline.query_batches(split, tokenizer, config.data, batch_size, 1),
                                      ('text_ids', 'text_mask'))
  return images, texts


def test_batch_size_and_device_count_do_not_change_metrics(tiny):
  config, model, variables, split, tokenizer, _ = tiny
  assert jax.local_device_count() == 8 and config.data.eval_batch_size == 16
  reference = evaluate.evaluate_split(variables, model, split, tokenizer, config)  # 8 devices x 2
  images, texts = evaluate.compute_embeddings(variables, model, split, tokenizer, config)
  assert len(images.vectors) == len(split.person_ids) and len(texts.vectors) == len(pipeline.flat_captions(split))
  assert len(split.person_ids) % 16 and len(texts.vectors) % 16  # the last batches are padded
  np.testing.assert_array_equal(images.person_ids, split.person_ids)
  np.testing.assert_array_equal(images.camera_ids, split.camera_ids)
  np.testing.assert_array_equal(texts.person_ids, split.person_ids[texts.image_index])
  assert np.all(np.isfinite(images.vectors)) and np.all(np.isfinite(texts.vectors))
  config_8 = config.copy_and_resolve_references()
  config_8.data.eval_batch_size = 8  # 1 device x 8: other batch size, other padding, other device count
  other_images, other_texts = single_device_embeddings(model, variables, split, tokenizer, config_8)
  np.testing.assert_allclose(other_images.vectors, images.vectors, atol=1e-5)
  np.testing.assert_allclose(other_texts.vectors, texts.vectors, atol=1e-5)
  def flat(images, texts):
    statistics = evaluate.person_search_statistics(images, texts, config.eval.query_chunk)
    statistics.update(evaluate.reid_statistics(images, texts, config.eval.query_chunk))
    return evaluate.flat_metrics(statistics, config.eval.ranks, images)

  assert flat(images, texts) == reference  # the same embeddings: the same numbers, exactly
  assert_metrics_close(flat(other_images, other_texts), reference)  # embeddings equal to rounding


def test_garbage_in_padding_rows_changes_nothing(tiny, monkeypatch):
  config, model, variables, split, tokenizer, _ = tiny
  reference = evaluate.evaluate_split(variables, model, split, tokenizer, config)
  gallery_batches, query_batches = pipeline.gallery_batches, pipeline.query_batches

  def poison(batches, keys):
    for batch in batches:
      for key in keys:
        batch[key] = np.where(np.reshape(batch['valid'], batch['valid'].shape + (1,) * (batch[key].ndim - 2)),
                              batch[key], np.asarray(1e6 if key == 'image' else 5).astype(batch[key].dtype))
      batch['person_id'] = np.where(batch['valid'], batch['person_id'], split.person_ids[0])
      yield batch

  monkeypatch.setattr(pipeline, 'gallery_batches', lambda *a: poison(gallery_batches(*a), ('image',)))
  monkeypatch.setattr(pipeline, 'query_batches', lambda *a: poison(query_batches(*a), ('text_ids', 'text_mask')))
  assert evaluate.evaluate_split(variables, model, split, tokenizer, config) == reference


def test_metrics_are_sane_on_tiny(tiny):
  config, model, variables, split, tokenizer, _ = tiny
  flat = evaluate.evaluate_split(variables, model, split, tokenizer, config)
  for protocol in PROTOCOLS:
    assert 0.0 <= flat[f'{protocol}_r1'] <= flat[f'{protocol}_r5'] <= flat[f'{protocol}_r10'] <= 100.0
    assert 0.0 < flat[f'{protocol}_minp'] <= 100.0 and 0.0 < flat[f'{protocol}_map'] <= 100.0
  assert flat['t2i_queries'] == len(pipeline.flat_captions(split)) and flat['t2i_skipped_queries'] == 0.0
  assert flat['i2t_queries'] == len(split.person_ids)
  assert flat['reid_unknown_camera_images'] == float(np.sum(split.camera_ids == 0))


def test_picture_retrievals_show_the_query_caption_and_top_10(tiny):
  config, model, variables, split, tokenizer, _ = tiny
  images, texts = evaluate.compute_embeddings(variables, model, split, tokenizer, config)
  retrievals = evaluate.picture_retrievals(split, images, texts, num_queries=3)
  assert len(retrievals) == 3
  chosen = [0, (len(texts.vectors) - 1) // 2, len(texts.vectors) - 1]
  for retrieval, query in zip(retrievals, chosen):
    assert retrieval.caption in split.captions[texts.image_index[query]]
    assert len(retrieval.images) == 10 and retrieval.images[0].shape[2] == 3
    assert retrieval.hits == [p == split.person_ids[texts.image_index[query]] for p in retrieval.person_ids]
  png = plots.retrievals_png(retrievals, 'tiny')
  assert Image.open(io.BytesIO(png)).format == 'PNG'


# --- Pictures -------------------------------------------------------------------------------------------------


def test_cmc_png_and_retrievals_png():
  curve = metrics.cmc_curve(metrics.RankStatistics(np.array([1, 4, 30]), np.ones(3), np.ones(3), 0), 20)
  picture = Image.open(io.BytesIO(plots.cmc_png({'t2i': curve, 'i2t': curve / 2}, 'CMC')))
  assert picture.format == 'PNG' and picture.size == (600, 400)
  gallery = [np.full((16, 8, 3), 40 * k, np.uint8) for k in range(3)]
  retrieval = plots.Retrieval('a person in a red coat', 1, gallery, [True, False, True], [1, 2, 1])
  picture = Image.open(io.BytesIO(plots.retrievals_png([retrieval, retrieval], 'top-3')))
  assert picture.format == 'PNG' and picture.size[1] > picture.size[0]
  with pytest.raises(ValueError, match=r'^retrievals_png needs at least one retrieval$'):
    plots.retrievals_png([], 'x')
  with pytest.raises(ValueError, match=r'^cmc_png needs at least one curve$'):
    plots.cmc_png({}, 'x')


# --- evaluate(): a hand-made run directory --------------------------------------------------------------------


def test_evaluate_writes_json_table_and_pictures(tiny, tmp_path, capsys):
  config, model, variables, split, tokenizer, model_proto = tiny
  directory = run.RunDirectory(tmp_path)
  run.save_config(directory, config)
  run.save_label_map(directory, {k: k for k in range(NUM_CLASSES)})
  run.save_tokenizer(directory, model_proto)
  checkpoints = directory.checkpoints(keep=1)
  checkpoints.save_if_best(7, variables, {checkpointing.BEST_METRIC: 1.0})
  checkpoints.close()
  eval_config = config_files.load_config('configs/synthetic.py:smoke')
  eval_config.data.data_dir = config.data.data_dir
  eval_config.eval.splits = ('val', 'test')
  results = evaluate.evaluate(eval_config, str(tmp_path))
  assert set(results) == {'val', 'test'}
  for split_name in ('val', 'test'):
    written = json.loads((tmp_path / 'eval' / f'{split_name}_7.json').read_text())
    assert written == {'split': split_name, 'step': 7, 'metrics': results[split_name]}
    for suffix in ('_cmc.png', '_retrievals.png'):
      assert Image.open(tmp_path / 'eval' / f'{split_name}_7{suffix}').format == 'PNG'
  assert evaluate.evaluate_checkpoint(config, str(tmp_path), 'test', 'best') == (7, results['test'])
  assert evaluate.evaluate_split(variables, model, split, tokenizer, config) == results['test']  # restored = saved
  output = capsys.readouterr().out
  assert 'val split, checkpoint step 7' in output and 'test split, checkpoint step 7' in output
  assert sorted(os.listdir(tmp_path / 'eval')) == sorted(
      f'{s}_7{suffix}' for s in ('val', 'test') for suffix in ('.json', '_cmc.png', '_retrievals.png'))


# --- Cross-dataset evaluation: the smoke run on a fake CUHK-PEDES ----------------------------------------------


@pytest.fixture(scope='module')
def cross_dataset(smoke_run, tmp_path_factory):
  """(a copy of the smoke run whose own reports are marker files, the markers, a fake CUHK-PEDES, a TFDS dir)."""
  root = tmp_path_factory.mktemp('cross_dataset')
  workdir = root / 'run'
  shutil.copytree(smoke_run, workdir, ignore=shutil.ignore_patterns('eval', 'tb'))
  (workdir / 'eval').mkdir()
  markers = {f'test_{step}{suffix}': f'own report {step}{suffix}'.encode()
             for step in run.RunDirectory(workdir).checkpoint_steps() for suffix in ('.json', '_cmc.png')}
  for name, content in markers.items():
    (workdir / 'eval' / name).write_bytes(content)
  fake = fake_pedes.make_cuhk_pedes(str(root / 'cuhk_pedes'), test_ids=6, images_per_id=3)
  return workdir, markers, fake, root / 'tfds'


def cross_dataset_config(fake, data_dir, dataset='cuhk_pedes'):
  config = config_files.load_config('configs/synthetic.py:smoke')
  config.data.data_dir, config.data.manual_dir, config.eval.dataset = str(data_dir), fake.root, dataset
  return config


def ranking_metrics(queries, gallery):
  """R@1 and mAP (percent) of every query against the whole gallery, written out without the metrics module."""
  hits, precisions = [], []
  for vector, person_id in zip(queries.vectors, queries.person_ids):
    relevant = gallery.person_ids[np.argsort(-(gallery.vectors @ vector), kind='stable')] == person_id
    hits.append(relevant[0])
    precisions.append(np.mean(np.cumsum(relevant)[relevant] / (np.flatnonzero(relevant) + 1)))
  return 100 * np.mean(hits), 100 * np.mean(precisions)


def test_cross_dataset_evaluation_reports_the_other_split_beside_the_runs_own_reports(cross_dataset, capsys):
  workdir, markers, fake, data_dir = cross_dataset
  config = cross_dataset_config(fake, data_dir)
  results = evaluate.evaluate(config, str(workdir))['test']
  trained = run.open_trained(workdir, 'best', config)
  step = trained.step
  assert json.loads((workdir / 'eval' / f'cuhk_pedes_test_{step}.json').read_text()) == {
      'dataset': 'cuhk_pedes', 'split': 'test', 'step': step, 'metrics': results}
  assert f'cuhk_pedes test split, checkpoint step {step}' in capsys.readouterr().out
  reports = {path.name: path.read_bytes() for path in (workdir / 'eval').iterdir()}
  assert {name: content for name, content in reports.items() if name in markers} == markers
  assert sorted(set(reports) - set(markers)) == [
      f'cuhk_pedes_test_{step}{suffix}' for suffix in ('.json', '_cmc.png', '_retrievals.png')]
  test_images = [image for image in fake.images if image.split == 'test']
  assert results['t2i_queries'] == sum(len(image.captions) for image in test_images) == 41  # 5 of them with 3
  assert results['i2t_queries'] == len(test_images) == 18
  split = pipeline.load_split(trained.config.data, 'test')
  assert sorted(split.image_keys) == sorted(image.image_key for image in test_images)
  images, texts = evaluate.compute_embeddings(trained.variables, trained.model, split, trained.tokenizer,
                                              trained.config)
  for protocol, (queries, gallery) in (('t2i', (texts, images)), ('i2t', (images, texts))):
    r1, mean_ap = ranking_metrics(queries, gallery)
    assert results[f'{protocol}_r1'] == pytest.approx(r1, abs=1e-9)
    assert results[f'{protocol}_map'] == pytest.approx(mean_ap, abs=1e-9)


def test_cross_dataset_evaluation_refuses_captions_the_runs_tokenizer_does_not_know(cross_dataset):
  workdir, markers, fake, data_dir = cross_dataset
  config = cross_dataset_config(fake, data_dir)
  config.eval.max_unknown_token_fraction = 0.01
  captions = [caption for image in fake.images if image.split == 'test' for caption in image.captions]
  ids, _ = run.load_tokenizer(run.RunDirectory(workdir)).encode(captions, 256)
  pieces = ids[~np.isin(ids, (tokenizer_lib.PAD_ID, tokenizer_lib.BOS_ID, tokenizer_lib.EOS_ID))]
  unknown = np.mean(pieces == tokenizer_lib.UNK_ID)
  assert 0.01 < unknown < 0.05  # the non-ASCII captions: refused at 1%, evaluated at the default 5%
  reports = {path.name: path.read_bytes() for path in (workdir / 'eval').iterdir()}
  with pytest.raises(run.CrossDatasetError) as raised:
    evaluate.evaluate(config, str(workdir))
  assert str(raised.value) == (
      f"config.eval.dataset = 'cuhk_pedes': the run's tokenizer does not know {unknown:.2%} of the tokens of the "
      "test split's captions, more than config.eval.max_unknown_token_fraction = 1.00%; its text queries would be "
      "meaningless. Evaluate on a dataset whose captions the run's tokenizer covers.")
  assert {path.name: path.read_bytes() for path in (workdir / 'eval').iterdir()} == reports


def test_cross_dataset_evaluation_refuses_another_image_size_and_unknown_datasets(cross_dataset):
  workdir, _, fake, data_dir = cross_dataset
  config = cross_dataset_config(fake, data_dir)
  config.data.image_size = (128, 64)
  with pytest.raises(run.CrossDatasetError) as raised:
    evaluate.evaluate(config, str(workdir))
  assert str(raised.value) == (
      "config.eval.dataset = 'cuhk_pedes': config.data.image_size is (128, 64) in the command, (64, 32) in the run; "
      "its model is evaluated at the size it was trained at (its stripes and learned maps fix it), and the other "
      "dataset's images are resized to it. Rerun with --config.data.image_size=\"(64, 32)\".")
  with pytest.raises(run.CrossDatasetError) as raised:
    evaluate.evaluate(cross_dataset_config(fake, data_dir, dataset='market1501'), str(workdir))
  assert str(raised.value) == (
      "config.eval.dataset = 'market1501' is not a dataset; expected \"\" (the run's own) or one of cuhk_pedes, "
      'icfg_pedes, rstpreid, synth_pedes, synth_pedes/default, synth_pedes/tiny, synth_pedes/large.')
  with pytest.raises(ValueError) as raised:
    train.validate_config(cross_dataset_config(fake, data_dir))
  assert str(raised.value) == (
      "config.eval.dataset = 'cuhk_pedes' is read by --mode=eval only (training selects and tests on its own "
      "dataset); set it to '' and evaluate the trained run with --mode=eval.")
