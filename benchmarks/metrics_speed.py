"""Prints the time to compute every T->V metric (R@1/5/10, mAP, mINP) on random embeddings.

Two problems: CUHK-PEDES test size (6,156 caption queries x 3,074 images) and a 100,000-image gallery with
10,000 queries; 512-d L2-normalised embeddings, two images per identity, each query the identity of one image.
Similarities come in row chunks of `--query_chunk` queries, computed either with NumPy (what axm_jax.evaluate
does) or with JAX on the default device (float32, precision HIGHEST, rows copied back to the host); ranking is
axm_jax.metrics (NumPy, exact stable ranks, no sort). Needs only numpy, jax and absl (runs on a bare GPU image).

  PYTHONPATH=. python benchmarks/metrics_speed.py [--query_chunk=1024] [--problems=cuhk,100k]
"""
from collections.abc import Callable
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from axm_jax import metrics

PROBLEMS = {'cuhk': (6156, 3074), '100k': (10000, 100000)}
EMBED_DIM = 512
IMAGES_PER_ID = 2

_QUERY_CHUNK = flags.DEFINE_integer('query_chunk', 1024, 'Queries per similarity / ranking chunk.')
_PROBLEMS = flags.DEFINE_list('problems', list(PROBLEMS), f'Which of {list(PROBLEMS)} to time.')


def random_problem(num_queries: int, num_gallery: int, seed: int = 0):
  """(query embeddings, query ids, gallery embeddings, gallery ids), float32 unit rows."""
  rng = np.random.default_rng(seed)
  gallery_ids = np.arange(num_gallery) // IMAGES_PER_ID
  query_ids = gallery_ids[np.arange(num_queries) % num_gallery]
  normalise = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  queries = normalise(rng.standard_normal((num_queries, EMBED_DIM), dtype=np.float32))
  gallery = normalise(rng.standard_normal((num_gallery, EMBED_DIM), dtype=np.float32))
  return queries, query_ids, gallery, gallery_ids


def numpy_rows(queries: np.ndarray, gallery: np.ndarray) -> Callable[[int, int], np.ndarray]:
  return lambda start, stop: queries[start:stop] @ gallery.T


def jax_rows(queries: np.ndarray, gallery: np.ndarray) -> Callable[[int, int], np.ndarray]:
  gallery_device = jax.device_put(gallery)
  matmul = jax.jit(lambda q, g: jnp.matmul(q, g.T, precision=jax.lax.Precision.HIGHEST))
  return lambda start, stop: np.asarray(matmul(queries[start:stop], gallery_device))


def time_metrics(rows: Callable[[int, int], np.ndarray], query_ids, gallery_ids,
                 query_chunk: int) -> tuple[float, float, dict[str, float]]:
  """(similarity seconds, total seconds, summary) of one full T->V evaluation."""
  similarity_seconds = 0.0

  def timed_rows(start, stop):
    nonlocal similarity_seconds
    begin = time.perf_counter()
    chunk = rows(start, stop)
    similarity_seconds += time.perf_counter() - begin
    return chunk

  begin = time.perf_counter()
  statistics = metrics.retrieval_statistics(timed_rows, query_ids, gallery_ids, query_chunk)
  summary = metrics.summarize(statistics, (1, 5, 10))
  return similarity_seconds, time.perf_counter() - begin, summary


def warm_up(rows: Callable[[int, int], np.ndarray], num_queries: int, query_chunk: int) -> None:
  """Computes one full chunk and the tail chunk, so JAX compiles both shapes outside the timing."""
  rows(0, min(query_chunk, num_queries))
  rows(0, num_queries % query_chunk or query_chunk)


def main(argv):
  del argv
  print(f'{jax.device_count()} x {jax.devices()[0].device_kind}, query_chunk {_QUERY_CHUNK.value}')
  for name in _PROBLEMS.value:
    num_queries, num_gallery = PROBLEMS[name]
    queries, query_ids, gallery, gallery_ids = random_problem(num_queries, num_gallery)
    summaries = []
    for backend, make_rows in (('numpy', numpy_rows), ('jax', jax_rows)):
      rows = make_rows(queries, gallery)
      warm_up(rows, num_queries, _QUERY_CHUNK.value)
      similarity_seconds, total, summary = time_metrics(rows, query_ids, gallery_ids,
                                                        _QUERY_CHUNK.value)
      summaries.append(summary)
      print(f'{name}: {num_queries} queries x {num_gallery} images, similarity {backend}: total {total:.2f} s '
            f'(similarity {similarity_seconds:.2f} s, ranking {total - similarity_seconds:.2f} s); '
            f"R@1 {summary['r1']:.3f} mAP {summary['map']:.3f} mINP {summary['minp']:.3f}")
    difference = max(abs(summaries[0][key] - summaries[1][key]) for key in summaries[0])
    print(f'{name}: largest metric difference numpy vs jax similarities: {difference:.2g} (percent points)')


if __name__ == '__main__':
  app.run(main)
