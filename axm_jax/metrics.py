"""Retrieval and re-identification metrics on similarity matrices (pure NumPy).

Definitions (SPEC §5), the same as IRRA's `utils/metrics.py::rank` and the codebases built on it:
  * a query's ranking is the gallery sorted by decreasing similarity, ties kept in gallery order (the order of
    `np.argsort(-similarity, kind='stable')`);
  * R@K = share of queries with at least one positive within the top K;
  * AP = non-interpolated average precision over the whole ranking: the mean, over the query's positives, of the
    precision at the rank of each positive;
  * INP = (number of positives) / (rank of the last positive);
  * every value is reported in percent (mAP and mINP are means over queries).

Differences from IRRA: IRRA's `torch.argsort` is not stable, so its order among tied similarities is unspecified
(we keep gallery order); IRRA averages in float32 (we use float64); a query without any positive makes IRRA's AP
NaN and its mINP fail, whereas here such a query is skipped and counted (`RankStatistics.skipped_queries`).

Ranks are computed without sorting: the rank of a positive p of query q is
1 + #{gallery j : s[q, j] > s[q, p] or (s[q, j] == s[q, p] and j < p)}, exactly its position in the stable order.
This costs one pass over the gallery per (query, positive) pair, several times less than a sort for the few
positives per query of person search. Queries are processed `query_chunk` at a time, so memory stays a few
times query_chunk x gallery_size bytes (one float32 similarity chunk and boolean masks), whatever the number
of queries.

Re-identification (`reid_statistics`) follows the standard cross-camera protocol: for each query, the gallery
entries with the query's identity AND the query's camera are removed. Camera 0 means unknown: a cross-camera
protocol cannot be applied to such images, so they take no part in it (gallery entries with camera 0 are removed
for every query; queries with camera 0 are left out and counted in `unknown_camera_queries`).
"""
from collections.abc import Callable, Sequence
import dataclasses

import numpy as np

# Similarities compared per block of (query, positive) pairs: small blocks stay in cache and avoid fresh
# page-faulting allocations (5-10x faster than one block per query chunk on a 100k-image gallery).
PAIR_BLOCK_ELEMENTS = 2**20

