"""SynthPedes: determinism, disjoint splits, captions grounded in what each image shows, the oracle."""
import dataclasses
import io
import re

import numpy as np
import PIL.Image
import pytest
import tensorflow_datasets as tfds

from axm_jax.data.synthetic.builder import SynthPedes, format_facts, parse_facts
from axm_jax.data.synthetic.captions import CAPTIONS_PER_IMAGE
from axm_jax.data.synthetic.identities import (ATTRIBUTE_KEYS, ATTRIBUTE_VALUES, GARMENT_KEYS, HAIR_PALETTE, NONE,
                                               PALETTE, SPLITS, VIEWPOINTS, Identity, ImageSpec, SynthPedesSize,
                                               make_identities, sample_image_spec, visible_facts)
from axm_jax.data.synthetic.oracle import near_duplicate_pairs, oracle_text_to_image_r1
from axm_jax.data.synthetic.records import Record, generate_records
from axm_jax.data.synthetic.render import IMAGE_HEIGHT, IMAGE_WIDTH, camera_style, render_image

FEATURE_KEYS = {'image', 'captions', 'person_id', 'camera_id', 'image_key', 'attributes'}
PRONOUNS = {'man': {'he', 'his', 'him'}, 'woman': {'she', 'her'}}
# Caption words that name one attribute value (the test's own reading of the captions).
TYPE_WORDS = {
    'cap': ('hat', 'cap'), 'baseball': ('hat', 'cap'), 'beanie': ('hat', 'beanie'), 'knitted': ('hat', 'beanie'),
    'wool': ('hat', 'beanie'), 't-shirt': ('upper', 't-shirt'), 'tee': ('upper', 't-shirt'),
    'shirt': ('upper', 'shirt'), 'jacket': ('upper', 'jacket'), 'coat': ('upper', 'coat'),
    'overcoat': ('upper', 'coat'), 'sweater': ('upper', 'sweater'), 'jumper': ('upper', 'sweater'),
    'pullover': ('upper', 'sweater'), 'dress': ('upper', 'dress'), 'trousers': ('lower', 'trousers'),
    'pants': ('lower', 'trousers'), 'slacks': ('lower', 'trousers'), 'jeans': ('lower', 'jeans'),
    'shorts': ('lower', 'shorts'), 'skirt': ('lower', 'skirt'), 'backpack': ('bag', 'backpack'),
    'rucksack': ('bag', 'backpack'), 'handbag': ('bag', 'handbag'), 'purse': ('bag', 'handbag'),
    'messenger': ('bag', 'shoulder bag'), 'crossbody': ('bag', 'shoulder bag'),
    'shoulder': ('bag', 'shoulder bag'),
    'bald': ('hair_length', 'bald'), 'striped': ('pattern', 'striped'), 'stripes': ('pattern', 'striped'),
    'man': ('presentation', 'man'), 'guy': ('presentation', 'man'), 'gentleman': ('presentation', 'man'),
    'male': ('presentation', 'man'), 'woman': ('presentation', 'woman'), 'lady': ('presentation', 'woman'),
    'girl': ('presentation', 'woman'), 'female': ('presentation', 'woman'),
}
COLOUR_KEYS = ('hat_colour', 'upper_colour', 'lower_colour', 'shoes_colour', 'bag_colour', 'hair_colour')


def _examples(data_dir: str, split: str) -> list[dict]:
  builder = SynthPedes(config='tiny', data_dir=data_dir)
  dataset = builder.as_dataset(split=split, shuffle_files=False, decoders={'image': tfds.decode.SkipDecoding()})
  return sorted(tfds.as_numpy(dataset), key=lambda example: example['image_key'])


@pytest.fixture(scope='session')
def tiny_dir(tmp_path_factory) -> str:
  data_dir = str(tmp_path_factory.mktemp('tfds_tiny'))
  SynthPedes(config='tiny', data_dir=data_dir).download_and_prepare()
  return data_dir


@pytest.fixture(scope='session')
def tiny_examples(tiny_dir) -> dict[str, list[dict]]:
  return {split: _examples(tiny_dir, split) for split in SPLITS}


@pytest.fixture(scope='session')
def default_train_records() -> list[Record]:
  config = next(config for config in SynthPedes.BUILDER_CONFIGS if config.name == 'default')
  return generate_records(config.size, config.seed, 'train')


def _flatten(example: dict, prefix: str = '') -> list[tuple[str, object]]:
  """Every field of an example as (name, bytes or tuple of bytes), in a fixed order."""
  fields = []
  for key in sorted(example):
    value = example[key]
    if isinstance(value, dict):
      fields.extend(_flatten(value, f'{prefix}{key}/'))
    elif isinstance(value, bytes):
      fields.append((prefix + key, value))
    elif value.dtype == object:
      fields.append((prefix + key, tuple(value.tolist())))
    else:
      fields.append((prefix + key, value.tobytes()))
  return fields


def test_same_seed_builds_byte_identical_examples(tiny_dir, tiny_examples, tmp_path):
  SynthPedes(config='tiny', data_dir=str(tmp_path)).download_and_prepare()
  for split in SPLITS:
    again = _examples(str(tmp_path), split)
    assert len(again) == len(tiny_examples[split]) > 0
    for first, second in zip(tiny_examples[split], again):
      assert _flatten(first) == _flatten(second)


