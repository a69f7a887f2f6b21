"""Records: one per image, with its identity, viewpoint and captions; pixels rendered on demand."""
import dataclasses

import numpy as np

from axm_jax.data.synthetic.captions import make_captions
from axm_jax.data.synthetic.identities import (SPLITS, Identity, ImageSpec, SynthPedesSize, make_identities,
                                               sample_image_spec)
from axm_jax.data.synthetic.render import camera_style, render_image


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
