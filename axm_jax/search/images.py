"""Image files: finding them under a folder, and reading one into bytes the evaluation's decoder reads as PIL does.

The evaluation decodes PNG and JPEG bytes with TF (axm_jax.data.pipeline.eval_image_preprocessing). Files that it
would read differently from what a viewer shows (EXIF-rotated, CMYK JPEG, BMP, WebP, ...) are decoded by PIL,
rotated upright and passed on as lossless RGB PNG; everything else is passed on unchanged.
"""
import dataclasses
import io
import os

from PIL import ExifTags
from PIL import Image
from PIL import ImageOps

EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')
_TF_NATIVE_MODES = {'PNG': None, 'JPEG': ('RGB', 'L')}  # None: every mode


class BadImageError(ValueError):
  """A file that is not a decodable image."""


@dataclasses.dataclass(frozen=True)
class FileStat:
  path: str  # relative to the folder, '/'-separated
  size: int
  mtime_ns: int


def scan(folder: str) -> list[FileStat]:
  """Every file under `folder` (recursively, symlinked folders not followed) with an image extension, sorted."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'--images={folder}: not a directory')
  found = []
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    for name in sorted(files):
      if os.path.splitext(name)[1].lower() in EXTENSIONS:
        full = os.path.join(root, name)
        stat = os.stat(full)
        found.append(FileStat(os.path.relpath(full, folder).replace(os.sep, '/'), stat.st_size, stat.st_mtime_ns))
  return found


def read_image(path: str) -> bytes:
  """The bytes to hand to the evaluation's preprocessing; BadImageError naming the reason when undecodable."""
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as error:
    raise BadImageError(f'cannot read it ({error.strerror})') from error
  return model_bytes(data)


def model_bytes(data: bytes) -> bytes:
  """`data` itself when TF decodes it as PIL does, else PIL's upright RGB image as PNG; BadImageError if undecodable."""
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()
      orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
      modes = _TF_NATIVE_MODES.get(image.format, ())
      if orientation == 1 and (modes is None or image.mode in modes) and not getattr(image, 'is_animated', False):
        return data
      upright = ImageOps.exif_transpose(image).convert('RGB')
  except Image.UnidentifiedImageError as error:
    raise BadImageError('not an image (no known image format)') from error
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
    raise BadImageError(f'not a decodable image ({error})') from error
  buffer = io.BytesIO()
  upright.save(buffer, format='PNG', compress_level=1)
  return buffer.getvalue()
