"""Annotation files of the real datasets: layouts, one-pass checks of a directory, and its records.

`inspect` lists every problem in one pass (missing or undecodable images, records without a caption that is
non-empty after whitespace normalisation, an image file given to two identities or splits, identities in two
splits, a missing or misnamed annotation file, bad fields, paths that leave imgs/). Warnings (not fatal): split
counts that differ from the published ones, an empty caption next to non-empty ones (dropped), an image file
repeated with the same id and split (its captions merged into one image). Two records name the same image file
when their paths resolve (through symlinks and hard links) to one file. Every message about a record names it by
its 0-based position in the annotation file's list and by its image path. The directory must be on a local
filesystem (symlinks are resolved to keep every image inside imgs/). The validator (validate.py) and the TFDS
builders (pedes.py) both read directories through this module.
"""
import collections
import concurrent.futures
import dataclasses
import json
import os
import posixpath
import re
from typing import Any, Sequence

from PIL import Image

from axm_jax.data import cameras

IMAGE_FOLDER = 'imgs'
ICFG_VAL_IDENTITIES = 100


@dataclasses.dataclass(frozen=True)
class SplitCounts:
  ids: int
  images: int
  captions: int


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where a dataset keeps its annotations and what they hold."""
  name: str
  title: str
  json_names: tuple[str, ...]  # accepted annotation file names, the first preferred
  path_field: str  # record field holding the image path relative to imgs/
  splits: tuple[str, ...]  # split values in the annotation file
  published: dict[str, SplitCounts]
  val_identities: int = 0  # > 0: a 'val' split of that many identities is carved out of 'train'


LAYOUTS = {
    'cuhk_pedes': Layout(
        name='cuhk_pedes', title='CUHK-PEDES', json_names=('reid_raw.json',), path_field='file_path',
        splits=('train', 'val', 'test'),
        published={'train': SplitCounts(11_003, 34_054, 68_126), 'val': SplitCounts(1_000, 3_078, 6_158),
                   'test': SplitCounts(1_000, 3_074, 6_156)}),
    'icfg_pedes': Layout(
        name='icfg_pedes', title='ICFG-PEDES', json_names=('ICFG-PEDES.json', 'ICFG_PEDES.json'),
        path_field='file_path', splits=('train', 'test'),
        published={'train': SplitCounts(3_102, 34_674, 34_674), 'test': SplitCounts(1_000, 19_848, 19_848)},
        val_identities=ICFG_VAL_IDENTITIES),
    'rstpreid': Layout(
        name='rstpreid', title='RSTPReid', json_names=('data_captions.json',), path_field='img_path',
        splits=('train', 'val', 'test'),
        published={'train': SplitCounts(3_701, 18_505, 37_010), 'val': SplitCounts(200, 1_000, 2_000),
                   'test': SplitCounts(200, 1_000, 2_000)}),
}


@dataclasses.dataclass(frozen=True)
class Record:
  """One image of the dataset with its normalised captions."""
  index: int  # position in the annotation file's list
  person_id: int
  split: str
  image_key: str  # normalised path relative to imgs/
  captions: tuple[str, ...]
  camera_id: int


@dataclasses.dataclass
class Report:
  """The outcome of `inspect`: problems, and the records by output split when there is no error."""
  layout: Layout
  root: str
  json_path: str | None = None
  errors: list[str] = dataclasses.field(default_factory=list)
  warnings: list[str] = dataclasses.field(default_factory=list)
  splits: dict[str, list[Record]] = dataclasses.field(default_factory=dict)

  def raise_if_fatal(self) -> None:
    """Raises DatasetError listing every error, if there is any."""
    if self.errors:
      lines = '\n'.join(f'  {error}' for error in self.errors)
      raise DatasetError(f'{self.layout.name}: {len(self.errors)} problem(s) in {self.root}:\n{lines}')


class DatasetError(ValueError):
  """A dataset directory that cannot be built."""


def _json_type(value: Any) -> str:
  """The JSON name of a parsed value's type."""
  if isinstance(value, bool):
    return 'boolean'
  names = {dict: 'object', list: 'array', str: 'string', int: 'number', float: 'number', type(None): 'null'}
  return names[type(value)]


