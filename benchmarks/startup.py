"""Start-up time of a training run, phase by phase, cold and with a warm persistent compilation cache.

  python -m benchmarks.startup                        # paper config (configs/cuhk_pedes.py), batch 64, float32
  python -m benchmarks.startup --dtype=bfloat16 --batch=256 --json=startup.json

Builds the model of the paper config (width 1.0, 384x128, 11,003 classes) on random batches (no dataset, no
TensorFlow) and times what a run does before its first step: imports, backend start, model init, optimizer state,
replication over the local devices, the first call of the pmapped train step (tracing, lowering, XLA compile,
execution), the compile of the two evaluation encoders, and a second step. Trace, lowering and compile seconds are
JAX's own monitoring events ('compile' includes 'cache_load', the reading of a persistent-cache hit); 'run' is
the rest of the phase's wall time. The whole breakdown runs twice in fresh processes that share one persistent
compilation cache directory: 'cold' (empty cache) and 'warm' (a resume). On a CPU, batch 16 keeps the step's
memory near 9 GB (batch 64 needs ~14 GB).
"""
import argparse
import collections
import contextlib
import functools
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_CLASSES = 11003  # CUHK-PEDES train identities
PHASES = ('import', 'backend', 'init', 'optimizer_state', 'replicate', 'train_step_first_call', 'eval_encoders',
          'second_step')
EVENTS = {'/jax/core/compile/jaxpr_trace_duration': 'trace',
          '/jax/core/compile/jaxpr_to_mlir_module_duration': 'lower',
          '/jax/core/compile/backend_compile_duration': 'compile'}


def load_config(dtype: str = 'float32', batch: int = 64, name: str = 'cuhk_pedes.py'):
  """configs/<name> (loaded by path) with compute `dtype` and a global batch of `batch` = batch/4 x 4 images."""
  spec = importlib.util.spec_from_file_location(f'_benchmark_config_{name[:-3]}', REPO / 'configs' / name)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.model.dtype = dtype
  config.data.images_per_identity = 4
  config.data.identities_per_batch = batch // 4
  return config


class PhaseTimer:
  """Wall seconds per phase, and the trace / lower / compile seconds and cache hits JAX reports inside it."""

  def __init__(self):
    self.rows = collections.defaultdict(lambda: collections.defaultdict(float))
    self._current = None
    import jax  # pylint: disable=g-import-not-at-top
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)
    jax.monitoring.register_event_listener(self._on_event)

  def _on_duration(self, event: str, seconds: float, **_) -> None:
    if self._current is not None and event in EVENTS:
      self.rows[self._current][EVENTS[event]] += seconds
    if self._current is not None and event == '/jax/compilation_cache/cache_retrieval_time_sec':
      self.rows[self._current]['cache_load'] += seconds

  def _on_event(self, event: str, **_) -> None:
    if self._current is not None and event == '/jax/compilation_cache/cache_hits':
      self.rows[self._current]['cache_hits'] += 1

  @contextlib.contextmanager
  def phase(self, name: str):
    self._current, start = name, time.perf_counter()
    try:
      yield
    finally:
      self.rows[name]['wall'] += time.perf_counter() - start
      self._current = None
      print(f'  {name}: {self.rows[name]["wall"]:.2f} s', file=sys.stderr, flush=True)

  def table(self) -> dict[str, dict[str, float]]:
    table = {}
    for name, row in self.rows.items():
      row = dict(row)
      row['run'] = max(row['wall'] - sum(row.get(key, 0.0) for key in EVENTS.values()), 0.0)
      table[name] = row
    return table


