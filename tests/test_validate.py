"""Tests of the dataset validator: every kind of problem, exact messages, the summary and the command line."""
import os
import subprocess
import sys

import fake_pedes
import pytest

from axm_jax.data import annotations
from axm_jax.data import validate

_PUBLISHED_WARNINGS = [
    "split 'train' has 4 ids / 8 images / 18 captions; published CUHK-PEDES: 11,003 / 34,054 / 68,126",
    "split 'val' has 2 ids / 4 images / 9 captions; published CUHK-PEDES: 1,000 / 3,078 / 6,158",
    "split 'test' has 2 ids / 4 images / 9 captions; published CUHK-PEDES: 1,000 / 3,074 / 6,156",
]


@pytest.fixture(name='fake')
def fixture_fake(tmp_path):
  return fake_pedes.make_cuhk_pedes(str(tmp_path / 'cuhk'))


def _positions(records: list) -> dict[str, int]:
  return {record['file_path']: index for index, record in enumerate(records)}


def test_clean_directory_has_only_count_warnings(fake):
  report = annotations.inspect('cuhk_pedes', fake.root)
  assert report.errors == []
  assert report.warnings == _PUBLISHED_WARNINGS
  assert {split: len(records) for split, records in report.splits.items()} == {'train': 8, 'val': 4, 'test': 4}
  expected = {image.image_key: image for image in fake.images}
  for split, records in report.splits.items():
    for record in records:
      image = expected[record.image_key]
      assert (record.split, record.person_id, record.captions, record.camera_id) == (
          image.split, image.person_id, image.captions, image.camera_id)


# (image key, change to its record, expected error with {i} = the record's position)
_NAMED = "record {i} (file_path 'cam_a/002_0.bmp', id 2)"
_RECORD_PROBLEMS = [
    ('cam_a/002_0.bmp', lambda record: record.update(split='training'),
     _NAMED + ': unknown split "training" (expected train, val or test)'),
    ('cam_a/002_0.bmp', lambda record: record.pop('split'), _NAMED + ": missing field 'split'"),
    ('cam_a/002_0.bmp', lambda record: record.update(id='2'),
     'record {i} (file_path \'cam_a/002_0.bmp\'): field \'id\' must be an integer, found string "2"'),
    ('cam_a/002_0.bmp', lambda record: record.update(id=2.0),
     "record {i} (file_path 'cam_a/002_0.bmp'): field 'id' must be an integer, found number 2.0"),
    ('cam_a/002_0.bmp', lambda record: record.update(id=-1),
     "record {i} (file_path 'cam_a/002_0.bmp'): field 'id' must be >= 0, found -1"),
    ('cam_a/002_0.bmp', lambda record: record.pop('id'),
     "record {i} (file_path 'cam_a/002_0.bmp'): missing field 'id'"),
    ('cam_a/002_0.bmp', lambda record: record.pop('file_path'), "record {i} (id 2): missing field 'file_path'"),
    ('cam_a/002_0.bmp', lambda record: record.update(file_path=''),
     'record {i} (id 2): field \'file_path\' must be a non-empty string, found string ""'),
    ('cam_a/002_0.bmp', lambda record: record.update(file_path='/data/cam_a/002_0.bmp'),
     "record {i} (file_path '/data/cam_a/002_0.bmp', id 2): path '/data/cam_a/002_0.bmp' is absolute"),
    ('cam_a/002_0.bmp', lambda record: record.update(file_path='cam_a/../../reid_raw.json'),
     "record {i} (file_path 'cam_a/../../reid_raw.json', id 2): path 'cam_a/../../reid_raw.json' leaves imgs/"),
    ('cam_a/002_0.bmp', lambda record: record.update(file_path='..\\secret.png'),
     "record {i} (file_path '..\\\\secret.png', id 2): path '..\\\\secret.png' leaves imgs/"),
    ('cam_a/002_0.bmp', lambda record: record.update(file_path='cam_a/002_0.bmp\0.jpg'),
     "record {i} (file_path 'cam_a/002_0.bmp\\x00.jpg', id 2): path 'cam_a/002_0.bmp\\x00.jpg' contains a NUL "
     'character'),
    ('cam_a/002_0.bmp', lambda record: record.update(captions='a man in a red coat'),
     _NAMED + ": field 'captions' must be a list of strings, found string"),
    ('cam_a/002_0.bmp', lambda record: record.update(captions=['a man in a red coat', 5]),
     _NAMED + ": caption 1 must be a string, found number 5"),
    ('cam_a/002_0.bmp', lambda record: record.update(captions=[' ', '\n\t']),
     _NAMED + ": no non-empty caption"),
    ('cam_a/002_0.bmp', lambda record: record.update(captions=[]), _NAMED + ": no non-empty caption"),
    ('cam_a/002_0.bmp', lambda record: record.pop('captions'), _NAMED + ": missing field 'captions'"),
]


