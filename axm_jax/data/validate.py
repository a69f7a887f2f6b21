"""python -m axm_jax.data.validate --dataset=cuhk_pedes --root=DIR [--data_dir=TFDS_DATA_DIR]

Checks a downloaded dataset directory (axm_jax.data.annotations.inspect: every problem in one pass) and exits with
status 1 when any is fatal; otherwise prints per-split counts. With --data_dir, a directory without fatal problems
is also built into a TFDS dataset there (otherwise the first training run builds it).
"""
import argparse
import os
import sys
from typing import Sequence

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


def main(argv: Sequence[str] | None = None) -> int:
  """Command line entry point; returns the exit status."""
  parser = argparse.ArgumentParser(description='Checks a downloaded dataset directory.')
  parser.add_argument('--dataset', required=True, choices=sorted(annotations.LAYOUTS))
  parser.add_argument('--root', required=True, help='directory holding imgs/ and the annotation file')
  parser.add_argument('--data_dir', help="when given and nothing is fatal, also build the TFDS dataset there "
                      "('' = TFDS default, ~/tensorflow_datasets)")
  args = parser.parse_args(argv)
  report = annotations.inspect(args.dataset, args.root)
  for error in report.errors:
    print(f'ERROR: {error}')
  for warning in report.warnings:
    print(f'WARNING: {warning}')
  if report.errors:
    print(f'{len(report.errors)} error(s), {len(report.warnings)} warning(s): {args.dataset} cannot be built '
          f'from {args.root}')
    return 1
  print(summary(report))
  if args.data_dir is not None:
    print(f'built {build(args.dataset, args.root, args.data_dir)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
