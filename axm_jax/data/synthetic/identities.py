"""The identity model: attribute labels, identities drawn from priors, their mutations, and what a picture shows."""
import dataclasses
from collections.abc import Sequence

import numpy as np

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


def choice(rng: np.random.Generator, values: Sequence[str], weights: Sequence[float] | None = None) -> str:
  """One of `values`, drawn uniformly or in proportion to `weights`."""
  probabilities = None if weights is None else np.asarray(weights) / np.sum(weights)
  return values[rng.choice(len(values), p=probabilities)]


def _colour(rng: np.random.Generator) -> str:
  return choice(rng, COLOURS)


def _shoes_colour(rng: np.random.Generator) -> str:
  weights = [4.0 if colour in ('black', 'white') else 1.0 for colour in COLOURS]
  return choice(rng, COLOURS, weights)


def _sleeves(rng: np.random.Generator, upper: str) -> str:
  short_probability = {'t-shirt': 0.7, 'shirt': 0.4, 'dress': 0.6}.get(upper, 0.0)
  return 'short' if rng.random() < short_probability else 'long'


def _lower(rng: np.random.Generator, presentation: str) -> str:
  weights = (0.3, 0.3, 0.15, 0.25) if presentation == 'woman' else (0.4, 0.4, 0.2, 0.0)
  return choice(rng, LOWERS, weights)


def sample_identity(rng: np.random.Generator) -> Identity:
  """Draws a fresh identity from the attribute priors."""
  presentation = choice(rng, ('man', 'woman'))
  woman = presentation == 'woman'
  hair_length = choice(rng, HAIR_LENGTHS, (0.25, 0.72, 0.03) if woman else (0.7, 0.1, 0.2))
  hair_colour = NONE if hair_length == 'bald' else choice(rng, HAIR_COLOURS, (0.3, 0.3, 0.2, 0.1, 0.1))
  hat = choice(rng, (NONE,) + HATS, (0.7, 0.15, 0.15))
  upper = choice(rng, UPPERS, (0.2, 0.16, 0.16, 0.12, 0.16, 0.2) if woman else (0.25, 0.2, 0.2, 0.15, 0.2, 0.0))
  lower = NONE if upper == 'dress' else _lower(rng, presentation)
  bag = choice(rng, (NONE,) + BAGS, (0.4, 0.25, 0.15, 0.2))
  return Identity(
      presentation=presentation, hair_colour=hair_colour, hair_length=hair_length, hat=hat,
      hat_colour=NONE if hat == NONE else _colour(rng), upper=upper, upper_colour=_colour(rng),
      sleeves=_sleeves(rng, upper), pattern='striped' if rng.random() < 0.25 else 'plain', lower=lower,
      lower_colour=NONE if lower == NONE else _colour(rng), shoes_colour=_shoes_colour(rng), bag=bag,
      bag_colour=NONE if bag == NONE else _colour(rng), bag_side=choice(rng, ('left', 'right')),
      skin_tone=int(rng.integers(len(SKIN_TONES))))


def _mutation(identity: Identity, rng: np.random.Generator) -> dict[str, str]:
  """One random change, as the fields to replace."""
  kind = choice(rng, ('upper_colour', 'lower_colour', 'swap_colours', 'shoes_colour', 'upper', 'lower',
                       'hair_colour', 'pattern', 'bag_colour', 'bag', 'hat_colour', 'hat'),
                 (3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1))
  if kind == 'swap_colours':
    return {'upper_colour': identity.lower_colour, 'lower_colour': identity.upper_colour}
  if kind in ('upper_colour', 'lower_colour', 'shoes_colour', 'bag_colour', 'hat_colour'):
    return {kind: _colour(rng)}
  if kind == 'upper':
    upper = choice(rng, UPPERS)
    return {'upper': upper, 'sleeves': _sleeves(rng, upper)}
  if kind == 'lower':
    return {'lower': _lower(rng, identity.presentation)}
  if kind == 'hair_colour':
    return {'hair_colour': choice(rng, HAIR_COLOURS)}
  if kind == 'pattern':
    return {'pattern': 'plain' if identity.pattern == 'striped' else 'striped'}
  if kind == 'bag':
    bag = choice(rng, (NONE,) + BAGS)
    return {'bag': bag, 'bag_colour': NONE if bag == NONE else identity.bag_colour if identity.bag != NONE
            else _colour(rng)}
  hat = choice(rng, (NONE,) + HATS)
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
  viewpoint = choice(rng, VIEWPOINTS, (0.4, 0.3, 0.15, 0.15))
  occlusion = choice(rng, OCCLUSIONS, (0.9, 0.03, 0.04, 0.03))
  visible = visible_facts(identity, viewpoint, occlusion)
  if not any(key in visible for key in GARMENT_KEYS):  # every caption names a garment: keep one in view
    occlusion = 'feet'
    visible = visible_facts(identity, viewpoint, occlusion)
  return ImageSpec(camera_id=camera_id, viewpoint=viewpoint, occlusion=occlusion, visible=visible)