def _found(value: Any) -> str:
  return f'{_json_type(value)} {json.dumps(value, ensure_ascii=False)}'


def _find_annotations(layout: Layout, root: str, errors: list[str]) -> str | None:
  """Path of the annotation file in root, or None with an error saying what was expected."""
  present = [name for name in layout.json_names if os.path.isfile(os.path.join(root, name))]
  if len(present) > 1:
    errors.append(f'found both {" and ".join(present)} in {root}; keep one')
    return None
  if present:
    return os.path.join(root, present[0])
  message = f'expected {" or ".join(layout.json_names)} in {root}'
  others = sorted(name for name in os.listdir(root) if name.lower().endswith('.json'))
  if others:
    message += f' (found {", ".join(others)})'
  errors.append(message)
  return None


def _path_problem(path: str) -> str | None:
  """Why an image path from the annotations is refused, or None."""
  if path.startswith(('/', '\\')) or re.match(r'[A-Za-z]:', path):
    return 'is absolute'
  if '..' in re.split(r'[\\/]', path):
    return f'leaves {IMAGE_FOLDER}/'
  if '\0' in path:
    return 'contains a NUL character'
  return None


def _parse_record(layout: Layout, index: int, raw: Any, problems: list[str],
                  warnings: list[str]) -> Record | None:
  """The record at `index`, or None after appending what is wrong with it to `problems` (empty on entry)."""
  if not isinstance(raw, dict):
    problems.append(f'record {index}: expected an object, found {_json_type(raw)}')
    return None
  path = raw.get(layout.path_field)
  named = f'{layout.path_field} {path!r}, ' if isinstance(path, str) and path else ''
  label = f'record {index}' + (f' ({named[:-2]})' if named else '')
  person_id = raw.get('id')
  if 'id' not in raw:
    problems.append(f'{label}: missing field \'id\'')
  elif not isinstance(person_id, int) or isinstance(person_id, bool):
    problems.append(f'{label}: field \'id\' must be an integer, found {_found(person_id)}')
  elif person_id < 0:
    problems.append(f'{label}: field \'id\' must be >= 0, found {person_id}')
  else:
    label = f'record {index} ({named}id {person_id})'

  split = raw.get('split')
  if 'split' not in raw:
    problems.append(f'{label}: missing field \'split\'')
  elif split not in layout.splits:
    expected = ' or '.join([', '.join(layout.splits[:-1]), layout.splits[-1]])
    problems.append(f'{label}: unknown split {json.dumps(split, ensure_ascii=False)} (expected {expected})')

  if layout.path_field not in raw:
    problems.append(f'{label}: missing field \'{layout.path_field}\'')
  elif not isinstance(path, str) or not path:
    problems.append(f'{label}: field \'{layout.path_field}\' must be a non-empty string, found {_found(path)}')
  elif reason := _path_problem(path):
    problems.append(f'{label}: path {path!r} {reason}')

  captions = _parse_captions(raw, label, problems, warnings)
  if problems:
    return None
  image_key = posixpath.normpath(path)
  return Record(index=index, person_id=person_id, split=split, image_key=image_key, captions=captions,
                camera_id=cameras.camera_id(image_key))


def _parse_captions(raw: dict, label: str, problems: list[str], warnings: list[str]) -> tuple[str, ...]:
  """Whitespace-normalised non-empty captions; empty ones are dropped with a warning."""
  captions = raw.get('captions')
  if 'captions' not in raw:
    problems.append(f'{label}: missing field \'captions\'')
    return ()
  if not isinstance(captions, list):
    problems.append(f'{label}: field \'captions\' must be a list of strings, found {_json_type(captions)}')
    return ()
  kept = []
  for number, caption in enumerate(captions):
    if not isinstance(caption, str):
      problems.append(f'{label}: caption {number} must be a string, found {_found(caption)}')
    elif normalised := ' '.join(caption.split()):
      kept.append(normalised)
    else:
      warnings.append(f'{label}: caption {number} is empty; dropped')
  if not kept and all(isinstance(caption, str) for caption in captions):
    problems.append(f'{label}: no non-empty caption')
  return tuple(kept)


