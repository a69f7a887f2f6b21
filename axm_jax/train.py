"""Training: state, the pmap train step, the loop, checkpoints, logging.

Everything that varies between steps is a function of (config.train.seed, step): the data order comes from
`pipeline.train_batches(start_step=...)` and the model needs no per-step randomness, so a run resumed from the
checkpoint of step N reproduces the uninterrupted run bit for bit.
"""
import concurrent.futures
import contextlib
import time
from typing import Any

from absl import logging
import flax
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from axm_jax import checkpointing
from axm_jax import encoders
from axm_jax import evaluate
from axm_jax import preemption
from axm_jax import programs
from axm_jax import run
from axm_jax import storage
from axm_jax import startup
from axm_jax import summaries
from axm_jax import time_budget
from axm_jax import train_step as train_step_lib
from axm_jax import warm_start
from axm_jax.data import pipeline
from axm_jax.data import tokenizer as tokenizer_lib
from axm_jax.models import factory

BARRIER_TIMEOUT_S = 3600  # a dataset build may take this long


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite."""


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       evaluate_test: bool = True) -> dict[str, dict[str, float]]:
  """Trains with val model selection; then evaluates the best checkpoint once on test.

  Raises preemption.Preempted after saving the current step when SIGTERM or SIGINT arrives.
  """
  validate_config(config)
  is_writer = jax.process_index() == 0
  directory = run.RunDirectory(workdir)
  if is_writer:
    storage.ensure_writable(directory.root)
    run.check_config_compatible(directory, config)
  with run.exclusive_run(directory) if is_writer else contextlib.nullcontext():
    results = _train(config, directory, is_writer)
    if evaluate_test:
      best_step, results['test'] = evaluate.evaluate_checkpoint(config, workdir, 'test', 'best')
      if is_writer:
        run.record_metrics(directory, best_step, 'test', results['test'])
  return results


def _train(config: ml_collections.ConfigDict, directory: run.RunDirectory,
           is_writer: bool) -> dict[str, dict[str, float]]:
  """Compiles the train step and the encoders in background threads while the data and the state load."""
  clock = startup.StartupClock()
  if config.model.init_from and not directory.checkpoint_steps():  # a fresh run: refuse a wrong source before it starts
    warm_start.check_source(config)
  if is_writer:
    run.save_config(directory, config)
  recorded_steps = time_budget.recorded_steps(config, directory)
  if recorded_steps is not None:
    config = time_budget.with_num_steps(config, recorded_steps)
  with clock.phase('dataset'):
    _prepare_dataset_once(config)
    train_split = pipeline.load_split(config.data, 'train')
  _, label_map = pipeline.class_labels(train_split.person_ids)
  if is_writer:
    run.save_label_map(directory, label_map)
  model = factory.build_model(config.model, num_classes=len(label_map), axis_name=train_step_lib.AXIS)
  optimizer = train_step_lib.make_optimizer(config)
  abstract = train_step_lib.abstract_state(config, model)
  checkpoints = directory.checkpoints(config.train.keep_checkpoints)
  try:
    state = _resume(checkpoints, abstract, directory, is_writer)
    train_step, initial_variables = _start_compiles(config, model, abstract, fresh=state is None)
    with clock.phase('tokenizer'):
      tokenizer = prepare_tokenizer(config, directory, train_split)
    with clock.phase('compile'):
      variables = initial_variables.result() if initial_variables else None
      train_step.wait()
    if state is None:
      state = train_step_lib.create_state(config, model, optimizer, tokenizer.vocabulary(), variables)
    calibration = (time_budget.Calibration(config, int(state.step))
                   if time_budget.enabled(config) and recorded_steps is None else None)
    return {'val': _train_loop(config, directory, model, state, train_step, train_split, tokenizer, checkpoints,
                               is_writer, calibration, clock)}
  finally:
    checkpoints.close()


def _start_compiles(config: ml_collections.ConfigDict, model: Any, abstract: train_step_lib.TrainState,
                    fresh: bool) -> tuple[train_step_lib.TrainStep, concurrent.futures.Future | None]:
  """Queues the background compiles that the first step waits for: init (a fresh run only), then the train step.

  The init program lowers in seconds and compiles while the train step lowers, which keeps the other core busy.
  Returns the train step and the future of the initial variables (None when resuming).
  """
  initial_variables = programs.in_background(train_step_lib.init_variables, config, model) if fresh else None
  devices = jax.local_device_count()
  train_step = train_step_lib.pmapped_train_step(config, model)
  train_step.precompile(programs.per_device(abstract, devices),
                        pipeline.train_batch_spec(config.data, devices, jax.process_count()))
  return train_step, initial_variables


def _train_loop(config, directory, model, state, p_train_step, train_split, tokenizer, checkpoints, is_writer,
                calibration, clock) -> dict[str, float]:
  """Runs steps from state.step to config.train.num_steps; returns the last val metrics."""
  val_split = pipeline.load_split(config.data, 'val')
  start_step = step = int(state.step)
  batches = pipeline.train_batches(
      train_split, tokenizer, config.data, config.train.seed, start_step, jax.local_device_count(),
      jax.process_index(), jax.process_count())
  writer = summaries.SummaryWriter(directory.tensorboard) if is_writer else None
  progress = Progress(start_step, config.train.num_steps)
  replicated = train_step_lib.replicate(state)
  val_metrics, pending = {}, None
  with preemption.PreemptionWatcher() as watcher, contextlib.closing(writer) if writer else contextlib.nullcontext():
    while step < config.train.num_steps:
      step += 1
      replicated, terms = p_train_step(replicated, next(batches))
      if step == start_step + 1:
        jax.block_until_ready(terms)
        logging.info(clock.summary())
        encoders.precompile_encoders(model, state.variables, config.data)  # behind the next steps, for evaluation
      _check_finite(pending, step - 1, checkpoints)
      pending = terms
      if calibration is not None and step in (start_step + 1, calibration.last_step):
        calibration.observe(step, terms)
        if step == calibration.last_step:
          config = time_budget.with_num_steps(config, _budget_steps(calibration, config, directory, is_writer))
          p_train_step, progress = train_step_lib.pmapped_train_step(config, model), Progress(step, config.train.num_steps)
          calibration = None
      if step % config.train.log_every == 0 or step == config.train.num_steps:
        scalars = _host_scalars(terms, config, step)
        if is_writer:
          progress.log(step, scalars)
          writer.write_scalars(step, scalars)
      if step % config.train.eval_every == 0 or step == config.train.num_steps:
        _check_finite(pending, step, checkpoints)
        host_state = _unreplicate(replicated)
        val_metrics = evaluate.evaluate_split(host_state.variables, model, val_split, tokenizer, config)
        checkpoints.save_if_best(step, host_state.variables, val_metrics)
        if is_writer:
          run.record_metrics(directory, step, 'val', val_metrics)
          writer.write_scalars(step, {f'val/{k}': v for k, v in val_metrics.items()})
      if step % config.train.checkpoint_every == 0 or step == config.train.num_steps:
        _check_finite(pending, step, checkpoints)
        checkpoints.save(step, *_host_training_state(replicated))
      if watcher.should_stop(step):
        _check_finite(pending, step, checkpoints)
        checkpoints.save(step, *_host_training_state(replicated))
        logging.warning('preempted at step %d: saved its checkpoint in %s; rerun the same command to resume.',
                        step, directory.periodic_checkpoints)
        raise preemption.Preempted(step, watcher.signal_number)
  return val_metrics


def _budget_steps(calibration: time_budget.Calibration, config: ml_collections.ConfigDict,
                  directory: run.RunDirectory, is_writer: bool) -> int:
  """The measured step count, the same on every process (process 0's), recorded by the writer."""
  num_steps = calibration.num_steps()
  if jax.process_count() > 1:
    num_steps = int(multihost_utils.broadcast_one_to_all(np.int32(num_steps)))
  if is_writer:
    time_budget.record(directory, config, num_steps)
  return num_steps


def _prepare_dataset_once(config: ml_collections.ConfigDict) -> None:
  """Process 0 builds the dataset while the others wait, so that no two processes write it."""
  if jax.process_index() == 0:
    pipeline.prepare_dataset(config.data)
  barrier('dataset prepared')


def barrier(name: str) -> None:
  """Waits until every process gets here, at the coordination service rather than with a device collective.

  A collective whose processes arrive more than 30 s apart fails on CPU (gloo's connection deadline), e.g. while
  process 0 builds a dataset.
  """
  if jax.process_count() > 1:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top  (jax has no public barrier)
    distributed.global_state.client.wait_at_barrier(name, BARRIER_TIMEOUT_S * 1000)


def _validate_plain_branch(model: ml_collections.ConfigDict) -> None:
  """A set model.plain_branch swaps a branch of AXM-Net whose attention head is off."""
  if not model.plain_branch:
    return
  if model.architecture != 'axm_net':
    raise ValueError(f"config.model.plain_branch = {model.plain_branch!r} swaps a branch of AXM-Net; set it to '' "
                     f"for config.model.architecture = {model.architecture!r}.")
  head = {'visual': 'part_attention', 'text': 'text_attention'}[model.plain_branch]
  if model[head]:
    raise ValueError(f"config.model.plain_branch = {model.plain_branch!r} has no AXM {model.plain_branch} branch "
                     f"for its attention head: set config.model.{head}=False.")


def _validate_pretrained_visual(model: ml_collections.ConfigDict) -> None:
  """OSNet weights need AXM-Net's own visual branch."""
  if not model.pretrained_visual:
    return
  if model.architecture == 'dual_encoder':
    without_branch = "config.model.architecture = 'dual_encoder'"
  elif model.plain_branch == 'visual':
    without_branch = "config.model.plain_branch = 'visual'"
  else:
    return
  raise ValueError("config.model.pretrained_visual holds OSNet weights for AXM-Net's visual branch; set it to '' "
                   f'with {without_branch}.')


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Rejects values the run cannot honour, naming the field."""
  if config.data.images_per_identity < 2:
    raise ValueError('config.data.images_per_identity must be >= 2 (batch-hard triplets need positives), '
                     f'got {config.data.images_per_identity}.')
  batch = config.data.identities_per_batch * config.data.images_per_identity
  devices = jax.device_count()
  if batch % devices:
    raise ValueError(f'config.data.identities_per_batch * config.data.images_per_identity = {batch} '
                     f'must be divisible by the global device count {devices}.')
  if config.data.eval_batch_size % jax.local_device_count():
    raise ValueError(f'config.data.eval_batch_size = {config.data.eval_batch_size} must be divisible by '
                     f'the local device count {jax.local_device_count()}.')
  for field, allowed in (('model.dtype', ('float32', 'bfloat16')), ('loss.affinity_form', ('bce', 'paper')),
                         ('model.architecture', tuple(factory.ARCHITECTURES)),
                         ('model.plain_branch', ('', 'visual', 'text'))):
    value = config[field.split('.')[0]][field.split('.')[1]]
    if value not in allowed:
      raise ValueError(f'config.{field} = {value!r}; expected one of {allowed}.')
  for field in ('sdm_weight', 'itc_weight'):
    if config.loss[field] < 0:
      raise ValueError(f'config.loss.{field} must be >= 0, got {config.loss[field]}.')
  if config.loss.contrastive_temperature <= 0:
    raise ValueError(f'config.loss.contrastive_temperature must be > 0, got {config.loss.contrastive_temperature}.')
  if config.eval.dataset:
    raise ValueError(f'config.eval.dataset = {config.eval.dataset!r} is read by --mode=eval only (training selects '
                     "and tests on its own dataset); set it to '' and evaluate the trained run with --mode=eval.")
  _validate_plain_branch(config.model)
  _validate_pretrained_visual(config.model)
  for field in ('num_steps', 'log_every', 'eval_every', 'checkpoint_every', 'keep_checkpoints'):
    if config.train[field] < 1:
      raise ValueError(f'config.train.{field} must be >= 1, got {config.train[field]}.')
  if config.train.num_steps <= config.optim.warmup_steps:
    raise ValueError(f'config.train.num_steps = {config.train.num_steps} must be > config.optim.warmup_steps = '
                     f'{config.optim.warmup_steps}.')
  if config.train.time_budget_minutes < 0:
    raise ValueError(f'config.train.time_budget_minutes must be >= 0, got {config.train.time_budget_minutes}.')
  if time_budget.enabled(config) and config.optim.warmup_steps < 2:
    raise ValueError('config.train.time_budget_minutes > 0 times the warm-up steps: config.optim.warmup_steps must '
                     f'be >= 2, got {config.optim.warmup_steps}.')


def prepare_tokenizer(config: ml_collections.ConfigDict, directory: run.RunDirectory,
                      train_split: pipeline.SplitData) -> tokenizer_lib.Tokenizer:
  """Loads the run's tokenizer, training it on the train captions the first time (deterministic)."""
  tokenizer = run.load_tokenizer(directory)
  if tokenizer is not None:
    return tokenizer
  model_proto = tokenizer_lib.train_tokenizer(
      (c for captions in train_split.captions for c in captions), config.data.vocab_size)
  if jax.process_index() == 0:
    run.save_tokenizer(directory, model_proto)
  return tokenizer_lib.Tokenizer(model_proto)


class Progress:
  """Logs step, loss terms, learning rate, steps/s and ETA."""

  def __init__(self, start_step: int, num_steps: int):
    self._num_steps = num_steps
    self._last_step, self._last_time = start_step, time.monotonic()

  def log(self, step: int, scalars: dict[str, float]) -> None:
    now = time.monotonic()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    eta = (self._num_steps - step) / max(rate, 1e-9)
    terms = ' '.join(f'{k}={v:.4g}' for k, v in scalars.items())
    logging.info('step %d/%d %s | %.2f steps/s | ETA %s', step, self._num_steps, terms, rate,
                 time.strftime('%H:%M:%S', time.gmtime(eta)))


def _resume(checkpoints: checkpointing.Checkpoints, targets: train_step_lib.TrainState,
            directory: run.RunDirectory, is_writer: bool) -> train_step_lib.TrainState | None:
  """The state of the newest checkpoint that restores into `targets` (None without one); drops later metrics."""
  restored = checkpoints.restore_latest(targets.variables, targets.opt_state, is_writer)
  barrier('checkpoints checked')
  checkpoints.reload()
  if restored is None:
    return None
  step, variables, opt_state = restored
  logging.info('Resuming from the checkpoint of step %d in %s.', step, directory)
  if is_writer:
    run.truncate_metrics(directory, step)
  return train_step_lib.TrainState.from_variables(jnp.asarray(step, jnp.int32), variables, opt_state)


def _check_finite(terms: dict[str, jnp.ndarray] | None, step: int,
                  checkpoints: checkpointing.Checkpoints) -> None:
  if terms is None:
    return
  loss = float(terms['total'][0])
  if not np.isfinite(loss):
    raise NonFiniteLossError(
        f'training loss is {loss} at step {step}; stopping. The last good checkpoint '
        f'(step {checkpoints.latest_step()}) is kept; lower config.optim.learning_rate or set '
        'config.optim.clip_norm and resume.')


def _host_scalars(terms: dict[str, jnp.ndarray], config: ml_collections.ConfigDict,
                  step: int) -> dict[str, float]:
  scalars = {k: float(v[0]) for k, v in terms.items()}
  scalars['lr'] = float(train_step_lib.make_schedule(config)(step))
  return scalars


def _unreplicate(replicated: train_step_lib.TrainState) -> train_step_lib.TrainState:
  return jax.device_get(flax.jax_utils.unreplicate(replicated))


def _host_training_state(replicated: train_step_lib.TrainState) -> tuple[Any, Any]:
  host_state = _unreplicate(replicated)
  return host_state.variables, host_state.opt_state