# Either the full [num_queries, num_gallery] matrix or a function (start, stop) -> rows start:stop of it.
Similarity = np.ndarray | Callable[[int, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class RankStatistics:
  """Per-query ranking statistics of the evaluated queries (those with at least one positive)."""
  first_hit_ranks: np.ndarray  # int64 [N], 1-based rank of the best-ranked positive
  average_precisions: np.ndarray  # float64 [N], in [0, 1]
  inverse_negative_penalties: np.ndarray  # float64 [N], in (0, 1]
  skipped_queries: int  # queries without any positive
  unknown_camera_queries: int = 0  # re-id queries left out because their camera is unknown

  @property
  def num_queries(self) -> int:
    return len(self.first_hit_ranks)


def retrieval_statistics(similarity: Similarity, query_ids: np.ndarray, gallery_ids: np.ndarray,
                         query_chunk: int) -> RankStatistics:
  """Statistics of ranking the whole gallery for every query; positives = same identity."""
  query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
  _check_chunk(query_chunk)
  rows = _row_reader(similarity, len(query_ids), len(gallery_ids))
  identities = _IdentityIndex(gallery_ids)
  parts = []
  for start in range(0, len(query_ids), query_chunk):
    stop = min(start + query_chunk, len(query_ids))
    query_rows, columns = identities.pairs(query_ids[start:stop])
    parts.append(_chunk_statistics(rows(start, stop), query_rows, columns, num_queries=stop - start))
  return _merge(parts, num_unknown=0)


def reid_statistics(similarity: Similarity, query_ids: np.ndarray, query_cameras: np.ndarray,
                    gallery_ids: np.ndarray, gallery_cameras: np.ndarray, query_chunk: int) -> RankStatistics:
  """Cross-camera re-id statistics: same-identity-same-camera and unknown-camera gallery entries removed."""
  query_ids, query_cameras = np.asarray(query_ids), np.asarray(query_cameras)
  gallery_ids, gallery_cameras = np.asarray(gallery_ids), np.asarray(gallery_cameras)
  if query_cameras.shape != query_ids.shape:
    raise ValueError(f'query_cameras shape {query_cameras.shape} != query_ids shape {query_ids.shape}')
  if gallery_cameras.shape != gallery_ids.shape:
    raise ValueError(f'gallery_cameras shape {gallery_cameras.shape} != gallery_ids shape {gallery_ids.shape}')
  _check_chunk(query_chunk)
  rows = _row_reader(similarity, len(query_ids), len(gallery_ids))
  identities = _IdentityIndex(gallery_ids)
  unknown_gallery = gallery_cameras == 0
  parts = []
  for start in range(0, len(query_ids), query_chunk):
    stop = min(start + query_chunk, len(query_ids))
    cameras = query_cameras[start:stop]
    query_rows, columns = identities.pairs(query_ids[start:stop])
    same_camera = gallery_cameras[columns] == cameras[query_rows]
    chunk = np.array(rows(start, stop))  # a copy: removed entries get -inf, never ranked ahead of a positive
    chunk[:, unknown_gallery] = -np.inf
    chunk[query_rows[same_camera], columns[same_camera]] = -np.inf
    keep = ~same_camera & ~unknown_gallery[columns] & (cameras[query_rows] != 0)
    parts.append(_chunk_statistics(chunk, query_rows[keep], columns[keep],
                                   num_queries=int(np.sum(cameras != 0))))
  return _merge(parts, num_unknown=int(np.sum(query_cameras == 0)))


def cmc_curve(statistics: RankStatistics, max_rank: int) -> np.ndarray:
  """R@1..R@max_rank in percent, float64 [max_rank]; NaN when no query was evaluated."""
  if statistics.num_queries == 0:
    return np.full(max_rank, np.nan)
  hits = statistics.first_hit_ranks[:, None] <= np.arange(1, max_rank + 1)[None, :]
  return 100.0 * hits.mean(axis=0)


def summarize(statistics: RankStatistics, ranks: Sequence[int]) -> dict[str, float]:
  """Flat metrics: r<K> for K in ranks, map, minp (percent), queries, skipped_queries, unknown_camera_queries."""
  ranks = [int(k) for k in ranks]
  if not ranks or min(ranks) < 1:
    raise ValueError(f'ranks must be a non-empty list of integers >= 1, got {ranks}')
  curve = cmc_curve(statistics, max(ranks))
  summary = {f'r{k}': float(curve[k - 1]) for k in ranks}
  summary['map'] = _mean_percent(statistics.average_precisions)
  summary['minp'] = _mean_percent(statistics.inverse_negative_penalties)
  summary['queries'] = float(statistics.num_queries)
  summary['skipped_queries'] = float(statistics.skipped_queries)
  summary['unknown_camera_queries'] = float(statistics.unknown_camera_queries)
  return summary


def top_k(similarity_rows: np.ndarray, k: int) -> np.ndarray:
  """Gallery indices of the k best-ranked entries per row, int64 [rows, k] (stable order)."""
  return np.argsort(-np.asarray(similarity_rows), axis=-1, kind='stable')[..., :k]


def _mean_percent(values: np.ndarray) -> float:
  return float(100.0 * values.mean()) if len(values) else float('nan')


def _check_chunk(query_chunk: int) -> None:
  if query_chunk < 1:
    raise ValueError(f'query_chunk must be >= 1, got {query_chunk}')


def _row_reader(similarity: Similarity, num_queries: int, num_gallery: int) -> Callable[[int, int], np.ndarray]:
  """Returns (start, stop) -> validated similarity rows start:stop."""
  if not callable(similarity):
    matrix = np.asarray(similarity)
    if matrix.shape != (num_queries, num_gallery):
      raise ValueError(f'similarity shape {matrix.shape} != (num_queries, num_gallery) = '
                       f'{(num_queries, num_gallery)}')
    similarity = lambda start, stop: matrix[start:stop]

  def read(start: int, stop: int) -> np.ndarray:
    rows = np.asarray(similarity(start, stop))
    if rows.shape != (stop - start, num_gallery):
      raise ValueError(f'similarity rows {start}:{stop} have shape {rows.shape}, expected '
                       f'{(stop - start, num_gallery)}')
    if not np.all(np.isfinite(rows)):
      raise ValueError(f'similarity rows {start}:{stop} contain non-finite values')
    return rows

  return read


class _IdentityIndex:
  """Finds the gallery entries of given identities without comparing against the whole gallery."""

  def __init__(self, gallery_ids: np.ndarray):
    self._order = np.argsort(gallery_ids, kind='stable')
    self._sorted_ids = gallery_ids[self._order]

  def pairs(self, query_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query rows, gallery columns) of every same-identity pair; grouped by row, columns ascending."""
    first = np.searchsorted(self._sorted_ids, query_ids, side='left')
    counts = np.searchsorted(self._sorted_ids, query_ids, side='right') - first
    query_rows = np.repeat(np.arange(len(query_ids)), counts)
    offsets = np.arange(len(query_rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    return query_rows, self._order[np.repeat(first, counts) + offsets]


def _chunk_statistics(similarity: np.ndarray, query_rows: np.ndarray, positive_columns: np.ndarray,
                      num_queries: int) -> RankStatistics:
  """Statistics of one chunk of queries from its positive pairs (grouped by row); excluded entries are -inf."""
  counts = np.bincount(query_rows, minlength=similarity.shape[0])
  counts = counts[counts > 0]
  skipped = num_queries - len(counts)
  if not len(counts):
    return RankStatistics(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), skipped)
  ranks = _positive_ranks(similarity, query_rows, positive_columns)
  ranks = ranks[np.lexsort((ranks, query_rows))]  # each query's positives in ranking order
  starts = np.cumsum(counts) - counts
  hits_so_far = np.arange(len(ranks)) - np.repeat(starts, counts) + 1
  return RankStatistics(
      first_hit_ranks=ranks[starts],
      average_precisions=np.add.reduceat(hits_so_far / ranks, starts) / counts,
      inverse_negative_penalties=counts / ranks[starts + counts - 1],
      skipped_queries=skipped)


def _positive_ranks(similarity: np.ndarray, query_rows: np.ndarray, positive_columns: np.ndarray) -> np.ndarray:
  """1-based rank of each (query row, positive column) pair in its row's stable descending order."""
  column = np.arange(similarity.shape[1])
  pair_block = max(1, PAIR_BLOCK_ELEMENTS // similarity.shape[1])
  ranks = np.empty(len(query_rows), np.int64)
  for start in range(0, len(query_rows), pair_block):
    rows, columns = query_rows[start:start + pair_block], positive_columns[start:start + pair_block]
    scores = similarity[rows]
    own = scores[np.arange(len(rows)), columns][:, None]
    ahead = (scores > own) | ((scores == own) & (column[None, :] < columns[:, None]))
    ranks[start:start + pair_block] = np.count_nonzero(ahead, axis=1) + 1
  return ranks


def _merge(parts: list[RankStatistics], num_unknown: int) -> RankStatistics:
  return RankStatistics(
      first_hit_ranks=np.concatenate([p.first_hit_ranks for p in parts] or [np.zeros(0, np.int64)]),
      average_precisions=np.concatenate([p.average_precisions for p in parts] or [np.zeros(0)]),
      inverse_negative_penalties=np.concatenate([p.inverse_negative_penalties for p in parts] or [np.zeros(0)]),
      skipped_queries=sum(p.skipped_queries for p in parts),
      unknown_camera_queries=num_unknown)