def test_features_and_split_sizes(tiny_dir, tiny_examples):
  builder = SynthPedes(config='tiny', data_dir=tiny_dir)
  assert builder.name == 'synth_pedes'
  assert set(builder.info.features.keys()) == FEATURE_KEYS
  config = builder.builder_config
  for split, identities in zip(SPLITS, config.size.identities):
    examples = tiny_examples[split]
    assert builder.info.splits[split].num_examples == len(examples)
    person_ids, counts = np.unique([example['person_id'] for example in examples], return_counts=True)
    assert len(person_ids) == identities
    assert counts.min() >= config.size.min_images and counts.max() <= config.size.max_images
    for example in examples:
      image = np.asarray(PIL.Image.open(io.BytesIO(example['image'])))
      assert image.shape == (IMAGE_HEIGHT, IMAGE_WIDTH, 3) and image.dtype == np.uint8
      assert len(example['captions']) == CAPTIONS_PER_IMAGE
      assert 1 <= example['camera_id'] <= 6
    for person_id in person_ids:
      cameras = [example['camera_id'] for example in examples if example['person_id'] == person_id]
      assert len(set(cameras)) == len(cameras)  # one picture per camera
    assert len({example['image_key'] for example in examples}) == len(examples)


def test_splits_share_no_identity(tiny_examples):
  person_ids = {split: {int(example['person_id']) for example in examples}
                for split, examples in tiny_examples.items()}
  labels = {split: {tuple(example['attributes'][key] for key in ATTRIBUTE_KEYS) for example in examples}
            for split, examples in tiny_examples.items()}
  for first, second in (('train', 'val'), ('train', 'test'), ('val', 'test')):
    assert not person_ids[first] & person_ids[second]
    assert not labels[first] & labels[second]
  all_ids = set().union(*person_ids.values())
  assert min(all_ids) == 1 and max(all_ids) == len(all_ids)  # 1-based, unique over splits


def _label_names(attributes: dict) -> dict[str, str]:
  return {key: ATTRIBUTE_VALUES[key][attributes[key]] for key in ATTRIBUTE_KEYS}


def test_stored_captions_mention_only_visible_facts(tiny_examples):
  for examples in tiny_examples.values():
    for example in examples:
      attributes = example['attributes']
      labels = _label_names(attributes)
      identity_facts = {key: value for key, value in labels.items() if value != NONE}
      visible = {key.decode() for key in attributes['visible']}
      assert len(attributes['caption_facts']) == len(example['captions'])
      for facts_text, caption in zip(attributes['caption_facts'], example['captions']):
        facts = parse_facts(facts_text.decode())
        assert set(facts) <= visible
        assert all(identity_facts[key] == value for key, value in facts.items())
        _check_caption_text(caption.decode(), facts, labels)


def _check_caption_text(caption: str, facts: dict[str, str], labels: dict[str, str]) -> None:
  """Reads the caption's attribute words and checks each against the mentioned facts."""
  words = re.findall(r"[a-z\-']+", caption.lower())
  colours = {facts[key] for key in COLOUR_KEYS if key in facts}
  for word in words:
    if word in PALETTE or word in HAIR_PALETTE:
      assert word in colours, (caption, facts)
    if word in TYPE_WORDS:
      key, value = TYPE_WORDS[word]
      assert facts.get(key) == value, (word, caption, facts)
  personal = set(words) & (PRONOUNS['man'] | PRONOUNS['woman'])
  if 'presentation' in facts:
    assert personal <= PRONOUNS[labels['presentation']], caption
  else:
    assert not personal, caption


def test_generated_captions_follow_the_grammar(default_train_records):
  counts = []
  for record in default_train_records:
    assert len(record.captions) == CAPTIONS_PER_IMAGE
    for caption, facts in zip(record.captions, record.mentions):
      counts.append(len(facts))
      assert 3 <= len(facts) <= 7
      assert set(facts) & set(GARMENT_KEYS), caption
      assert facts.items() <= record.spec.visible.items()
      assert caption[0].isupper() and caption.endswith('.')
      _check_caption_text(caption, facts, record.identity.labels())
  assert set(counts) == {3, 4, 5, 6, 7}


def test_identities_are_unique_valid_and_include_near_duplicates():
  size = SynthPedesSize(identities=(600, 60, 100))
  identities = make_identities(size, seed=0)
  everyone = [identity for split in SPLITS for identity in identities[split]]
  assert all(identity.is_valid() for identity in everyone)
  assert len({tuple(identity.labels().values()) for identity in everyone}) == len(everyone)
  assert near_duplicate_pairs(identities['test'], max_differences=1) > 0
  assert near_duplicate_pairs(identities['train'], max_differences=2) > 30
  assert identities == make_identities(size, seed=0)
  assert identities != make_identities(size, seed=1)


