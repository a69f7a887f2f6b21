"""An index on disk: embedding shards (.npy, memory-mapped when read) and a JSON manifest.

  INDEX/manifest.json        model, folder, dtype and the list of shards
  INDEX/<shard>.npy          float16 or float32 [rows, embed_dim], L2-normalised image embeddings
  INDEX/<shard>.files.json   {"paths": [...], "sizes": [...], "mtimes_ns": [...]}: row i's file, relative to the folder

A shard is never changed once written: an update writes new shards, then the manifest (atomically, by rename),
then deletes the files no manifest names any more, so an interrupted update leaves the previous index intact.
"""
import dataclasses
import json
import os
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

MANIFEST_FILE = 'manifest.json'
FORMAT = 'axm_jax.search/1'
DTYPES = ('float32', 'float16')


@dataclasses.dataclass(frozen=True)
class Shard:
  name: str
  paths: list[str]
  sizes: list[int]
  mtimes_ns: list[int]


@dataclasses.dataclass(frozen=True)
class Index:
  """An opened index: the manifest's fields and the shards, whose vectors are memory-mapped on demand."""
  directory: str
  images: str  # absolute path of the indexed folder
  workdir: str  # the run whose model embedded it
  checkpoint_step: int
  model_fingerprint: str
  config: dict[str, Any]  # the run's config
  dtype: str
  embed_dim: int
  shards: tuple[Shard, ...]

  def vectors(self) -> list[np.ndarray]:
    """Each shard's embeddings, memory-mapped read-only."""
    return [np.load(os.path.join(self.directory, shard.name + '.npy'), mmap_mode='r') for shard in self.shards]

  def paths(self) -> list[str]:
    """Every row's path in gallery order (shard after shard)."""
    return [path for shard in self.shards for path in shard.paths]

  def __len__(self) -> int:
    return sum(len(shard.paths) for shard in self.shards)


def exists(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, MANIFEST_FILE))


def open_index(directory: str) -> Index:
  """Reads INDEX/manifest.json and the shards' file lists."""
  path = os.path.join(directory, MANIFEST_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--index={directory}: no index there ({MANIFEST_FILE} not found); build one with '
                            '`python -m axm_jax.search index`')
  with open(path) as f:
    manifest = json.load(f)
  if manifest.get('format') != FORMAT:
    raise ValueError(f'{path}: format {manifest.get("format")!r}, expected {FORMAT!r}')
  shards = []
  for name in manifest['shards']:
    with open(os.path.join(directory, name + '.files.json')) as f:
      files = json.load(f)
    shards.append(Shard(name, files['paths'], files['sizes'], files['mtimes_ns']))
  return Index(directory=directory, images=manifest['images'], workdir=manifest['workdir'],
               checkpoint_step=manifest['checkpoint_step'], model_fingerprint=manifest['model_fingerprint'],
               config=manifest['config'], dtype=manifest['dtype'], embed_dim=manifest['embed_dim'],
               shards=tuple(shards))


class ShardWriter:
  """Writes rows into new shards of at most `shard_rows` rows each, in the index's dtype."""

  def __init__(self, directory: str, dtype: str, shard_rows: int):
    if dtype not in DTYPES:
      raise ValueError(f'--dtype={dtype}: expected one of {", ".join(DTYPES)}')
    if shard_rows < 1:
      raise ValueError(f'--shard_rows={shard_rows}: expected a positive number of rows')
    self._directory, self._dtype, self._shard_rows = directory, np.dtype(dtype), shard_rows
    self._vectors: list[np.ndarray] = []
    self._files: list[tuple[str, int, int]] = []
    self._pending = 0
    self.shards: list[Shard] = []
    os.makedirs(directory, exist_ok=True)

  def add(self, vectors: np.ndarray, files: Sequence[tuple[str, int, int]]) -> None:
    """Appends rows: vectors [n, E] and (path, size, mtime_ns) per row."""
    start = 0
    while start < len(files):
      take = min(self._shard_rows - self._pending, len(files) - start)
      self._vectors.append(np.asarray(vectors[start:start + take], self._dtype))
      self._files.extend(files[start:start + take])
      self._pending += take
      start += take
      if self._pending == self._shard_rows:
        self.flush()

  def flush(self) -> None:
    """Writes the pending rows as one shard."""
    if not self._pending:
      return
    name = f'shard-{uuid.uuid4().hex[:12]}'
    np.save(os.path.join(self._directory, name + '.npy'), np.concatenate(self._vectors))
    paths, sizes, mtimes = (list(column) for column in zip(*self._files))
    _write_json(os.path.join(self._directory, name + '.files.json'),
                {'paths': paths, 'sizes': sizes, 'mtimes_ns': mtimes})
    self.shards.append(Shard(name, paths, sizes, mtimes))
    self._vectors, self._files, self._pending = [], [], 0


def write_manifest(directory: str, shards: Sequence[Shard], *, images: str, workdir: str, checkpoint_step: int,
                   model_fingerprint: str, config: dict[str, Any], dtype: str, embed_dim: int) -> None:
  """Replaces the manifest atomically, then deletes shard files it no longer names."""
  _write_json(os.path.join(directory, MANIFEST_FILE), {
      'format': FORMAT, 'images': images, 'workdir': workdir, 'checkpoint_step': checkpoint_step,
      'model_fingerprint': model_fingerprint, 'dtype': dtype, 'embed_dim': embed_dim,
      'shards': [shard.name for shard in shards], 'config': config})
  names = {shard.name for shard in shards}
  for file in os.listdir(directory):
    if file.startswith('shard-') and file.split('.')[0] not in names:
      os.remove(os.path.join(directory, file))


def _write_json(path: str, content: Any) -> None:
  temporary = f'{path}.tmp-{uuid.uuid4().hex[:8]}'
  with open(temporary, 'w') as f:
    json.dump(content, f)
  os.replace(temporary, path)
