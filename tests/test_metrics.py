"""Tests of axm_jax.metrics against NumPy references written from the definitions."""
import numpy as np
import pytest

from axm_jax import metrics


def reference_statistics(similarity, query_ids, gallery_ids, query_cameras=None, gallery_cameras=None):
  """Per-query (first hit rank, AP, INP) with a full stable argsort and loops; plus skipped / unknown counts."""
  rows, skipped, unknown = [], 0, 0
  for query in range(similarity.shape[0]):
    keep = np.arange(similarity.shape[1])
    if query_cameras is not None:
      if query_cameras[query] == 0:
        unknown += 1
        continue
      keep = [j for j in keep if gallery_cameras[j] != 0 and
              not (gallery_ids[j] == query_ids[query] and gallery_cameras[j] == query_cameras[query])]
      keep = np.array(keep, dtype=np.int64)
    order = keep[np.argsort(-similarity[query, keep], kind='stable')]
    matches = gallery_ids[order] == query_ids[query]
    if not matches.any():
      skipped += 1
      continue
    positive_ranks = np.flatnonzero(matches) + 1
    precisions = [(k + 1) / rank for k, rank in enumerate(positive_ranks)]
    rows.append((positive_ranks[0], np.mean(precisions), len(positive_ranks) / positive_ranks[-1]))
  return rows, skipped, unknown


def reference_summary(rows, ranks):
  first = np.array([r[0] for r in rows])
  summary = {f'r{k}': 100.0 * np.mean([f <= k for f in first]) for k in ranks}
  summary['map'] = 100.0 * np.mean([r[1] for r in rows])
  summary['minp'] = 100.0 * np.mean([r[2] for r in rows])
  return summary


def tied_problem(seed, num_queries, num_gallery, num_ids):
  """Similarities rounded to one decimal (many ties); ids drawn so that most queries have positives."""
  rng = np.random.default_rng(seed)
  similarity = np.round(rng.uniform(-1, 1, (num_queries, num_gallery)), 1).astype(np.float32)
  gallery_ids = rng.integers(0, num_ids, num_gallery)
  query_ids = rng.integers(0, num_ids, num_queries)
  return similarity, query_ids, gallery_ids


def assert_statistics_equal(statistics, rows, skipped):
  np.testing.assert_array_equal(statistics.first_hit_ranks, [r[0] for r in rows])
  np.testing.assert_allclose(statistics.average_precisions, [r[1] for r in rows], rtol=1e-12)
  np.testing.assert_allclose(statistics.inverse_negative_penalties, [r[2] for r in rows], rtol=1e-12)
  assert statistics.skipped_queries == skipped


@pytest.mark.parametrize('num_ids', [3, 40, 400])  # many positives per query ... mostly one or none
@pytest.mark.parametrize('query_chunk', [1, 7, 1000])
def test_retrieval_matches_reference_with_ties(num_ids, query_chunk):
  similarity, query_ids, gallery_ids = tied_problem(num_ids, 53, 120, num_ids)
  rows, skipped, _ = reference_statistics(similarity, query_ids, gallery_ids)
  statistics = metrics.retrieval_statistics(similarity, query_ids, gallery_ids, query_chunk)
  assert_statistics_equal(statistics, rows, skipped)
  summary = metrics.summarize(statistics, (1, 5, 10))
  for name, value in reference_summary(rows, (1, 5, 10)).items():
    assert summary[name] == pytest.approx(value, rel=1e-12), name
  assert summary['queries'] == len(rows)
  assert summary['skipped_queries'] == skipped
  assert summary['unknown_camera_queries'] == 0


def test_one_positive_per_query():
  rng = np.random.default_rng(1)
  similarity = np.round(rng.normal(size=(40, 40)), 1)
  gallery_ids = rng.permutation(40)
  query_ids = np.arange(40)
  rows, skipped, _ = reference_statistics(similarity, query_ids, gallery_ids)
  statistics = metrics.retrieval_statistics(similarity, query_ids, gallery_ids, query_chunk=16)
  assert skipped == 0
  assert_statistics_equal(statistics, rows, 0)
  # With one positive, AP = INP = 1 / rank.
  np.testing.assert_allclose(statistics.average_precisions, 1.0 / statistics.first_hit_ranks)
  np.testing.assert_allclose(statistics.inverse_negative_penalties, 1.0 / statistics.first_hit_ranks)


def test_chunk_sizes_give_identical_results():
  similarity, query_ids, gallery_ids = tied_problem(2, 31, 50, 6)
  results = [metrics.summarize(metrics.retrieval_statistics(similarity, query_ids, gallery_ids, chunk), (1, 3))
             for chunk in (1, 2, 5, 31, 64)]
  for result in results[1:]:
    assert result == results[0]


