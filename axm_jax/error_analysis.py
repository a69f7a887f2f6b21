"""Why text-to-image retrieval fails on SynthPedes: which caption facts the top-ranked wrong person contradicts.

  python -m axm_jax.error_analysis --workdir=DIR [--split=test] [--checkpoint=best] [--data_dir=...]

For every caption whose top-ranked image shows another person, counts each attribute the caption states that the
top-ranked person's labels contradict (a failure can contradict several), and the failures where the top-ranked
person fits every stated fact (the caption is ambiguous). SynthPedes only: real datasets have no attribute labels.
"""
import collections
import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from absl import flags

from axm_jax import cli, evaluate, run
from axm_jax.data import pipeline
from axm_jax.data.synthetic.identities import SPLITS
from axm_jax.data.synthetic.records import generate_records


@dataclasses.dataclass
class FailureCounts:
  queries: int
  failures: int
  consistent: int  # failures whose top-ranked person fits every stated fact
  contradicted: collections.Counter  # attribute -> failures contradicting it
  mentioned: collections.Counter  # attribute -> queries stating it


def count_failures(similarity: np.ndarray, query_facts: Sequence[Mapping[str, str]], query_ids: np.ndarray,
                   gallery_ids: np.ndarray, labels_by_id: Mapping[int, Mapping[str, str]]) -> FailureCounts:
  """Top-1 failures of similarity [queries, gallery] and the facts they contradict."""
  top_ids = gallery_ids[np.argmax(similarity, axis=1)]
  contradicted, mentioned = collections.Counter(), collections.Counter()
  failures = consistent = 0
  for facts, query_id, top_id in zip(query_facts, query_ids, top_ids):
    mentioned.update(list(facts))
    if top_id == query_id:
      continue
    failures += 1
    labels = labels_by_id[int(top_id)]
    wrong = [key for key, value in facts.items() if labels[key] != value]
    consistent += not wrong
    contradicted.update(wrong)
  return FailureCounts(len(query_facts), failures, consistent, contradicted, mentioned)


def format_counts(counts: FailureCounts) -> str:
  lines = [f'{counts.queries} queries, {counts.failures} top-1 failures, {counts.consistent} of them ranking first a '
           'person who fits every stated fact',
           f'{"attribute":>14} {"failures contradicting it":>26} {"queries stating it":>19} {"share":>7}']
  for key, count in counts.contradicted.most_common():
    lines.append(f'{key:>14} {count:>26} {counts.mentioned[key]:>19} {100 * count / counts.mentioned[key]:>6.1f}%')
  return '\n'.join(lines)


def analyse(workdir: str, split_name: str, checkpoint: str, data_dir: str) -> FailureCounts:
  config = run.load_config(run.RunDirectory(workdir))
  if config.data.name != 'synth_pedes':
    raise ValueError(f'error analysis needs SynthPedes attribute labels; the run in {workdir} has '
                     f'config.data.name = {config.data.name!r}')
  if data_dir:
    config.data.data_dir = data_dir
  trained = run.open_trained(workdir, checkpoint, config)
  split = pipeline.load_split(config.data, split_name)
  images, texts = evaluate.compute_embeddings(trained.variables, trained.model, split, trained.tokenizer, config)
  builder_config = pipeline.dataset_builder(config.data).builder_config
  records = {record.image_key: record
             for record in generate_records(builder_config.size, builder_config.seed, split_name)}
  query_facts = [facts for key in split.image_keys for facts in records[key].mentions]
  labels_by_id = {record.person_id: record.identity.labels() for record in records.values()}
  return count_failures(texts.vectors @ images.vectors.T, query_facts, texts.person_ids, images.person_ids,
                        labels_by_id)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined by its __main__ block only, so that tests import the functions above."""
  flags.DEFINE_string('workdir', None, 'Directory of a finished SynthPedes run.', required=True)
  flags.DEFINE_enum('split', 'test', list(SPLITS), 'Split to analyse.')
  flags.DEFINE_string('checkpoint', 'best', "'best', 'latest' or a step number.")
  flags.DEFINE_string('data_dir', '', 'TFDS data dir, when not the one the run used.')


def main(argv: Sequence[str]) -> None:
  del argv
  print(format_counts(analyse(FLAGS.workdir, FLAGS.split, FLAGS.checkpoint, FLAGS.data_dir)))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
