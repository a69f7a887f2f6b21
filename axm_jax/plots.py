"""Pictures as PNG bytes: top-k retrievals with hits framed, CMC curves, curves over seeds (matplotlib, no pyplot)."""
from collections.abc import Mapping, Sequence
import dataclasses
import io
import textwrap

from matplotlib import figure
from matplotlib import gridspec
import numpy as np

HIT_COLOR = '#1a9850'
MISS_COLOR = '#d73027'


@dataclasses.dataclass(frozen=True)
class Retrieval:
  """One query's caption and its best-ranked gallery images, best first."""
  caption: str
  query_person_id: int
  images: Sequence[np.ndarray]  # uint8 [H, W, 3] each
  hits: Sequence[bool]  # same identity as the query
  person_ids: Sequence[int]  # of the gallery images


def retrievals_png(retrievals: Sequence[Retrieval], title: str) -> bytes:
  """One row per query: its wrapped caption above its top images, hits in green frames, misses in red."""
  if not retrievals:
    raise ValueError('retrievals_png needs at least one retrieval')
  columns = max(len(r.images) for r in retrievals)
  fig = figure.Figure(figsize=(1.3 * columns, 3.0 * len(retrievals)), layout='constrained')
  fig.suptitle(title)
  grid = gridspec.GridSpec(2 * len(retrievals), columns, figure=fig,
                           height_ratios=[0.3, 1.0] * len(retrievals))
  for row, retrieval in enumerate(retrievals):
    caption_axes = fig.add_subplot(grid[2 * row, :])
    caption_axes.axis('off')
    caption = textwrap.fill(f'[id {retrieval.query_person_id}] {retrieval.caption}', width=12 * columns)
    caption_axes.text(0.0, 0.5, caption, va='center', fontsize=8, transform=caption_axes.transAxes)
    for column, (image, hit, person_id) in enumerate(
        zip(retrieval.images, retrieval.hits, retrieval.person_ids)):
      _draw_framed(fig.add_subplot(grid[2 * row + 1, column]), image, hit, f'{column + 1}: id {person_id}')
  return _png(fig)


def cmc_png(curves: Mapping[str, np.ndarray], title: str) -> bytes:
  """CMC curves (R@K in percent against K = 1..len) of several protocols on one axes."""
  if not curves:
    raise ValueError('cmc_png needs at least one curve')
  fig = figure.Figure(figsize=(6, 4), layout='constrained')
  axes = fig.add_subplot()
  for name, curve in curves.items():
    axes.plot(np.arange(1, len(curve) + 1), curve, marker='o', markersize=3, label=name)
  axes.set_xlabel('rank K')
  axes.set_ylabel('R@K (%)')
  max_rank = max(len(c) for c in curves.values())
  axes.set_xticks([1, *range(5, max_rank + 1, 5)])
  axes.set_ylim(0, 100)
  axes.grid(alpha=0.3)
  axes.legend(loc='lower right')
  axes.set_title(title)
  return _png(fig)


@dataclasses.dataclass(frozen=True)
class Band:
  """A curve over several runs: the mean and the range of the runs at each x."""
  steps: np.ndarray
  mean: np.ndarray
  low: np.ndarray
  high: np.ndarray


def bands_png(bands: Mapping[str, Band], title: str, xlabel: str, ylabel: str) -> bytes:
  """One mean line per name, its range shaded."""
  if not bands:
    raise ValueError('bands_png needs at least one band')
  fig = figure.Figure(figsize=(6, 4), layout='constrained')
  axes = fig.add_subplot()
  for name, band in bands.items():
    line, = axes.plot(band.steps, band.mean, marker='o', markersize=3, label=name)
    axes.fill_between(band.steps, band.low, band.high, color=line.get_color(), alpha=0.2)
  axes.set_xlabel(xlabel)
  axes.set_ylabel(ylabel)
  axes.grid(alpha=0.3)
  axes.legend(loc='lower right')
  axes.set_title(title)
  return _png(fig)


def _draw_framed(axes, image: np.ndarray, hit: bool, label: str) -> None:
  axes.imshow(image)
  axes.set_xticks([])
  axes.set_yticks([])
  for spine in axes.spines.values():
    spine.set_edgecolor(HIT_COLOR if hit else MISS_COLOR)
    spine.set_linewidth(4)
  axes.set_xlabel(label, fontsize=7)


def _png(fig: figure.Figure) -> bytes:
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=100)
  return buffer.getvalue()
