"""The main job: resume after a kill, non-finite loss, config errors, multi-host, device-count-free eval, real data."""
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf

from axm_jax import config_files
from axm_jax import run
from axm_jax import train
from axm_jax.data import pipeline
from conftest import REPO, SMOKE_CONFIG, assert_metrics_close, read_jsonl, run_main
import fake_pedes


def _assert_same_variables(workdir_a, workdir_b, which='latest', atol=0.0):
  step_a, variables_a = run.RunDirectory(workdir_a).restore_variables(which)
  step_b, variables_b = run.RunDirectory(workdir_b).restore_variables(which)
  assert step_a == step_b
  leaves_a, tree_a = jax.tree.flatten(variables_a)
  leaves_b, tree_b = jax.tree.flatten(variables_b)
  assert tree_a == tree_b
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(a, b, rtol=0.0, atol=atol)


def test_smoke_run_leaves_every_artefact(smoke_run):
  records = read_jsonl(smoke_run / 'metrics.jsonl')
  assert [(r['step'], r['split']) for r in records] == [(3, 'val'), (6, 'val'), (records[-1]['step'], 'test')]
  for record in records:
    assert {'t2i_r1', 't2i_r5', 't2i_r10', 't2i_map', 't2i_minp'} <= record.keys()
    assert 0.0 <= record['t2i_r1'] <= record['t2i_r5'] <= record['t2i_r10'] <= 100.0
  assert sorted(os.listdir(smoke_run / 'checkpoints')) == ['4', '6']  # keep_checkpoints = 2
  assert len(os.listdir(smoke_run / 'checkpoints_best')) == 1
  assert (smoke_run / 'tokenizer.model').exists() and (smoke_run / 'label_map.json').exists()
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(smoke_run / 'tb'))
  assert any(name.endswith('.png') for name in os.listdir(smoke_run / 'eval'))
  assert json.loads((smoke_run / 'config.json').read_text())['model']['width'] == 0.0625


def test_the_first_step_logs_its_time_since_start_split_into_phases(smoke_run):
  log = (smoke_run.parent / 'smoke_run.log').read_text()
  lines = re.findall(r'first training step done ([\d.]+) s after the start: dataset ([\d.]+) s, tokenizer ([\d.]+) s, '
                     r'compile ([\d.]+) s, rest (-?[\d.]+) s', log)
  assert len(lines) == 1, log[-3000:]
  total, *parts = map(float, lines[0])
  assert min(parts) >= 0 and abs(total - sum(parts)) <= 0.25  # four numbers rounded to 0.1 s


def test_non_finite_loss_stops_and_keeps_earlier_checkpoints(tfds_dir, tmp_path, monkeypatch):
  config = config_files.load_config(SMOKE_CONFIG)
  config.data.data_dir = str(tfds_dir)
  original = pipeline.train_batches

  def poisoned(*args, **kwargs):
    for step, batch in enumerate(original(*args, **kwargs), start=1):
      if step == 5:
        batch = dict(batch, image=np.full_like(batch['image'], np.nan))
      yield batch

  monkeypatch.setattr(pipeline, 'train_batches', poisoned)
  with pytest.raises(train.NonFiniteLossError, match=r'training loss is nan at step 5; stopping\. '
                                                      r'The last good checkpoint \(step 4\) is kept'):
    train.train_and_evaluate(config, str(tmp_path))
  step, variables = run.RunDirectory(str(tmp_path)).restore_variables('latest')
  assert step == 4
  assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(variables))


@pytest.mark.parametrize('field, value, message', [
    ('data.identities_per_batch', 3, 'config.data.identities_per_batch * config.data.images_per_identity = 6 '
                                     'must be divisible by the global device count 8.'),
    ('data.images_per_identity', 1, 'config.data.images_per_identity must be >= 2'),
    ('loss.affinity_form', 'literal', "config.loss.affinity_form = 'literal'; expected one of ('bce', 'paper')."),
    ('model.dtype', 'float16', "config.model.dtype = 'float16'; expected one of ('float32', 'bfloat16')."),
    ('train.num_steps', 2, 'config.train.num_steps = 2 must be > config.optim.warmup_steps = 2.'),
    ('train.time_budget_minutes', -1.0, 'config.train.time_budget_minutes must be >= 0, got -1.0.'),
])
def test_invalid_config_value_names_the_field(field, value, message):
  config = config_files.load_config(SMOKE_CONFIG)
  section, name = field.split('.')
  config[section][name] = value
  with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)').replace('*', r'\*')):
    train.validate_config(config)


def test_a_bad_config_value_is_rejected_by_the_cli(tfds_dir, tmp_path):  # an unknown field: tests/test_cli.py
  bad = run_main(tmp_path, tfds_dir, '--config.train.num_steps=many', check=False)
  assert bad.returncode != 0
  assert "flag --config.train.num_steps=many: invalid literal for int()" in bad.stderr
  assert not (tmp_path / 'checkpoints').exists()