def record_label(record: Record, path_field: str) -> str:
  """How messages name a record: its position in the annotation list, its image path and its id."""
  return f'record {record.index} ({path_field} {record.image_key!r}, id {record.person_id})'


def _image_problem(image_root: str, record: Record, path_field: str) -> str | None:
  """What is wrong with a record's image file, or None."""
  label = record_label(record, path_field)
  path = os.path.join(image_root, record.image_key)
  real_root = os.path.realpath(image_root)
  if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
    return f'{label}: path {record.image_key!r} resolves outside {IMAGE_FOLDER}/'
  if not os.path.isfile(path):
    return f'{label}: image {IMAGE_FOLDER}/{record.image_key} not found'
  try:
    with Image.open(path) as image:
      image.load()
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
    return f'{label}: image {IMAGE_FOLDER}/{record.image_key} cannot be decoded: {exc}'
  return None


def _image_file(image_root: str, record: Record) -> tuple[int, int] | str:
  """What tells one image file from another: (device, inode) through symlinks and hard links, else the path."""
  try:
    status = os.stat(os.path.join(image_root, record.image_key))
  except OSError:
    return record.image_key
  return status.st_dev, status.st_ino


def _merge_duplicates(records: Sequence[Record], image_files: Sequence[tuple[int, int] | str],
                      path_field: str) -> tuple[list[Record], dict[int, str], list[str]]:
  """One record per image file: (records, errors by record index, warnings).

  A file repeated with the same id and split adds its captions to the first record (a warning; ICFG-PEDES has
  such a repeat); a file repeated with another id or split is an error.
  """
  by_file, errors, warnings = {}, {}, []
  for record, image_file in zip(records, image_files):
    earlier = by_file.get(image_file)
    if earlier is None:
      by_file[image_file] = record
      continue
    message = (f'{record_label(record, path_field)}: the same image file as {record_label(earlier, path_field)}, '
               f'split {earlier.split}')
    if (earlier.person_id, earlier.split) == (record.person_id, record.split):
      by_file[image_file] = dataclasses.replace(earlier, captions=tuple(dict.fromkeys(earlier.captions +
                                                                                      record.captions)))
      warnings.append(f'{message}; captions merged')
    else:
      errors[record.index] = message
  return list(by_file.values()), errors, warnings


def _split_problems(layout: Layout, records: Sequence[Record]) -> list[str]:
  """Empty splits and identities that appear in more than one split."""
  problems = []
  by_split = collections.Counter(record.split for record in records)
  problems += [f'no records in split \'{split}\'' for split in layout.splits if not by_split[split]]
  records_of = collections.defaultdict(list)
  for record in records:
    records_of[record.person_id].append(record)
  for person_id, person_records in sorted(records_of.items()):
    splits = [split for split in layout.splits if any(record.split == split for record in person_records)]
    if len(splits) > 1:
      listed = ', '.join(f'{record.index} ({layout.path_field} {record.image_key!r}, split {record.split})'
                         for record in person_records)
      problems.append(f'person {person_id} appears in splits {", ".join(splits[:-1])} and {splits[-1]} '
                      f'(records {listed})')
  return problems


def split_counts(records: Sequence[Record]) -> SplitCounts:
  """Identities, images and captions of some records."""
  return SplitCounts(ids=len({record.person_id for record in records}), images=len(records),
                     captions=sum(len(record.captions) for record in records))


