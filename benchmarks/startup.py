"""Start-up time of a training run, cold and resumed, as axm_jax.train starts: compiles overlap everything else.

  python -m benchmarks.startup                        # paper config (configs/cuhk_pedes.py), batch 64, float32
  python -m benchmarks.startup --dtype=bfloat16 --batch=256 --json=startup.json

Builds the model of the paper config (width 1.0, 384x128, 11,003 classes) on random batches (no dataset, no
TensorFlow) and times, on the main thread, what a run does before its first step: imports, backend start, the
state's shapes (jax.eval_shape), the background compiles of, in a fresh run, the init program
(train_step.init_variables), then the train step's two programs (train_step.TrainStep; lowered one after the
other), after a resume has restored its checkpoint; then the wait for the compiles, a fresh run's initial state,
replication, the first step; then the wait for the evaluation encoders (compiled once the first step is done) and a
second step, all as a run does. 'import' and 'to_first_step' count from the process start.

It runs twice in fresh processes that share one persistent compilation cache directory: 'cold' (a fresh run,
empty cache; it saves its state after the second step, untimed) and 'warm' (a resume: the state is restored from
that checkpoint with axm_jax.checkpointing and every program comes from the program store,
axm_jax/program_store.py, which it finds without tracing). 'trace' / 'lower' / 'compile' / 'cache_load' are JAX's
monitoring events summed over all threads ('compile' includes 'cache_load', reading a hit of JAX's own persistent
cache); 'store_load' is the loading of stored programs. It also prints the StableHLO op counts of the train step
and of the two encoders. On a CPU, batch 16 keeps the step's memory near 9 GB.
"""
import argparse
import collections
import contextlib
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_CLASSES = 11003  # CUHK-PEDES train identities
PHASES = ('import', 'backend', 'abstract_state', 'restore', 'compile_wait', 'initial_state', 'replicate', 'first_step',
          'to_first_step', 'encoders_wait', 'second_step')
EVENTS = {'/jax/core/compile/jaxpr_trace_duration': 'trace',
          '/jax/core/compile/jaxpr_to_mlir_module_duration': 'lower',
          '/jax/core/compile/backend_compile_duration': 'compile',
          '/jax/compilation_cache/cache_retrieval_time_sec': 'cache_load',
          '/axm_jax/program_store/load_duration': 'store_load'}


def load_config(dtype: str = 'float32', batch: int = 64):
  """configs/cuhk_pedes.py with compute `dtype` and a global batch of `batch` = batch/4 x 4 images."""
  from axm_jax import config_files  # pylint: disable=g-import-not-at-top
  config = config_files.load_config('configs/cuhk_pedes.py')
  config.model.dtype = dtype
  config.data.images_per_identity = 4
  config.data.identities_per_batch = batch // 4
  return config


class PhaseTimer:
  """Wall seconds per main-thread phase, and JAX's trace / lower / compile / cache-load seconds (all threads)."""

  def __init__(self):
    self.phases: dict[str, float] = {}
    self.events: dict[str, float] = collections.defaultdict(float)
    import jax  # pylint: disable=g-import-not-at-top
    jax.monitoring.register_event_duration_secs_listener(self._on_duration)

  def _on_duration(self, event: str, seconds: float, **_) -> None:
    if event in EVENTS:
      self.events[EVENTS[event]] += seconds

  @contextlib.contextmanager
  def phase(self, name: str):
    start = time.perf_counter()
    try:
      yield
    finally:
      self.phases[name] = time.perf_counter() - start
      print(f'  {name}: {self.phases[name]:.2f} s', file=sys.stderr, flush=True)


def op_count(lowered) -> int:
  """StableHLO / CHLO operations in a lowered program's text."""
  return len(re.findall(r'= "?(?:stablehlo|chlo|mhlo)\.', lowered.as_text()))


def breakdown(dtype: str, batch: int, resumed: bool, checkpoint_dir: str) -> dict:
  """Starts one training process in this process; returns {'phases': ..., 'events': ..., 'ops': ...}."""
  from axm_jax import startup  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from axm_jax import checkpointing  # pylint: disable=g-import-not-at-top
  from axm_jax import encoders  # pylint: disable=g-import-not-at-top
  from axm_jax import programs  # pylint: disable=g-import-not-at-top
  from axm_jax import train_step as train_step_lib  # pylint: disable=g-import-not-at-top
  from axm_jax.models import axm_net  # pylint: disable=g-import-not-at-top
  from benchmarks.train_step_speed import random_batch  # pylint: disable=g-import-not-at-top
  timer = PhaseTimer()
  timer.phases['import'] = startup.seconds_since_process_start()
  with timer.phase('backend'):
    devices = jax.local_device_count()
  config = load_config(dtype, batch)
  model = axm_net.AXMNet(config.model, num_classes=NUM_CLASSES, axis_name=train_step_lib.AXIS)
  optimizer = train_step_lib.make_optimizer(config)
  batch_arrays = random_batch(config, NUM_CLASSES)
  with timer.phase('abstract_state'):
    abstract = train_step_lib.abstract_state(config, model)
  folder = epath.Path(checkpoint_dir)
  checkpoints = checkpointing.Checkpoints(folder / 'periodic', folder / 'best', folder / 'damaged', keep=1)
  if resumed:
    with timer.phase('restore'):  # before the compiles start, as axm_jax.train resumes
      step_number, restored, opt_state = checkpoints.restore_latest(abstract.variables, abstract.opt_state, True)
      state = train_step_lib.TrainState.from_variables(jnp.asarray(step_number, jnp.int32), restored, opt_state)
  step = train_step_lib.pmapped_train_step(config, model)
  abstract_batch = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), batch_arrays)
  initial = None if resumed else programs.in_background(train_step_lib.init_variables, config, model)
  step.precompile(programs.per_device(abstract, devices), abstract_batch)
  with timer.phase('compile_wait'):
    step.wait()
    variables = initial.result() if initial else None
  if not resumed:
    with timer.phase('initial_state'):
      state = train_step_lib.create_state(config, model, optimizer, [], variables)
  with timer.phase('replicate'):
    state = jax.block_until_ready(train_step_lib.replicate(state))
  with timer.phase('first_step'):
    state, terms = step(state, batch_arrays)
    jax.block_until_ready(terms)
  timer.phases['to_first_step'] = startup.seconds_since_process_start()
  encoders.precompile_encoders(model, abstract.variables, config.data)
  with timer.phase('encoders_wait'):
    for encoder in encoders.make_encoders(model):
      encoder.wait()
  with timer.phase('second_step'):
    state, terms = step(state, batch_arrays)
    jax.block_until_ready(terms)
  if not resumed:
    host = jax.device_get(jax.tree.map(lambda leaf: leaf[0], state))
    checkpoints.save(int(host.step), host.variables, host.opt_state)
  checkpoints.close()
  return {'phases': timer.phases, 'events': dict(timer.events),
          'ops': program_ops(step, encoders.make_encoders(model), abstract, abstract_batch, config, devices)}


