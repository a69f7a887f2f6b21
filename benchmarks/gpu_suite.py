"""One benchmark run of AXM-Net at paper scale against torchreid's OSNet x1.0: one JSON file and a table.

  bash benchmarks/gpu_suite.sh [--out=gpu_suite.json]      # on a GPU machine: no TensorFlow, no network needed
  bash benchmarks/gpu_suite.sh --part=cpu                  # the CPU half, anywhere (torch optional)

GPU part (the default when JAX sees a GPU), in this order, each item skipped when too little of --budget_s is left:
versions and device; the bf16 matmul peak (8192^3 jnp.dot); the start-up breakdown (benchmarks/startup.py, b64
float32, cold and warm cache); AXM-Net train steps (image + text, all losses, Adam), bf16 b256 and float32 b64
first: compile, time to the first step, ms/step, pairs/s and MFU (XLA cost-analysis FLOPs / step time / measured
peak); torchreid OSNet x1.0 (benchmarks/third_party/torchreid/osnet.py, loaded by path) training with Adam +
cross-entropy and inference, batches 64 and 256, float32 and bf16 autocast, eager contiguous and channels_last;
encode_image and encode_text throughput; the other train steps (bf16 b64, float32 b256) and encoders; last,
benchmarks/depthwise_conv.py's comparison at b64. Programs that the start-up compiled load from its cache (the
rows' cache_hits).
CPU part: the start-up breakdown and encode_image at b32 (float32) against torch eager, contiguous and channels_last.
The JSON file is rewritten after every item, so a run stopped early keeps what it measured.
"""
import argparse
import importlib.util
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from axm_jax import encoders as encoders_lib
from axm_jax import train_step as train_step_lib
from axm_jax.models import axm_net
from benchmarks import depthwise_conv
from benchmarks import startup
from benchmarks.train_step_speed import random_batch

OSNET_PATH = pathlib.Path(__file__).resolve().parent / 'third_party' / 'torchreid' / 'osnet.py'
NUM_CLASSES = startup.NUM_CLASSES


class Suite:
  """Collects results into one dict, rewrites the JSON file after each item and keeps to the time budget."""

  def __init__(self, out: str, budget_s: float):
    self.out, self.start, self.budget_s = out, time.perf_counter(), budget_s
    self.results = {'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()), 'skipped': []}
    self.longest_compile_s = 30.0
    self.cache_hits = 0
    jax.monitoring.register_event_listener(self._on_event)

  def _on_event(self, event: str, **_) -> None:
    if event == '/jax/compilation_cache/cache_hits':
      self.cache_hits += 1

  def left_s(self) -> float:
    return self.budget_s - (time.perf_counter() - self.start)

  def affordable(self, name: str, needed_s: float) -> bool:
    if self.left_s() >= needed_s:
      return True
    self.results['skipped'].append(f'{name} (needed ~{needed_s:.0f} s, {self.left_s():.0f} s left)')
    self.save()
    return False

  def add(self, section: str, row: dict) -> None:
    self.results.setdefault(section, []).append(row)
    print(json.dumps({section: row}), flush=True)
    self.save()

  def save(self) -> None:
    pathlib.Path(self.out).write_text(json.dumps(self.results, indent=2))


def versions() -> dict:
  found = {'python': platform.python_version()}
  for name in ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'torch'):
    try:
      found[name] = __import__(name).__version__
    except ImportError:
      found[name] = None
  device = jax.devices()[0]
  found.update(platform=device.platform, device=device.device_kind, devices=jax.device_count(),
               cpu_count=os.cpu_count(), load_average=os.getloadavg())
  return found


def timed_loop(call, steps: int, repeats: int = 3) -> float:
  """Median over `repeats` of the milliseconds per call of `steps` back-to-back calls of call() -> array."""
  per_call = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      out = call()
    jax.block_until_ready(out)
    per_call.append(1000 * (time.perf_counter() - start) / steps)
  return statistics.median(per_call)


def matmul_peak(dtype=jnp.bfloat16, size: int = 8192) -> float:
  """TFLOP/s of a jitted size^3 matrix product (ten back-to-back products after a warm-up)."""
  a = jax.random.normal(jax.random.key(0), (size, size), dtype)
  b = jax.random.normal(jax.random.key(1), (size, size), dtype)
  product = jax.jit(jnp.dot)
  jax.block_until_ready(product(a, b))
  milliseconds = timed_loop(lambda: product(a, b), steps=10)
  return 2 * size ** 3 / (milliseconds / 1000) / 1e12


def flops_of(compiled) -> float | None:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return float(analysis['flops']) if analysis and 'flops' in analysis else None


