"""Answers text, image and image+text queries against an index, with the model that embedded it (loaded once)."""
import dataclasses
import io
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from axm_jax.search import embed
from axm_jax.search import images
from axm_jax.search import indexer
from axm_jax.search import store
from axm_jax.search import topk


@dataclasses.dataclass(frozen=True)
class Result:
  rank: int
  path: str  # relative to the indexed folder
  score: float


class Searcher:
  """An opened index and its model; the gallery stays memory-mapped."""

  def __init__(self, index_dir: str, workdir: str | None = None):
    """Opens the index and restores the model that embedded it, from `workdir` when given (it must be that model)."""
    self.index = store.open_index(index_dir)
    self.model = embed.load_model(workdir or self.index.workdir, self.index.checkpoint_step)
    indexer.check_model(self.index, self.model)
    self.paths = self.index.paths()
    self._known_paths = set(self.paths)
    self._gallery = self.index.vectors()

  def query(self, text: str | None = None, image: bytes | None = None, top_k: int = 10) -> list[Result]:
    """One query: a sentence, image file bytes, or both (the evaluation's VT->V query)."""
    return self.rank(self.embed_query(text, image), top_k)[0]

  def warm_up(self) -> None:
    """Compiles the programs of a one-sentence, one-image top-10 query, so that the first answer is not slower."""
    blank = io.BytesIO()
    Image.new('RGB', (8, 16)).save(blank, format='PNG')
    self.query(text='a person', image=blank.getvalue(), top_k=10)
    self.query(text='a person', top_k=10)

  def text_queries(self, texts: Sequence[str], top_k: int = 10) -> list[list[Result]]:
    """Many sentences at once."""
    return self.rank(embed.embed_texts(self.model, texts), top_k)

  def embed_query(self, text: str | None, image: bytes | None) -> np.ndarray:
    """The query embedding float32 [1, E]; images.BadImageError for undecodable image bytes."""
    if text is None and image is None:
      raise ValueError('a query needs a sentence, an image or both')
    vectors = []
    if image is not None:
      vectors.append(embed.embed_images(self.model, [images.model_bytes(image)]))
    if text is not None:
      vectors.append(embed.embed_texts(self.model, [text]))
    return vectors[0] if len(vectors) == 1 else embed.combine(*vectors)

  def rank(self, queries: np.ndarray, top_k: int) -> list[list[Result]]:
    scores, rows = topk.top_k(queries, self._gallery, top_k)
    return [[Result(rank + 1, self.paths[row], float(score)) for rank, (score, row) in enumerate(zip(s, r))]
            for s, r in zip(scores, rows)]

  def image_path(self, path: str) -> str:
    """The file of an indexed path; KeyError unless `path` is one of the index's own paths, inside the folder."""
    if path not in self._known_paths:
      raise KeyError(path)
    file = os.path.join(self.index.images, *path.split('/'))
    root = os.path.realpath(self.index.images)
    if os.path.commonpath([os.path.realpath(file), root]) != root:  # a symlink out of the folder
      raise KeyError(path)
    return file


def format_table(results: Sequence[Result]) -> str:
  """rank, score, path; one line per result."""
  return '\n'.join([f'{"rank":>4}  {"score":>7}  path'] + [f'{r.rank:>4}  {r.score:7.4f}  {r.path}' for r in results])


def answer_json(query: dict, results: Sequence[Result]) -> dict:
  """{"query": query, "results": [{"rank", "path", "score"}, ...]}."""
  return {'query': query, 'results': [dataclasses.asdict(result) for result in results]}


def read_queries(path: str) -> list[str]:
  """The sentences of a --queries file, one per line."""
  try:
    with open(path, encoding='utf-8') as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as error:
    raise ValueError(f'--queries={path}: cannot read it as UTF-8 text ({error})') from None
  for number, line in enumerate(lines):
    if not line.strip():
      raise ValueError(f'--queries={path}: line {number + 1} is empty; expected one sentence per line')
  if not lines:
    raise ValueError(f'--queries={path}: the file has no sentence')
  return lines


def read_query_image(path: str) -> bytes:
  """The bytes of a --image file, checked to be a decodable image."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
    images.model_bytes(data)
  except OSError as error:
    raise ValueError(f'--image={path}: cannot read it ({error.strerror})') from None
  except images.BadImageError as error:
    raise ValueError(f'--image={path}: {error}') from None
  return data
