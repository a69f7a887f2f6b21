"""Tests of axm_jax.warm_start (config.model.init_from) and its place in train_step.create_state."""
import logging
import os

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from axm_jax import checkpointing
from axm_jax import config_files
from axm_jax import run
from axm_jax import train
from axm_jax import train_step
from axm_jax import warm_start
from axm_jax.data import tokenizer as tokenizer_lib
from axm_jax.models import factory

CAPTIONS = ['a woman in a red coat and black trousers', 'a man with a blue shirt and grey shorts',
            'the person carries a brown bag and wears white shoes', 'a girl in a green dress with a yellow hat']
VOCAB_SIZE = 48
WIDTH = 4


def smoke_config(init_from=''):
  config = config_files.load_config('configs/synthetic.py:smoke')
  config.model.init_from = str(init_from)
  return config


def tiny_variables(seed, rows, classes=3, head=5, extra=None):
  """A small variables tree with the paths the warm start treats specially, values from `seed`."""
  rng = np.random.default_rng(seed)
  normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
  params = {'word_embedding': {'embedding': normal(rows, WIDTH)}, 'classifier': {'kernel': normal(WIDTH, classes)},
            'text_output': {'kernel': normal(WIDTH, head), 'bias': normal(head)}, **(extra or {})}
  return {'params': params, 'batch_stats': {'text_neck': {'mean': normal(WIDTH), 'var': normal(WIDTH) ** 2}}}


def save_run(root, variables_by_step, best_step=None, architecture='axm_net', dataset=('synth_pedes', 'tiny')):
  """A hand-made run directory: config, tokenizer of CAPTIONS, periodic checkpoints and optionally a best one."""
  root.mkdir()
  directory = run.RunDirectory(root)
  config = smoke_config()
  config.model.architecture = architecture
  config.data.name, config.data.builder_config = dataset
  run.save_config(directory, config)
  run.save_tokenizer(directory, tokenizer_lib.train_tokenizer(CAPTIONS, VOCAB_SIZE))
  checkpoints = directory.checkpoints(keep=len(variables_by_step))
  for step, variables in variables_by_step.items():
    checkpoints.save(step, variables, {'count': np.zeros((), np.int32)})
  if best_step is not None:
    checkpoints.save_if_best(best_step, variables_by_step[best_step], {'t2i_r1': 50.0})
  checkpoints.close()
  return run.load_tokenizer(directory).vocabulary()


def flat(tree):
  return flax.traverse_util.flatten_dict(jax.device_get(flax.core.unfreeze(tree)), sep='/')


def assert_same(actual, expected):
  assert actual.dtype == expected.dtype and actual.shape == expected.shape
  np.testing.assert_array_equal(actual, expected)


def warm_start_lines(caplog):
  return [r.getMessage() for r in caplog.records if r.getMessage().startswith('Warm start')]


def test_init_from_parses_workdir_and_step():
  assert warm_start.parse_init_from('runs/a') == ('runs/a', None)
  assert warm_start.parse_init_from('runs/a:1200') == ('runs/a', 1200)
  assert warm_start.parse_init_from('gs://bucket/run') == ('gs://bucket/run', None)
  assert warm_start.parse_init_from('gs://bucket/run:600') == ('gs://bucket/run', 600)