def initial_state() -> train_step_lib.TrainState:
  """The paper model's float32 training state on the host; every dtype and batch starts from it."""
  config = startup.load_config('float32', 64)
  model = axm_net.AXMNet(config.model, num_classes=NUM_CLASSES, axis_name=train_step_lib.AXIS)
  return jax.device_get(train_step_lib.create_state(config, model, train_step_lib.make_optimizer(config), []))


def measure_train(host_state: train_step_lib.TrainState, dtype: str, batch: int, peak_tflops: float | None,
                  steps: int) -> dict:
  """Compile, first step and steady state of the pmapped train step at a global `batch`."""
  config = startup.load_config(dtype, batch)
  model = axm_net.AXMNet(config.model, num_classes=NUM_CLASSES, axis_name=train_step_lib.AXIS)
  state = train_step_lib.replicate(host_state)
  step = train_step_lib.pmapped_train_step(config, model)
  arrays = jax.pmap(lambda x: x)(random_batch(config, NUM_CLASSES))
  jax.block_until_ready(arrays)
  start = time.perf_counter()
  compiled = (step.gradients.function.lower(state, arrays).compile(),
              step.update.function.lower(state, state.params, state.batch_stats).compile())
  compile_s = time.perf_counter() - start

  def run(train_state):
    grads, terms, batch_stats = compiled[0](train_state, arrays)
    return compiled[1](train_state, grads, batch_stats)[0], terms

  state, terms = run(state)
  jax.block_until_ready(terms)
  first_step_s = time.perf_counter() - start
  holder = [state]

  def one_step():
    holder[0], out = run(holder[0])
    return out['total']
  milliseconds = timed_loop(one_step, steps)
  flops = sum(flops_of(program) or 0.0 for program in compiled)
  row = {'dtype': dtype, 'batch': batch, 'compile_s': compile_s, 'first_step_s': first_step_s,
         'ms_per_step': milliseconds, 'pairs_per_s': batch / (milliseconds / 1000),
         'gflop_per_step': flops / 1e9 if flops else None, 'loss': float(np.asarray(terms['total'])[0])}
  if flops and peak_tflops:
    row['mfu'] = flops / (milliseconds / 1000) / (peak_tflops * 1e12)
  return row


def measure_encoders(host_state: train_step_lib.TrainState, dtype: str, batch: int, steps: int,
                     text: bool = True) -> list[dict]:
  """encode_image (and encode_text) per second at a global `batch`, as the evaluation runs them."""
  config = startup.load_config(dtype, batch)
  model = axm_net.AXMNet(config.model, num_classes=NUM_CLASSES, axis_name=train_step_lib.AXIS)
  encode_image, encode_text = (encoder.function for encoder in encoders_lib.make_encoders(model))
  replicated = train_step_lib.replicate(host_state.variables)
  inputs = jax.pmap(lambda x: x)(random_batch(config, NUM_CLASSES))
  programs = [('encode_image', encode_image, (inputs['image'],))]
  if text:
    programs.append(('encode_text', encode_text, (inputs['text_ids'], inputs['text_mask'])))
  rows = []
  for name, encoder, arguments in programs:
    start = time.perf_counter()
    compiled = encoder.lower(replicated, *arguments).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(replicated, *arguments))
    milliseconds = timed_loop(lambda: compiled(replicated, *arguments), steps)
    rows.append({'program': name, 'dtype': dtype, 'batch': batch, 'compile_s': compile_s,
                 'ms_per_batch': milliseconds, 'per_s': batch / (milliseconds / 1000)})
  return rows


def load_osnet():
  """torchreid 0.2.5's osnet.py, imported by file path."""
  spec = importlib.util.spec_from_file_location('torchreid_osnet', OSNET_PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def measure_torch(train: bool, dtype: str, batch: int, channels_last: bool, steps: int) -> dict:
  """torchreid OSNet x1.0 at 384x128: a train step (Adam, cross-entropy) or an inference forward (features)."""
  import torch  # pylint: disable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  torch.backends.cudnn.benchmark = True
  torch.manual_seed(0)
  model = load_osnet().osnet_x1_0(num_classes=NUM_CLASSES, pretrained=False, loss='softmax').to(device)
  memory_format = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(memory_format=memory_format).train(train)
  images = torch.randn(batch, 3, 384, 128, device=device).contiguous(memory_format=memory_format)
  labels = torch.randint(0, NUM_CLASSES, (batch,), device=device)
  optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4)
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == 'bfloat16')
  sync = torch.cuda.synchronize if device == 'cuda' else lambda: None

  def call():
    if train:
      optimizer.zero_grad(set_to_none=True)
      with autocast:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
      loss.backward()
      optimizer.step()
      return loss
    with torch.inference_mode(), autocast:
      return model(images)

  start = time.perf_counter()
  call()
  sync()
  first_step_s = time.perf_counter() - start
  call()
  per_call = []
  for _ in range(3):
    sync()
    start = time.perf_counter()
    for _ in range(steps):
      call()
    sync()
    per_call.append(1000 * (time.perf_counter() - start) / steps)
  milliseconds = statistics.median(per_call)
  return {'mode': 'train' if train else 'inference', 'dtype': dtype, 'batch': batch,
          'layout': 'channels_last' if channels_last else 'contiguous', 'first_step_s': first_step_s,
          'ms_per_step': milliseconds, 'images_per_s': batch / (milliseconds / 1000)}