def program_ops(step, encoder_pair, abstract, abstract_batch, config, devices: int) -> dict[str, int]:
  """StableHLO op counts of the train step's two programs and of the image and text encoders."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from axm_jax import programs  # pylint: disable=g-import-not-at-top
  replicated = programs.per_device(abstract.variables, devices)
  rows = (devices, config.data.eval_batch_size // devices)
  tokens = jax.ShapeDtypeStruct(rows + (config.data.text_length,), jnp.int32)
  image = jax.ShapeDtypeStruct(rows + tuple(config.data.image_size) + (3,), jnp.float32)
  encode_image, encode_text = encoder_pair
  state = programs.per_device(abstract, devices)
  return {'gradients': op_count(step.gradients.function.lower(state, abstract_batch)),
          'update': op_count(step.update.function.lower(state, state.params, state.batch_stats)),
          'encode_image': op_count(encode_image.function.lower(replicated, image)),
          'encode_text': op_count(encode_text.function.lower(replicated, tokens,
                                                             jax.ShapeDtypeStruct(tokens.shape, jnp.bool_)))}


def run_process(dtype: str, batch: int, cache_dir: str, checkpoint_dir: str, resumed: bool) -> dict:
  """breakdown() in a fresh Python process with the persistent compilation cache in `cache_dir`."""
  with tempfile.NamedTemporaryFile(suffix='.json') as output:
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache_dir, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
    subprocess.run([sys.executable, '-m', 'benchmarks.startup', '--child', f'--dtype={dtype}', f'--batch={batch}',
                    f'--json={output.name}', f'--checkpoint_dir={checkpoint_dir}'] + (['--resumed'] if resumed else []),
                   cwd=REPO, env=env, check=True)
    return json.loads(pathlib.Path(output.name).read_text())


def cold_and_warm(dtype: str, batch: int, cache_dir: str | None = None) -> dict[str, dict]:
  """{'cold': a fresh run on an empty cache, 'warm': a resume on the cache the first one filled}."""
  with tempfile.TemporaryDirectory() as scratch:
    cache_dir = cache_dir or os.path.join(scratch, 'xla_cache')
    checkpoint_dir = os.path.join(scratch, 'checkpoints')
    return {'cold': run_process(dtype, batch, cache_dir, checkpoint_dir, resumed=False),
            'warm': run_process(dtype, batch, cache_dir, checkpoint_dir, resumed=True)}


def format_table(results: dict[str, dict]) -> str:
  """Main-thread phases, JAX's compile events and the op counts, one column per process."""
  lines = ['phase (s)'.ljust(18) + ''.join(run.rjust(10) for run in results)]
  for phase in PHASES:
    lines.append(phase.ljust(18) + ''.join(f'{r["phases"].get(phase, 0.0):10.2f}' for r in results.values()))
  lines.append('all threads (s)')
  for event in EVENTS.values():
    lines.append(f'  {event}'.ljust(18) + ''.join(f'{r["events"].get(event, 0.0):10.2f}' for r in results.values()))
  ops = next(iter(results.values()))['ops']
  lines.append('StableHLO ops: ' + ', '.join(f'{name} {count}' for name, count in ops.items()))
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--batch', type=int, default=64, help='global batch (a multiple of 4 x devices)')
  parser.add_argument('--cache_dir', default=None, help='persistent cache directory; default: a fresh one')
  parser.add_argument('--json', default=None, help='write the results here')
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--resumed', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--checkpoint_dir', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:  # JAX reads JAX_COMPILATION_CACHE_DIR from the environment
    pathlib.Path(args.json).write_text(json.dumps(breakdown(args.dtype, args.batch, args.resumed, args.checkpoint_dir)))
    return
  results = cold_and_warm(args.dtype, args.batch, args.cache_dir)
  print(f'start-up, paper config, {args.dtype}, global batch {args.batch}')
  print(format_table(results))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == '__main__':
  main()
