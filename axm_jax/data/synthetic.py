"""SynthPedes: a procedurally generated text-based person search dataset.

Every identity is a fixed combination of attributes (presentation, hair, hat, upper and lower garment, shoes,
bag). Each image renders one identity (NumPy, 256x128) from a viewpoint, under a camera's lighting, with clutter,
occluders, noise and blur, and records which attributes the picture can show. Each image gets two captions from a
grammar that mention only attributes visible in that image. A share of the identities are 1-2 attribute
mutations of another identity of the same split, so that near-duplicates make the retrieval task hard.

Everything is a pure function of the builder config's seed: identities are drawn from a NumPy generator seeded
by (seed, 0), camera styles by (seed, 0, camera id), and each image's viewpoint, pixels and captions by
(seed, person id, image index, stream), so any record can be regenerated on its own.

`python -m axm_jax.data.synthetic --config=default` prints the truth-based oracle R@1 of each split.
"""
import dataclasses
import io
from collections.abc import Iterator, Sequence

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds

IMAGE_HEIGHT = 256
IMAGE_WIDTH = 128
CAPTIONS_PER_IMAGE = 2
SPLITS = ('train', 'val', 'test')

PALETTE = {
    'black': (28, 28, 32), 'white': (236, 236, 230), 'grey': (128, 128, 130), 'red': (200, 32, 36),
    'orange': (240, 128, 24), 'yellow': (236, 208, 40), 'green': (40, 148, 60), 'blue': (36, 72, 196),
    'purple': (124, 52, 156), 'pink': (242, 142, 182), 'brown': (112, 70, 38), 'beige': (206, 186, 136),
}
HAIR_PALETTE = {
    'black': (24, 22, 22), 'brown': (100, 60, 30), 'blond': (224, 192, 108), 'grey': (162, 162, 162),
    'red': (178, 66, 28),
}
SKIN_TONES = ((236, 196, 170), (222, 172, 132), (188, 136, 96), (140, 96, 64), (96, 64, 44))
COLOURS = tuple(PALETTE)
HAIR_COLOURS = tuple(HAIR_PALETTE)
HAIR_LENGTHS = ('short', 'long', 'bald')
HATS = ('cap', 'beanie')
UPPERS = ('t-shirt', 'shirt', 'jacket', 'coat', 'sweater', 'dress')
LOWERS = ('trousers', 'jeans', 'shorts', 'skirt')
BAGS = ('backpack', 'handbag', 'shoulder bag')
VIEWPOINTS = ('front', 'back', 'left', 'right')  # left/right: side views, the person walks towards that side
OCCLUSIONS = ('none', 'pole', 'feet', 'legs')  # feet: hides shoes; legs: everything below the hips
SLEEVED_UPPERS = ('t-shirt', 'shirt', 'dress')  # the others always have long sleeves
GARMENT_KEYS = ('upper', 'lower')
NONE = 'none'

# The attribute labels of an identity; every caption mentions a subset of these (key, value) facts.
ATTRIBUTE_VALUES = {
    'presentation': ('man', 'woman'),
    'hair_colour': (NONE,) + HAIR_COLOURS,
    'hair_length': HAIR_LENGTHS,
    'hat': (NONE,) + HATS,
    'hat_colour': (NONE,) + COLOURS,
    'upper': UPPERS,
    'upper_colour': COLOURS,
    'sleeves': ('short', 'long'),
    'pattern': ('plain', 'striped'),
    'lower': (NONE,) + LOWERS,
    'lower_colour': (NONE,) + COLOURS,
    'shoes_colour': COLOURS,
    'bag': (NONE,) + BAGS,
    'bag_colour': (NONE,) + COLOURS,
}
ATTRIBUTE_KEYS = tuple(ATTRIBUTE_VALUES)


@dataclasses.dataclass(frozen=True)
class Identity:
  """A person: attribute labels (NONE where absent) plus appearance details no caption mentions."""
  presentation: str
  hair_colour: str
  hair_length: str
  hat: str
  hat_colour: str
  upper: str
  upper_colour: str
  sleeves: str
  pattern: str
  lower: str
  lower_colour: str
  shoes_colour: str
  bag: str
  bag_colour: str
  bag_side: str  # 'left' or 'right': the hand / hip that holds a handbag or shoulder bag
  skin_tone: int

  def labels(self) -> dict[str, str]:
    return {key: getattr(self, key) for key in ATTRIBUTE_KEYS}

  def facts(self) -> dict[str, str]:
    """The attributes a caption may state (absent items and implied sleeves left out)."""
    facts = {key: value for key, value in self.labels().items() if value != NONE}
    if self.upper not in SLEEVED_UPPERS:
      del facts['sleeves']
    return facts

  def is_valid(self) -> bool:
    """Checks the consistency rules every sampled or mutated identity obeys."""
    return ((self.hair_colour == NONE) == (self.hair_length == 'bald')
            and (self.hat_colour == NONE) == (self.hat == NONE)
            and (self.lower == NONE) == (self.upper == 'dress')
            and (self.lower_colour == NONE) == (self.lower == NONE)
            and (self.bag_colour == NONE) == (self.bag == NONE)
            and (self.upper in SLEEVED_UPPERS or self.sleeves == 'long')
            and (self.presentation == 'woman' or (self.upper != 'dress' and self.lower != 'skirt')))


@dataclasses.dataclass(frozen=True)
class SynthPedesSize:
  """Identities per split and images per identity."""
  identities: tuple[int, int, int]  # train, val, test
  min_images: int = 2
  max_images: int = 6
  mutation_share: float = 0.1  # share of identities made as a 1-2 attribute mutation of an earlier one


def _choice(rng: np.random.Generator, values: Sequence[str], weights: Sequence[float] | None = None) -> str:
  probabilities = None if weights is None else np.asarray(weights) / np.sum(weights)
  return values[rng.choice(len(values), p=probabilities)]


def _colour(rng: np.random.Generator) -> str:
  return _choice(rng, COLOURS)


def _shoes_colour(rng: np.random.Generator) -> str:
  weights = [4.0 if colour in ('black', 'white') else 1.0 for colour in COLOURS]
  return _choice(rng, COLOURS, weights)


def _sleeves(rng: np.random.Generator, upper: str) -> str:
  short_probability = {'t-shirt': 0.7, 'shirt': 0.4, 'dress': 0.6}.get(upper, 0.0)
  return 'short' if rng.random() < short_probability else 'long'


def _lower(rng: np.random.Generator, presentation: str) -> str:
  weights = (0.3, 0.3, 0.15, 0.25) if presentation == 'woman' else (0.4, 0.4, 0.2, 0.0)
  return _choice(rng, LOWERS, weights)


def sample_identity(rng: np.random.Generator) -> Identity:
  """Draws a fresh identity from the attribute priors."""
  presentation = _choice(rng, ('man', 'woman'))
  woman = presentation == 'woman'
  hair_length = _choice(rng, HAIR_LENGTHS, (0.25, 0.72, 0.03) if woman else (0.7, 0.1, 0.2))
  hair_colour = NONE if hair_length == 'bald' else _choice(rng, HAIR_COLOURS, (0.3, 0.3, 0.2, 0.1, 0.1))
  hat = _choice(rng, (NONE,) + HATS, (0.7, 0.15, 0.15))
  upper = _choice(rng, UPPERS, (0.2, 0.16, 0.16, 0.12, 0.16, 0.2) if woman else (0.25, 0.2, 0.2, 0.15, 0.2, 0.0))
  lower = NONE if upper == 'dress' else _lower(rng, presentation)
  bag = _choice(rng, (NONE,) + BAGS, (0.4, 0.25, 0.15, 0.2))
  return Identity(
      presentation=presentation, hair_colour=hair_colour, hair_length=hair_length, hat=hat,
      hat_colour=NONE if hat == NONE else _colour(rng), upper=upper, upper_colour=_colour(rng),
      sleeves=_sleeves(rng, upper), pattern='striped' if rng.random() < 0.25 else 'plain', lower=lower,
      lower_colour=NONE if lower == NONE else _colour(rng), shoes_colour=_shoes_colour(rng), bag=bag,
      bag_colour=NONE if bag == NONE else _colour(rng), bag_side=_choice(rng, ('left', 'right')),
      skin_tone=int(rng.integers(len(SKIN_TONES))))


