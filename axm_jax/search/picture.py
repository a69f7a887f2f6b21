"""A contact sheet of one query: its sentence and/or image, then the top-K images with rank, score and path."""
import io
import textwrap
from collections.abc import Sequence

from matplotlib import figure
import numpy as np
from PIL import Image
from PIL import ImageOps

from axm_jax.search import searcher as searcher_lib


def contact_sheet_png(results: Sequence[searcher_lib.Result], image_files: Sequence[str], text: str | None,
                      query_image: bytes | None) -> bytes:
  """PNG bytes: the query on the left (framed in grey), the results after it; image_files[i] shows results[i]."""
  columns = len(results) + 1
  fig = figure.Figure(figsize=(1.3 * columns, 3.4), layout='constrained')
  axes = fig.subplots(1, columns, squeeze=False)[0]
  query_axes = axes[0]
  query_axes.set_title('query', fontsize=8)
  if query_image is not None:
    query_axes.imshow(_load(io.BytesIO(query_image)))
    if text is not None:
      query_axes.set_xlabel(textwrap.fill(text, 22), fontsize=6)
  else:  # the sentence fills the panel
    query_axes.text(0.5, 0.5, textwrap.fill(text, 20), ha='center', va='center', fontsize=7, wrap=True,
                    transform=query_axes.transAxes)
  for ax, result, file in zip(axes[1:], results, image_files):
    ax.imshow(_load(file))
    ax.set_title(f'{result.rank}: {result.score:.3f}', fontsize=8)
    ax.set_xlabel(textwrap.fill(result.path, 18), fontsize=6)
  for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
  if query_image is None:
    for spine in query_axes.spines.values():
      spine.set_visible(False)
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=100)
  return buffer.getvalue()


def _load(file) -> np.ndarray:
  with Image.open(file) as image:
    return np.asarray(ImageOps.exif_transpose(image).convert('RGB'))