@pytest.mark.parametrize('key,change,message', _RECORD_PROBLEMS)
def test_record_problem(fake, key, change, message):
  records = fake.load_records()
  position = _positions(records)[key]
  change(records[position])
  fake.save_records(records)
  report = annotations.inspect('cuhk_pedes', fake.root)
  assert report.errors == [message.format(i=position)]
  assert report.splits == {}


def test_record_that_is_not_an_object(fake):
  records = fake.load_records()
  records[3] = ['train', 2]
  fake.save_records(records)
  assert annotations.inspect('cuhk_pedes', fake.root).errors == ['record 3: expected an object, found array']


def test_missing_and_undecodable_images(fake):
  positions = _positions(fake.load_records())
  image_root = os.path.join(fake.root, 'imgs')
  os.remove(os.path.join(image_root, 'cam_a', '002_0.bmp'))
  with open(os.path.join(image_root, 'CUHK03', '4_1.jpg'), 'wb') as file:
    file.write(b'not an image')
  missing, undecodable = positions['cam_a/002_0.bmp'], positions['CUHK03/4_1.jpg']
  expected = {
      missing: f"record {missing} (file_path 'cam_a/002_0.bmp', id 2): image imgs/cam_a/002_0.bmp not found",
      undecodable: f"record {undecodable} (file_path 'CUHK03/4_1.jpg', id 4): image imgs/CUHK03/4_1.jpg cannot "
                   'be decoded: '
                   f"cannot identify image file '{image_root}/CUHK03/4_1.jpg'",
  }
  assert annotations.inspect('cuhk_pedes', fake.root).errors == [expected[index] for index in sorted(expected)]


def test_symlink_leaving_the_image_folder_is_refused(fake, tmp_path):
  image = os.path.join(fake.root, 'imgs', 'cam_a', '002_0.bmp')
  os.rename(image, tmp_path / 'outside.bmp')
  os.symlink(tmp_path / 'outside.bmp', image)
  position = _positions(fake.load_records())['cam_a/002_0.bmp']
  assert annotations.inspect('cuhk_pedes', fake.root).errors == [
      f"record {position} (file_path 'cam_a/002_0.bmp', id 2): path 'cam_a/002_0.bmp' resolves outside imgs/"]


def test_symlink_inside_the_image_folder_is_accepted(fake):
  image_root = os.path.join(fake.root, 'imgs')
  os.rename(os.path.join(image_root, 'cam_a', '002_0.bmp'), os.path.join(image_root, 'moved.bmp'))
  os.symlink(os.path.join('..', 'moved.bmp'), os.path.join(image_root, 'cam_a', '002_0.bmp'))
  assert annotations.inspect('cuhk_pedes', fake.root).errors == []


def test_path_repeated_for_another_identity(fake):
  records = fake.load_records()
  positions = _positions(records)
  viper, cuhk01 = positions['cam_a/002_0.bmp'], positions['CUHK01/0003001.png']
  records[cuhk01]['file_path'] = './cam_a/002_0.bmp'
  fake.save_records(records)
  (first, first_id), (second, second_id) = sorted([(viper, 2), (cuhk01, 3)])
  assert annotations.inspect('cuhk_pedes', fake.root).errors == [
      f"record {second} (file_path 'cam_a/002_0.bmp', id {second_id}): the same image file as record {first} "
      f"(file_path 'cam_a/002_0.bmp', id {first_id}), split train"]


def test_path_repeated_for_the_same_identity_merges_captions(fake):
  records = fake.load_records()
  positions = _positions(records)
  first, second = sorted([positions['cam_a/002_0.bmp'], positions['cam_b/002_45.bmp']])
  records[second]['file_path'] = records[first]['file_path']
  records[first]['captions'] = ['A man in a red coat.', 'He carries a bag.']
  records[second]['captions'] = ['He carries a bag.', ' A man  in black. ']
  fake.save_records(records)
  report = annotations.inspect('cuhk_pedes', fake.root)
  assert report.errors == []
  key = records[first]['file_path']
  assert (f"record {second} (file_path '{key}', id 2): the same image file as record {first} (file_path '{key}', "
          'id 2), split train; captions merged') in report.warnings
  [record] = [record for record in report.splits['train'] if record.image_key == key]
  assert record.index == first
  assert record.captions == ('A man in a red coat.', 'He carries a bag.', 'A man in black.')
  assert len(report.splits['train']) == 7