def test_a_real_run_loads_bit_exactly_where_it_fits_and_another_class_count_keeps_the_fresh_classifier(
    smoke_run, caplog):
  caplog.set_level(logging.INFO, logger='absl')
  directory = run.RunDirectory(smoke_run)
  step, saved = directory.restore_variables('best')
  config = smoke_config(smoke_run)
  model = factory.build_model(config.model, num_classes=30)  # the smoke run has 24 identities
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 64, 32, 3)), jnp.zeros((1, 16), jnp.int32), jnp.ones((1, 16), bool),
      train=False))
  rng = np.random.default_rng(1)
  fresh = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), flax.core.unfreeze(shapes))
  vocabulary = run.load_tokenizer(directory).vocabulary()
  loaded, saved, fresh = flat(warm_start.initialise(fresh, config, vocabulary)), flat(saved), flat(fresh)
  assert loaded.keys() == saved.keys() == fresh.keys() and len(loaded) > 400
  for path, value in loaded.items():
    assert_same(value, fresh[path] if path == 'params/classifier/kernel' else saved[path])
  total = sum(value.size for value in fresh.values())
  classifier = fresh['params/classifier/kernel'].size
  assert warm_start_lines(caplog) == [
      f'Warm start from the checkpoint of step {step} in {smoke_run} (config.model.init_from): {len(fresh) - 1} of '
      f'{len(fresh)} variables loaded, {total - classifier:,} of {total:,} values; 1 kept as initialised.',
      "Warm start: params/classifier/kernel kept as initialised: the source's classifier has the 24 identities of "
      "synth_pedes/tiny, this run's the 30 of synth_pedes/tiny."]


def test_create_state_starts_at_step_0_from_the_source_with_a_fresh_optimizer(tmp_path):
  source = tiny_variables(seed=0, rows=VOCAB_SIZE)
  vocabulary = save_run(tmp_path / 'source', {4: source})
  config = smoke_config(tmp_path / 'source')
  optimizer = train_step.make_optimizer(config)
  state = train_step.create_state(config, None, optimizer, vocabulary, tiny_variables(seed=1, rows=VOCAB_SIZE))
  assert int(state.step) == 0
  for path, value in flat(state.variables).items():
    assert_same(value, flat(source)[path])
  fresh_optimizer = optimizer.init(state.params)
  for leaf, expected in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(fresh_optimizer)):
    assert_same(np.asarray(leaf), np.asarray(expected))


def test_the_checkpoint_is_step_else_best_else_latest(tmp_path):
  by_step = {2: tiny_variables(seed=2, rows=VOCAB_SIZE), 4: tiny_variables(seed=4, rows=VOCAB_SIZE)}
  vocabulary = save_run(tmp_path / 'with_best', by_step, best_step=2)
  save_run(tmp_path / 'without_best', by_step)
  fresh = tiny_variables(seed=9, rows=VOCAB_SIZE)
  for init_from, step in (('with_best', 2), ('with_best:4', 4), ('without_best', 4), ('without_best:2', 2)):
    loaded = warm_start.initialise(fresh, smoke_config(tmp_path / init_from), vocabulary)
    assert_same(flat(loaded)['params/text_output/kernel'], by_step[step]['params']['text_output']['kernel'])


def test_a_permuted_vocabulary_remaps_the_embedding_rows_by_piece(tmp_path, caplog):
  caplog.set_level(logging.INFO, logger='absl')
  source = tiny_variables(seed=0, rows=VOCAB_SIZE)
  source_vocabulary = save_run(tmp_path / 'source', {3: source})
  assert len(source_vocabulary) == VOCAB_SIZE
  order = np.random.default_rng(0).permutation(VOCAB_SIZE)
  vocabulary = [source_vocabulary[i] for i in order]
  loaded = warm_start.initialise(tiny_variables(seed=1, rows=VOCAB_SIZE), smoke_config(tmp_path / 'source'),
                                 vocabulary)
  table = source['params']['word_embedding']['embedding']
  assert_same(flat(loaded)['params/word_embedding/embedding'], table[order])
  assert warm_start_lines(caplog)[1] == (
      f'Warm start: params/word_embedding/embedding loaded in part: the same {VOCAB_SIZE} pieces in another order: '
      f'the rows of {VOCAB_SIZE} pieces carried over by piece, 0 kept as initialised.')