def _mutation(identity: Identity, rng: np.random.Generator) -> dict[str, str]:
  """One random change, as the fields to replace."""
  kind = _choice(rng, ('upper_colour', 'lower_colour', 'swap_colours', 'shoes_colour', 'upper', 'lower',
                       'hair_colour', 'pattern', 'bag_colour', 'bag', 'hat_colour', 'hat'),
                 (3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1))
  if kind == 'swap_colours':
    return {'upper_colour': identity.lower_colour, 'lower_colour': identity.upper_colour}
  if kind in ('upper_colour', 'lower_colour', 'shoes_colour', 'bag_colour', 'hat_colour'):
    return {kind: _colour(rng)}
  if kind == 'upper':
    upper = _choice(rng, UPPERS)
    return {'upper': upper, 'sleeves': _sleeves(rng, upper)}
  if kind == 'lower':
    return {'lower': _lower(rng, identity.presentation)}
  if kind == 'hair_colour':
    return {'hair_colour': _choice(rng, HAIR_COLOURS)}
  if kind == 'pattern':
    return {'pattern': 'plain' if identity.pattern == 'striped' else 'striped'}
  if kind == 'bag':
    bag = _choice(rng, (NONE,) + BAGS)
    return {'bag': bag, 'bag_colour': NONE if bag == NONE else identity.bag_colour if identity.bag != NONE
            else _colour(rng)}
  hat = _choice(rng, (NONE,) + HATS)
  return {'hat': hat, 'hat_colour': NONE if hat == NONE else identity.hat_colour if identity.hat != NONE
          else _colour(rng)}


TWO_CHANGE_PROBABILITY = 0.65


def mutate_identity(identity: Identity, rng: np.random.Generator) -> Identity:
  """Changes one or two attribute labels of `identity`, keeping it valid."""
  while True:
    changes = {}
    for _ in range(2 if rng.random() < TWO_CHANGE_PROBABILITY else 1):
      changes.update(_mutation(dataclasses.replace(identity, **changes), rng))
    mutated = dataclasses.replace(identity, **changes)
    differences = sum(mutated.labels()[key] != identity.labels()[key] for key in ATTRIBUTE_KEYS)
    if mutated.is_valid() and 1 <= differences <= 2:
      return mutated


def make_identities(size: SynthPedesSize, seed: int) -> dict[str, list[Identity]]:
  """Samples every split's identities; no two identities (in any split) share all attribute labels."""
  rng = np.random.default_rng([seed, 0])
  seen = set()
  identities = {}
  for split, count in zip(SPLITS, size.identities):
    mutants = set(rng.permutation(np.arange(1, count))[:round(size.mutation_share * count)].tolist())
    members = []
    while len(members) < count:
      if len(members) in mutants:
        candidate = mutate_identity(members[int(rng.integers(len(members)))], rng)
      else:
        candidate = sample_identity(rng)
      key = tuple(candidate.labels().values())
      if key not in seen:
        seen.add(key)
        members.append(candidate)
    identities[split] = members
  return identities


@dataclasses.dataclass(frozen=True)
class ImageSpec:
  """One picture of an identity: what the camera sees and which attribute facts are visible."""
  camera_id: int
  viewpoint: str
  occlusion: str
  visible: dict[str, str]  # the identity's facts this picture shows


def visible_facts(identity: Identity, viewpoint: str, occlusion: str) -> dict[str, str]:
  """The facts of `identity` that a picture from `viewpoint` with `occlusion` can show."""
  facts = identity.facts()
  hidden = set()
  hair_shows_under_hat = identity.hair_length == 'long' or (identity.hair_length, identity.hat) == ('short', 'cap')
  if identity.hat != NONE and not hair_shows_under_hat:
    hidden.add('hair_length')
  if identity.hat == 'beanie' and identity.hair_length == 'short':
    hidden.add('hair_colour')
  if identity.upper == 'coat' and identity.lower in ('shorts', 'skirt'):
    hidden.update(('lower', 'lower_colour'))  # the coat hangs below the hem
  if occlusion in ('feet', 'legs'):
    hidden.add('shoes_colour')
  if occlusion == 'legs':
    hidden.update(('lower', 'lower_colour'))
    if identity.upper in ('dress', 'coat'):
      hidden.add('upper')  # only the long hem tells a dress or coat apart
    if identity.bag in ('handbag', 'shoulder bag'):
      hidden.update(('bag', 'bag_colour'))
  if viewpoint in ('left', 'right') and identity.bag in ('handbag', 'shoulder bag'):
    near_side = 'right' if viewpoint == 'right' else 'left'
    if identity.bag_side != near_side:
      hidden.update(('bag', 'bag_colour'))
  return {key: value for key, value in facts.items() if key not in hidden}


def sample_image_spec(identity: Identity, camera_id: int, rng: np.random.Generator) -> ImageSpec:
  viewpoint = _choice(rng, VIEWPOINTS, (0.4, 0.3, 0.15, 0.15))
  occlusion = _choice(rng, OCCLUSIONS, (0.9, 0.03, 0.04, 0.03))
  visible = visible_facts(identity, viewpoint, occlusion)
  if not any(key in visible for key in GARMENT_KEYS):  # every caption names a garment: keep one in view
    occlusion = 'feet'
    visible = visible_facts(identity, viewpoint, occlusion)
  return ImageSpec(camera_id=camera_id, viewpoint=viewpoint, occlusion=occlusion, visible=visible)


# ----------------------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------------------

CAPTION_LENGTHS = (3, 4, 5, 6, 7)  # facts per caption
CAPTION_LENGTH_WEIGHTS = (0.05, 0.1, 0.15, 0.3, 0.4)
FACT_WEIGHTS = {  # how readily a visible fact is mentioned
    'presentation': 0.5, 'hair_colour': 1.0, 'hair_length': 0.4, 'hat': 1.0, 'hat_colour': 0.9, 'upper': 1.5,
    'upper_colour': 2.0, 'sleeves': 0.4, 'pattern': 0.5, 'lower': 1.3, 'lower_colour': 1.8, 'shoes_colour': 1.0,
    'bag': 1.2, 'bag_colour': 1.0,
}
FILLER_PROBABILITY = 0.15
TYPO_PROBABILITY = 0.04

SUBJECTS = {
    'man': ('man', 'man', 'guy', 'young man', 'gentleman', 'male pedestrian'),
    'woman': ('woman', 'woman', 'lady', 'young woman', 'girl', 'female pedestrian'),
    NONE: ('person', 'person', 'pedestrian', 'individual'),
}
PRONOUNS = {'man': ('he', 'his'), 'woman': ('she', 'her')}
NOUNS = {
    'cap': ('cap', 'baseball cap'), 'beanie': ('beanie', 'knitted hat', 'wool hat'), 'hat': ('hat',),
    't-shirt': ('t-shirt', 'tee', 'T-shirt'), 'shirt': ('shirt', 'button-up shirt', 'collared shirt'),
    'jacket': ('jacket', 'zip-up jacket'), 'coat': ('coat', 'long coat', 'overcoat'),
    'sweater': ('sweater', 'jumper', 'pullover'), 'dress': ('dress',), 'top': ('top', 'top'),
    'trousers': ('trousers', 'pants', 'slacks'), 'jeans': ('jeans', 'denim jeans'), 'shorts': ('shorts',),
    'skirt': ('skirt',), 'bottoms': ('bottoms',), 'shoes': ('shoes', 'sneakers', 'trainers', 'footwear'),
    'backpack': ('backpack', 'rucksack'), 'handbag': ('handbag', 'purse'),
    'shoulder bag': ('shoulder bag', 'messenger bag', 'crossbody bag'), 'bag': ('bag',),
}
PLURAL_NOUNS = frozenset(('trousers', 'pants', 'slacks', 'jeans', 'denim jeans', 'shorts', 'bottoms', 'shoes',
                          'sneakers', 'trainers', 'footwear'))
NEUTRAL_FILLERS = ('The photo was taken outdoors.', 'The picture is a little blurry.', 'The background is busy.',
                   'It looks like a street scene.')
PERSONAL_FILLERS = ('{pronoun} is walking.', '{pronoun} seems to be in a hurry.',
                    '{pronoun} is walking down the street.', '{pronoun} looks straight ahead.')
# Words that name an attribute value; a typo never turns one word into another of these.
ATTRIBUTE_WORDS = frozenset(
    word for words in (COLOURS, HAIR_COLOURS, ('bald', 'striped', 'stripes', 'plain', 'sleeves', 'short-sleeved',
                                               'long-sleeved'), *NOUNS.values(), *SUBJECTS.values())
    for phrase in words for word in phrase.lower().split()) | {'shit', 'shot'}


def _article(phrase: str, noun: str) -> str:
  if noun in PLURAL_NOUNS:
    return phrase
  return ('an ' if phrase[0] in 'aeiou' else 'a ') + phrase


def _garment_phrase(rng: np.random.Generator, noun_key: str, colour: str | None, pattern: str | None = None,
                    sleeves: str | None = None) -> str:
  """'a red striped shirt with short sleeves' and the like (None: not mentioned)."""
  noun = _choice(rng, NOUNS[noun_key])
  before, after = [], []
  if colour:
    before.append(colour)
  if pattern == 'plain':
    before.insert(0, 'plain')
  elif pattern == 'striped':
    if rng.random() < 0.6:
      before.append('striped')
    else:
      after.append('with stripes')
  if sleeves:
    if rng.random() < 0.5:
      before.insert(0, f'{sleeves}-sleeved')
    else:
      after.append(f'with {sleeves} sleeves')
  phrase = ' '.join(before + [noun])
  if after:
    phrase += ' ' + ' and '.join(after)
  return _article(phrase, noun)


