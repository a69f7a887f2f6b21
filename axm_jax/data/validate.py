"""python -m axm_jax.data.validate --dataset=cuhk_pedes --root=DIR [--data_dir=TFDS_DATA_DIR]

Checks a downloaded dataset directory (axm_jax.data.annotations.inspect: every problem in one pass) and exits with
status 1 when any is fatal; otherwise prints per-split counts. With --data_dir, a directory without fatal problems
is also built into a TFDS dataset there (otherwise the first training run builds it).
"""
import os
from collections.abc import Sequence

from absl import app
from absl import flags

from axm_jax import cli
from axm_jax.data import annotations
from axm_jax.data import cameras


def summary(report: annotations.Report) -> str:
  """Per-split table: identities, images, captions, images with a known camera, distinct cameras."""
  lines = [f'{report.layout.title} in {report.root} ({os.path.basename(report.json_path)})']
  if report.layout.val_identities:
    val_ids = sorted({record.person_id for record in report.splits['val']})
    lines.append(f'val = the {len(val_ids)} largest train person ids ({val_ids[0]}..{val_ids[-1]}), '
                 'removed from train')
  lines.append(f'{"split":<6}{"ids":>8}{"images":>9}{"captions":>10}{"camera known":>14}{"cameras":>9}')
  for split, records in report.splits.items():
    counts = annotations.split_counts(records)
    known = [record.camera_id for record in records if record.camera_id != cameras.UNKNOWN]
    lines.append(f'{split:<6}{counts.ids:>8}{counts.images:>9}{counts.captions:>10}{len(known):>14}'
                 f'{len(set(known)):>9}')
  return '\n'.join(lines)


def build(dataset: str, root: str, data_dir: str) -> str:
  """Builds TFDS dataset `dataset` from directory `root` into `data_dir` ('' = TFDS default); returns its path."""
  # Imported here so that checking a directory needs no TensorFlow.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from axm_jax.data import pedes  # pylint: disable=g-import-not-at-top

  builder = pedes.BUILDERS[dataset](data_dir=data_dir or None)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=root))
  return os.fspath(builder.data_dir)


def check(dataset: str, root: str, data_dir: str | None = None) -> int:
  """Prints every problem of `root` and, when none is fatal, the summary (then builds into `data_dir` if given).

  Returns the exit status: 1 when a problem is fatal, else 0.
  """
  report = annotations.inspect(dataset, root)
  for error in report.errors:
    print(f'ERROR: {error}')
  for warning in report.warnings:
    print(f'WARNING: {warning}')
  if report.errors:
    print(f'{len(report.errors)} error(s), {len(report.warnings)} warning(s): {dataset} cannot be built from {root}')
    return 1
  print(summary(report))
  if data_dir is not None:
    print(f'built {build(dataset, root, data_dir)}')
  return 0


def define_flags() -> None:
  """The command's flags (its __main__ block defines them)."""
  flags.DEFINE_enum('dataset', None, sorted(annotations.LAYOUTS), 'Dataset layout.', required=True)
  flags.DEFINE_string('root', None, 'Directory holding imgs/ and the annotation file.', required=True)
  flags.DEFINE_string('data_dir', None, "When given and nothing is fatal, also build the TFDS dataset there "
                      "('' = TFDS default, ~/tensorflow_datasets).")


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  return check(flags.FLAGS.dataset, flags.FLAGS.root, flags.FLAGS.data_dir)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