@pytest.mark.parametrize('link', [os.symlink, os.link])
@pytest.mark.parametrize('other_key, other_id', [('cam_b/002_45.bmp', 2), ('CUHK01/0003001.png', 3)])
def test_two_paths_to_one_image_file(fake, link, other_key, other_id):
  records = fake.load_records()
  positions = _positions(records)
  image_root = os.path.join(fake.root, 'imgs')
  os.remove(os.path.join(image_root, other_key))
  link(os.path.join(image_root, 'cam_a', '002_0.bmp'), os.path.join(image_root, other_key))
  (first, first_key, first_id), (second, second_key, second_id) = sorted(
      [(positions['cam_a/002_0.bmp'], 'cam_a/002_0.bmp', 2), (positions[other_key], other_key, other_id)])
  message = (f"record {second} (file_path '{second_key}', id {second_id}): the same image file as record {first} "
             f"(file_path '{first_key}', id {first_id}), split train")
  report = annotations.inspect('cuhk_pedes', fake.root)
  if other_id == 2:
    assert report.errors == [] and f'{message}; captions merged' in report.warnings
  else:
    assert report.errors == [message]


def test_identity_in_two_splits(fake):
  records = fake.load_records()
  for record in records:
    if record['id'] == 5:  # a val identity
      record['id'] = 2  # a train identity
  fake.save_records(records)
  listed = ', '.join(f"{index} (file_path '{record['file_path']}', split {record['split']})"
                     for index, record in enumerate(records) if record['id'] == 2)
  assert annotations.inspect('cuhk_pedes', fake.root).errors == [
      f'person 2 appears in splits train and val (records {listed})']


def test_empty_split(fake):
  records = [record for record in fake.load_records() if record['split'] != 'test']
  fake.save_records(records)
  assert annotations.inspect('cuhk_pedes', fake.root).errors == ["no records in split 'test'"]


def test_one_empty_caption_is_dropped_with_a_warning(fake):
  records = fake.load_records()
  position = _positions(records)['cam_a/002_0.bmp']
  records[position]['captions'] = ['A man in a red coat.', ' \n ']
  fake.save_records(records)
  report = annotations.inspect('cuhk_pedes', fake.root)
  assert report.errors == []
  assert report.warnings[0] == f"record {position} (file_path 'cam_a/002_0.bmp', id 2): caption 1 is empty; dropped"
  [record] = [record for record in report.splits['train'] if record.index == position]
  assert record.captions == ('A man in a red coat.',)


def test_missing_directory(tmp_path):
  assert annotations.inspect('cuhk_pedes', tmp_path / 'absent').errors == [
      f'dataset directory {tmp_path / "absent"} does not exist']


def test_misnamed_annotations_and_missing_image_folder(tmp_path):
  (tmp_path / 'caption_all.json').write_text('[]')
  assert annotations.inspect('cuhk_pedes', tmp_path).errors == [
      f'expected image folder imgs/ in {tmp_path}',
      f'expected reid_raw.json in {tmp_path} (found caption_all.json)']


def test_icfg_annotation_names(tmp_path):
  (tmp_path / 'imgs').mkdir()
  assert annotations.inspect('icfg_pedes', tmp_path).errors == [
      f'expected ICFG-PEDES.json or ICFG_PEDES.json in {tmp_path}']
  (tmp_path / 'ICFG-PEDES.json').write_text('[]')
  (tmp_path / 'ICFG_PEDES.json').write_text('[]')
  assert annotations.inspect('icfg_pedes', tmp_path).errors == [
      f'found both ICFG-PEDES.json and ICFG_PEDES.json in {tmp_path}; keep one']


def test_rstpreid_needs_img_path(tmp_path):
  fake = fake_pedes.make_rstpreid(str(tmp_path))
  records = fake.load_records()
  records[0]['file_path'] = records[0].pop('img_path')
  fake.save_records(records)
  assert annotations.inspect('rstpreid', fake.root).errors == [
      f"record 0 (id {records[0]['id']}): missing field 'img_path'"]


