"""Losses against NumPy references written from their definitions (SPEC §2, §2.1)."""
import math
import re

import ml_collections
import numpy as np
import pytest

from axm_jax import config_files
from axm_jax import losses
from axm_jax import train


def numpy_log_sigmoid(z):
  return -np.logaddexp(0.0, -z)


def numpy_cosine(a, b):
  a = a / np.linalg.norm(a, axis=1, keepdims=True)
  b = b / np.linalg.norm(b, axis=1, keepdims=True)
  return a @ b.T


def numpy_id_loss(logits, labels, smoothing):
  total = 0.0
  for row, label in zip(logits, labels):
    log_probs = row - np.log(np.exp(row - row.max()).sum()) - row.max()
    target = np.full(len(row), smoothing / len(row))
    target[label] += 1 - smoothing
    total -= (target * log_probs).sum()
  return total / len(labels)


def numpy_batch_hard(anchors, candidates, labels, margin, candidate_labels=None):
  """Loop over anchors: hardest positive (largest distance), hardest negative (smallest distance); the mean runs
  over the anchors that have both. `candidate_labels` defaults to `labels` (the pairs of one batch)."""
  candidate_labels = labels if candidate_labels is None else candidate_labels
  distance = 1 - numpy_cosine(anchors, candidates)
  per_anchor = []
  for i, label in enumerate(labels):
    positives = [distance[i, j] for j in range(len(candidate_labels)) if candidate_labels[j] == label]
    negatives = [distance[i, j] for j in range(len(candidate_labels)) if candidate_labels[j] != label]
    if positives and negatives:
      per_anchor.append(max(0.0, margin + max(positives) - min(negatives)))
  return sum(per_anchor) / max(len(per_anchor), 1)


def numpy_affinity(image, text, labels, scale, bias, form):
  similarity = numpy_cosine(image, text)
  total = 0.0
  for i in range(len(labels)):
    for j in range(len(labels)):
      if form == 'bce':
        z = scale * similarity[i, j] + bias
        total -= numpy_log_sigmoid(z) if labels[i] == labels[j] else numpy_log_sigmoid(-z)
      else:
        s = similarity[i, j]
        total -= numpy_log_sigmoid(s) if labels[i] == labels[j] else numpy_log_sigmoid(1 - s)
  return total / len(labels) ** 2


def numpy_softmax(row):
  exponentials = np.exp(row - row.max())
  return exponentials / exponentials.sum()


def numpy_label_distribution(labels, i):
  """q_i: uniform over the pairs of identity labels[i]."""
  same = np.array([float(label == labels[i]) for label in labels])
  return same / same.sum()


def numpy_mean_kl(similarity, labels):
  """Mean over the rows i of KL(softmax(row i) || q_i), with log(q + 1e-8)."""
  total = 0.0
  for i, row in enumerate(similarity):
    p, q = numpy_softmax(row), numpy_label_distribution(labels, i)
    total += np.sum(p * (np.log(p) - np.log(q + 1e-8)))
  return total / len(labels)


def numpy_sdm(image, text, labels, scale):
  """Image i against all texts plus text j against all images."""
  similarity = scale * numpy_cosine(image, text)
  return numpy_mean_kl(similarity, labels) + numpy_mean_kl(similarity.T, labels)


def numpy_itc(image, text, labels, scale):
  """Mean over the two directions of the mean over anchors of the cross-entropy of softmax(scale * cos) against q."""
  similarity = scale * numpy_cosine(image, text)
  total = 0.0
  for rows in (similarity, similarity.T):
    for i, row in enumerate(rows):
      total -= np.sum(numpy_label_distribution(labels, i) * np.log(numpy_softmax(row))) / len(labels)
  return total / 2


