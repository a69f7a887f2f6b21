"""Exact top-K inner-product search over a sharded gallery, in query and gallery chunks, over the local devices.

The gallery is read block by block (BLOCK_ROWS rows, e.g. from memory-mapped shards); each block is split over the
local devices (pmap), and each device scans its rows in chunks of at most CHUNK_ROWS, keeping a running top-K, so
no more than [query_chunk, CHUNK_ROWS] scores exist per device at a time. Within a chunk, `lax.top_k` first picks
the K groups of GROUP_ROWS rows with the highest maxima, then the K best rows among those groups: exact (every
row of the top K sits in one of those groups) and much cheaper than `lax.top_k` over every row on CPU. The
per-device results are merged on the host. float16 galleries are compared in float32.
"""
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

BLOCK_ROWS = 1 << 17  # gallery rows moved to the devices at a time
CHUNK_ROWS = 1 << 13  # gallery rows scored at a time on one device
GROUP_ROWS = 64  # rows per group whose maximum preselects the candidates of a chunk
QUERY_CHUNK = 1024  # queries scored at a time


def top_k(queries: np.ndarray, gallery: Sequence[np.ndarray], k: int,
          query_chunk: int = QUERY_CHUNK) -> tuple[np.ndarray, np.ndarray]:
  """The k best gallery rows of every query by inner product, best first.

  queries: float32 [Q, E]; gallery: shards [n_i, E] (float16 or float32) forming one gallery of N rows.
  Returns (scores float32 [Q, min(k, N)], gallery row indices int64 [Q, min(k, N)]); equal scores in any order.
  """
  queries = np.asarray(queries, np.float32)
  if queries.ndim != 2:
    raise ValueError(f'queries must be [Q, E], got shape {queries.shape}')
  if k < 1:
    raise ValueError(f'--top_k={k}: expected a positive number')
  total = sum(len(shard) for shard in gallery)
  for shard in gallery:
    if shard.ndim != 2 or shard.shape[1] != queries.shape[1]:
      raise ValueError(f'gallery shard of shape {shard.shape} does not match queries of dimension {queries.shape[1]}')
  count = len(queries)
  best_scores = np.full((count, k), -np.inf, np.float32)
  best_rows = np.full((count, k), -1, np.int64)
  offset = 0
  for shard in gallery:
    for start in range(0, len(shard), BLOCK_ROWS):
      block = shard[start:start + BLOCK_ROWS]
      rows, per_device = _device_block(block)
      for query_start in range(0, count, query_chunk):
        chunk = queries[query_start:query_start + query_chunk]
        scores, local = _block_fn(k)(_padded_queries(chunk, query_chunk), rows, _valid_rows(len(block), per_device))
        stop = query_start + len(chunk)
        # device d's local row r is block row d * per_device + r
        block_rows = (np.asarray(local)[:, :len(chunk)] + np.arange(len(rows))[:, None, None] * per_device)
        candidates = np.concatenate(
            [best_scores[query_start:stop], np.concatenate(np.asarray(scores)[:, :len(chunk)], axis=1)], axis=1)
        candidate_rows = np.concatenate(
            [best_rows[query_start:stop], np.concatenate(block_rows + offset + start, axis=1)], axis=1)
        best_scores[query_start:stop], best_rows[query_start:stop] = _best(candidates, candidate_rows, k)
    offset += len(shard)
  keep = min(k, total)
  return best_scores[:, :keep], best_rows[:, :keep]


def _best(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
  """The k best candidates per row by (score descending, row ascending); padding (-inf, -1) sorts last."""
  order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -scores), axis=1)[:, :k]
  return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def _device_block(block: np.ndarray) -> tuple[np.ndarray, int]:
  """The block as [devices, chunks, chunk_rows, E] (zero rows appended), and the rows per device."""
  devices = jax.local_device_count()
  per_device = -(-len(block) // devices)
  chunk_rows = min(CHUNK_ROWS, -(-per_device // GROUP_ROWS) * GROUP_ROWS)
  chunks = -(-per_device // chunk_rows)
  padded_rows = devices * chunks * chunk_rows
  if padded_rows != len(block):
    block = np.concatenate([block, np.zeros((padded_rows - len(block), block.shape[1]), block.dtype)])
  return np.reshape(block, (devices, chunks, chunk_rows, block.shape[1])), chunks * chunk_rows


def _valid_rows(count: int, per_device: int) -> np.ndarray:
  """How many real rows each device holds, int32 [devices]."""
  starts = np.arange(jax.local_device_count()) * per_device
  return np.clip(count - starts, 0, per_device).astype(np.int32)


def _padded_queries(queries: np.ndarray, query_chunk: int) -> np.ndarray:
  """Pads the query count to a power of two up to 64, then to a multiple of 64, so few shapes are compiled."""
  rows = 1
  while rows < min(len(queries), 64):
    rows *= 2
  if len(queries) > 64:
    rows = -(-len(queries) // 64) * 64
  rows = min(rows, max(query_chunk, len(queries)))
  return np.concatenate([queries, np.zeros((rows - len(queries), queries.shape[1]), np.float32)])


@functools.cache
def _block_fn(k: int):
  """pmapped (queries [q, E] broadcast, rows [chunks, C, E], valid count) -> (scores, local rows) [q, k] per device."""

  def scan_device(queries, rows, valid):
    chunk_rows = rows.shape[1]
    group = GROUP_ROWS if chunk_rows % GROUP_ROWS == 0 and chunk_rows // GROUP_ROWS >= k else 1
    groups = min(k, chunk_rows // group)

    def step(carry, chunk_and_base):
      best_scores, best_rows = carry
      chunk, base = chunk_and_base
      scores = jnp.dot(queries, chunk.astype(jnp.float32).T, precision=jax.lax.Precision.HIGHEST)
      scores = jnp.where(base + jnp.arange(chunk_rows) < valid, scores, -jnp.inf)
      # Exact: the k best rows lie in the k groups with the best maxima. Far cheaper than top_k over every row.
      grouped = scores.reshape(scores.shape[0], chunk_rows // group, group)
      _, best_groups = jax.lax.top_k(grouped.max(axis=2), groups)
      candidates = jnp.take_along_axis(grouped, best_groups[:, :, None], axis=1).reshape(scores.shape[0], -1)
      candidate_scores, picked = jax.lax.top_k(candidates, min(k, groups * group))
      candidate_rows = jnp.take_along_axis(best_groups, picked // group, axis=1) * group + picked % group + base
      merged_scores = jnp.concatenate([best_scores, candidate_scores], axis=1)
      merged_rows = jnp.concatenate([best_rows, candidate_rows], axis=1)
      kept_scores, kept = jax.lax.top_k(merged_scores, k)
      return (kept_scores, jnp.take_along_axis(merged_rows, kept, axis=1)), None

    initial = (jnp.full((queries.shape[0], k), -jnp.inf, jnp.float32),
               jnp.full((queries.shape[0], k), -1, jnp.int32))
    bases = jnp.arange(rows.shape[0], dtype=jnp.int32) * chunk_rows
    (scores, positions), _ = jax.lax.scan(step, initial, (rows, bases))
    return scores, positions

  return jax.pmap(scan_device, in_axes=(None, 0, 0))