def test_checkpoint_from_8_devices_evaluates_identically_on_1(smoke_run, tfds_dir):
  for devices in (8, 1):
    run_main(smoke_run, tfds_dir, '--mode=eval', '--config.eval.splits=("test",)', devices=devices)
    results = sorted((smoke_run / 'eval').glob('test_*.json'))
    assert results
    if devices == 8:
      on_8 = json.loads(results[-1].read_text())
      results[-1].unlink()
  on_1 = json.loads(results[-1].read_text())
  assert (on_1['split'], on_1['step']) == (on_8['split'], on_8['step'])
  assert_metrics_close(on_1['metrics'], on_8['metrics'])
  assert on_8['metrics'] == {k: v for k, v in read_jsonl(smoke_run / 'metrics.jsonl')[-1].items()
                             if k not in ('step', 'split')}  # the same 8 devices: exactly


def _training_losses(workdir):
  """{step: total loss} from the run's TensorBoard scalars."""
  losses = {}
  for path in (workdir / 'tb').glob('events.out.tfevents*'):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      losses.update({event.step: value.simple_value for value in event.summary.value if value.tag == 'total'})
  return losses


def test_two_local_processes_train_like_one_process_with_8_devices(smoke_run, tfds_dir, tmp_path):
  env = dict(os.environ, PYTHON=sys.executable, DEVICES_PER_PROCESS='4')
  command = ['bash', 'launch/local_multiprocess.sh', '2', f'--config={SMOKE_CONFIG}', f'--workdir={tmp_path}',
             f'--config.data.data_dir={tfds_dir}', '--mode=train']
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-4000:]
  one_process, two_processes = _training_losses(smoke_run), _training_losses(tmp_path)
  assert sorted(two_processes) == sorted(one_process) == [2, 4, 6]
  for step, loss in one_process.items():  # same global batches, same objective
    assert two_processes[step] == pytest.approx(loss, rel=1e-4)
  # Cross-process all-reduces sum in another order; Adam's first, normalised updates turn that rounding on
  # near-zero gradients into differences of up to a few learning rates, hence a tolerance, not equality.
  _assert_same_variables(smoke_run, tmp_path, atol=1e-2)


def test_main_job_trains_and_evaluates_on_a_fake_cuhk_pedes_directory(tmp_path):
  # 24 training identities, as in SynthPedes 'tiny': the smoke run's compiled programs are reused.
  fake = fake_pedes.make_cuhk_pedes(str(tmp_path / 'CUHK-PEDES'), train_ids=24, val_ids=4, test_ids=4,
                                    images_per_id=3, image_size=(64, 32))
  workdir = tmp_path / 'run'
  run_main(workdir, tmp_path / 'tfds', '--config.data.name=cuhk_pedes', f'--config.data.manual_dir={fake.root}')
  records = read_jsonl(workdir / 'metrics.jsonl')
  assert [(r['step'], r['split']) for r in records] == [(3, 'val'), (6, 'val'), (records[-1]['step'], 'test')]
  captions = {split: sum(len(image.captions) for image in fake.images if image.split == split)
              for split in ('val', 'test')}
  assert [r['t2i_queries'] for r in records] == [captions['val'], captions['val'], captions['test']]
  assert records[-1]['i2t_queries'] == fake.counts()['test']
  assert json.loads((workdir / 'label_map.json').read_text()).keys() == {
      str(image.person_id) for image in fake.images if image.split == 'train'}


def test_time_budget_becomes_a_recorded_step_count_that_a_resumed_run_keeps(tfds_dir, tmp_path):
  config = config_files.load_config(SMOKE_CONFIG)
  config.data.data_dir = str(tfds_dir)
  config.train.update(time_budget_minutes=0.05, num_steps=10_000, eval_every=10_000, checkpoint_every=3)
  workdir = tmp_path / 'run'
  train.train_and_evaluate(config, str(workdir), evaluate_test=False)
  num_steps = json.loads((workdir / 'time_budget.json').read_text())['num_steps']
  assert 3 <= num_steps < 10_000  # measured over the 2 warm-up steps of the smoke config, then at least 1 more
  assert [r['step'] for r in read_jsonl(workdir / 'metrics.jsonl')] == [num_steps]
  resumed = tmp_path / 'resumed'
  shutil.copytree(workdir, resumed)
  shutil.rmtree(resumed / 'checkpoints' / str(num_steps))
  (resumed / 'metrics.jsonl').unlink()
  train.train_and_evaluate(config, str(resumed), evaluate_test=False)  # the recorded count, not a new one
  assert json.loads((resumed / 'time_budget.json').read_text())['num_steps'] == num_steps
  # Before the record, the warm-up steps ran in a program compiled for the provisional length: the same
  # learning rates, other constants, hence a tolerance.
  _assert_same_variables(workdir, resumed, atol=1e-6)
  assert read_jsonl(resumed / 'metrics.jsonl')[0]['step'] == num_steps
