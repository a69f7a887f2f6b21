"""Writes a contact sheet of a split's images with their captions.

  python -m axm_jax.data.sample_sheet --out=FILE.png [--config=default --split=train --count=12]
"""
import io
import textwrap

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
import PIL.Image
from absl import flags

from axm_jax import cli
from axm_jax import config_files
from axm_jax.data import pipeline

FLAGS = flags.FLAGS
CAPTION_WIDTH = 34  # characters per caption line


def define_flags() -> None:
  """The command's flags (its __main__ block defines them)."""
  flags.DEFINE_string('out', None, 'PNG file to write.', required=True)
  flags.DEFINE_string('dataset', 'synth_pedes', 'config.data.name.')
  flags.DEFINE_string('config', 'default', 'SynthPedes builder config (config.data.builder_config).')
  flags.DEFINE_string('split', 'train', 'Split to sample.')
  flags.DEFINE_integer('count', 12, 'Images on the sheet, evenly spaced over the split.')
  flags.DEFINE_integer('columns', 6, 'Images per row.')
  flags.DEFINE_string('data_dir', '', "TFDS data dir ('' = TFDS default).")
  flags.DEFINE_string('manual_dir', '', 'Real datasets: the downloaded directory.')


def write_sheet(split: pipeline.SplitData, indices: np.ndarray, path: str, columns: int) -> None:
  """Draws split images `indices` with person id, camera, key and captions, and saves the figure to `path`."""
  rows = -(-len(indices) // columns)
  figure = plt.figure(figsize=(2.3 * columns, 5.6 * rows))
  grid = figure.add_gridspec(2 * rows, columns, height_ratios=[3.4, 1.7] * rows, left=0.01, right=0.99,
                             top=0.965, bottom=0.0, wspace=0.08, hspace=0.12)
  for position, index in enumerate(indices):
    row, column = divmod(position, columns)
    image_axis = figure.add_subplot(grid[2 * row, column])
    text_axis = figure.add_subplot(grid[2 * row + 1, column])
    image_axis.axis('off')
    text_axis.axis('off')
    image = np.asarray(PIL.Image.open(io.BytesIO(split.images[index])).convert('RGB'))
    image_axis.imshow(image)
    image_axis.set_title(f'id {split.person_ids[index]}  cam {split.camera_ids[index]}\n{split.image_keys[index]}',
                         fontsize=7)
    text = '\n\n'.join(textwrap.fill(caption, CAPTION_WIDTH) for caption in split.captions[index])
    text_axis.text(0.5, 1.0, text, ha='center', va='top', fontsize=6.5)
  figure.savefig(path, dpi=110)
  plt.close(figure)


def main(argv) -> None:
  del argv
  data_config = config_files.load_config('configs/synthetic.py').data
  data_config.name = FLAGS.dataset
  data_config.builder_config = FLAGS.config
  data_config.data_dir = FLAGS.data_dir
  data_config.manual_dir = FLAGS.manual_dir
  split = pipeline.load_split(data_config, FLAGS.split)
  count = min(FLAGS.count, len(split.images))
  indices = np.unique(np.linspace(0, len(split.images) - 1, count).round().astype(int))
  write_sheet(split, indices, FLAGS.out, FLAGS.columns)
  print(f'wrote {FLAGS.out}: {len(indices)} images of {data_config.name}/{FLAGS.split}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
