"""Fake dataset directories in the exact layouts of CUHK-PEDES, ICFG-PEDES and RSTPReid, for tests.

  fake = fake_pedes.make_cuhk_pedes(directory)   # 8 people x 2 images, every quirk below
  fake = fake_pedes.make_cuhk_pedes(directory, train_ids=16, val_ids=4, test_ids=4, images_per_id=4)
  fake = fake_pedes.make_cuhk_pedes(directory, 300, 50, 100, 4, image_size=(128, 64), people=True)

With people=True every person has clothes of their own that the images show and the captions describe (another
renderer and caption style than SynthPedes): a CUHK-PEDES-layout set to train and compare models on, e.g.
`python -c "import sys; sys.path.insert(0, 'tests'); import fake_pedes; fake_pedes.make_cuhk_pedes('DIR', 300, 50,
100, 4, image_size=(128, 64), people=True)"`. Its images are all RGB; the other quirks stay.

Quirks: images in every CUHK-PEDES sub-folder (VIPeR cam_a/cam_b BMP, CUHK01 PNG, CUHK03, Market, train_query /
test_query JPEG) in RGB, grayscale, RGBA and palette modes; every fourth image with three captions; captions with
surrounding whitespace, line breaks, tabs and non-ASCII text; 1-based CUHK ids, 0-based ICFG / RSTPReid ids;
records in shuffled order. `FakeDataset.images` holds what a builder must produce (normalised captions, camera id,
output split) written down independently of the code under test.
"""
import dataclasses
import json
import os
import random
from typing import Callable

import numpy as np
from PIL import Image

_COLOURS = ('red', 'blue', 'green', 'black', 'white', 'grey', 'yellow', 'brown')
_GARMENTS = ('coat', 'shirt', 'dress', 'jacket', 'sweater')
_NON_ASCII = ('with a café-coloured bag', 'carrying a “naïve” tote', 'holding a 红色 umbrella — smiling')
_PNG_MODES = ('RGB', 'L', 'RGBA', 'P')
_JPEG_MODES = ('RGB', 'L')
# people=True: what a person wears (RGB of each colour name) and how each caption template words it.
_RGB = {'red': (200, 30, 30), 'blue': (30, 60, 200), 'green': (40, 150, 50), 'black': (20, 20, 20),
        'white': (235, 235, 235), 'grey': (128, 128, 128), 'yellow': (230, 210, 40), 'brown': (120, 75, 30)}
_LOWER = ('trousers', 'shorts', 'skirt', 'jeans')
_TEMPLATES = (
    'This person has on a {upper_colour} {upper} and {lower_colour} {lower}{bag}.',
    'Wearing {lower_colour} {lower} and a {upper_colour} {upper}, the pedestrian walks by{bag}.',
    'A pedestrian dressed in a {upper_colour} {upper}{bag}.',
    'The man or woman here wears {lower_colour} {lower} below a {upper} that is {upper_colour}.',
)


@dataclasses.dataclass(frozen=True)
class FakeImage:
  """One image of a fake dataset and what a builder must make of it."""
  image_key: str  # path relative to imgs/
  person_id: int
  json_split: str  # split value in the annotation file
  split: str  # output split (ICFG-PEDES: val is carved out of train)
  raw_captions: tuple[str, ...]  # as written to the annotation file
  captions: tuple[str, ...]  # normalised
  camera_id: int
  mode: str  # PIL mode of the file


@dataclasses.dataclass
class FakeDataset:
  """A fake dataset directory."""
  root: str
  json_name: str
  path_field: str
  images: list[FakeImage]

  @property
  def json_path(self) -> str:
    return os.path.join(self.root, self.json_name)

  def counts(self) -> dict[str, int]:
    """Images per output split."""
    counts = {}
    for image in self.images:
      counts[image.split] = counts.get(image.split, 0) + 1
    return counts

  def load_records(self) -> list:
    with open(self.json_path, encoding='utf-8') as file:
      return json.load(file)

  def save_records(self, records: list) -> None:
    with open(self.json_path, 'w', encoding='utf-8') as file:
      json.dump(records, file, ensure_ascii=False)

  def record_index(self, image_key: str) -> int:
    """Position in the annotation file of the record of an image."""
    return [record[self.path_field] for record in self.load_records()].index(image_key)


def _caption(person_id: int, image_number: int, caption_number: int) -> str:
  """A normalised caption: single spaces, no surrounding whitespace."""
  colour = _COLOURS[(person_id + caption_number) % len(_COLOURS)]
  garment = _GARMENTS[person_id % len(_GARMENTS)]
  caption = f'The person wears a {colour} {garment} and dark trousers'
  if (image_number + caption_number) % 3 == 0:
    caption += ' ' + _NON_ASCII[image_number % len(_NON_ASCII)]
  return caption + '.'


def _raw(caption: str, image_number: int, caption_number: int) -> str:
  """The caption as the annotation file spells it: stray whitespace and line breaks on every other caption."""
  if (image_number + caption_number) % 2:
    return caption
  first, rest = caption.split(' ', 1)
  return f'  {first}\n{rest.replace(" ", "  ", 1)} \t\n'