def torch_rows(suite: Suite, specs: list[tuple[bool, str, int, bool]], steps: int) -> None:
  """measure_torch(*spec) for each spec in a fresh process (its own CUDA context and memory), into 'torch'."""
  if importlib.util.find_spec('torch') is None:
    suite.results['skipped'].append('torch rows (torch is not installed)')
    return
  with tempfile.NamedTemporaryFile(suffix='.json') as output:
    command = [sys.executable, '-m', 'benchmarks.gpu_suite', '--part=torch', f'--out={output.name}',
               f'--budget_s={suite.left_s()}', f'--steps={steps}', f'--torch_specs={json.dumps(specs)}']
    subprocess.run(command, cwd=startup.REPO, check=True)
    child = json.loads(pathlib.Path(output.name).read_text())
  suite.results.setdefault('torch', []).extend(child.get('torch', []))
  suite.results['skipped'].extend(child['skipped'])
  suite.save()


def torch_part(suite: Suite, args) -> None:
  for train, dtype, batch, channels_last in json.loads(args.torch_specs):
    if suite.affordable(f'torch {"train" if train else "inference"} {dtype} b{batch}', 20):
      suite.add('torch', measure_torch(train, dtype, batch, channels_last, args.steps))


def gpu_part(suite: Suite, args) -> None:
  peak = matmul_peak()
  suite.results['bf16_matmul_peak_tflops'] = peak
  print(f'bf16 matmul peak: {peak:.0f} TFLOP/s', flush=True)
  cache_dir = tempfile.mkdtemp()
  if suite.affordable('startup', 3 * suite.longest_compile_s):
    suite.results['startup'] = startup.cold_and_warm('float32', 64, cache_dir)
    print(startup.format_table(suite.results['startup']), flush=True)
    suite.longest_compile_s = max(suite.longest_compile_s,
                                  suite.results['startup']['cold']['phases']['compile_wait'])
    suite.save()
  # The start-up's programs (b64 float32 train step, b256 float32 encoders) load from its cache: 'cache_hits'.
  jax.config.update('jax_compilation_cache_dir', cache_dir)
  host_state = initial_state()
  train = lambda dtype, batch: ('train', lambda: [measure_train(host_state, dtype, batch, peak, args.steps)], 1.3)
  encoders = lambda dtype, batch: ('inference', lambda: measure_encoders(host_state, dtype, batch, args.steps), 0.6)
  torch_specs = [(mode, dtype, batch, channels_last) for mode in (True, False) for batch in (64, 256)
                 for dtype in ('float32', 'bfloat16') for channels_last in (False, True)]
  items = [train('bfloat16', 256), train('float32', 64),
           ('torch', lambda: torch_rows(suite, torch_specs, args.steps), 0.0),
           encoders('bfloat16', 256), train('bfloat16', 64), train('float32', 256), encoders('float32', 256),
           encoders('bfloat16', 64), encoders('float32', 64)]
  for section, measure, compiles in items:
    if not suite.affordable(section, compiles * suite.longest_compile_s + 10):
      continue
    hits = suite.cache_hits
    for row in measure() or []:
      row['cache_hits'] = suite.cache_hits - hits
      if section == 'train' and not row['cache_hits']:
        suite.longest_compile_s = max(suite.longest_compile_s, row['compile_s'])
      suite.add(section, row)
  if suite.affordable('depthwise', 60):
    suite.results['depthwise'] = depthwise_conv.measure(64, args.steps)
    suite.save()


def cpu_part(suite: Suite, args) -> None:
  cache_dir = tempfile.mkdtemp()
  suite.results['startup'] = startup.cold_and_warm('float32', args.cpu_startup_batch, cache_dir)
  print(startup.format_table(suite.results['startup']), flush=True)
  suite.save()
  jax.config.update('jax_compilation_cache_dir', cache_dir)  # initial_state() reuses the init compiled above
  for row in measure_encoders(initial_state(), 'float32', 32, args.cpu_steps, text=False):
    suite.add('inference', row)
  torch_rows(suite, [(False, 'float32', 32, channels_last) for channels_last in (False, True)], args.cpu_steps)