def test_another_vocabulary_carries_the_shared_pieces_and_the_pretrained_words_fill_the_others(tmp_path, caplog):
  """init_from is applied after the pretrained files: its rows win, the word vectors keep the rows it lacks."""
  caplog.set_level(logging.INFO, logger='absl')
  source = tiny_variables(seed=0, rows=VOCAB_SIZE)
  source_vocabulary = save_run(tmp_path / 'source', {3: source})
  shared = source_vocabulary[:40]
  vocabulary = shared + ['\u2581zebra', '\u2581ochre']  # 42 pieces in a table of 48 rows
  assert '\u2581and' in shared and not {'\u2581zebra', '\u2581ochre'} & set(source_vocabulary)
  words = tmp_path / 'words.txt'
  words.write_text('2 4\nzebra 1 2 3 4\nand 5 6 7 8\n')
  config = smoke_config(tmp_path / 'source')
  config.model.pretrained_words = str(words)
  fresh = tiny_variables(seed=1, rows=VOCAB_SIZE)
  state = train_step.create_state(config, None, train_step.make_optimizer(config), vocabulary, fresh)
  table = np.asarray(state.params['word_embedding']['embedding'])
  source_table, fresh_table = source['params']['word_embedding']['embedding'], fresh['params']['word_embedding'][
      'embedding']
  assert_same(table[:40], source_table[:40])  # '▁and' among them: the source's row, not its word vector
  assert_same(table[40], np.array([1, 2, 3, 4], np.float32))  # '▁zebra': the word vector
  assert_same(table[41:], fresh_table[41:])  # '▁ochre' and the rows no piece uses
  assert warm_start_lines(caplog)[1] == (
      f'Warm start: params/word_embedding/embedding loaded in part: another vocabulary ({VOCAB_SIZE} pieces in the '
      'source, 42 here): the rows of 40 pieces carried over by piece, 2 kept as initialised.')


def test_other_shapes_identities_and_missing_variables_are_named_and_kept(tmp_path, caplog):
  caplog.set_level(logging.INFO, logger='absl')
  source = tiny_variables(seed=0, rows=VOCAB_SIZE, extra={'old_head': {'kernel': np.ones((2, 2), np.float32)}})
  vocabulary = save_run(tmp_path / 'source', {3: source}, dataset=('cuhk_pedes', 'default'))  # other identities
  fresh = tiny_variables(seed=1, rows=VOCAB_SIZE, head=6, extra={'new_head': {'kernel': np.ones((2, 2), np.float32)}})
  loaded = flat(warm_start.initialise(fresh, smoke_config(tmp_path / 'source'), vocabulary))
  for path, value in loaded.items():
    kept = path in ('params/classifier/kernel', 'params/text_output/kernel', 'params/text_output/bias',
                    'params/new_head/kernel')
    assert_same(value, flat(fresh if kept else source)[path])
  assert warm_start_lines(caplog) == [
      f'Warm start from the checkpoint of step 3 in {tmp_path}/source (config.model.init_from): 3 of 7 variables '
      'loaded, 200 of 246 values; 4 kept as initialised.',  # 48 x 4 + 2 x 4 of those and 4 x 3 + 4 x 6 + 6 + 2 x 2
      'Warm start: params/classifier/kernel kept as initialised: the source\'s classifier has the 3 identities of '
      'cuhk_pedes/default, this run\'s the 3 of synth_pedes/tiny.',
      'Warm start: params/new_head/kernel kept as initialised: the source has no such variable.',
      'Warm start: params/text_output/bias kept as initialised: shape (5,) in the source, (6,) here.',
      'Warm start: params/text_output/kernel kept as initialised: shape (4, 5) in the source, (4, 6) here.',
      'Warm start: 1 variables of the source have no counterpart in this model: params/old_head/kernel.']