def _item_phrases(mentions: dict[str, str], rng: np.random.Generator) -> tuple[list[str], list[str], str | None]:
  """Noun phrases for the mentioned worn items, carried items, and the hair ('long blond', 'bald' or None)."""
  worn, carried = [], []
  if 'hat' in mentions or 'hat_colour' in mentions:
    worn.append(_garment_phrase(rng, mentions.get('hat', 'hat'), mentions.get('hat_colour')))
  if any(key in mentions for key in ('upper', 'upper_colour', 'pattern', 'sleeves')):
    worn.append(_garment_phrase(rng, mentions.get('upper', 'top'), mentions.get('upper_colour'),
                                mentions.get('pattern'), mentions.get('sleeves')))
  if 'lower' in mentions or 'lower_colour' in mentions:
    worn.append(_garment_phrase(rng, mentions.get('lower', 'bottoms'), mentions.get('lower_colour')))
  if 'shoes_colour' in mentions:
    worn.append(_garment_phrase(rng, 'shoes', mentions['shoes_colour']))
  if 'bag' in mentions or 'bag_colour' in mentions:
    carried.append(_garment_phrase(rng, mentions.get('bag', 'bag'), mentions.get('bag_colour')))
  hair = None
  if mentions.get('hair_length') == 'bald':
    hair = 'bald'
  elif 'hair_length' in mentions or 'hair_colour' in mentions:
    hair = ' '.join(mentions[key] for key in ('hair_length', 'hair_colour') if key in mentions)
  return worn, carried, hair


def _join(phrases: Sequence[str]) -> str:
  if len(phrases) == 1:
    return phrases[0]
  return ', '.join(phrases[:-1]) + ' and ' + phrases[-1]


def _one_sentence(subject: str, worn: list[str], carried: list[str], hair: str | None,
                  rng: np.random.Generator) -> str:
  """'A man with short hair wearing a blue shirt and jeans, carrying a bag.'"""
  segments = []
  if worn:
    verbs = ('wearing', 'in') if any('dress' in phrase for phrase in worn) else ('wearing', 'in', 'dressed in')
    segments.append(_choice(rng, verbs) + ' ' + _join(worn))
  if carried:
    segments.append(_choice(rng, ('carrying', 'with')) + ' ' + _join(carried))
  if hair == 'bald':
    if rng.random() < 0.5:
      subject = subject.replace(' ', ' bald ', 1)
    else:
      segments.append('who is bald')
  elif hair:
    segments.append(_choice(rng, ('with {} hair', 'who has {} hair')).format(hair))
  rng.shuffle(segments)
  return subject + ' ' + ', '.join(segments) + '.'


def _sentences(subject: str, continuation: str, possessive: str, worn: list[str], carried: list[str],
               hair: str | None, rng: np.random.Generator) -> str:
  """'The woman is wearing a red dress. She is carrying a purse. Her hair is long.'"""
  predicates = []
  if worn:
    split = int(rng.integers(1, len(worn) + 1)) if len(worn) > 1 and rng.random() < 0.4 else len(worn)
    for part in (worn[:split], worn[split:]):
      if part:
        verb = _choice(rng, ('is wearing', 'wears', 'has on') if any('dress' in phrase for phrase in part)
                       else ('is wearing', 'wears', 'has on', 'is dressed in'))
        predicates.append(f'{verb} {_join(part)}')
  if carried:
    predicates.append(_choice(rng, ('is carrying', 'carries', 'has')) + ' ' + _join(carried))
  if hair == 'bald':
    predicates.append('is bald')
  elif hair:
    words = hair.split()
    if len(words) == 2 and rng.random() < 0.4:
      predicates.append(f'POSSESSIVE hair is {words[0]} and {words[1]}')
    else:
      predicates.append(f'has {hair} hair')
  rng.shuffle(predicates)
  sentences = []
  for index, predicate in enumerate(predicates):
    if predicate.startswith('POSSESSIVE'):
      sentences.append(predicate.replace('POSSESSIVE', possessive) + '.')
    else:
      also = ' also' if index > 1 and rng.random() < 0.3 else ''
      sentences.append(f'{subject if index == 0 else continuation}{also} {predicate}.')
  return ' '.join(sentences)


def _listing(subject_noun: str, worn: list[str], carried: list[str], hair: str | None,
             rng: np.random.Generator) -> str:
  """'Woman, long blond hair, red dress, white shoes, black handbag.' (terse, as in real annotations)."""
  items = [phrase.removeprefix('a ').removeprefix('an ') for phrase in worn + carried]
  if hair:
    items.append(hair if hair == 'bald' else f'{hair} hair')
  rng.shuffle(items)
  return subject_noun + ', ' + ', '.join(items) + '.'


def _capitalise(text: str) -> str:
  sentences = text.split('. ')
  return '. '.join(sentence[:1].upper() + sentence[1:] for sentence in sentences)


def _typo(text: str, rng: np.random.Generator) -> str:
  """Swaps, drops or doubles one letter of one word, unless that makes another attribute word."""
  words = text.split(' ')
  candidates = [index for index, word in enumerate(words) if word.isalpha() and len(word) >= 4]
  if not candidates:
    return text
  index = candidates[int(rng.integers(len(candidates)))]
  word = words[index]
  position = int(rng.integers(1, len(word) - 1))
  operation = int(rng.integers(3))
  if operation == 0:
    typo = word[:position] + word[position + 1] + word[position] + word[position + 2:]
  elif operation == 1:
    typo = word[:position] + word[position + 1:]
  else:
    typo = word[:position] + word[position] + word[position:]
  if typo.lower() in ATTRIBUTE_WORDS:
    return text
  words[index] = typo
  return ' '.join(words)


def choose_mentions(visible: dict[str, str], rng: np.random.Generator) -> dict[str, str]:
  """Picks 3-7 visible facts to mention, at least one garment type among them."""
  keys = list(visible)
  count = min(len(keys), int(rng.choice(CAPTION_LENGTHS, p=np.asarray(CAPTION_LENGTH_WEIGHTS))))
  weights = np.array([FACT_WEIGHTS[key] for key in keys])
  chosen = [keys[index] for index in rng.choice(len(keys), size=count, replace=False, p=weights / weights.sum())]
  garments = [key for key in GARMENT_KEYS if key in visible]
  if not any(key in chosen for key in garments):
    chosen[int(rng.integers(count))] = _choice(rng, garments)
  return {key: visible[key] for key in keys if key in chosen}


def realise_caption(mentions: dict[str, str], presentation: str, rng: np.random.Generator) -> str:
  """Writes one caption stating exactly the `mentions` facts (presentation only via nouns and pronouns)."""
  gendered = 'presentation' in mentions
  worn, carried, hair = _item_phrases(mentions, rng)
  rng.shuffle(worn)
  subject_noun = _choice(rng, SUBJECTS[presentation if gendered else NONE])
  determiner = _choice(rng, ('a', 'the', 'this'))
  subject = _article(subject_noun, subject_noun) if determiner == 'a' else f'{determiner} {subject_noun}'
  if gendered:
    pronoun, possessive = PRONOUNS[presentation]
  else:
    pronoun, possessive = 'the ' + subject_noun, 'the ' + subject_noun + "'s"
  style = _choice(rng, ('one_sentence', 'sentences', 'listing'), (0.4, 0.45, 0.15))
  if style == 'one_sentence':
    text = _one_sentence(subject, worn, carried, hair, rng)
  elif style == 'sentences':
    text = _sentences(subject, pronoun, possessive, worn, carried, hair, rng)
  else:
    text = _listing(subject_noun, worn, carried, hair, rng)
  if rng.random() < FILLER_PROBABILITY:
    filler = _choice(rng, PERSONAL_FILLERS if gendered else NEUTRAL_FILLERS).format(pronoun=pronoun)
    text = filler + ' ' + text if rng.random() < 0.3 else text + ' ' + filler
  if rng.random() < TYPO_PROBABILITY:
    text = _typo(text, rng)
  return _capitalise(text)


def make_captions(identity: Identity, spec: ImageSpec, rng: np.random.Generator,
                  count: int = CAPTIONS_PER_IMAGE) -> tuple[list[str], list[dict[str, str]]]:
  """`count` captions of one image and the facts each one mentions."""
  captions, mentions = [], []
  for _ in range(count):
    chosen = choose_mentions(spec.visible, rng)
    captions.append(realise_caption(chosen, identity.presentation, rng))
    mentions.append(chosen)
  return captions, mentions


# ----------------------------------------------------------------------------------------------------------------
# Rendering: shapes as signed distance functions, painted with anti-aliasing inside their bounding boxes
# ----------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Shape:
  """A region given by a signed distance function, evaluated only inside its bounding box."""
  top: float
  bottom: float
  left: float
  right: float
  distance: object  # (ys, xs) -> (signed distance in pixels, shading coordinate in [0, 1])