def _write_image(path: str, mode: str, number: int, image_size: tuple[int, int]) -> None:
  """A small image of a colour unique to `number`, in the given PIL mode, format from the extension."""
  height, width = image_size
  colour = np.array([number * 37 % 256, number * 91 % 256, number * 53 % 256], np.uint8)
  pixels = np.broadcast_to(colour, (height, width, 3)).copy()
  pixels[: height // 2] //= 2
  image = Image.fromarray(pixels)
  image = image.convert(mode) if mode != 'P' else image.quantize(colors=4)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image.save(path)


def _clothes(person_id: int) -> dict[str, str | bool]:
  """people=True: the clothes of one person, a function of the id alone."""
  rng = random.Random(person_id)
  return {'upper_colour': rng.choice(list(_RGB)), 'upper': rng.choice(_GARMENTS),
          'lower_colour': rng.choice(list(_RGB)), 'lower': rng.choice(_LOWER), 'bag': rng.random() < 0.5}


def _person_caption(person_id: int, image_number: int, caption_number: int) -> str:
  """people=True: one of the templates, filled with the person's clothes."""
  clothes = _clothes(person_id)
  template = _TEMPLATES[(image_number + caption_number * 3) % len(_TEMPLATES)]
  bag = ' and carries a bag' if clothes['bag'] and template.startswith('This') else (
      ' with a bag' if clothes['bag'] else '')
  return template.format(**dict(clothes, bag=bag))


def _write_person_image(path: str, person_id: int, number: int, image_size: tuple[int, int]) -> None:
  """people=True: the person's clothes on a noisy background, with per-image shift, size and lighting."""
  height, width = image_size
  clothes, rng = _clothes(person_id), np.random.default_rng(number)
  pixels = rng.uniform(60, 200, size=3) + rng.normal(0, 25, size=(height, width, 3))
  centre = width / 2 + rng.uniform(-0.12, 0.12) * width
  half = width * rng.uniform(0.2, 0.28)
  rows, columns = np.mgrid[0:height, 0:width] / np.array([height, 1.0])[:, None, None]
  body = np.abs(columns - centre) < half
  upper, lower = np.array(_RGB[clothes['upper_colour']]), np.array(_RGB[clothes['lower_colour']])
  skin = np.array((225, 180, 150))
  pixels[(rows < 0.17) & (np.abs(columns - centre) < half * 0.5)] = skin
  upper_end = {'coat': 0.68, 'dress': 0.8}.get(clothes['upper'], 0.52)
  lower_end = {'shorts': 0.7, 'skirt': 0.75}.get(clothes['lower'], 1.0)
  legs = body & (rows >= upper_end) & (np.abs(columns - centre) > half * 0.12)
  pixels[legs] = skin
  pixels[legs & (rows < lower_end)] = lower * (0.8 if clothes['lower'] == 'jeans' else 1.0)
  pixels[body & (rows >= 0.17) & (rows < upper_end)] = upper
  if clothes['upper'] == 'jacket':  # a dark zip down the middle
    pixels[(rows >= 0.17) & (rows < upper_end) & (np.abs(columns - centre) < max(width / 40, 0.5))] = 30
  if clothes['upper'] == 'sweater':  # darker horizontal ribs
    pixels[body & (rows >= 0.17) & (rows < upper_end) & ((rows * 40).astype(int) % 3 == 0)] = upper * 0.6
  if clothes['bag']:
    pixels[(rows > 0.4) & (rows < 0.6) & (np.abs(columns - (centre + half * 1.15)) < half * 0.3)] = (90, 60, 30)
  pixels = np.clip(pixels * rng.uniform(0.8, 1.2) + rng.normal(0, 8, size=pixels.shape), 0, 255)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(pixels.astype(np.uint8)).save(path)


def _write(root: str, json_name: str, path_field: str, entries: list[dict], caption_count: Callable[[int], int],
           image_size: tuple[int, int], people: bool = False) -> FakeDataset:
  """Writes images and the annotation file for entries (image_key, person_id, json_split, split, camera_id)."""
  images, records = [], []
  modes = {'.png': iter(_PNG_MODES * len(entries)), '.jpg': iter(_JPEG_MODES * len(entries))}
  caption = _person_caption if people else _caption
  for number, entry in enumerate(entries):
    extension = os.path.splitext(entry['image_key'])[1]
    path = os.path.join(root, 'imgs', entry['image_key'])
    if people:
      mode = 'RGB'
      _write_person_image(path, entry['person_id'], number, image_size)
    else:
      mode = next(modes[extension]) if extension in modes else 'RGB'
      _write_image(path, mode, number, image_size)
    captions = tuple(caption(entry['person_id'], number, k) for k in range(caption_count(number)))
    raw_captions = tuple(_raw(caption, number, k) for k, caption in enumerate(captions))
    images.append(FakeImage(raw_captions=raw_captions, captions=captions, mode=mode, **entry))
    records.append({'split': entry['json_split'], 'captions': list(raw_captions), path_field: entry['image_key'],
                    'processed_tokens': [caption.lower().split() for caption in captions],
                    'id': entry['person_id']})
  random.Random(0).shuffle(records)
  fake = FakeDataset(root=root, json_name=json_name, path_field=path_field, images=images)
  fake.save_records(records)
  return fake


def _split_of_person(counts: dict[str, int], first_id: int) -> list[tuple[int, str]]:
  """(person id, split) for consecutive ids from first_id, `counts[split]` people per split."""
  people, person_id = [], first_id
  for split, count in counts.items():
    for _ in range(count):
      people.append((person_id, split))
      person_id += 1
  return people


def _cuhk_entry(source: int, person_id: int, image: int, split: str) -> tuple[str, int]:
  """(path, camera) of a CUHK-PEDES image in one of its five source datasets."""
  if source == 0:  # CUHK-SYSU queries: no camera
    folder = 'train_query' if split == 'train' else 'test_query'
    return f'{folder}/p{person_id}_s{person_id * 10 + image}.jpg', 0
  if source == 1:  # VIPeR: cam_a / cam_b folders, BMP files index_angle.bmp
    folder, camera = ('cam_a', 101) if image % 2 == 0 else ('cam_b', 102)
    return f'{folder}/{person_id:03d}_{image * 45}.bmp', camera
  if source == 2:  # CUHK01: 4-digit person, 3-digit image index; 001-002 camera A, 003-004 camera B
    return f'CUHK01/{person_id:04d}{image + 1:03d}.png', {0: 201, 1: 201, 2: 202, 3: 202}.get(image, 0)
  if source == 3:  # CUHK03 as in CUHK-PEDES: person_index, camera not recorded
    return f'CUHK03/{person_id}_{image + 1}.jpg', 0
  camera = image % 6 + 1  # Market-1501
  return f'Market/{person_id:04d}_c{camera}s1_{image * 25:06d}_00.jpg', 400 + camera


def make_cuhk_pedes(root: str, train_ids: int = 4, val_ids: int = 2, test_ids: int = 2, images_per_id: int = 2,
                    image_size: tuple[int, int] = (16, 8), people: bool = False) -> FakeDataset:
  """CUHK-PEDES layout: imgs/<source folder>/..., reid_raw.json; ids from 1; people cycle over the 5 sources.

  people=True: images and captions show each person's own clothes (module docstring).
  """
  entries = []
  for person_id, split in _split_of_person({'train': train_ids, 'val': val_ids, 'test': test_ids}, first_id=1):
    for image in range(images_per_id):
      path, camera = _cuhk_entry((person_id - 1) % 5, person_id, image, split)
      entries.append(dict(image_key=path, person_id=person_id, json_split=split, split=split, camera_id=camera))
  return _write(root, 'reid_raw.json', 'file_path', entries, lambda number: 3 if number % 4 == 3 else 2,
                image_size, people)


def make_icfg_pedes(root: str, train_ids: int = 102, test_ids: int = 2, images_per_id: int = 1,
                    json_name: str = 'ICFG-PEDES.json', image_size: tuple[int, int] = (16, 8)) -> FakeDataset:
  """ICFG-PEDES layout: imgs/{train,test}/<person>/<MSMT17 name>.jpg, one caption per image; ids from 0.

  The builder's val split is the last 100 train ids, so train_ids must exceed 100 to leave a train split.
  """
  people = _split_of_person({'train': train_ids, 'test': test_ids}, first_id=0)
  val_ids = {person_id for person_id, split in people if split == 'train'}
  val_ids = set(sorted(val_ids)[-100:])
  entries = []
  for person_id, split in people:
    for image in range(images_per_id):
      camera = (person_id + image) % 15 + 1
      path = f'{split}/{person_id:04d}/{person_id:04d}_{image:03d}_{camera:02d}_0303morning_{image * 7:04d}_0.jpg'
      entries.append(dict(image_key=path, person_id=person_id, json_split=split,
                          split='val' if person_id in val_ids else split, camera_id=500 + camera))
  return _write(root, json_name, 'file_path', entries, lambda number: 1, image_size)


def make_rstpreid(root: str, train_ids: int = 3, val_ids: int = 2, test_ids: int = 2, images_per_id: int = 2,
                  image_size: tuple[int, int] = (16, 8)) -> FakeDataset:
  """RSTPReid layout: imgs/<person>_c<camera>_<index>.jpg, data_captions.json with img_path; ids from 0."""
  entries = []
  for person_id, split in _split_of_person({'train': train_ids, 'val': val_ids, 'test': test_ids}, first_id=0):
    for image in range(images_per_id):
      camera = (person_id * 3 + image) % 15 + 1
      entries.append(dict(image_key=f'{person_id:04d}_c{camera}_{image:04d}.jpg', person_id=person_id,
                          json_split=split, split=split, camera_id=500 + camera))
  return _write(root, 'data_captions.json', 'img_path', entries, lambda number: 3 if number % 4 == 3 else 2,
                image_size)
