"""The caption grammar: which visible facts a caption mentions, and the sentence that states them."""
from collections.abc import Sequence

import numpy as np

from axm_jax.data.synthetic.identities import (COLOURS, GARMENT_KEYS, HAIR_COLOURS, NONE, Identity, ImageSpec,
                                               choice)

CAPTIONS_PER_IMAGE = 2
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
  noun = choice(rng, NOUNS[noun_key])
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
    segments.append(choice(rng, verbs) + ' ' + _join(worn))
  if carried:
    segments.append(choice(rng, ('carrying', 'with')) + ' ' + _join(carried))
  if hair == 'bald':
    if rng.random() < 0.5:
      subject = subject.replace(' ', ' bald ', 1)
    else:
      segments.append('who is bald')
  elif hair:
    segments.append(choice(rng, ('with {} hair', 'who has {} hair')).format(hair))
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
        verb = choice(rng, ('is wearing', 'wears', 'has on') if any('dress' in phrase for phrase in part)
                       else ('is wearing', 'wears', 'has on', 'is dressed in'))
        predicates.append(f'{verb} {_join(part)}')
  if carried:
    predicates.append(choice(rng, ('is carrying', 'carries', 'has')) + ' ' + _join(carried))
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
    chosen[int(rng.integers(count))] = choice(rng, garments)
  return {key: visible[key] for key in keys if key in chosen}


def realise_caption(mentions: dict[str, str], presentation: str, rng: np.random.Generator) -> str:
  """Writes one caption stating exactly the `mentions` facts (presentation only via nouns and pronouns)."""
  gendered = 'presentation' in mentions
  worn, carried, hair = _item_phrases(mentions, rng)
  rng.shuffle(worn)
  subject_noun = choice(rng, SUBJECTS[presentation if gendered else NONE])
  determiner = choice(rng, ('a', 'the', 'this'))
  subject = _article(subject_noun, subject_noun) if determiner == 'a' else f'{determiner} {subject_noun}'
  if gendered:
    pronoun, possessive = PRONOUNS[presentation]
  else:
    pronoun, possessive = 'the ' + subject_noun, 'the ' + subject_noun + "'s"
  style = choice(rng, ('one_sentence', 'sentences', 'listing'), (0.4, 0.45, 0.15))
  if style == 'one_sentence':
    text = _one_sentence(subject, worn, carried, hair, rng)
  elif style == 'sentences':
    text = _sentences(subject, pronoun, possessive, worn, carried, hair, rng)
  else:
    text = _listing(subject_noun, worn, carried, hair, rng)
  if rng.random() < FILLER_PROBABILITY:
    filler = choice(rng, PERSONAL_FILLERS if gendered else NEUTRAL_FILLERS).format(pronoun=pronoun)
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
