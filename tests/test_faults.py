"""Faults: kill -9 at seeded moments, SIGTERM, a second run, damaged checkpoints, changed configs, bad storage.

Every run here is the smoke config on 8 devices, the `smoke_run` fixture's, so the final parameters and metrics
must equal that uninterrupted run's bit for bit (one machine, one device count, the same programs).
"""
import json
import logging
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from axm_jax import checkpointing
from axm_jax import config_files
from axm_jax import evaluate
from axm_jax import run
from axm_jax import storage
from axm_jax import train
from axm_jax import train_step
from conftest import REPO, SMOKE_CONFIG, read_jsonl, run_main

DEADLINE_S = 600


def _launch(workdir: pathlib.Path, tfds_dir: pathlib.Path, slow_saves: bool = False) -> subprocess.Popen:
  entry = ['tests/slow_save_main.py'] if slow_saves else ['-m', 'axm_jax.main']
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu',
             PYTHONPATH=str(REPO))
  return subprocess.Popen([sys.executable, *entry, f'--config={SMOKE_CONFIG}', f'--workdir={workdir}',
                           f'--config.data.data_dir={tfds_dir}'], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)


def _wait_for(condition, process: subprocess.Popen) -> bool:
  """Polls `condition` until it holds (True) or the process ends (False)."""
  deadline = time.monotonic() + DEADLINE_S
  while time.monotonic() < deadline:
    if condition():
      return True
    if process.poll() is not None:
      return False
    time.sleep(0.005)
  raise TimeoutError(f'no progress within {DEADLINE_S} s')


def _steps(workdir: pathlib.Path) -> list[int]:
  folder = workdir / 'checkpoints'
  return sorted(int(name) for name in os.listdir(folder) if name.isdigit()) if folder.exists() else []


def _saving(workdir: pathlib.Path) -> bool:
  folder = workdir / 'checkpoints'
  return folder.exists() and any('tmp' in name for name in os.listdir(folder))


def _assert_same_run(workdir: pathlib.Path, reference: pathlib.Path) -> None:
  for which in ('latest', 'best'):
    step, variables = run.RunDirectory(str(workdir)).restore_variables(which)
    reference_step, reference_variables = run.RunDirectory(str(reference)).restore_variables(which)
    assert step == reference_step
    assert jax.tree.structure(variables) == jax.tree.structure(reference_variables)
    for leaf, reference_leaf in zip(jax.tree.leaves(variables), jax.tree.leaves(reference_variables)):
      np.testing.assert_array_equal(leaf, reference_leaf)
  assert read_jsonl(workdir / 'metrics.jsonl') == read_jsonl(reference / 'metrics.jsonl')


def test_kill_9_at_seeded_moments_then_sigterm_ends_like_the_uninterrupted_run(smoke_run, tfds_dir, tmp_path):
  rng = random.Random(20261201)
  moments = ['during a checkpoint save'] + rng.choices(['after a random delay', 'after a new checkpoint'], k=4)
  rng.shuffle(moments)
  for moment in moments:
    process = _launch(tmp_path, tfds_dir, slow_saves=moment == 'during a checkpoint save')
    if moment == 'during a checkpoint save':
      assert _wait_for(lambda: _saving(tmp_path), process), 'the run ended before any checkpoint save'
    elif moment == 'after a new checkpoint':
      before = _steps(tmp_path)
      _wait_for(lambda: _steps(tmp_path) != before, process)
      time.sleep(rng.uniform(0.0, 1.0))
    else:
      time.sleep(rng.uniform(2.0, 12.0))
    process.kill()
    process.communicate()
  # SIGTERM: start over in a fresh workdir, with slow saves so that the signal lands while steps remain.
  preempted = tmp_path / 'preempted'
  process = _launch(preempted, tfds_dir, slow_saves=True)
  assert _wait_for(lambda: 2 in _steps(preempted), process)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 143, stderr[-3000:]
  stopped = [line for line in stderr.splitlines() if 'preempted at step' in line]
  assert len(stopped) == 1 and 'rerun the same command to resume' in stopped[0], stderr[-3000:]
  stopped_step = int(stopped[0].split('preempted at step ')[1].split(':')[0])
  assert stopped_step in _steps(preempted) and stopped_step < 6
  assert not (preempted / 'run.lock').exists()
  for workdir in (tmp_path, preempted):
    run_main(workdir, tfds_dir)
    _assert_same_run(workdir, smoke_run)


