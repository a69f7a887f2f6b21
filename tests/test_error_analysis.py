"""Error analysis: top-1 failures and the caption facts the wrongly ranked person contradicts."""
import numpy as np
import pytest

from axm_jax import config_files, error_analysis, run


def test_count_failures_counts_contradicted_and_stated_facts():
  labels_by_id = {1: {'upper': 'coat', 'upper_colour': 'red', 'hat': 'cap'},
                  2: {'upper': 'dress', 'upper_colour': 'red', 'hat': 'cap'},
                  3: {'upper': 'coat', 'upper_colour': 'blue', 'hat': 'none'}}
  gallery_ids = np.array([1, 2, 3])
  query_facts = [{'upper': 'coat', 'upper_colour': 'red'},  # top-1 is person 2: contradicts upper
                 {'upper_colour': 'red'},  # top-1 is person 2, who fits: consistent failure
                 {'upper': 'coat', 'hat': 'cap'},  # top-1 is person 3: contradicts hat
                 {'hat': 'cap'}]  # top-1 is person 1: a hit
  similarity = np.array([[0.1, 0.9, 0.2], [0.3, 0.8, 0.1], [0.2, 0.1, 0.7], [0.9, 0.5, 0.1]])
  counts = error_analysis.count_failures(similarity, query_facts, np.array([1, 1, 1, 1]), gallery_ids, labels_by_id)
  assert (counts.queries, counts.failures, counts.consistent) == (4, 3, 1)
  assert counts.contradicted == {'upper': 1, 'hat': 1}
  assert counts.mentioned == {'upper': 2, 'upper_colour': 2, 'hat': 2}
  lines = error_analysis.format_counts(counts).splitlines()
  assert lines[0] == '4 queries, 3 top-1 failures, 1 of them ranking first a person who fits every stated fact'
  assert lines[2].split() == ['upper', '1', '2', '50.0%']


def test_runs_without_attribute_labels_are_rejected(tmp_path):
  config = config_files.load_config('configs/synthetic.py:smoke')
  config.data.name = 'cuhk_pedes'
  run.save_config(run.RunDirectory(tmp_path), config)
  with pytest.raises(ValueError, match=r"needs SynthPedes attribute labels; the run in .* has config\.data\.name = "
                                       r"'cuhk_pedes'$"):
    error_analysis.analyse(str(tmp_path), 'test', 'best', '')
