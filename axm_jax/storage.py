"""The one path layer: every file a run reads or writes, on a local disk or in Cloud Storage (`gs://`).

Paths are etils.epath paths, as in orbax. URIs go through fsspec (gcsfs for `gs://`), never TensorFlow's own GCS
client: gcsfs honours STORAGE_EMULATOR_HOST and the default credentials of a TPU VM, and TF's client cannot be
pointed at an emulator. Local paths are made absolute (orbax needs absolute paths).
"""
import contextlib
import os
import uuid

os.environ['EPATH_USE_TF'] = 'false'  # read by epath at each call: URIs through fsspec, not tf.io.gfile

from etils import epath  # pylint: disable=g-import-not-at-top,wrong-import-position
import fsspec  # pylint: disable=g-import-not-at-top,wrong-import-position

# Without a listings cache: tensorstore (orbax's arrays) and other hosts write to the same bucket behind gcsfs's
# back, and a cached listing would hide their objects.
for _protocol in ('gs', 'gcs'):
  fsspec.config.conf.setdefault(_protocol, {})['use_listings_cache'] = False

Path = epath.Path
OS_REASONS = ('No space left on device', 'Disk quota exceeded', 'Read-only file system', 'Permission denied')
# Stores where create_new is exclusive; elsewhere it is check-then-write (stated in the README).
EXCLUSIVE_CREATE_SCHEMES = ('gs',)


class StorageError(OSError):
  """A path cannot be written (read-only, full, no permission, store unreachable)."""


def path(location: str | os.PathLike) -> epath.Path:
  """A run path: a URI (`gs://bucket/dir`) as it is, a local path made absolute."""
  text = os.fspath(location)
  return epath.Path(text if is_remote(text) else os.path.abspath(text))


def is_remote(location: str | os.PathLike) -> bool:
  return '://' in os.fspath(location)


def scheme(location: str | os.PathLike) -> str:
  """'gs' for gs://..., '' for a local path."""
  text = os.fspath(location)
  return text.split('://', 1)[0] if is_remote(text) else ''


def describe_error(error: BaseException) -> str:
  """The operating system's reason when the message carries one, else the message's first line."""
  text = str(error).strip() or type(error).__name__
  for reason in OS_REASONS:
    if reason in text:
      return reason
  return text.splitlines()[0][:300]


def atomic_write(target: epath.Path, data: str | bytes) -> None:
  """Writes `target` so that it is either old or new, never cut.

  Local files go through a temporary file of this writer's own and a rename, so that writers of the same file
  (e.g. two processes storing one compiled program) never mix their bytes; an object store's upload is atomic by itself.
  """
  payload = data.encode() if isinstance(data, str) else data
  temporary = target.parent / f'{target.name}.tmp-{uuid.uuid4().hex[:8]}'
  try:
    if is_remote(target):
      target.write_bytes(payload)
      return
    temporary.write_bytes(payload)
    temporary.replace(target)
  except Exception as error:  # pylint: disable=broad-except  (fsspec stores raise more than OSError)
    if not is_remote(target):
      with contextlib.suppress(OSError):
        temporary.unlink()
    raise StorageError(f'cannot write {target}: {describe_error(error)}. Files written earlier are unchanged; free '
                       'space or fix the permissions and rerun the same command.') from error


def create_new(target: epath.Path, data: str) -> bool:
  """Writes `target` only when it does not exist; False when it does.

  Exclusive on a local disk (O_EXCL) and in Cloud Storage (the upload's ifGenerationMatch=0 precondition); other
  object stores have no such precondition, and there it is a check followed by a write.
  """
  try:
    if not is_remote(target):
      with open(os.fspath(target), 'x', encoding='utf-8') as file:  # epath's open has no exclusive mode
        file.write(data)
    elif scheme(target) in EXCLUSIVE_CREATE_SCHEMES:
      filesystem, object_path = fsspec.core.url_to_fs(os.fspath(target))
      filesystem.pipe_file(object_path, data.encode(), mode='create')
    elif target.exists():
      return False
    else:
      target.write_text(data)
  except FileExistsError:
    return False
  except Exception as error:  # pylint: disable=broad-except  (fsspec stores raise more than OSError)
    raise StorageError(f'cannot write {target}: {describe_error(error)}.') from error
  return True


def remove(target: epath.Path) -> None:
  """Removes a file; a file that is already gone is fine."""
  with contextlib.suppress(FileNotFoundError):
    target.unlink()


def move_tree(source: epath.Path, target: epath.Path) -> None:
  """Moves a directory: a rename on a local disk, copies and deletes in an object store (no directories there)."""
  if is_remote(source):
    filesystem, source_path = fsspec.core.url_to_fs(os.fspath(source))
    filesystem.mv(source_path, fsspec.core.url_to_fs(os.fspath(target))[1], recursive=True)
    return
  target.parent.mkdir(parents=True, exist_ok=True)
  source.rename(target)


def ensure_writable(directory: epath.Path) -> None:
  """Creates `directory` and proves it takes a file, or raises a StorageError naming it."""
  probe = directory / '.write_probe'
  try:
    directory.mkdir(parents=True, exist_ok=True)
    probe.write_text('ok')
    probe.unlink()
  except Exception as error:  # pylint: disable=broad-except  (fsspec stores raise more than OSError)
    raise StorageError(f'cannot write to the workdir {directory}: {describe_error(error)}. Pass a writable '
                       '--workdir, or free space / fix its permissions.') from error
