"""Exact top-K search speed: axm_jax.search.topk against faiss-cpu IndexFlatIP and NumPy, in one run.

A gallery of --gallery random 512-d unit vectors (float32), --queries random unit queries, top --k by inner
product, stored as an index stores it (memory-mapped .npy shards). Times, after one warm-up each: our search
(axm_jax.search.topk, jax over the local devices) on the float32 shards and on float16 shards, faiss
IndexFlatIP.search (vectors added from the shards), and NumPy (matmul per shard + argpartition).
Checks that the top-K sets agree, a difference counting as a tie when the scores at the boundary are equal to
1e-5, and reports how far the float16 ranking is from the float32 one.

With --workdir=RUN it also times the web page's answer: a 100,000-row index of random unit vectors under RUN's
model, served by axm_jax.search.server on localhost, answering --page_queries sentences (each embedded by the
model) over HTTP.

  PYTHONPATH=. python benchmarks/search_speed.py [--gallery=1000000] [--queries=1000] [--k=10] [--workdir=RUN]
  (needs `pip install -r benchmarks/requirements.txt` for faiss-cpu)
"""
import datetime
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import urllib.request

from absl import app
from absl import flags
import faiss
import jax
import numpy as np

from axm_jax.search import embed
from axm_jax.search import searcher as searcher_lib
from axm_jax.search import server
from axm_jax.search import store
from axm_jax.search import topk

EMBED_DIM = 512
SHARD_ROWS = 1 << 16  # as axm_jax.search.indexer writes them
PAGE_GALLERY = 100_000
TIE_TOLERANCE = 1e-5

_GALLERY = flags.DEFINE_integer('gallery', 1_000_000, 'Gallery rows.')
_QUERIES = flags.DEFINE_integer('queries', 1000, 'Queries.')
_K = flags.DEFINE_integer('k', 10, 'Results per query.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'A trained run: also time the web page on a 100,000-image index.')
_PAGE_QUERIES = flags.DEFINE_integer('page_queries', 20, 'Sentences sent to the page.')


def unit_rows(rows: int, dim: int, seed: int) -> np.ndarray:
  """Random unit vectors, float32 [rows, dim]."""
  block = np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)
  return block / np.linalg.norm(block, axis=1, keepdims=True)


def write_shards(directory: str, rows: int, dim: int, dtype: str) -> list[np.ndarray]:
  """A random unit-vector gallery as .npy shards of SHARD_ROWS rows, memory-mapped as an index's shards are."""
  shards = []
  for number, start in enumerate(range(0, rows, SHARD_ROWS)):
    path = os.path.join(directory, f'{dtype}-{number:05d}.npy')
    shard = np.lib.format.open_memmap(path, 'w+', dtype, (min(SHARD_ROWS, rows - start), dim))
    shard[:] = unit_rows(len(shard), dim, seed=number)
    shard.flush()
    shards.append(np.load(path, mmap_mode='r'))
  return shards


