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
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from axm_jax.data.synthetic.identities import (ATTRIBUTE_KEYS, ATTRIBUTE_VALUES, OCCLUSIONS, SPLITS, VIEWPOINTS,
                                               SynthPedesSize)
from axm_jax.data.synthetic.records import generate_records, render_record
from axm_jax.data.synthetic.render import encode_jpeg


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
