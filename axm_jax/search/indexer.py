"""Builds or updates an index of a folder: embeds new and modified files (by size and mtime), drops deleted ones."""
import dataclasses
import os
from collections.abc import Callable

import numpy as np

from axm_jax.search import embed
from axm_jax.search import images
from axm_jax.search import store

SHARD_ROWS = 1 << 16


@dataclasses.dataclass(frozen=True)
class Report:
  indexed: int  # rows in the index afterwards
  embedded: int  # files embedded by this call
  unchanged: int
  deleted: int  # rows dropped because their file was deleted or modified
  skipped: list[tuple[str, str]]  # (path, reason) of files that are not decodable images


def index_folder(model: embed.Model, folder: str, index_dir: str, dtype: str = 'float32',
                 shard_rows: int = SHARD_ROWS,
                 on_skip: Callable[[str, str], None] = lambda path, reason: None) -> Report:
  """Embeds every image under `folder` into `index_dir`, reusing the rows of unchanged files of an existing index.

  An existing index must come from the same model and folder and have the same dtype. on_skip(path, reason) is
  called for every file that is not a decodable image; it is left out and the index is still written.
  """
  folder = os.path.abspath(folder)
  files = images.scan(folder)
  current = {file.path: file for file in files}
  kept_shards: list[store.Shard] = []
  writer = store.ShardWriter(index_dir, dtype, shard_rows)
  unchanged: set[str] = set()
  deleted = 0
  if store.exists(index_dir):
    previous = store.open_index(index_dir)
    _check_compatible(previous, model, folder, dtype)
    for shard, vectors in zip(previous.shards, previous.vectors()):
      keep = np.array([_unchanged(current.get(path), size, mtime)
                       for path, size, mtime in zip(shard.paths, shard.sizes, shard.mtimes_ns)], bool)
      unchanged.update(path for path, kept in zip(shard.paths, keep) if kept)
      deleted += int(np.sum(~keep))
      if keep.all():
        kept_shards.append(shard)
      elif keep.any():  # rewritten without the rows of deleted or modified files
        rows = np.flatnonzero(keep)
        writer.add(vectors[rows], [(shard.paths[r], shard.sizes[r], shard.mtimes_ns[r]) for r in rows])
  todo = [file for file in files if file.path not in unchanged]
  skipped: list[tuple[str, str]] = []

  def skip(item: int, reason: str) -> None:
    skipped.append((todo[item].path, reason))
    on_skip(todo[item].path, reason)

  embedded = 0
  for items, vectors in embed.embed_files(model, lambda item: images.read_image(os.path.join(folder, todo[item].path)),
                                          len(todo), skip):
    writer.add(vectors, [(todo[i].path, todo[i].size, todo[i].mtime_ns) for i in items])
    embedded += len(items)
  writer.flush()
  shards = kept_shards + writer.shards
  store.write_manifest(index_dir, shards, images=folder, workdir=model.workdir, checkpoint_step=model.step,
                       model_fingerprint=model.fingerprint, config=embed.config_dict(model), dtype=dtype,
                       embed_dim=embed.embedding_dim(model))
  return Report(indexed=sum(len(shard.paths) for shard in shards), embedded=embedded, unchanged=len(unchanged),
                deleted=deleted, skipped=skipped)


def check_model(index: store.Index, model: embed.Model) -> None:
  """Refuses a model other than the one that embedded the index."""
  if model.fingerprint != index.model_fingerprint:
    raise ValueError(f'--index={index.directory} was embedded by the model of {index.workdir} at step '
                     f'{index.checkpoint_step}; the model of {model.workdir} at step {model.step} is another model '
                     '(its embeddings are not comparable): use that run, or build a new index with this one')


def _check_compatible(index: store.Index, model: embed.Model, folder: str, dtype: str) -> None:
  check_model(index, model)
  if index.images != folder:
    raise ValueError(f'--index={index.directory} indexes {index.images}, not --images={folder}: use another --index')
  if index.dtype != dtype:
    raise ValueError(f'--dtype={dtype}: --index={index.directory} stores {index.dtype}; pass --dtype={index.dtype} '
                     'or use another --index')


def _unchanged(file: images.FileStat | None, size: int, mtime_ns: int) -> bool:
  return file is not None and file.size == size and file.mtime_ns == mtime_ns