@pytest.mark.parametrize('content,message', [
    ('{"split": ', 'is not valid JSON: Expecting value: line 1 column 11 (char 10)'),
    ('{"records": []}', 'must hold a list of records, found object'),
])
def test_unreadable_annotations(fake, content, message):
  with open(fake.json_path, 'w') as file:
    file.write(content)
  assert annotations.inspect('cuhk_pedes', fake.root).errors == [f'{fake.json_path} {message}']


def test_icfg_val_split_is_carved_from_the_largest_train_ids(tmp_path):
  fake = fake_pedes.make_icfg_pedes(str(tmp_path), train_ids=103, test_ids=2, images_per_id=2)
  report = annotations.inspect('icfg_pedes', fake.root)
  assert report.errors == []
  ids = {split: sorted({record.person_id for record in records}) for split, records in report.splits.items()}
  assert ids == {'train': [0, 1, 2], 'val': list(range(3, 103)), 'test': [103, 104]}


def test_icfg_with_too_few_train_ids(tmp_path):
  fake = fake_pedes.make_icfg_pedes(str(tmp_path), train_ids=100)
  assert annotations.inspect('icfg_pedes', fake.root).errors == [
      'train has 100 identities; carving a val split of 100 identities needs more']


def test_carve_val_split():
  train = [annotations.Record(index=index, person_id=person_id, split='train', image_key=f'{index}.jpg',
                           captions=('a',), camera_id=0) for index, person_id in enumerate([7, 3, 12, 3, 9, 12])]
  kept, val = annotations.carve_val_split(train, 2)
  assert [record.index for record in kept] == [0, 1, 3]
  assert [record.index for record in val] == [2, 4, 5]


def test_command_line_summary(fake, capsys):
  assert validate.check('cuhk_pedes', fake.root) == 0
  assert capsys.readouterr().out.splitlines() == [f'WARNING: {warning}' for warning in _PUBLISHED_WARNINGS] + [
      f'CUHK-PEDES in {fake.root} (reid_raw.json)',
      'split      ids   images  captions  camera known  cameras',
      'train        4        8        18             4        3',
      'val          2        4         9             2        2',
      'test         2        4         9             4        3',
  ]


def test_command_line_lists_every_problem(fake, capsys):
  records = fake.load_records()
  positions = _positions(records)
  absolute, no_split = positions['cam_a/002_0.bmp'], positions['Market/0005_c1s1_000000_00.jpg']
  records[absolute]['file_path'] = '/etc/passwd'
  del records[no_split]['split']
  with_empty = positions['CUHK03/4_2.jpg']
  records[with_empty]['captions'].append('\n')
  fake.save_records(records)
  os.remove(os.path.join(fake.root, 'imgs', 'CUHK01', '0008002.png'))
  missing = positions['CUHK01/0008002.png']
  errors = {
      absolute: f"ERROR: record {absolute} (file_path '/etc/passwd', id 2): path '/etc/passwd' is absolute",
      no_split: f"ERROR: record {no_split} (file_path 'Market/0005_c1s1_000000_00.jpg', id 5): missing field 'split'",
      missing: f"ERROR: record {missing} (file_path 'CUHK01/0008002.png', id 8): image imgs/CUHK01/0008002.png not "
               'found',
  }
  assert validate.check('cuhk_pedes', fake.root) == 1
  assert capsys.readouterr().out.splitlines() == [errors[index] for index in sorted(errors)] + [
      f"WARNING: record {with_empty} (file_path 'CUHK03/4_2.jpg', id 4): caption 3 is empty; dropped",
      "WARNING: split 'train' has 4 ids / 7 images / 16 captions; published CUHK-PEDES: 11,003 / 34,054 / 68,126",
      "WARNING: split 'val' has 2 ids / 3 images / 7 captions; published CUHK-PEDES: 1,000 / 3,078 / 6,158",
      "WARNING: split 'test' has 2 ids / 4 images / 9 captions; published CUHK-PEDES: 1,000 / 3,074 / 6,156",
      f'3 error(s), 4 warning(s): cuhk_pedes cannot be built from {fake.root}',
  ]


def test_module_entry_point(tmp_path):
  result = subprocess.run([sys.executable, '-m', 'axm_jax.data.validate', '--dataset=rstpreid',
                           f'--root={tmp_path}'], capture_output=True, text=True, check=False,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert result.returncode == 1
  assert result.stdout.splitlines() == [
      f'ERROR: expected image folder imgs/ in {tmp_path}',
      f'ERROR: expected data_captions.json in {tmp_path}',
      f'2 error(s), 0 warning(s): rstpreid cannot be built from {tmp_path}',
  ]