def _copy_run(smoke_run: pathlib.Path, destination: pathlib.Path) -> pathlib.Path:
  shutil.copytree(smoke_run, destination, ignore=shutil.ignore_patterns('eval', 'tb'))
  return destination


def _truncate_largest_file(checkpoint: pathlib.Path) -> None:
  largest = max((path for path in checkpoint.rglob('*') if path.is_file()), key=lambda path: path.stat().st_size)
  os.truncate(largest, largest.stat().st_size // 2)


def _smoke_config(tfds_dir: pathlib.Path, **train_fields):
  config = config_files.load_config(SMOKE_CONFIG)
  config.data.data_dir = str(tfds_dir)
  config.train.update(train_fields)
  return config


def test_a_truncated_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(
    smoke_run, tfds_dir, tmp_path, caplog):
  caplog.set_level(logging.INFO, logger='absl')
  workdir = _copy_run(smoke_run, tmp_path / 'run')
  _truncate_largest_file(workdir / 'checkpoints' / '6')
  train.train_and_evaluate(_smoke_config(tfds_dir), str(workdir))
  warnings = [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']
  assert any(m.startswith(f'The checkpoint of step 6 in {workdir}/checkpoints cannot be restored (') and
             m.endswith('trying the one before.') for m in warnings), warnings
  assert (workdir / 'checkpoints_damaged' / '6').exists()
  assert 'Resuming from the checkpoint of step 4' in caplog.text
  _assert_same_run(workdir, smoke_run)


def test_no_restorable_checkpoint_stops_with_a_list_and_eval_names_the_damaged_one(smoke_run, tfds_dir, tmp_path):
  workdir = _copy_run(smoke_run, tmp_path / 'run')
  for step in _steps(workdir):
    _truncate_largest_file(workdir / 'checkpoints' / str(step))
  with pytest.raises(checkpointing.CheckpointError, match=(
      rf'no checkpoint in {workdir}/checkpoints can be restored:\n  step 6: .+\n  step 4: .+\nIf the config '
      'changed, rerun with the config the run was started with')):
    train.train_and_evaluate(_smoke_config(tfds_dir), str(workdir))
  assert _steps(workdir) == [4, 6]  # nothing moved or deleted
  best = next((workdir / 'checkpoints_best').iterdir())
  _truncate_largest_file(best)
  config = _smoke_config(tfds_dir)
  with pytest.raises(checkpointing.CheckpointError, match=(
      rf'the checkpoint of step {best.name} in {workdir}/checkpoints_best cannot be restored: ')):
    evaluate.evaluate(config, str(workdir))


def test_a_config_that_changes_the_model_or_data_is_refused_before_any_restore(smoke_run, tfds_dir, tmp_path,
                                                                                caplog):
  caplog.set_level(logging.INFO, logger='absl')
  workdir = _copy_run(smoke_run, tmp_path / 'run')
  config = _smoke_config(tfds_dir)
  config.model.width = 0.125
  config.data.image_size = (32, 16)
  before = {path: path.stat().st_mtime_ns for path in workdir.rglob('*')}
  with pytest.raises(run.ConfigMismatchError) as error:
    train.train_and_evaluate(config, str(workdir))
  assert str(error.value).splitlines()[1:3] == [
      "  config.data.image_size: [64, 32] in the workdir, [32, 16] now",
      "  config.model.width: 0.0625 in the workdir, 0.125 now"]
  assert {path: path.stat().st_mtime_ns for path in workdir.rglob('*')} == before
  run.check_config_compatible(run.RunDirectory(workdir), _smoke_config(tfds_dir, num_steps=9, eval_every=4))
  assert 'config.train.num_steps changed from 6 to 9' in caplog.text
  assert 'config.train.eval_every changed from 3 to 4' in caplog.text


def test_a_live_lock_refuses_and_a_dead_one_is_taken_over(tfds_dir, tmp_path, caplog):
  with run.exclusive_run(run.RunDirectory(tmp_path)):
    second = run_main(tmp_path, tfds_dir, check=False)
    assert second.returncode == 1
    assert (f'FATAL {tmp_path} is in use by another run (host {os.uname().nodename}, pid {os.getpid()}, started '
            in second.stderr)
    assert not (tmp_path / 'checkpoints').exists()
  assert not (tmp_path / 'run.lock').exists()
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  (tmp_path / 'run.lock').write_text(json.dumps(
      {'host': os.uname().nodename, 'pid': dead.pid, 'process_start': 1, 'heartbeat': time.time()}))
  with run.exclusive_run(run.RunDirectory(tmp_path)):
    assert json.loads((tmp_path / 'run.lock').read_text())['pid'] == os.getpid()
  assert f'(host {os.uname().nodename}, pid {dead.pid})' in caplog.text and 'stale lock' in caplog.text


@pytest.fixture
def small_filesystem(tmp_path):
  """An 8 MiB tmpfs (needs root, as CI and these machines have), unmounted afterwards."""
  mount = tmp_path / 'mnt'
  mount.mkdir()
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', str(mount)], capture_output=True)
  if result.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {result.stderr.decode().strip()}')
  yield mount
  subprocess.run(['umount', '-l', str(mount)], check=True)


def test_read_only_and_full_storage_name_the_path_and_keep_the_checkpoints(smoke_run, tfds_dir, small_filesystem):
  workdir = _copy_run(smoke_run, small_filesystem / 'run')
  shutil.rmtree(workdir / 'checkpoints' / '6')  # the resumed run must save step 6 again
  before = run.RunDirectory(str(workdir)).restore_variables('latest')
  subprocess.run(['mount', '-o', 'remount,ro', str(small_filesystem)], check=True)
  with pytest.raises(storage.StorageError, match=rf'cannot write to the workdir {workdir}: Read-only file '):
    train.train_and_evaluate(_smoke_config(tfds_dir), str(workdir))
  subprocess.run(['mount', '-o', 'remount,rw', str(small_filesystem)], check=True)
  filler = small_filesystem / 'filler'
  with open(filler, 'wb') as f:  # leave 16 KiB: small files fit, a checkpoint does not
    free = os.statvfs(small_filesystem).f_bavail * os.statvfs(small_filesystem).f_frsize
    f.write(b'\0' * max(free - 16 * 1024, 0))
  with pytest.raises(storage.StorageError, match=rf'cannot (save the checkpoint of step \d+ in|write) {workdir}'):
    train.train_and_evaluate(_smoke_config(tfds_dir), str(workdir))
  filler.unlink()
  after = run.RunDirectory(str(workdir)).restore_variables('latest')
  assert after[0] == before[0] == 4
  for leaf, earlier in zip(jax.tree.leaves(after[1]), jax.tree.leaves(before[1])):
    np.testing.assert_array_equal(leaf, earlier)
  assert all(json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines())


def test_a_run_saved_before_newer_config_fields_still_loads_and_resumes(smoke_run, tfds_dir, tmp_path, caplog):
  caplog.set_level(logging.INFO, logger='absl')
  workdir = _copy_run(smoke_run, tmp_path / 'run')
  saved = json.loads((workdir / 'config.json').read_text())
  for name in run.FIELDS_ADDED_LATER:
    section, field = name.split('.')
    del saved[section][field]
  (workdir / 'config.json').write_text(json.dumps(saved))
  loaded = run.load_config(run.RunDirectory(workdir))
  assert {name: loaded[name.split('.')[0]][name.split('.')[1]]
          for name in run.FIELDS_ADDED_LATER} == run.FIELDS_ADDED_LATER
  run.check_config_compatible(run.RunDirectory(workdir), _smoke_config(tfds_dir))
  assert "config.model.architecture is new since the run in" in caplog.text


def test_a_resume_restores_into_abstract_targets_and_initialises_nothing(smoke_run, tfds_dir, tmp_path, monkeypatch):
  workdir = _copy_run(smoke_run, tmp_path / 'run')

  def initialise(*args, **kwargs):
    raise AssertionError('a resumed run must not initialise the state it restores')

  monkeypatch.setattr(train_step, 'create_state', initialise)
  train.train_and_evaluate(_smoke_config(tfds_dir), str(workdir))
  _assert_same_run(workdir, smoke_run)
