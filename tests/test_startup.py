"""The first-step time and its split (axm_jax.startup)."""
import re
import subprocess
import sys
import time

from axm_jax import startup


def test_seconds_since_process_start_counts_from_the_process_start_not_the_import():
  code = ('import time; time.sleep(1.5); from axm_jax import startup; '
          'print(startup.seconds_since_process_start())')
  start = time.monotonic()
  output = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
  elapsed = time.monotonic() - start
  assert 1.5 <= float(output) <= elapsed + 0.05


def test_the_summary_splits_the_total_into_the_phases_and_the_rest():
  clock = startup.StartupClock()
  with clock.phase('dataset'):
    time.sleep(0.2)
  with clock.phase('compile'):
    time.sleep(0.1)
  with clock.phase('dataset'):
    time.sleep(0.1)
  summary = clock.summary()
  match = re.fullmatch(r'first training step done ([\d.]+) s after the start: dataset ([\d.]+) s, '
                       r'compile ([\d.]+) s, rest (-?[\d.]+) s', summary)
  assert match, summary
  total, dataset, compile_seconds, rest = map(float, match.groups())
  assert dataset >= 0.3 - 0.05 and compile_seconds >= 0.1 - 0.05  # sleeps never end early; rounding to 0.1 s
  assert abs(total - (dataset + compile_seconds + rest)) <= 0.15  # each number is rounded to 0.1 s
  assert total >= dataset + compile_seconds