def breakdown(dtype: str, batch: int, steps: int = 1) -> dict[str, dict[str, float]]:
  """Runs the start-up of one training process in this process and returns {phase: {wall, trace, ...}}."""
  import_start = time.perf_counter()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from axm_jax import train_step as train_step_lib  # pylint: disable=g-import-not-at-top
  from axm_jax.models import axm_net  # pylint: disable=g-import-not-at-top
  from benchmarks.train_step_speed import random_batch  # pylint: disable=g-import-not-at-top
  timer = PhaseTimer()
  timer.rows['import']['wall'] = time.perf_counter() - import_start
  with timer.phase('backend'):
    devices = jax.local_device_count()
  config = load_config(dtype, batch)
  model = axm_net.AXMNet(config.model, num_classes=NUM_CLASSES, axis_name=train_step_lib.AXIS)
  optimizer = train_step_lib.make_optimizer(config)
  # 'init' and 'optimizer_state' are the two halves of train_step.create_state (no pretrained files here).
  with timer.phase('init'):
    height, width = config.data.image_size
    init = jax.jit(functools.partial(model.init, train=False))
    variables = jax.block_until_ready(init(
        jax.random.PRNGKey(0), jnp.zeros((1, height, width, 3)), jnp.zeros((1, config.data.text_length), jnp.int32),
        jnp.ones((1, config.data.text_length), bool)))
  with timer.phase('optimizer_state'):
    state = train_step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                                      batch_stats=variables['batch_stats'],
                                      opt_state=jax.jit(optimizer.init)(variables['params']))
    jax.block_until_ready(state)
  with timer.phase('replicate'):
    state = jax.block_until_ready(train_step_lib.replicate(state))
  step = jax.pmap(functools.partial(train_step_lib.train_step, model=model, optimizer=optimizer,
                                    loss_config=config.loss),
                  axis_name=train_step_lib.AXIS, donate_argnums=(0,))
  batch_arrays = jax.pmap(lambda x: x)(random_batch(config, NUM_CLASSES))
  with timer.phase('train_step_first_call'):
    state, terms = step(state, batch_arrays)
    jax.block_until_ready(terms)
  with timer.phase('eval_encoders'):
    per_device = config.data.eval_batch_size // devices
    height, width = config.data.image_size
    length = config.data.text_length
    image = jax.ShapeDtypeStruct((devices, per_device, height, width, 3), jnp.float32)
    text_ids = jax.ShapeDtypeStruct((devices, per_device, length), jnp.int32)
    text_mask = jax.ShapeDtypeStruct((devices, per_device, length), jnp.bool_)
    encode_image, encode_text = encoders(model)
    encode_image.lower(state.variables, image).compile()
    encode_text.lower(state.variables, text_ids, text_mask).compile()
  with timer.phase('second_step'):
    for _ in range(steps):
      state, terms = step(state, batch_arrays)
    jax.block_until_ready(terms)
  return timer.table()


def encoders(model):
  """The pmapped evaluation encoders, as axm_jax.evaluate.make_encoders builds them (without its TensorFlow)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from axm_jax.models import axm_net  # pylint: disable=g-import-not-at-top

  def encode_image(variables, image):
    return model.apply(variables, image, method=axm_net.AXMNet.encode_image)['image_embedding'].astype(jnp.float32)

  def encode_text(variables, text_ids, text_mask):
    outputs = model.apply(variables, text_ids, text_mask, method=axm_net.AXMNet.encode_text)
    return outputs['text_embedding'].astype(jnp.float32)

  return (jax.pmap(encode_image, axis_name=model.axis_name),
          jax.pmap(encode_text, axis_name=model.axis_name))


def run_process(dtype: str, batch: int, cache_dir: str) -> dict[str, dict[str, float]]:
  """breakdown() in a fresh Python process with the persistent compilation cache in `cache_dir`."""
  with tempfile.NamedTemporaryFile(suffix='.json') as output:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    subprocess.run([sys.executable, '-m', 'benchmarks.startup', '--child', f'--dtype={dtype}', f'--batch={batch}',
                    f'--json={output.name}'], cwd=REPO, env=env, check=True)
    return json.loads(pathlib.Path(output.name).read_text())


def cold_and_warm(dtype: str, batch: int, cache_dir: str | None = None) -> dict[str, dict[str, dict[str, float]]]:
  """{'cold': breakdown, 'warm': breakdown}: two processes, the second reusing the first one's cache."""
  with tempfile.TemporaryDirectory() as scratch:
    cache_dir = cache_dir or os.path.join(scratch, 'xla_cache')
    return {'cold': run_process(dtype, batch, cache_dir), 'warm': run_process(dtype, batch, cache_dir)}


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
  """One row per phase; wall / trace / lower / compile / run seconds for each process."""
  columns = ('wall', 'trace', 'lower', 'compile', 'cache_load', 'run')
  header = ['phase'.ljust(22)] + [f'{run} {c}'.rjust(len(run) + 11) for run in results for c in columns]
  lines = [' '.join(header)]
  for phase in PHASES + ('total',):
    cells = [phase.ljust(22)]
    for run, table in results.items():
      for column in columns:
        if phase == 'total':
          value = sum(row.get(column, 0.0) for row in table.values())
        else:
          value = table.get(phase, {}).get(column, 0.0)
        cells.append(f'{value:.2f}'.rjust(len(run) + 11))
    lines.append(' '.join(cells))
  hits = {run: int(sum(row.get('cache_hits', 0) for row in table.values())) for run, table in results.items()}
  lines.append('persistent cache hits: ' + ', '.join(f'{run} {count}' for run, count in hits.items()))
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--batch', type=int, default=64, help='global batch (a multiple of 4 x devices)')
  parser.add_argument('--cache_dir', default=None, help='persistent cache directory; default: a fresh one')
  parser.add_argument('--json', default=None, help='write the results here')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
    results = breakdown(args.dtype, args.batch)
    pathlib.Path(args.json).write_text(json.dumps(results))
    return
  results = cold_and_warm(args.dtype, args.batch, args.cache_dir)
  print(f'start-up, paper config, {args.dtype}, global batch {args.batch} (seconds)')
  print(format_table(results))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == '__main__':
  main()