def test_callable_similarity_matches_matrix():
  similarity, query_ids, gallery_ids = tied_problem(3, 20, 30, 5)
  calls = []

  def rows(start, stop):
    calls.append((start, stop))
    return similarity[start:stop]

  from_callable = metrics.retrieval_statistics(rows, query_ids, gallery_ids, query_chunk=8)
  from_matrix = metrics.retrieval_statistics(similarity, query_ids, gallery_ids, query_chunk=8)
  assert calls == [(0, 8), (8, 16), (16, 20)]
  assert metrics.summarize(from_callable, (1,)) == metrics.summarize(from_matrix, (1,))


def test_all_equal_similarities_rank_in_gallery_order():
  similarity = np.zeros((1, 5))
  statistics = metrics.retrieval_statistics(similarity, np.array([7]), np.array([1, 7, 2, 2, 7]), 4)
  np.testing.assert_array_equal(statistics.first_hit_ranks, [2])
  np.testing.assert_allclose(statistics.average_precisions, [(1 / 2 + 2 / 5) / 2])
  np.testing.assert_allclose(statistics.inverse_negative_penalties, [2 / 5])


def test_matches_irra_cumsum_formulation():
  """IRRA computes AP with cumulative sums over the sorted match matrix; same numbers without ties."""
  rng = np.random.default_rng(4)
  similarity = rng.normal(size=(25, 60))
  gallery_ids = rng.integers(0, 8, 60)
  query_ids = gallery_ids[rng.integers(0, 60, 25)]
  matches = (gallery_ids[np.argsort(-similarity, axis=1)] == query_ids[:, None]).astype(np.float64)
  cumulative = matches.cumsum(1)
  irra_cmc = 100 * np.minimum(cumulative[:, :10], 1).mean(0)
  irra_map = 100 * ((cumulative / np.arange(1, 61) * matches).sum(1) / matches.sum(1)).mean()
  last = np.array([np.flatnonzero(row)[-1] for row in matches])
  irra_minp = 100 * (cumulative[np.arange(25), last] / (last + 1)).mean()
  summary = metrics.summarize(metrics.retrieval_statistics(similarity, query_ids, gallery_ids, 10), (1, 5, 10))
  assert [summary['r1'], summary['r5'], summary['r10']] == pytest.approx(irra_cmc[[0, 4, 9]])
  assert summary['map'] == pytest.approx(irra_map)
  assert summary['minp'] == pytest.approx(irra_minp)


def test_queries_without_positive_are_skipped_and_counted():
  similarity = np.array([[0.9, 0.1], [0.5, 0.6], [0.3, 0.2]])
  statistics = metrics.retrieval_statistics(similarity, np.array([1, 9, 2]), np.array([1, 2]), 2)
  assert statistics.skipped_queries == 1
  np.testing.assert_array_equal(statistics.first_hit_ranks, [1, 2])
  summary = metrics.summarize(statistics, (1, 2))
  assert summary == {'r1': 50.0, 'r2': 100.0, 'map': 75.0, 'minp': 75.0, 'queries': 2.0,
                     'skipped_queries': 1.0, 'unknown_camera_queries': 0.0}


def test_no_evaluated_query_gives_nan():
  statistics = metrics.retrieval_statistics(np.zeros((2, 3)), np.array([5, 6]), np.array([1, 2, 3]), 1)
  summary = metrics.summarize(statistics, (1,))
  assert np.isnan(summary['r1']) and np.isnan(summary['map']) and np.isnan(summary['minp'])
  assert summary['skipped_queries'] == 2.0 and summary['queries'] == 0.0