def numpy_top_k(queries: np.ndarray, shards: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
  """Matmul per shard, argpartition, merge: (scores, rows) [Q, k], best first."""
  best_scores = np.full((len(queries), k), -np.inf, np.float32)
  best_rows = np.zeros((len(queries), k), np.int64)
  offset = 0
  for shard in shards:
    scores = queries @ shard.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    candidates = np.concatenate([best_scores, np.take_along_axis(scores, part, 1)], axis=1)
    rows = np.concatenate([best_rows, part + offset], axis=1)
    keep = np.argpartition(-candidates, k - 1, axis=1)[:, :k]
    best_scores, best_rows = np.take_along_axis(candidates, keep, 1), np.take_along_axis(rows, keep, 1)
    offset += len(shard)
  order = np.argsort(-best_scores, axis=1, kind='stable')
  return np.take_along_axis(best_scores, order, 1), np.take_along_axis(best_rows, order, 1)


def timed(search, repeats: int = 1):
  """(seconds of the fastest of `repeats` calls after one warm-up call, the last result)."""
  search()
  best, result = float('inf'), None
  for _ in range(repeats):
    start = time.perf_counter()
    result = search()
    best = min(best, time.perf_counter() - start)
  return best, result


def agreement(rows_a: np.ndarray, rows_b: np.ndarray, scores: np.ndarray, shards: list[np.ndarray],
              queries: np.ndarray) -> tuple[int, int]:
  """(queries with identical top-K sets, queries whose sets differ only by ties at the boundary)."""
  same = ties = 0
  for query, a, b, s in zip(queries, rows_a, rows_b, scores):
    if set(a.tolist()) == set(b.tolist()):
      same += 1
    else:
      other = np.array([shards[row // SHARD_ROWS][row % SHARD_ROWS] for row in set(b.tolist()) - set(a.tolist())])
      ties += bool(np.all(np.abs(other.astype(np.float32) @ query - s[-1]) <= TIE_TOLERANCE))
  return same, ties


def time_page(workdir: str) -> list[float]:
  """Answer seconds (measured by the client) of the page over a random 100,000-row index under the run's model."""
  model = embed.load_model(workdir, 'best')
  dim = embed.embedding_dim(model)
  with tempfile.TemporaryDirectory() as index_dir:
    writer = store.ShardWriter(index_dir, 'float32', SHARD_ROWS)
    vectors = unit_rows(PAGE_GALLERY, dim, seed=2)
    writer.add(vectors, [(f'random/{row:06d}.png', 0, 0) for row in range(PAGE_GALLERY)])
    writer.flush()
    store.write_manifest(index_dir, writer.shards, images=index_dir, workdir=model.workdir,
                         checkpoint_step=model.step, model_fingerprint=model.fingerprint,
                         config=embed.config_dict(model), dtype='float32', embed_dim=dim)
    del model, vectors
    searcher = searcher_lib.Searcher(index_dir)
    searcher.warm_up()  # as `serve` does before it listens
    web = server.make_server(searcher, '127.0.0.1', 0)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    url = f'http://127.0.0.1:{web.server_address[1]}/api/search'
    sentences = ['a woman in a red coat and black trousers', 'the man wears a blue shirt, grey shorts and a cap',
                 'a person with a backpack in a green dress']
    seconds = []
    for number in range(_PAGE_QUERIES.value):
      body = json.dumps({'text': f'{sentences[number % len(sentences)]} {number}', 'top_k': 10}).encode()
      start = time.perf_counter()
      with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=120) as response:
        assert len(json.loads(response.read())['results']) == 10
      seconds.append(time.perf_counter() - start)
    web.shutdown()
    web.server_close()
  return seconds


def main(argv):
  del argv
  k = _K.value
  print(f'{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} '
        f'CPUs, {jax.local_device_count()} x {jax.devices()[0].device_kind}, faiss {faiss.__version__} '
        f'({faiss.omp_get_max_threads()} threads)')
  queries = unit_rows(_QUERIES.value, EMBED_DIM, seed=-1 % 2**32)
  print(f'{_GALLERY.value:,} x {EMBED_DIM} gallery (memory-mapped .npy shards of {SHARD_ROWS:,} rows), '
        f'{_QUERIES.value:,} queries, top-{k}')
  results = {}
  with tempfile.TemporaryDirectory() as directory:
    gallery = write_shards(directory, _GALLERY.value, EMBED_DIM, 'float32')
    results['axm_jax.search float32'] = timed(lambda: topk.top_k(queries, gallery, k))
    half = write_shards(directory, _GALLERY.value, EMBED_DIM, 'float16')
    results['axm_jax.search float16'] = timed(lambda: topk.top_k(queries, half, k))
    del half
    index = faiss.IndexFlatIP(EMBED_DIM)
    for shard in gallery:
      index.add(np.ascontiguousarray(shard))
    results['faiss IndexFlatIP'] = timed(lambda: index.search(queries, k))
    del index
    results['numpy matmul+argpartition'] = timed(lambda: numpy_top_k(queries, gallery, k))
    reference_scores, reference_rows = results['axm_jax.search float32'][1]
    print(f'{"method":<28}{"seconds":>9}{"queries/s":>11}  top-{k} sets equal to ours (float32)')
    for name, (seconds, (scores, rows)) in results.items():
      same, ties = agreement(reference_rows, np.asarray(rows), reference_scores, gallery, queries)
      detail = f'{same}/{len(queries)}' + (f' (+{ties} differing by ties only)' if ties else '')
      print(f'{name:<28}{seconds:>9.2f}{len(queries) / seconds:>11.1f}  {detail}')
    del gallery
  half_rows = results['axm_jax.search float16'][1][1]
  overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(reference_rows.tolist(), half_rows.tolist())])
  print(f'float16 storage: top-1 equal to float32 for {np.mean(half_rows[:, 0] == reference_rows[:, 0]):.1%} of '
        f'queries, top-{k} overlap {overlap:.1%}')
  if _WORKDIR.value:
    seconds = time_page(_WORKDIR.value)
    print(f'page on a {PAGE_GALLERY:,}-image index, text queries through the model of {_WORKDIR.value}: median '
          f'{statistics.median(seconds):.3f} s, max {max(seconds):.3f} s over {len(seconds)} queries')


if __name__ == '__main__':
  app.run(main)
