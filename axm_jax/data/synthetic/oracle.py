"""The truth-based oracle: how well a caption's facts alone find its identity, and how alike identities are."""
from collections.abc import Sequence

import numpy as np

from axm_jax.data.synthetic.identities import ATTRIBUTE_KEYS, ATTRIBUTE_VALUES, Identity
from axm_jax.data.synthetic.records import Record


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