@pytest.fixture
def batch():
  rng = np.random.default_rng(0)
  # Identities 3 and 5 have a single image-text pair: the only positive of their anchors is their own pair.
  labels = np.array([0, 0, 1, 1, 2, 2, 3, 5])
  size, dim, classes = len(labels), 6, 7
  return labels, {
      'global_visual': rng.normal(size=(size, dim)).astype(np.float32),
      'part_visual': rng.normal(size=(size, dim)).astype(np.float32),
      'text': rng.normal(size=(size, dim)).astype(np.float32),
      'global_visual_logits': rng.normal(size=(size, classes)).astype(np.float32) * 3,
      'part_visual_logits': rng.normal(size=(size, classes)).astype(np.float32) * 3,
      'text_logits': rng.normal(size=(size, classes)).astype(np.float32) * 3,
      'affinity_scale': np.float32(7.0),
      'affinity_bias': np.float32(-2.5),
      'contrastive_scale': np.float32(12.0),
  }


def test_id_loss_with_label_smoothing(batch):
  labels, outputs = batch
  for smoothing in (0.0, 0.1):
    np.testing.assert_allclose(losses.id_loss(outputs['text_logits'], labels, smoothing),
                               numpy_id_loss(outputs['text_logits'], labels, smoothing), rtol=1e-5)


def test_batch_hard_triplet_both_directions(batch):
  labels, outputs = batch
  image, text = outputs['global_visual'], outputs['text']
  image_anchors = numpy_batch_hard(image, text, labels, 0.3)
  text_anchors = numpy_batch_hard(text, image, labels, 0.3)
  assert abs(image_anchors - text_anchors) > 1e-3  # the two directions mine different triplets
  np.testing.assert_allclose(losses.batch_hard_triplet(image, text, labels, labels, 0.3), image_anchors, rtol=1e-5)
  np.testing.assert_allclose(losses.batch_hard_triplet(text, image, labels, labels, 0.3), text_anchors, rtol=1e-5)
  np.testing.assert_allclose(losses.cross_modal_triplet(image, text, labels, 0.3),
                             (image_anchors + text_anchors) / 2, rtol=1e-5)


def test_batch_hard_triplet_picks_the_hardest_pairs():
  # Anchor 0 (label 0): positives at angles 0 and 90 degrees, negatives at 60 and 180 degrees.
  angle = np.radians([0, 90, 60, 180])
  candidates = np.stack([np.cos(angle), np.sin(angle)], axis=1)
  anchors = np.array([[1.0, 0.0]])
  loss = losses.batch_hard_triplet(anchors, candidates, np.array([0]), np.array([0, 0, 1, 1]), 0.3)
  np.testing.assert_allclose(loss, 0.3 + (1 - math.cos(math.pi / 2)) - (1 - math.cos(math.pi / 3)), rtol=1e-6)


def test_batch_hard_triplet_mean_skips_anchors_without_a_positive(batch):
  """Anchors whose identity is absent from the candidates add nothing and do not count in the mean."""
  _, outputs = batch
  anchor_labels = np.array([0, 0, 1, 1, 2, 2, 3, 5])
  candidate_labels = np.array([0, 1, 1, 2, 2, 0, 0, 1])  # no identity 3 or 5: anchors 6 and 7 have no positive
  image, text = outputs['global_visual'], outputs['text']
  expected = numpy_batch_hard(image, text, anchor_labels, 0.3, candidate_labels)
  # Six anchors count; dividing by all eight would give 3/4 of the value.
  assert expected > 0.05
  np.testing.assert_allclose(
      losses.batch_hard_triplet(image, text, anchor_labels, candidate_labels, 0.3), expected, rtol=1e-5)


def test_batch_hard_triplet_without_valid_anchors_is_zero():
  features = np.eye(3, dtype=np.float32)
  assert float(losses.batch_hard_triplet(features, features, np.zeros(3), np.zeros(3), 0.3)) == 0.0