def test_init_from_errors_name_the_field_and_what_was_expected(tmp_path):
  fresh = tiny_variables(seed=1, rows=VOCAB_SIZE)
  empty = tmp_path / 'empty'
  empty.mkdir()
  untrained = tmp_path / 'untrained'
  untrained.mkdir()
  run.save_config(run.RunDirectory(untrained), smoke_config())
  vocabulary = save_run(tmp_path / 'run', {2: fresh, 4: fresh}, best_step=2)
  save_run(tmp_path / 'dual', {2: fresh}, architecture='dual_encoder')
  cases = {
      str(empty): f"config.model.init_from = '{empty}': {empty} holds no run (no config.json); expected the workdir "
                  'of a trained run, optionally followed by :STEP.',
      str(untrained): f"config.model.init_from = '{untrained}': the run in {untrained} has no checkpoint; expected a "
                      'run that saved at least one.',
      f'{tmp_path}/run:3': f"config.model.init_from = '{tmp_path}/run:3': the run in {tmp_path}/run has no checkpoint "
                           'of step 3; its checkpoints are of steps [2, 4].',
      f'{tmp_path}/dual': f"config.model.init_from = '{tmp_path}/dual': the run in {tmp_path}/dual has "
                          "config.model.architecture = 'dual_encoder', this run 'axm_net'; none of its variables would "
                          'load. Start from a run of the same architecture.',
  }
  for init_from, message in cases.items():
    with pytest.raises(warm_start.WarmStartError) as raised:
      warm_start.initialise(fresh, smoke_config(init_from), vocabulary)
    assert str(raised.value) == message
  nothing_fits = {'params': {'text_output': {'kernel': np.ones((3, 3), np.float32)}}}
  with pytest.raises(warm_start.WarmStartError) as raised:
    warm_start.initialise(nothing_fits, smoke_config(tmp_path / 'run'), vocabulary)
  assert str(raised.value) == (
      f"config.model.init_from = '{tmp_path}/run': none of the 1 variables of this model fits the checkpoint of step 2 "
      f'in {tmp_path}/run; nothing would be warm-started.')


def test_a_damaged_source_checkpoint_names_itself_and_the_init_from_steps_to_choose(tmp_path):
  fresh = tiny_variables(seed=1, rows=VOCAB_SIZE)
  vocabulary = save_run(tmp_path / 'run', {2: fresh, 4: fresh})
  checkpoint = tmp_path / 'run' / 'checkpoints' / '4'
  largest = max((path for path in checkpoint.rglob('*') if path.is_file()), key=lambda path: path.stat().st_size)
  os.truncate(largest, largest.stat().st_size // 2)
  with pytest.raises(checkpointing.CheckpointError) as raised:
    warm_start.initialise(fresh, smoke_config(tmp_path / 'run'), vocabulary)
  message = str(raised.value)
  assert message.startswith(f'the checkpoint of step 4 in {checkpoint.parent} cannot be restored: '), message
  assert message.endswith(f'. Choose another with --config.model.init_from={tmp_path}/run:STEP '
                          '(saved steps: [2, 4]).'), message


def test_training_refuses_a_wrong_source_before_it_writes_or_builds_anything(tmp_path):
  config = smoke_config(tmp_path / 'missing')
  config.data.data_dir = str(tmp_path / 'tfds')
  with pytest.raises(warm_start.WarmStartError) as raised:
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert str(raised.value) == (f"config.model.init_from = '{tmp_path}/missing': {tmp_path}/missing holds no run (no "
                               'config.json); expected the workdir of a trained run, optionally followed by :STEP.')
  assert not os.listdir(tmp_path / 'run') and not (tmp_path / 'tfds').exists()


def test_a_resumed_run_may_change_init_from(tmp_path, caplog):
  caplog.set_level(logging.INFO, logger='absl')
  directory = run.RunDirectory(tmp_path)
  run.save_config(directory, smoke_config())
  run.check_config_compatible(directory, smoke_config('runs/pretrained:600'))  # not refused: its checkpoint wins
  assert f"config.model.init_from changed from '' to 'runs/pretrained:600' since the run in {tmp_path}" in caplog.text
