"""Where the seconds before the first training step go: dataset, tokenizer, waiting for compiles, the rest."""
import collections
import contextlib
import os
import time
from collections.abc import Iterator

_IMPORTED = time.monotonic()


def seconds_since_process_start() -> float:
  """Wall seconds since this process started (from /proc on Linux; elsewhere since this module's import)."""
  try:
    with open('/proc/self/stat') as stat, open('/proc/uptime') as uptime:
      start_ticks = int(stat.read().rsplit(')', 1)[1].split()[19])  # field 22, starttime
      return float(uptime.read().split()[0]) - start_ticks / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError):
    return time.monotonic() - _IMPORTED


class StartupClock:
  """Wall seconds per named phase of the start-up, reported once the first training step is done."""

  def __init__(self):
    self.phases: dict[str, float] = collections.defaultdict(float)

  @contextlib.contextmanager
  def phase(self, name: str) -> Iterator[None]:
    start = time.monotonic()
    try:
      yield
    finally:
      self.phases[name] += time.monotonic() - start

  def summary(self) -> str:
    """'first training step done after T s: dataset a s, ..., rest r s'."""
    total = seconds_since_process_start()
    parts = ''.join(f'{name} {seconds:.1f} s, ' for name, seconds in self.phases.items())
    return (f'first training step done {total:.1f} s after the start: {parts}'
            f'rest {total - sum(self.phases.values()):.1f} s')