def _identity(**changes) -> Identity:
  base = Identity(
      presentation='woman', hair_colour='brown', hair_length='short', hat='none', hat_colour='none',
      upper='t-shirt', upper_colour='red', sleeves='short', pattern='plain', lower='jeans', lower_colour='blue',
      shoes_colour='white', bag='handbag', bag_colour='black', bag_side='left', skin_tone=0)
  identity = dataclasses.replace(base, **changes)
  assert identity.is_valid()
  return identity


def test_visibility_rules():
  handbag_left = _identity()
  assert 'bag' in visible_facts(handbag_left, 'front', 'none')
  assert 'bag' in visible_facts(handbag_left, 'left', 'none')  # near side
  assert 'bag' not in visible_facts(handbag_left, 'right', 'none')
  assert 'bag_colour' not in visible_facts(handbag_left, 'right', 'none')
  backpack = _identity(bag='backpack')
  for viewpoint in VIEWPOINTS:
    assert {'bag', 'bag_colour'} <= set(visible_facts(backpack, viewpoint, 'none'))
  beanie = _identity(hat='beanie', hat_colour='green')
  assert not {'hair_colour', 'hair_length'} & set(visible_facts(beanie, 'front', 'none'))
  cap = _identity(hat='cap', hat_colour='green')
  assert {'hair_colour', 'hair_length'} <= set(visible_facts(cap, 'back', 'none'))
  coat_shorts = _identity(upper='coat', sleeves='long', lower='shorts', lower_colour='grey')
  assert not {'lower', 'lower_colour', 'sleeves'} & set(visible_facts(coat_shorts, 'front', 'none'))
  feet = visible_facts(handbag_left, 'front', 'feet')
  assert 'shoes_colour' not in feet and 'lower' in feet
  legs = visible_facts(_identity(upper='dress', lower='none', lower_colour='none'), 'back', 'legs')
  assert set(legs) == {'presentation', 'hair_colour', 'hair_length', 'upper_colour', 'sleeves', 'pattern'}


def test_sampled_specs_always_show_a_garment_type():
  rng = np.random.default_rng(0)
  dress = _identity(upper='dress', lower='none', lower_colour='none')
  for _ in range(300):
    spec = sample_image_spec(dress, 1, rng)
    assert 'upper' in spec.visible
    assert spec.visible == visible_facts(dress, spec.viewpoint, spec.occlusion)


def test_render_is_deterministic_and_varies():
  identity = _identity(pattern='striped', bag='backpack')
  spec = ImageSpec(camera_id=2, viewpoint='back', occlusion='pole', visible=visible_facts(identity, 'back', 'pole'))
  style = camera_style(0, 2)
  first = render_image(identity, spec, style, np.random.default_rng(5))
  assert first.shape == (IMAGE_HEIGHT, IMAGE_WIDTH, 3) and first.dtype == np.uint8
  np.testing.assert_array_equal(first, render_image(identity, spec, style, np.random.default_rng(5)))
  assert not np.array_equal(first, render_image(identity, spec, style, np.random.default_rng(6)))
  assert first.std() > 20  # not blank


def _record(person_id: int, identity: Identity, mentions: list[dict[str, str]]) -> Record:
  spec = ImageSpec(camera_id=1, viewpoint='front', occlusion='none', visible=identity.facts())
  return Record(person_id=person_id, image_index=0, image_key=f'{person_id}', identity=identity, spec=spec,
                captions=['.'] * len(mentions), mentions=mentions)


def test_oracle_matches_a_hand_count():
  red = _identity()
  blue = _identity(upper_colour='blue')
  green_bag = _identity(bag_colour='green', lower='trousers')
  records = [
      _record(1, red, [{'upper_colour': 'red', 'upper': 't-shirt', 'lower': 'jeans'},  # unique: hit
                       {'upper': 't-shirt', 'lower': 'jeans', 'shoes_colour': 'white'}]),  # ties with 2: miss
      _record(1, red, [{'upper_colour': 'red', 'bag_colour': 'black', 'presentation': 'woman'}]),  # hit
      _record(2, blue, [{'upper_colour': 'blue', 'upper': 't-shirt', 'lower': 'jeans'}]),  # hit
      _record(3, green_bag, [{'bag_colour': 'green', 'upper_colour': 'red', 'upper': 't-shirt'}]),  # 3 > 2 (red)
  ]
  r1, chance = oracle_text_to_image_r1(records)
  assert r1 == pytest.approx(4 / 5)
  # positives / gallery per query: id 1 has 2 of the 4 images (3 queries), ids 2 and 3 one each.
  assert chance == pytest.approx((3 * 2 / 4 + 1 / 4 + 1 / 4) / 5)


def test_default_oracle_is_hard_but_solvable():
  config = next(config for config in SynthPedes.BUILDER_CONFIGS if config.name == 'default')
  records = generate_records(config.size, config.seed, 'test')
  r1, chance = oracle_text_to_image_r1(records)
  assert 0.88 <= r1 <= 0.96
  assert chance < 0.02


def test_facts_round_trip():
  facts = {'upper': 'shirt', 'bag': 'shoulder bag', 'presentation': 'man'}
  text = format_facts(facts)
  assert text == 'presentation=man;upper=shirt;bag=shoulder bag'
  assert parse_facts(text) == facts
