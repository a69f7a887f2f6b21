"""Gives every test process 8 CPU devices before JAX initialises, and shared fixtures."""
import os
import tempfile

os.environ['XLA_FLAGS'] = ' '.join(
    [os.environ.get('XLA_FLAGS', ''), '--xla_force_host_platform_device_count=8']).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# Compiled programs are shared by the test processes (the main job runs in several subprocesses).
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(tempfile.gettempdir(), 'axm_jax_test_xla_cache'))

import fcntl
import json
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SMOKE_CONFIG = 'configs/synthetic.py:smoke'
# The longest files first, so that `pytest -n 2 --dist loadfile` does not end on one long file.
LONGEST_FIRST = ('test_faults.py', 'test_train.py', 'test_gcs.py', 'test_search.py', 'test_multi_device.py')


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  rank = {name: number for number, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable within a file


def run_main(workdir: pathlib.Path, data_dir: pathlib.Path, *flags: str, devices: int = 8,
             env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
  """Runs `python -m axm_jax.main` on the smoke config in a fresh process with `devices` CPU devices."""
  process_env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
                     JAX_PLATFORMS='cpu', **(env or {}))
  command = [sys.executable, '-m', 'axm_jax.main', f'--config={SMOKE_CONFIG}', f'--workdir={workdir}',
             f'--config.data.data_dir={data_dir}', *flags]
  result = subprocess.run(command, cwd=REPO, env=process_env, capture_output=True, text=True, timeout=900)
  if check and result.returncode:
    raise AssertionError(f'{command} failed:\n{result.stderr[-4000:]}')
  return result


def read_jsonl(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory) -> pathlib.Path:
  """One TFDS data dir per test session, so SynthPedes 'tiny' is built once."""
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='session')
def smoke_run(tmp_path_factory, tfds_dir) -> pathlib.Path:
  """The smoke config trained and tested end to end by the main command on 8 devices (read-only for tests).

  Its log is smoke_run.log beside it.

  Under pytest-xdist the workers of one session share it: the first trains it, the others wait on a lock.
  """
  root = tmp_path_factory.getbasetemp()
  if 'PYTEST_XDIST_WORKER' in os.environ:
    root = root.parent  # this session's folder, above the workers' own
  workdir, done = root / 'smoke_run', root / 'smoke_run.done'
  with open(root / 'smoke_run.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(workdir, ignore_errors=True)
      (root / 'smoke_run.log').write_text(run_main(workdir, tfds_dir).stderr)
      done.touch()
  return workdir


def assert_metrics_close(actual: dict[str, float], expected: dict[str, float]) -> None:
  """Metrics from embeddings that agree to rounding, not bit for bit (other device count, batch shape or CPU).

  Query and skip counts must match exactly. A near-tie that rounding flips moves one query, and one query moves
  any percentage metric of its protocol by at most 100 / queries points, so that is the tolerance.
  """
  assert actual.keys() == expected.keys()
  for name, value in expected.items():
    if name.endswith('queries') or name == 'reid_unknown_camera_images':
      assert actual[name] == value, name
      continue
    protocol = name.rsplit('_', 1)[0]
    tolerance = 100.0 / max(expected[f'{protocol}_queries'], 1.0)
    assert abs(actual[name] - value) <= tolerance + 1e-9, (name, actual[name], value, tolerance)