def format_table(results: dict) -> str:
  lines = [f"{results['versions']['device']} ({results['versions']['platform']}), {results['date']}, "
           f"jax {results['versions']['jax']}, torch {results['versions']['torch']}"]
  if 'bf16_matmul_peak_tflops' in results:
    lines.append(f"bf16 matmul peak {results['bf16_matmul_peak_tflops']:.0f} TFLOP/s")
  if 'startup' in results:
    lines += ['', 'start-up, paper config, float32 (s)', startup.format_table(results['startup'])]
  if results.get('train'):
    lines += ['', 'AXM-Net train step (image + text, all losses, Adam)',
              f'{"dtype":>9} {"batch":>5} {"compile s":>9} {"1st step s":>10} {"ms/step":>8} {"pairs/s":>8} '
              f'{"MFU %":>6}']
    for row in results['train']:
      mfu = f"{100 * row['mfu']:6.1f}" if 'mfu' in row else '     -'
      lines.append(f"{row['dtype']:>9} {row['batch']:5d} {row['compile_s']:9.1f} {row['first_step_s']:10.1f} "
                   f"{row['ms_per_step']:8.1f} {row['pairs_per_s']:8.0f} {mfu}"
                   + (' (compile from the start-up cache)' if row.get('cache_hits') else ''))
  if results.get('inference'):
    lines += ['', 'AXM-Net inference', f'{"program":>12} {"dtype":>9} {"batch":>5} {"compile s":>9} '
              f'{"ms/batch":>8} {"per s":>8}']
    for row in results['inference']:
      lines.append(f"{row['program']:>12} {row['dtype']:>9} {row['batch']:5d} {row['compile_s']:9.1f} "
                   f"{row['ms_per_batch']:8.1f} {row['per_s']:8.0f}")
  if results.get('torch'):
    lines += ['', 'torchreid OSNet x1.0 (eager)', f'{"mode":>9} {"dtype":>9} {"batch":>5} {"layout":>13} '
              f'{"1st step s":>10} {"ms/step":>8} {"img/s":>8}']
    for row in results['torch']:
      lines.append(f"{row['mode']:>9} {row['dtype']:>9} {row['batch']:5d} {row['layout']:>13} "
                   f"{row['first_step_s']:10.1f} {row['ms_per_step']:8.1f} {row['images_per_s']:8.0f}")
  if results.get('depthwise'):
    lines += ['', 'depthwise 3x3 / 1x3, compile s / run ms (benchmarks/depthwise_conv.py)',
              f'{"map":>14} {"shifted fwd":>14} {"grouped fwd":>14} {"shifted f+b":>14} {"grouped f+b":>14}']
    for row in results['depthwise']:
      cells = [row[key] for key in ('shifted_forward', 'grouped_forward', 'shifted_backward', 'grouped_backward')]
      lines.append(f"{row['map']:>14} " + ' '.join(f'{c:5.2f} /{r:7.1f}' for c, r in cells))
  if results['skipped']:
    lines += ['', 'skipped for time: ' + '; '.join(results['skipped'])]
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--part', choices=('auto', 'gpu', 'cpu', 'torch'), default='auto')
  parser.add_argument('--out', default='gpu_suite.json')
  parser.add_argument('--budget_s', type=float, default=420.0,
                      help='GPU part: start no item that would end after this many seconds')
  parser.add_argument('--steps', type=int, default=10, help='timed steps per repeat on the GPU')
  parser.add_argument('--cpu_steps', type=int, default=2, help='timed batches per repeat on the CPU')
  parser.add_argument('--cpu_startup_batch', type=int, default=16,
                      help='global batch of the CPU start-up breakdown (b64 needs ~14 GB of memory on a CPU)')
  parser.add_argument('--torch_specs', default='[]', help=argparse.SUPPRESS)
  args = parser.parse_args()
  suite = Suite(args.out, args.budget_s)
  if args.part == 'torch':
    torch_part(suite, args)
    return
  suite.results['versions'] = versions()
  print(json.dumps(suite.results['versions']), flush=True)
  part = args.part
  if part == 'auto':
    part = 'cpu' if jax.devices()[0].platform == 'cpu' else 'gpu'
  suite.results['part'] = part
  if part == 'cpu':
    suite.budget_s = float('inf')  # --budget_s is the GPU run's 8 minutes
  try:
    (gpu_part if part == 'gpu' else cpu_part)(suite, args)
  except KeyboardInterrupt:  # gpu_suite.sh's time limit
    suite.results['skipped'].append('everything after the item in progress at the time limit')
  suite.save()
  print('\n' + format_table(suite.results))
  print(f'\nwrote {args.out} ({time.perf_counter() - suite.start:.0f} s)')


if __name__ == '__main__':
  main()