def _count_warnings(layout: Layout, by_split: dict[str, list[Record]]) -> list[str]:
  """Warnings for annotation-file splits whose counts differ from the published ones."""
  warnings = []
  for split in layout.splits:
    counts, published = split_counts(by_split[split]), layout.published[split]
    if counts != published:
      warnings.append(
          f'split \'{split}\' has {counts.ids:,} ids / {counts.images:,} images / {counts.captions:,} captions; '
          f'published {layout.title}: {published.ids:,} / {published.images:,} / {published.captions:,}')
  return warnings


def carve_val_split(train: Sequence[Record], val_identities: int) -> tuple[list[Record], list[Record]]:
  """(train, val): val holds the images of the `val_identities` largest person ids of train."""
  if val_identities < 1:
    raise ValueError(f'val_identities must be >= 1, found {val_identities}')
  person_ids = sorted({record.person_id for record in train})
  if len(person_ids) <= val_identities:
    raise DatasetError(f'train has {len(person_ids)} identities; carving a val split of {val_identities} '
                       'identities needs more')
  val_ids = set(person_ids[-val_identities:])
  return ([record for record in train if record.person_id not in val_ids],
          [record for record in train if record.person_id in val_ids])


def _load_annotations(report: Report) -> list | None:
  """The annotation file's list of records, or None after recording why it cannot be read."""
  try:
    with open(report.json_path, encoding='utf-8') as file:
      data = json.load(file)
  except (json.JSONDecodeError, UnicodeDecodeError) as exc:
    report.errors.append(f'{report.json_path} is not valid JSON: {exc}')
    return None
  if not isinstance(data, list):
    report.errors.append(f'{report.json_path} must hold a list of records, found {_json_type(data)}')
    return None
  return data


def inspect(dataset: str, root: str | os.PathLike) -> Report:
  """Checks dataset directory `root` and reads its records (see the module docstring).

  Args:
    dataset: a key of LAYOUTS.
    root: the directory holding imgs/ and the annotation file.
  Returns:
    A Report; `splits` holds the records by output split (train, val, test) when `errors` is empty.
  """
  if dataset not in LAYOUTS:
    raise ValueError(f'unknown dataset {dataset!r}; expected one of {", ".join(LAYOUTS)}')
  layout = LAYOUTS[dataset]
  root = os.fspath(root)
  report = Report(layout=layout, root=root)
  if not os.path.isdir(root):
    report.errors.append(f'dataset directory {root} does not exist')
    return report
  image_root = os.path.join(root, IMAGE_FOLDER)
  if not os.path.isdir(image_root):
    report.errors.append(f'expected image folder {IMAGE_FOLDER}/ in {root}')
  report.json_path = _find_annotations(layout, root, report.errors)
  if report.json_path is None or (data := _load_annotations(report)) is None:
    return report

  problems = [[] for _ in data]
  parsed = [_parse_record(layout, index, raw, problems[index], report.warnings) for index, raw in enumerate(data)]
  records = [record for record in parsed if record is not None]
  if os.path.isdir(image_root):
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
      checked = pool.map(lambda record: _image_problem(image_root, record, layout.path_field), records)
      for record, problem in zip(records, checked):
        if problem:
          problems[record.index].append(problem)
  image_files = [_image_file(image_root, record) for record in records]
  records, duplicate_problems, duplicate_warnings = _merge_duplicates(records, image_files, layout.path_field)
  for index, problem in duplicate_problems.items():
    problems[index].append(problem)
  report.warnings += duplicate_warnings
  report.errors += [problem for record_problems in problems for problem in record_problems]
  report.errors += _split_problems(layout, records)

  by_split = {split: [record for record in records if record.split == split] for split in layout.splits}
  report.warnings += _count_warnings(layout, by_split)
  if report.errors:
    return report
  if layout.val_identities:
    try:
      by_split['train'], by_split['val'] = carve_val_split(by_split['train'], layout.val_identities)
    except DatasetError as exc:
      report.errors.append(str(exc))
      return report
  report.splits = {split: by_split[split] for split in ('train', 'val', 'test')}
  return report