@pytest.mark.parametrize('form', ['bce', 'paper'])
def test_affinity_forms(batch, form):
  labels, outputs = batch
  image, text = outputs['part_visual'], outputs['text']
  expected = numpy_affinity(image, text, labels, 7.0, -2.5, form)
  np.testing.assert_allclose(losses.affinity_loss(image, text, labels, np.float32(7.0), np.float32(-2.5), form),
                             expected, rtol=1e-5)


def loss_config(**overrides) -> ml_collections.ConfigDict:
  config = config_files.load_config('configs/synthetic.py').loss
  config.update(overrides)
  return config


@pytest.mark.parametrize('form', ['bce', 'paper'])
def test_compute_losses_combines_means_of_terms_with_weights(batch, form):
  labels, outputs = batch
  config = loss_config(affinity_form=form, id_weight=0.5, triplet_weight=2.0, affinity_weight=3.0)
  total, terms = losses.compute_losses(outputs, labels, config)
  expected_id = np.mean([numpy_id_loss(outputs[key], labels, 0.1)
                         for key in ('global_visual_logits', 'part_visual_logits', 'text_logits')])
  expected_triplet = np.mean([(numpy_batch_hard(outputs[key], outputs['text'], labels, 0.3) +
                               numpy_batch_hard(outputs['text'], outputs[key], labels, 0.3)) / 2
                              for key in ('global_visual', 'part_visual')])
  expected_affinity = np.mean([numpy_affinity(outputs[key], outputs['text'], labels, 7.0, -2.5, form)
                               for key in ('global_visual', 'part_visual')])
  assert sorted(terms) == ['affinity', 'id', 'total', 'triplet']  # sdm and itc are off by default
  np.testing.assert_allclose(terms['id'], expected_id, rtol=1e-5)
  np.testing.assert_allclose(terms['triplet'], expected_triplet, rtol=1e-5)
  np.testing.assert_allclose(terms['affinity'], expected_affinity, rtol=1e-5)
  expected_total = 0.5 * expected_id + 2.0 * expected_triplet + 3.0 * expected_affinity
  np.testing.assert_allclose(total, expected_total, rtol=1e-5)
  np.testing.assert_allclose(terms['total'], expected_total, rtol=1e-5)


@pytest.mark.parametrize('step, ramp', [(0, 0.0), (50, 0.25), (200, 1.0), (5000, 1.0), (None, 1.0)])
def test_triplet_weight_ramps_linearly_over_its_warmup(batch, step, ramp):
  labels, outputs = batch
  config = loss_config(id_weight=0.5, triplet_weight=2.0, affinity_weight=3.0, triplet_warmup_steps=200)
  total, terms = losses.compute_losses(outputs, labels, config, step)
  expected = 0.5 * terms['id'] + 2.0 * ramp * terms['triplet'] + 3.0 * terms['affinity']
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  assert terms['triplet'] > 0.01  # the unweighted term is still reported


def test_compute_losses_without_part_visual(batch):
  labels, outputs = batch
  outputs = {key: value for key, value in outputs.items() if not key.startswith('part_visual')}
  _, terms = losses.compute_losses(outputs, labels, loss_config())
  np.testing.assert_allclose(
      terms['id'], np.mean([numpy_id_loss(outputs[key], labels, 0.1) for key in ('global_visual_logits',
                                                                                 'text_logits')]), rtol=1e-5)
  np.testing.assert_allclose(terms['affinity'],
                             numpy_affinity(outputs['global_visual'], outputs['text'], labels, 7.0, -2.5, 'bce'),
                             rtol=1e-5)


def test_unknown_affinity_form_is_rejected(batch):
  labels, outputs = batch
  with pytest.raises(ValueError, match=r"config.loss.affinity_form must be one of \('bce', 'paper'\), got 'sum'"):
    losses.compute_losses(outputs, labels, loss_config(affinity_form='sum'))