def _ellipse(cy: float, cx: float, ry: float, rx: float) -> _Shape:
  def distance(ys, xs):
    q = np.sqrt(((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2)
    return (q - 1.0) * min(ry, rx), np.abs(xs - cx) / rx
  return _Shape(cy - ry, cy + ry, cx - rx, cx + rx, distance)


def _capsule(y0: float, x0: float, y1: float, x1: float, radius: float) -> _Shape:
  """A segment thickened to `radius` (limbs, straps)."""
  dy, dx = y1 - y0, x1 - x0
  length_sq = max(dy * dy + dx * dx, 1e-6)

  def distance(ys, xs):
    t = np.clip(((ys - y0) * dy + (xs - x0) * dx) / length_sq, 0.0, 1.0)
    d = np.sqrt((ys - y0 - t * dy) ** 2 + (xs - x0 - t * dx) ** 2)
    return d - radius, d / radius
  return _Shape(min(y0, y1) - radius, max(y0, y1) + radius, min(x0, x1) - radius, max(x0, x1) + radius, distance)


def _polygon(points: Sequence[tuple[float, float]]) -> _Shape:
  """A convex polygon from (y, x) corners."""
  corners = np.asarray(points, np.float32)
  centre = corners.mean(axis=0)
  edges = []
  for start, end in zip(corners, np.roll(corners, -1, axis=0)):
    normal = np.array([end[1] - start[1], -(end[0] - start[0])])
    normal /= max(np.linalg.norm(normal), 1e-6)
    if normal @ (centre - start) > 0:
      normal = -normal
    edges.append((start, normal))
  top, left = corners.min(axis=0)
  bottom, right = corners.max(axis=0)
  half_width = max((right - left) / 2, 1.0)
  middle = (left + right) / 2

  def distance(ys, xs):
    d = np.max(np.stack([(ys - start[0]) * normal[0] + (xs - start[1]) * normal[1] for start, normal in edges]),
               axis=0)
    return d, np.abs(xs - middle) / half_width
  return _Shape(top, bottom, left, right, distance)


def _box(top: float, bottom: float, left: float, right: float) -> _Shape:
  return _polygon([(top, left), (top, right), (bottom, right), (bottom, left)])


def _scaled(colour, factor: float) -> np.ndarray:
  return np.clip(np.asarray(colour, np.float32) * factor, 0, 255)


def _contrast_colour(colour) -> np.ndarray:
  luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
  return np.array((40, 40, 52) if luminance > 140 else (236, 236, 230), np.float32)


class _Canvas:
  """A float RGB image that shapes are painted onto."""

  def __init__(self, pixels: np.ndarray):
    self.pixels = pixels
    self.height, self.width = pixels.shape[:2]

  def paint(self, shape: _Shape, colour, shading: float = 0.3, texture=None, clip=None) -> None:
    """Blends `colour` (or `texture(ys, xs) -> [h, w, 3]`) into the shape; `clip(ys, xs)` masks it."""
    y0, y1 = max(int(shape.top) - 1, 0), min(int(np.ceil(shape.bottom)) + 2, self.height)
    x0, x1 = max(int(shape.left) - 1, 0), min(int(np.ceil(shape.right)) + 2, self.width)
    if y0 >= y1 or x0 >= x1:
      return
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    signed_distance, shade_coordinate = shape.distance(ys, xs)
    alpha = np.clip(0.5 - signed_distance, 0.0, 1.0)
    if clip is not None:
      alpha = alpha * clip(ys, xs)
    fill = texture(ys, xs) if texture is not None else np.asarray(colour, np.float32)
    fill = fill * (1.0 - shading * np.clip(shade_coordinate, 0.0, 1.0) ** 2)[..., None]
    window = self.pixels[y0:y1, x0:x1]
    window += alpha[..., None] * (fill - window)


def _stripes(colour, y_origin: float, period: float):
  base = np.asarray(colour, np.float32)
  stripe = _contrast_colour(colour)

  def texture(ys, xs):
    on = (((ys - y_origin) % period) < period * 0.45) & (xs >= 0)
    return np.where(on[..., None], stripe, base)
  return texture


def _denim(colour):
  base = np.asarray(colour, np.float32)

  def texture(ys, xs):
    twill = 0.07 * np.sin((xs + ys) * 1.9) + 0.05 * np.sin(xs * 12.9898 + ys * 78.233) * np.cos(ys * 3.1)
    return base * (1.0 + twill)[..., None] + 14.0
  return texture


def _ribs(colour, x_origin: float):
  base = _scaled(colour, 0.78)

  def texture(ys, xs):
    dark = (((xs - x_origin) % 3.0) < 1.2) & (ys >= 0)
    return np.where(dark[..., None], base * 0.8, base)
  return texture


@dataclasses.dataclass(frozen=True)
class _Body:
  """Where the person stands: top of the head, height in pixels, centre x, and the side the person faces."""
  top: float
  height: float
  centre: float
  facing: int  # +1 walks right, -1 walks left, 0 front or back view

  def y(self, fraction: float) -> float:
    return self.top + fraction * self.height

  def size(self, fraction: float) -> float:
    return fraction * self.height


@dataclasses.dataclass(frozen=True)
class _Pose:
  """Joint positions (y, x) of the visible limbs; for side views index 0 is the near limb."""
  shoulders: tuple
  elbows: tuple
  wrists: tuple
  hips: tuple
  knees: tuple
  ankles: tuple


def _front_pose(body: _Body, shoulder_half_width: float, rng: np.random.Generator) -> _Pose:
  cx, size = body.centre, body.size
  shoulders, elbows, wrists, hips, knees, ankles = [], [], [], [], [], []
  for side in (-1, 1):
    upper_angle = np.radians(rng.uniform(3, 14))
    lower_angle = upper_angle + np.radians(rng.uniform(-6, 8))
    shoulder = (body.y(0.19), cx + side * (shoulder_half_width - size(0.02)))
    elbow = (shoulder[0] + size(0.15) * np.cos(upper_angle), shoulder[1] + side * size(0.15) * np.sin(upper_angle))
    wrist = (elbow[0] + size(0.14) * np.cos(lower_angle), elbow[1] + side * size(0.14) * np.sin(lower_angle))
    hip = (body.y(0.52), cx + side * size(0.045))
    ankle = (body.y(0.955), cx + side * (size(0.05) + rng.uniform(-0.01, 0.03) * body.height))
    shoulders.append(shoulder)
    elbows.append(elbow)
    wrists.append(wrist)
    hips.append(hip)
    knees.append(((hip[0] + ankle[0]) / 2, (hip[1] + ankle[1]) / 2))
    ankles.append(ankle)
  return _Pose(tuple(shoulders), tuple(elbows), tuple(wrists), tuple(hips), tuple(knees), tuple(ankles))


def _side_pose(body: _Body, rng: np.random.Generator) -> _Pose:
  cx, size, facing = body.centre, body.size, body.facing
  stride = np.radians(rng.uniform(6, 24))
  swing = np.radians(rng.uniform(5, 28))
  shoulders, elbows, wrists, hips, knees, ankles = [], [], [], [], [], []
  for direction in (1, -1):  # near leg forward with near arm back, and the reverse for the far limbs
    shoulder = (body.y(0.19), cx)
    arm_angle = -direction * swing
    elbow = (shoulder[0] + size(0.15) * np.cos(arm_angle), shoulder[1] + facing * size(0.15) * np.sin(arm_angle))
    wrist = (elbow[0] + size(0.14) * np.cos(arm_angle * 1.4),
             elbow[1] + facing * size(0.14) * np.sin(arm_angle * 1.4 + np.radians(10)))
    hip = (body.y(0.52), cx)
    leg_angle = direction * stride
    ankle = (hip[0] + size(0.435) * np.cos(leg_angle), hip[1] + facing * size(0.435) * np.sin(leg_angle))
    knee = ((hip[0] + ankle[0]) / 2, (hip[1] + ankle[1]) / 2 + facing * size(0.012))
    shoulders.append(shoulder)
    elbows.append(elbow)
    wrists.append(wrist)
    hips.append(hip)
    knees.append(knee)
    ankles.append(ankle)
  return _Pose(tuple(shoulders), tuple(elbows), tuple(wrists), tuple(hips), tuple(knees), tuple(ankles))


class _PersonPainter:
  """Paints one identity from one viewpoint onto a canvas, back to front."""

  def __init__(self, canvas: _Canvas, identity: Identity, viewpoint: str, body: _Body, rng: np.random.Generator):
    self.canvas = canvas
    self.identity = identity
    self.viewpoint = viewpoint
    self.body = body
    self.side_view = viewpoint in ('left', 'right')
    woman = identity.presentation == 'woman'
    if self.side_view:
      self.shoulder_half_width, self.hip_half_width = body.size(0.07), body.size(0.072)
      self.pose = _side_pose(body, rng)
    else:
      self.shoulder_half_width = body.size(0.1 if woman else 0.122) * rng.uniform(0.95, 1.05)
      self.hip_half_width = body.size(0.094 if woman else 0.082)
      self.pose = _front_pose(body, self.shoulder_half_width, rng)
    self.skin = np.asarray(SKIN_TONES[identity.skin_tone], np.float32)
    self.upper_colour = np.asarray(PALETTE[identity.upper_colour], np.float32)
    self.upper_texture = (_stripes(self.upper_colour, body.y(0.17), body.size(0.055))
                          if identity.pattern == 'striped' else None)

  # -- helpers ---------------------------------------------------------------------------------------------------
  def _garment(self, shape: _Shape, shading: float = 0.3) -> None:
    self.canvas.paint(shape, self.upper_colour, shading=shading, texture=self.upper_texture)

  def _bag_side_sign(self) -> int:
    """Image x direction of the bag side in front/back views (the person's right is image-left from the front)."""
    right = -1 if self.viewpoint == 'front' else 1
    return right if self.identity.bag_side == 'right' else -right

  def _bag_near(self) -> bool:
    return self.identity.bag_side == ('right' if self.viewpoint == 'right' else 'left')

  # -- parts -----------------------------------------------------------------------------------------------------
  def _leg(self, index: int, shade: float) -> None:
    pose, size, identity = self.pose, self.body.size, self.identity
    hip, knee, ankle = pose.hips[index], pose.knees[index], pose.ankles[index]
    self.canvas.paint(_capsule(*hip, *knee, size(0.046)), _scaled(self.skin, shade))
    self.canvas.paint(_capsule(*knee, *ankle, size(0.034)), _scaled(self.skin, shade))
    lower = identity.lower
    if lower in ('trousers', 'jeans', 'shorts'):
      colour = _scaled(PALETTE[identity.lower_colour], shade)
      texture = _denim(colour) if lower == 'jeans' else None
      if lower == 'shorts':
        hem = (hip[0] + (knee[0] - hip[0]) * 0.75, hip[1] + (knee[1] - hip[1]) * 0.75)
        self.canvas.paint(_capsule(*hip, *hem, size(0.054)), colour)
      else:
        cuff = (ankle[0] - size(0.012), ankle[1])
        self.canvas.paint(_capsule(*knee, *cuff, size(0.042)), colour, texture=texture)
        self.canvas.paint(_capsule(*hip, *knee, size(0.052)), colour, texture=texture)
      if lower == 'jeans' and not self.side_view:
        outer = 1 if ankle[1] > self.body.centre else -1
        seam = _capsule(hip[0], hip[1] + outer * size(0.035), ankle[0] - size(0.02), ankle[1] + outer * size(0.03),
                        size(0.005))
        self.canvas.paint(seam, colour * 0.5 + 120.0, shading=0.0)
    shoe_colour = _scaled(PALETTE[identity.shoes_colour], shade)
    if self.side_view:
      shoe = _ellipse(ankle[0] + size(0.012), ankle[1] + self.body.facing * size(0.025), size(0.024), size(0.048))
    else:
      shoe = _ellipse(ankle[0] + size(0.012), ankle[1], size(0.026), size(0.038))
    self.canvas.paint(shoe, shoe_colour, shading=0.4)

  def _pelvis_and_skirt(self) -> None:
    body, size, identity = self.body, self.body.size, self.identity
    cx, hip_half_width = body.centre, self.hip_half_width
    if identity.lower in ('trousers', 'jeans', 'shorts'):
      colour = np.asarray(PALETTE[identity.lower_colour], np.float32)
      texture = _denim(colour) if identity.lower == 'jeans' else None
      self.canvas.paint(_box(body.y(0.46), body.y(0.57), cx - hip_half_width - size(0.005),
                             cx + hip_half_width + size(0.005)), colour, texture=texture)
      if identity.lower == 'trousers':
        self.canvas.paint(_box(body.y(0.46), body.y(0.48), cx - hip_half_width, cx + hip_half_width),
                          _scaled(colour, 0.45), shading=0.1)
    elif identity.lower == 'skirt':
      flare = 1.45 if not self.side_view else 1.6
      self.canvas.paint(_polygon([(body.y(0.46), cx - hip_half_width), (body.y(0.46), cx + hip_half_width),
                                  (body.y(0.69), cx + hip_half_width * flare),
                                  (body.y(0.69), cx - hip_half_width * flare)]),
                        PALETTE[identity.lower_colour], shading=0.25)

  def _torso(self) -> None:
    body, size, identity = self.body, self.body.size, self.identity
    cx, shoulder, hip = body.centre, self.shoulder_half_width, self.hip_half_width
    upper = identity.upper
    hem = {'t-shirt': 0.5, 'dress': 0.47, 'coat': 0.47}.get(upper, 0.52)
    if upper in ('dress', 'coat'):
      flare = (1.6 if upper == 'dress' else 1.3) * (1.1 if self.side_view else 1.0)
      length = 0.70 if upper == 'dress' else 0.75
      self._garment(_polygon([(body.y(0.44), cx - hip), (body.y(0.44), cx + hip),
                              (body.y(length), cx + hip * flare), (body.y(length), cx - hip * flare)]), 0.25)
    if identity.presentation == 'woman' and not self.side_view:  # a waist: two trapezoids meeting at y(0.36)
      waist = hip * 0.82
      self._garment(_polygon([(body.y(0.165), cx - shoulder), (body.y(0.165), cx + shoulder),
                              (body.y(0.365), cx + waist), (body.y(0.365), cx - waist)]))
      self._garment(_polygon([(body.y(0.355), cx - waist), (body.y(0.355), cx + waist),
                              (body.y(hem), cx + hip + size(0.006)), (body.y(hem), cx - hip - size(0.006))]))
    else:
      self._garment(_polygon([(body.y(0.165), cx - shoulder), (body.y(0.165), cx + shoulder),
                              (body.y(hem), cx + hip + size(0.006)), (body.y(hem), cx - hip - size(0.006))]))
    self._garment(_capsule(body.y(0.185), cx - shoulder + size(0.02), body.y(0.185), cx + shoulder - size(0.02),
                           size(0.022)), 0.1)
    darker = _scaled(self.upper_colour, 0.72)
    lighter = np.clip(self.upper_colour * 0.75 + 70.0, 0, 255)
    front = self.viewpoint == 'front'
    if upper == 'coat':
      self.canvas.paint(_box(body.y(0.445), body.y(0.475), cx - hip - size(0.01), cx + hip + size(0.01)), darker)
      if front:
        self.canvas.paint(_box(body.y(0.19), body.y(0.75), cx - size(0.004), cx + size(0.004)), darker, 0.0)
        for fraction in (0.25, 0.33, 0.41, 0.55, 0.63):
          for side in (-1, 1):
            self.canvas.paint(_ellipse(body.y(fraction), cx + side * size(0.022), size(0.007), size(0.007)),
                              (30, 30, 30), 0.0)
    elif upper == 'jacket':
      self.canvas.paint(_box(body.y(0.485), body.y(0.525), cx - hip - size(0.006), cx + hip + size(0.006)), darker)
      if front:
        inner = _contrast_colour(self.upper_colour)
        opening = _polygon([(body.y(0.17), cx - size(0.035)), (body.y(0.17), cx + size(0.035)),
                            (body.y(0.48), cx + size(0.018)), (body.y(0.48), cx - size(0.018))])
        self.canvas.paint(opening, inner, 0.1)
        for side in (-1, 1):
          lapel = _polygon([(body.y(0.165), cx + side * size(0.035)), (body.y(0.165), cx + side * size(0.07)),
                            (body.y(0.28), cx + side * size(0.03))])
          self.canvas.paint(lapel, darker, 0.0)
      elif self.side_view:  # the open front edge shows the layer underneath
        edge = cx + body.facing * (shoulder - size(0.016))
        self.canvas.paint(_box(body.y(0.17), body.y(0.48), edge - size(0.011), edge + size(0.011)),
                          _contrast_colour(self.upper_colour), 0.1)
      else:
        self.canvas.paint(_box(body.y(0.16), body.y(0.19), cx - size(0.055), cx + size(0.055)), darker, 0.1)
    elif upper == 'shirt':
      if front:
        self.canvas.paint(_box(body.y(0.19), body.y(0.52), cx - size(0.004), cx + size(0.004)), darker, 0.0)
        for fraction in (0.24, 0.31, 0.38, 0.45):
          self.canvas.paint(_ellipse(body.y(fraction), cx, size(0.005), size(0.005)), lighter, 0.0)
        for side in (-1, 1):
          self.canvas.paint(_polygon([(body.y(0.155), cx), (body.y(0.155), cx + side * size(0.05)),
                                      (body.y(0.215), cx + side * size(0.012))]), lighter, 0.0)
      elif self.side_view:  # collar and the buttoned front edge
        self.canvas.paint(_box(body.y(0.155), body.y(0.185), cx - size(0.035), cx + size(0.035)), lighter, 0.1)
        edge = cx + body.facing * (shoulder - size(0.014))
        self.canvas.paint(_box(body.y(0.19), body.y(0.52), edge - size(0.005), edge + size(0.005)), lighter, 0.0)
      else:  # collar and the yoke seam across the shoulders
        self.canvas.paint(_box(body.y(0.155), body.y(0.185), cx - size(0.05), cx + size(0.05)), lighter, 0.1)
        self.canvas.paint(_box(body.y(0.235), body.y(0.245), cx - shoulder + size(0.01), cx + shoulder - size(0.01)),
                          lighter, 0.0)
    elif upper == 'sweater':
      self.canvas.paint(_box(body.y(0.485), body.y(0.53), cx - hip - size(0.006), cx + hip + size(0.006)), None,
                        texture=_ribs(self.upper_colour, cx))
      self.canvas.paint(_ellipse(body.y(0.165), cx, size(0.02), size(0.04)), darker, 0.1)
    if upper in ('t-shirt', 'dress') and not self.side_view:
      neck_depth = 0.03 if front else 0.012
      self.canvas.paint(_ellipse(body.y(0.165), cx, size(neck_depth), size(0.034)), self.skin, 0.1,
                        clip=lambda ys, xs: (ys >= body.y(0.165)) & (xs >= 0))

  def _arm(self, index: int, shade: float) -> None:
    pose, size, identity = self.pose, self.body.size, self.identity
    shoulder, elbow, wrist = pose.shoulders[index], pose.elbows[index], pose.wrists[index]
    skin = _scaled(self.skin, shade)
    self.canvas.paint(_capsule(*elbow, *wrist, size(0.025)), skin)
    self.canvas.paint(_capsule(*shoulder, *elbow, size(0.029)), skin)
    texture = self.upper_texture
    colour = _scaled(self.upper_colour, shade)
    if identity.sleeves == 'short':
      end = (shoulder[0] + (elbow[0] - shoulder[0]) * 0.6, shoulder[1] + (elbow[1] - shoulder[1]) * 0.6)
      self.canvas.paint(_capsule(*shoulder, *end, size(0.034)), colour, texture=texture)
    else:
      self.canvas.paint(_capsule(*elbow, *wrist, size(0.029)), colour, texture=texture)
      self.canvas.paint(_capsule(*shoulder, *elbow, size(0.034)), colour, texture=texture)
      if identity.upper == 'sweater':
        cuff_start = (elbow[0] + (wrist[0] - elbow[0]) * 0.8, elbow[1] + (wrist[1] - elbow[1]) * 0.8)
        self.canvas.paint(_capsule(*cuff_start, *wrist, size(0.03)), _scaled(colour, 0.72))
    hand = (wrist[0] + (wrist[0] - elbow[0]) * 0.18, wrist[1] + (wrist[1] - elbow[1]) * 0.18)
    self.canvas.paint(_ellipse(*hand, size(0.026), size(0.022)), skin)

  def _hand(self, index: int) -> tuple[float, float]:
    elbow, wrist = self.pose.elbows[index], self.pose.wrists[index]
    return wrist[0] + (wrist[0] - elbow[0]) * 0.25, wrist[1] + (wrist[1] - elbow[1]) * 0.25

  def _handbag(self, hand: tuple[float, float], outward: int) -> None:
    size = self.body.size
    colour = np.asarray(PALETTE[self.identity.bag_colour], np.float32)
    top, cx = hand[0] + size(0.035), hand[1] + outward * size(0.015)
    for side in (-1, 1):
      self.canvas.paint(_capsule(hand[0], hand[1], top, cx + side * size(0.03), size(0.006)), _scaled(colour, 0.6))
    self.canvas.paint(_polygon([(top, cx - size(0.042)), (top, cx + size(0.042)), (top + size(0.085),
                                cx + size(0.05)), (top + size(0.085), cx - size(0.05))]), colour, 0.3)
    self.canvas.paint(_box(top, top + size(0.015), cx - size(0.042), cx + size(0.042)), _scaled(colour, 0.7), 0.1)

  def _shoulder_bag(self, bag_x: int) -> None:
    body, size = self.body, self.body.size
    colour = np.asarray(PALETTE[self.identity.bag_colour], np.float32)
    cx = body.centre
    if self.side_view:
      left, right = cx - size(0.05), cx + size(0.05)
      strap_top = (body.y(0.17), cx)
      strap_bottom = (body.y(0.45), cx)
    else:
      inner = cx + bag_x * (self.hip_half_width - size(0.03))
      outer = cx + bag_x * (self.hip_half_width + size(0.075))
      left, right = min(inner, outer), max(inner, outer)
      strap_top = (body.y(0.175), cx - bag_x * (self.shoulder_half_width - size(0.04)))
      strap_bottom = (body.y(0.45), (inner + outer) / 2)
    self.canvas.paint(_capsule(*strap_top, *strap_bottom, size(0.011)), _scaled(colour, 0.8), 0.2)
    self.canvas.paint(_box(body.y(0.45), body.y(0.56), left, right), colour, 0.3)
    self.canvas.paint(_box(body.y(0.45), body.y(0.49), left, right), _scaled(colour, 0.75), 0.1)

  def _backpack_back(self) -> None:
    body, size = self.body, self.body.size
    colour = np.asarray(PALETTE[self.identity.bag_colour], np.float32)
    cx = body.centre
    top = _capsule(body.y(0.215), cx - size(0.055), body.y(0.215), cx + size(0.055), size(0.035))
    self.canvas.paint(top, colour)
    self.canvas.paint(_box(body.y(0.21), body.y(0.45), cx - size(0.09), cx + size(0.09)), colour)
    self.canvas.paint(_box(body.y(0.33), body.y(0.43), cx - size(0.065), cx + size(0.065)), _scaled(colour, 0.78))
    self.canvas.paint(_box(body.y(0.33), body.y(0.34), cx - size(0.065), cx + size(0.065)), _scaled(colour, 0.5),
                      0.0)

  def _backpack_side(self) -> None:
    body, size, facing = self.body, self.body.size, self.body.facing
    colour = np.asarray(PALETTE[self.identity.bag_colour], np.float32)
    back = body.centre - facing * self.shoulder_half_width
    far = back - facing * size(0.085)
    self.canvas.paint(_polygon([(body.y(0.2), min(back, far)), (body.y(0.2), max(back, far)),
                                (body.y(0.45), max(back, far)), (body.y(0.45), min(back, far))]), colour, 0.3)
    self.canvas.paint(_ellipse(body.y(0.2), (back + far) / 2, size(0.02), size(0.0425)), colour, 0.2)

  def _backpack_straps(self) -> None:
    body, size = self.body, self.body.size
    colour = np.asarray(PALETTE[self.identity.bag_colour], np.float32)
    cx = body.centre
    if self.side_view:
      shoulder = (body.y(0.175), cx)
      self.canvas.paint(_capsule(*shoulder, body.y(0.4), cx - body.facing * size(0.04), size(0.013)),
                        _scaled(colour, 0.85), 0.2)
      return
    for side in (-1, 1):
      self.canvas.paint(_capsule(body.y(0.17), cx + side * size(0.06), body.y(0.4), cx + side * size(0.07),
                                 size(0.015)), _scaled(colour, 0.85), 0.2)

  def _head(self) -> None:
    body, size, identity = self.body, self.body.size, self.identity
    cx = body.centre + body.facing * size(0.012)
    head_y = body.y(0.072)
    self.canvas.paint(_box(body.y(0.11), body.y(0.18), body.centre - size(0.022), body.centre + size(0.022)),
                      _scaled(self.skin, 0.85), 0.2)
    hair_colour = HAIR_PALETTE.get(identity.hair_colour)
    visible_hair = hair_colour is not None and not (identity.hat == 'beanie' and identity.hair_length == 'short')
    if visible_hair and identity.hair_length == 'long':
      self._long_hair(hair_colour)
    self.canvas.paint(_ellipse(head_y, cx, size(0.064), size(0.05)), self.skin, 0.25)
    if self.viewpoint == 'front':
      for side in (-1, 1):
        self.canvas.paint(_ellipse(body.y(0.075), cx + side * size(0.018), size(0.006), size(0.006)),
                          (40, 30, 30), 0.0)
    elif self.side_view:
      self.canvas.paint(_ellipse(body.y(0.075), cx + body.facing * size(0.03), size(0.005), size(0.005)),
                        (40, 30, 30), 0.0)
    if visible_hair:
      self._hair_cap(hair_colour, head_y, cx)
    if identity.hat != NONE:
      self._hat(head_y, cx)

  def _long_hair(self, colour) -> None:
    body, size = self.body, self.body.size
    cx = body.centre
    if self.viewpoint == 'back':
      self.canvas.paint(_capsule(body.y(0.06), cx, body.y(0.25), cx, size(0.058)), colour, 0.3)
    elif self.side_view:
      back = -body.facing
      self.canvas.paint(_capsule(body.y(0.06), cx + back * size(0.02), body.y(0.25), cx + back * size(0.04),
                                 size(0.035)), colour, 0.3)
    else:
      for side in (-1, 1):
        self.canvas.paint(_capsule(body.y(0.05), cx + side * size(0.045), body.y(0.25), cx + side * size(0.06),
                                   size(0.022)), colour, 0.3)

  def _hair_cap(self, colour, head_y: float, cx: float) -> None:
    """Hair over the head, leaving the face free (front and side views)."""
    body, size = self.body, self.body.size
    hair = _ellipse(head_y - size(0.006), cx, size(0.068), size(0.056))
    if self.viewpoint == 'back':
      nape = body.y(0.2 if self.identity.hair_length == 'long' else 0.12)
      self.canvas.paint(hair, colour, 0.3, clip=lambda ys, xs: (ys < nape) & (xs >= 0))
      return
    face_y, face_x = head_y + size(0.016), cx + body.facing * size(0.018)
    face_ry, face_rx = size(0.058), size(0.042 if body.facing == 0 else 0.046)
    self.canvas.paint(hair, colour, 0.3, clip=lambda ys, xs: np.clip(
        (((ys - face_y) / face_ry) ** 2 + ((xs - face_x) / face_rx) ** 2 - 1.0) * 4.0, 0.0, 1.0))

  def _hat(self, head_y: float, cx: float) -> None:
    body, size = self.body, self.body.size
    colour = np.asarray(PALETTE[self.identity.hat_colour], np.float32)
    if self.identity.hat == 'cap':
      self.canvas.paint(_ellipse(head_y - size(0.008), cx, size(0.064), size(0.056)), colour, 0.3,
                        clip=lambda ys, xs: (ys < body.y(0.035)) & (xs >= 0))
      if self.side_view:
        brim = _ellipse(body.y(0.036), cx + body.facing * size(0.058), size(0.01), size(0.045))
      elif self.viewpoint == 'front':
        brim = _ellipse(body.y(0.037), cx, size(0.014), size(0.066))
      else:
        brim = _box(body.y(0.025), body.y(0.035), cx - size(0.03), cx + size(0.03))
      self.canvas.paint(brim, _scaled(colour, 0.75), 0.2)
    else:
      self.canvas.paint(_ellipse(head_y - size(0.03), cx, size(0.07), size(0.058)), colour, 0.3,
                        clip=lambda ys, xs: (ys < body.y(0.05)) & (xs >= 0))
      self.canvas.paint(_box(body.y(0.028), body.y(0.052), cx - size(0.058), cx + size(0.058)), None, 0.2,
                        texture=_ribs(colour, cx))

  def paint(self) -> None:
    identity = self.identity
    bag = identity.bag
    if self.side_view:
      self._paint_side(bag)
    else:
      self._paint_front_or_back(bag)

  def _paint_front_or_back(self, bag: str) -> None:
    size, body = self.body.size, self.body
    if bag == 'backpack' and self.viewpoint == 'front':
      colour = np.asarray(PALETTE[self.identity.bag_colour], np.float32)
      self.canvas.paint(_capsule(body.y(0.165), body.centre - size(0.06), body.y(0.165), body.centre + size(0.06),
                                 size(0.02)), _scaled(colour, 0.8))
    for index in (0, 1):
      self._leg(index, 1.0)
    self._pelvis_and_skirt()
    self._torso()
    if bag == 'backpack' and self.viewpoint == 'front':
      self._backpack_straps()
    elif bag == 'backpack':
      self._backpack_back()
    for index in (0, 1):
      self._arm(index, 1.0)
    bag_x = self._bag_side_sign()
    if bag == 'shoulder bag':
      self._shoulder_bag(bag_x)
    elif bag == 'handbag':
      self._handbag(self._hand(0 if bag_x < 0 else 1), bag_x)
    self._head()

  def _paint_side(self, bag: str) -> None:
    self._arm(1, 0.78)
    self._leg(1, 0.82)
    self._leg(0, 1.0)
    self._pelvis_and_skirt()
    if bag == 'backpack':
      self._backpack_side()
    self._torso()
    if bag == 'backpack':
      self._backpack_straps()
    if bag == 'shoulder bag' and self._bag_near():
      self._shoulder_bag(0)
    self._arm(0, 1.0)
    if bag == 'handbag' and self._bag_near():
      self._handbag(self._hand(0), 0)
    self._head()


# ----------------------------------------------------------------------------------------------------------------
# Scenes: background, distractors, the person, occluders, lighting, blur and noise
# ----------------------------------------------------------------------------------------------------------------

def _muted(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
  """A palette colour pulled towards grey by a random share in [low, high]."""
  share = rng.uniform(low, high)
  return np.asarray(PALETTE[_choice(rng, COLOURS)], np.float32) * (1 - share) + 128.0 * share


@dataclasses.dataclass(frozen=True)
class CameraStyle:
  """What one camera's pictures share: scene colours, horizon height and lighting."""
  sky: np.ndarray
  wall: np.ndarray
  ground: np.ndarray
  horizon: float  # fraction of the image height
  gain: float
  cast: np.ndarray


def camera_style(seed: int, camera_id: int) -> CameraStyle:
  rng = np.random.default_rng([seed, 0, camera_id])
  return CameraStyle(sky=_muted(rng, 0.4, 0.7), wall=_muted(rng, 0.4, 0.7), ground=_muted(rng, 0.5, 0.8),
                     horizon=rng.uniform(0.45, 0.7), gain=rng.uniform(0.88, 1.12), cast=rng.uniform(0.97, 1.03, 3))


def _background(style: CameraStyle, rng: np.random.Generator) -> np.ndarray:
  rows = np.linspace(0.0, 1.0, IMAGE_HEIGHT, dtype=np.float32)[:, None, None]
  horizon = style.horizon + rng.uniform(-0.05, 0.05)
  upper = style.sky * (1 - rows / horizon) + style.wall * (rows / horizon)
  lower = style.ground * (0.8 + 0.3 * (rows - horizon) / (1 - horizon))
  pixels = np.where(rows < horizon, upper, lower) * np.ones((1, IMAGE_WIDTH, 1), np.float32)
  canvas = _Canvas(pixels.astype(np.float32))
  for _ in range(int(rng.integers(3, 9))):
    colour = _muted(rng, 0.2, 0.6)
    top = rng.uniform(-20, horizon * IMAGE_HEIGHT)
    left = rng.uniform(-30, IMAGE_WIDTH)
    if rng.random() < 0.6:
      shape = _box(top, top + rng.uniform(15, 90), left, left + rng.uniform(10, 60))
    else:
      shape = _ellipse(top, left, rng.uniform(8, 35), rng.uniform(8, 35))
    canvas.paint(shape, colour, shading=0.2)
  return canvas.pixels


def _blur(pixels: np.ndarray) -> np.ndarray:
  """One pass of the separable [1, 2, 1] / 4 filter, edges replicated."""
  padded = np.pad(pixels, ((1, 1), (0, 0), (0, 0)), mode='edge')
  pixels = (padded[:-2] + 2 * padded[1:-1] + padded[2:]) / 4
  padded = np.pad(pixels, ((0, 0), (1, 1), (0, 0)), mode='edge')
  return (padded[:, :-2] + 2 * padded[:, 1:-1] + padded[:, 2:]) / 4


def _occluder(canvas: _Canvas, occlusion: str, body: _Body, rng: np.random.Generator) -> None:
  if occlusion == 'pole':
    offset = rng.uniform(0.06, 0.14) * body.height * _choice(rng, (-1, 1))
    half_width = rng.uniform(0.015, 0.025) * body.height
    canvas.paint(_box(-2, IMAGE_HEIGHT + 2, body.centre + offset - half_width, body.centre + offset + half_width),
                 _muted(rng, 0.6, 0.9), shading=0.5)
    return
  top = body.y(rng.uniform(0.8, 0.86) if occlusion == 'feet' else rng.uniform(0.4, 0.44))
  colour = _muted(rng, 0.3, 0.6)
  period = rng.uniform(6, 14)

  def planks(ys, xs):
    return np.where((((ys - top) % period) < 1.5)[..., None] & (xs >= 0)[..., None], colour * 0.6, colour)
  canvas.paint(_box(top, IMAGE_HEIGHT + 2, -2, IMAGE_WIDTH + 2), None, shading=0.0, texture=planks)


def render_image(identity: Identity, spec: ImageSpec, style: CameraStyle, rng: np.random.Generator) -> np.ndarray:
  """The picture as uint8 [IMAGE_HEIGHT, IMAGE_WIDTH, 3]."""
  canvas = _Canvas(_background(style, rng))
  height = rng.uniform(0.8, 0.92) * IMAGE_HEIGHT
  feet = IMAGE_HEIGHT - rng.uniform(3, 14)
  facing = {'left': -1, 'right': 1}.get(spec.viewpoint, 0)
  body = _Body(top=feet - height, height=height, centre=IMAGE_WIDTH / 2 + rng.uniform(-8, 8), facing=facing)
  if rng.random() < 0.35:
    scale = rng.uniform(0.7, 1.0)
    edge = _choice(rng, (-1, 1))
    centre = IMAGE_WIDTH / 2 + edge * rng.uniform(0.42, 0.62) * IMAGE_WIDTH
    distractor = _Body(top=feet - rng.uniform(0, 20) - height * scale, height=height * scale, centre=centre,
                       facing=_choice(rng, (-1, 0, 1)))
    distractor_view = {-1: 'left', 1: 'right'}.get(distractor.facing, _choice(rng, ('front', 'back')))
    _PersonPainter(canvas, sample_identity(rng), distractor_view, distractor, rng).paint()
  canvas.paint(_ellipse(feet, body.centre, body.size(0.02), body.size(0.16)), style.ground * 0.55, shading=0.0)
  _PersonPainter(canvas, identity, spec.viewpoint, body, rng).paint()
  if spec.occlusion != 'none':
    _occluder(canvas, spec.occlusion, body, rng)
  pixels = canvas.pixels
  columns = np.linspace(-1.0, 1.0, IMAGE_WIDTH, dtype=np.float32)[None, :, None]
  lighting = style.gain * rng.uniform(0.92, 1.08) * (1 + rng.uniform(-0.15, 0.15) * columns)
  pixels = pixels * lighting * (style.cast * rng.uniform(0.98, 1.02, 3)).astype(np.float32)
  for _ in range(int(rng.choice(3, p=(0.3, 0.55, 0.15)))):
    pixels = _blur(pixels)
  pixels = pixels + rng.normal(0.0, rng.uniform(1.5, 5.0), pixels.shape).astype(np.float32)
  return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def encode_jpeg(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  PIL.Image.fromarray(image).save(buffer, format='JPEG', quality=92, subsampling=0)
  return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# Records (one per image) and the truth-based oracle
# ----------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Record:
  """Everything known about one image except its pixels (rendered on demand)."""
  person_id: int
  image_index: int
  image_key: str
  identity: Identity
  spec: ImageSpec
  captions: list[str]
  mentions: list[dict[str, str]]


def _stream(seed: int, person_id: int, image_index: int, stream: int) -> np.random.Generator:
  return np.random.default_rng([seed, person_id, image_index, stream])


def generate_records(size: SynthPedesSize, seed: int, split: str) -> list[Record]:
  """The split's images as records; person ids are 1-based and unique over all splits."""
  identities = make_identities(size, seed)
  first_id = 1 + sum(len(identities[name]) for name in SPLITS[:SPLITS.index(split)])
  records = []
  for offset, identity in enumerate(identities[split]):
    person_id = first_id + offset
    count_rng = _stream(seed, person_id, 0, 0)
    count = int(count_rng.integers(size.min_images, size.max_images + 1))
    cameras = count_rng.permutation(6)[:count] + 1
    for image_index in range(count):
      spec = sample_image_spec(identity, int(cameras[image_index]), _stream(seed, person_id, image_index, 1))
      captions, mentions = make_captions(identity, spec, _stream(seed, person_id, image_index, 3))
      records.append(Record(person_id=person_id, image_index=image_index,
                            image_key=f'{split}/{person_id:05d}_{image_index}.jpg', identity=identity, spec=spec,
                            captions=captions, mentions=mentions))
  return records


def render_record(record: Record, seed: int) -> np.ndarray:
  return render_image(record.identity, record.spec, camera_style(seed, record.spec.camera_id),
                      _stream(seed, record.person_id, record.image_index, 2))


def _label_codes(labels: dict[str, str]) -> list[int]:
  return [ATTRIBUTE_VALUES[key].index(labels[key]) if key in labels else -1 for key in ATTRIBUTE_KEYS]


def oracle_text_to_image_r1(records: Sequence[Record], chunk: int = 512) -> tuple[float, float]:
  """Text-to-image R@1 of ranking images by how many of a caption's facts their identity has, and chance level.

  Every caption of `records` queries every image of `records`. Ties are broken pessimistically: a query counts
  as a hit only when its identity scores strictly higher than every other identity in the gallery. Chance level
  is the mean share of positives in the gallery.
  """
  gallery = np.array([_label_codes(record.identity.labels()) for record in records])
  gallery_ids = np.array([record.person_id for record in records])
  queries = np.array([_label_codes(mention) for record in records for mention in record.mentions])
  query_ids = np.array([record.person_id for record in records for _ in record.mentions])
  hits, chance = [], []
  for start in range(0, len(queries), chunk):
    scores = (queries[start:start + chunk, None, :] == gallery[None]).sum(axis=-1)
    positive = query_ids[start:start + chunk, None] == gallery_ids[None]
    best_positive = np.where(positive, scores, -1).max(axis=1)
    best_negative = np.where(positive, -1, scores).max(axis=1)
    hits.append(best_positive > best_negative)
    chance.append(positive.mean(axis=1))
  return float(np.concatenate(hits).mean()), float(np.concatenate(chance).mean())


def near_duplicate_pairs(identities: Sequence[Identity], max_differences: int = 2) -> int:
  """How many identity pairs differ in at most `max_differences` attribute labels."""
  codes = np.array([_label_codes(identity.labels()) for identity in identities])
  differences = (codes[:, None, :] != codes[None]).sum(axis=-1)
  return int(np.triu(differences <= max_differences, k=1).sum())


# ----------------------------------------------------------------------------------------------------------------
# The TFDS builder
# ----------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class SynthPedesConfig(tfds.core.BuilderConfig):
  size: SynthPedesSize = SynthPedesSize(identities=(600, 60, 100))
  seed: int = 0


class SynthPedes(tfds.core.GeneratorBasedBuilder):
  """SynthPedes: rendered pedestrians with attribute-grounded captions, generated locally."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  BUILDER_CONFIGS = [
      SynthPedesConfig(name='default', description='600 / 60 / 100 identities (train / val / test).',
                       size=SynthPedesSize(identities=(600, 60, 100))),
      SynthPedesConfig(name='tiny', description='24 / 6 / 6 identities, for tests.',
                       size=SynthPedesSize(identities=(24, 6, 6)), seed=1),
      SynthPedesConfig(name='large', description='6,000 / 60 / 100 identities, a pretraining corpus (own seed).',
                       size=SynthPedesSize(identities=(6000, 60, 100)), seed=2),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    attributes = {key: tfds.features.ClassLabel(names=values) for key, values in ATTRIBUTE_VALUES.items()}
    attributes.update(viewpoint=tfds.features.ClassLabel(names=VIEWPOINTS),
                      occlusion=tfds.features.ClassLabel(names=OCCLUSIONS),
                      visible=tfds.features.Sequence(tfds.features.Text()),
                      caption_facts=tfds.features.Sequence(tfds.features.Text()))
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
            'captions': tfds.features.Sequence(tfds.features.Text()),
            'person_id': np.int64,
            'camera_id': np.int64,
            'image_key': tfds.features.Text(),
            'attributes': tfds.features.FeaturesDict(attributes),
        }))

  def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
    del dl_manager  # everything is generated locally
    return {split: self._generate_examples(split) for split in SPLITS}

  def _generate_examples(self, split: str) -> Iterator[tuple[str, dict]]:
    config = self.builder_config
    for record in generate_records(config.size, config.seed, split):
      attributes = dict(record.identity.labels())
      attributes.update(viewpoint=record.spec.viewpoint, occlusion=record.spec.occlusion,
                        visible=sorted(record.spec.visible),
                        caption_facts=[format_facts(mention) for mention in record.mentions])
      yield record.image_key, {
          'image': encode_jpeg(render_record(record, config.seed)),
          'captions': record.captions,
          'person_id': record.person_id,
          'camera_id': record.spec.camera_id,
          'image_key': record.image_key,
          'attributes': attributes,
      }


def format_facts(facts: dict[str, str]) -> str:
  """'hat=cap;upper_colour=red' (keys in ATTRIBUTE_KEYS order); parse_facts inverts it."""
  return ';'.join(f'{key}={facts[key]}' for key in ATTRIBUTE_KEYS if key in facts)


def parse_facts(text: str) -> dict[str, str]:
  return dict(item.split('=', 1) for item in text.split(';') if item)


def _print_statistics(argv: Sequence[str]) -> None:
  del argv
  config = next(config for config in SynthPedes.BUILDER_CONFIGS if config.name == _CONFIG.value)
  identities = make_identities(config.size, config.seed)
  for split in SPLITS:
    records = generate_records(config.size, config.seed, split)
    r1, chance = oracle_text_to_image_r1(records)
    captions = sum(len(record.captions) for record in records)
    print(f'{split}: {len(identities[split])} identities, {len(records)} images, {captions} captions, '
          f'{near_duplicate_pairs(identities[split])} near-duplicate pairs (<= 2 labels apart), '
          f'oracle t2i R@1 {100 * r1:.1f}%, chance {100 * chance:.2f}%')


if __name__ == '__main__':
  from absl import app, flags
  _CONFIG = flags.DEFINE_enum('config', 'default', [config.name for config in SynthPedes.BUILDER_CONFIGS],
                              'SynthPedes builder config.')
  app.run(_print_statistics)