def test_reid_hand_made_case():
  gallery_ids = np.array([1, 2, 1, 1, 3, 1])
  gallery_cameras = np.array([1, 2, 2, 0, 1, 3])
  query_ids = np.array([1, 2, 3, 3])
  query_cameras = np.array([1, 2, 0, 2])
  similarity = np.array([
      [0.9, 0.8, 0.7, 0.95, 0.7, 0.1],  # id1 cam1: drops 0 (same id+cam), 3 (unknown cam); order 1 2 4 5
      [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # id2 cam2: its only image (1) has its camera -> skipped
      [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # camera unknown -> left out
      [0.5, 0.6, 0.6, 0.9, 0.6, 0.2],  # id3 cam2: drops 3; ties 1 2 4 keep gallery order -> 1 2 4 0 5
  ])
  statistics = metrics.reid_statistics(similarity, query_ids, query_cameras, gallery_ids, gallery_cameras, 3)
  np.testing.assert_array_equal(statistics.first_hit_ranks, [2, 3])
  np.testing.assert_allclose(statistics.average_precisions, [(1 / 2 + 2 / 4) / 2, 1 / 3])
  np.testing.assert_allclose(statistics.inverse_negative_penalties, [2 / 4, 1 / 3])
  assert (statistics.skipped_queries, statistics.unknown_camera_queries) == (1, 1)
  summary = metrics.summarize(statistics, (1, 2, 3))
  assert summary['r1'] == 0.0 and summary['r2'] == 50.0 and summary['r3'] == 100.0
  assert summary['map'] == pytest.approx(100 * (0.5 + 1 / 3) / 2)
  assert summary['minp'] == pytest.approx(100 * (0.5 + 1 / 3) / 2)
  assert (summary['queries'], summary['skipped_queries'], summary['unknown_camera_queries']) == (2.0, 1.0, 1.0)


@pytest.mark.parametrize('query_chunk', [1, 4, 100])
def test_reid_matches_reference_with_ties(query_chunk):
  rng = np.random.default_rng(5)
  similarity, query_ids, gallery_ids = tied_problem(5, 40, 70, 6)
  query_cameras = rng.integers(0, 4, 40)
  gallery_cameras = rng.integers(0, 4, 70)
  rows, skipped, unknown = reference_statistics(similarity, query_ids, gallery_ids, query_cameras, gallery_cameras)
  statistics = metrics.reid_statistics(similarity, query_ids, query_cameras, gallery_ids, gallery_cameras,
                                       query_chunk)
  assert_statistics_equal(statistics, rows, skipped)
  assert statistics.unknown_camera_queries == unknown


def test_cmc_curve():
  statistics = metrics.RankStatistics(np.array([1, 3, 3, 7]), np.ones(4), np.ones(4), skipped_queries=0)
  np.testing.assert_allclose(metrics.cmc_curve(statistics, 8), [25, 25, 75, 75, 75, 75, 100, 100])


def test_top_k_is_stable():
  similarity = np.array([[0.2, 0.5, 0.5, 0.1, 0.5], [1.0, 0.0, 0.0, 0.0, 0.0]])
  np.testing.assert_array_equal(metrics.top_k(similarity, 3), [[1, 2, 4], [0, 1, 2]])


def test_bad_input_errors():
  ids = np.array([1, 2])
  with pytest.raises(ValueError, match=r'^similarity shape \(2, 3\) != \(num_queries, num_gallery\) = \(2, 2\)$'):
    metrics.retrieval_statistics(np.zeros((2, 3)), ids, ids, 4)
  with pytest.raises(ValueError, match=r'^similarity rows 0:2 contain non-finite values$'):
    metrics.retrieval_statistics(np.array([[0.0, np.nan], [0.0, 0.0]]), ids, ids, 4)
  with pytest.raises(ValueError, match=r'^similarity rows 0:1 have shape \(2, 2\), expected \(1, 2\)$'):
    metrics.retrieval_statistics(lambda start, stop: np.zeros((2, 2)), ids, ids, 1)
  with pytest.raises(ValueError, match=r'^query_chunk must be >= 1, got 0$'):
    metrics.retrieval_statistics(np.zeros((2, 2)), ids, ids, 0)
  with pytest.raises(ValueError, match=r'^query_cameras shape \(3,\) != query_ids shape \(2,\)$'):
    metrics.reid_statistics(np.zeros((2, 2)), ids, np.ones(3), ids, ids, 4)
  with pytest.raises(ValueError, match=r'^gallery_cameras shape \(1,\) != gallery_ids shape \(2,\)$'):
    metrics.reid_statistics(np.zeros((2, 2)), ids, ids, ids, np.ones(1), 4)
  statistics = metrics.retrieval_statistics(np.zeros((2, 2)), ids, ids, 4)
  with pytest.raises(ValueError, match=r'^ranks must be a non-empty list of integers >= 1, got \[0, 5\]$'):
    metrics.summarize(statistics, (0, 5))


def test_small_pair_blocks_give_identical_results(monkeypatch):
  similarity, query_ids, gallery_ids = tied_problem(6, 30, 40, 4)
  whole = metrics.retrieval_statistics(similarity, query_ids, gallery_ids, query_chunk=30)
  monkeypatch.setattr(metrics, 'PAIR_BLOCK_ELEMENTS', 3 * 40)  # 3 (query, positive) pairs per block
  blocked = metrics.retrieval_statistics(similarity, query_ids, gallery_ids, query_chunk=30)
  rows, skipped, _ = reference_statistics(similarity, query_ids, gallery_ids)
  assert_statistics_equal(blocked, rows, skipped)
  np.testing.assert_array_equal(blocked.average_precisions, whole.average_precisions)