@pytest.mark.parametrize('scale', [1.0, 50.0])
def test_sdm_against_numpy(batch, scale):
  labels, outputs = batch
  image, text = outputs['global_visual'], outputs['text']
  similarity = scale * numpy_cosine(image, text)
  image_to_text, text_to_image = numpy_mean_kl(similarity, labels), numpy_mean_kl(similarity.T, labels)
  assert abs(image_to_text - text_to_image) > 1e-3  # one direction twice would not pass
  expected = numpy_sdm(image, text, labels, scale)
  np.testing.assert_allclose(losses.sdm_loss(image, text, labels, scale), expected, rtol=1e-5)


@pytest.mark.parametrize('scale', [1.0, 50.0])
def test_itc_against_numpy(batch, scale):
  labels, outputs = batch
  image, text = outputs['part_visual'], outputs['text']
  expected = numpy_itc(image, text, labels, scale)
  assert abs(expected - numpy_itc(image, text[::-1], labels, scale)) > 1e-3  # the pairing matters
  np.testing.assert_allclose(losses.itc_loss(image, text, labels, scale), expected, rtol=1e-5)


def test_itc_with_one_pair_per_identity_is_clips_loss(batch):
  _, outputs = batch
  image, text, labels = outputs['global_visual'], outputs['text'], np.arange(8)
  logits = 20.0 * numpy_cosine(image, text)
  clip = 0.0
  for rows in (logits, logits.T):  # the i-th row's class is i
    clip -= np.mean([np.log(numpy_softmax(row)[i]) for i, row in enumerate(rows)]) / 2
  np.testing.assert_allclose(losses.itc_loss(image, text, labels, 20.0), clip, rtol=1e-5)


@pytest.mark.parametrize('learn_temperature', [False, True])
def test_compute_losses_adds_weighted_sdm_and_itc_of_both_visual_embeddings(batch, learn_temperature):
  labels, outputs = batch
  paper_total, paper_terms = losses.compute_losses(outputs, labels, loss_config())
  config = loss_config(sdm_weight=0.7, itc_weight=0.4, contrastive_temperature=0.05,
                       learn_temperature=learn_temperature)
  total, terms = losses.compute_losses(outputs, labels, config)
  scale = 12.0 if learn_temperature else 20.0  # the model's learned scale, else 1 / temperature
  expected_sdm = np.mean([numpy_sdm(outputs[key], outputs['text'], labels, scale)
                          for key in ('global_visual', 'part_visual')])
  expected_itc = np.mean([numpy_itc(outputs[key], outputs['text'], labels, scale)
                          for key in ('global_visual', 'part_visual')])
  assert sorted(terms) == ['affinity', 'id', 'itc', 'sdm', 'total', 'triplet']
  np.testing.assert_allclose(terms['sdm'], expected_sdm, rtol=1e-5)
  np.testing.assert_allclose(terms['itc'], expected_itc, rtol=1e-5)
  for key in paper_terms:
    if key != 'total':
      np.testing.assert_allclose(terms[key], paper_terms[key], rtol=1e-6)
  np.testing.assert_allclose(total, paper_total + 0.7 * expected_sdm + 0.4 * expected_itc, rtol=1e-5)


def test_paper_configs_keep_the_paper_objectives():
  config = config_files.load_config('configs/cuhk_pedes.py').loss
  assert (config.sdm_weight, config.itc_weight) == (0.0, 0.0)
  assert (config.id_weight, config.triplet_weight, config.affinity_weight) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize('field, value, message', [
    ('sdm_weight', -1.0, 'config.loss.sdm_weight must be >= 0, got -1.0.'),
    ('itc_weight', -0.5, 'config.loss.itc_weight must be >= 0, got -0.5.'),
    ('contrastive_temperature', 0.0, 'config.loss.contrastive_temperature must be > 0, got 0.0.'),
])
def test_invalid_contrastive_fields_are_rejected(field, value, message):
  config = config_files.load_config('configs/synthetic.py:smoke')
  config.loss[field] = value
  with pytest.raises(ValueError, match=re.escape(message)):
    train.validate_config(config)
