"""The optimizer, the training state and the per-device train step (no TensorFlow, no I/O)."""
import functools
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from axm_jax import losses
from axm_jax import program_store
from axm_jax import programs
from axm_jax.models import pretrained

AXIS = 'batch'


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  batch_stats: Any
  opt_state: Any

  @classmethod
  def from_variables(cls, step: Any, variables: dict[str, Any], opt_state: Any) -> 'TrainState':
    """The state at `step` of model variables {'params', 'batch_stats'} and an optimizer state."""
    return cls(step=step, params=variables['params'], batch_stats=variables['batch_stats'], opt_state=opt_state)

  @property
  def variables(self) -> dict[str, Any]:
    return {'params': self.params, 'batch_stats': self.batch_stats}


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warm-up from 0, then cosine decay to 0 at config.train.num_steps."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.optim.learning_rate, warmup_steps=config.optim.warmup_steps,
      decay_steps=config.train.num_steps, end_value=0.0)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW with decoupled weight decay on kernels only (not biases, norms or scalars), optional clipping."""
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  adamw = optax.adamw(make_schedule(config), weight_decay=config.optim.weight_decay, mask=decay_mask)
  if config.optim.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.optim.clip_norm), adamw)
  return adamw


def replicate(tree: Any) -> Any:
  """Copies `tree` to every local device with the sharding that the pmapped step returns (no program runs).

  flax.jax_utils.replicate places arrays on another mesh, which makes the step compile a second time when its own
  outputs come back as inputs.
  """
  devices = jax.local_devices()
  sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devices), (AXIS,)), jax.sharding.PartitionSpec(AXIS))
  return jax.tree.map(
      lambda x: jax.device_put(np.broadcast_to(np.asarray(x), (len(devices),) + np.shape(x)), sharding), tree)


def _init_inputs(config: ml_collections.ConfigDict) -> tuple[jax.Array, ...]:
  height, width = config.data.image_size
  return (jax.random.PRNGKey(config.train.seed), jnp.zeros((1, height, width, 3)),
          jnp.zeros((1, config.data.text_length), jnp.int32), jnp.ones((1, config.data.text_length), bool))


# The init program runs once: compiled without LLVM's optimisations it compiles in about half the time.
INIT_COMPILER_OPTIONS = {'xla_backend_optimization_level': 0}


def init_variables(config: ml_collections.ConfigDict, model: nn.Module) -> dict[str, Any]:
  """The model's freshly initialised variables, from one jitted init program (not thousands of eager ops)."""
  inputs = _init_inputs(config)
  init = programs.lower_and_compile(jax.jit(functools.partial(model.init, train=False)), *inputs,
                                    options=INIT_COMPILER_OPTIONS, identity=f'init {program_identity(config, model)}')
  return flax.core.unfreeze(init(*inputs))


def create_state(config: ml_collections.ConfigDict, model: nn.Module, optimizer: optax.GradientTransformation,
                 vocab: list[str], variables: dict[str, Any] | None = None) -> TrainState:
  """A fresh run's initial state at step 0: `variables` (default: init_variables), the pretrained files loaded over
  them, then config.model.init_from's checkpoint wherever it fits (axm_jax.warm_start), and a fresh optimizer
  state."""
  if variables is None:
    variables = init_variables(config, model)
  variables = pretrained.load_pretrained(variables, config.model, vocab)
  if config.model.init_from:
    # Imported here: reading a run needs sentencepiece, which the GPU benchmarks that import this module lack.
    from axm_jax import warm_start  # pylint: disable=g-import-not-at-top
    variables = warm_start.initialise(variables, config, vocab)
  return TrainState.from_variables(jnp.zeros((), jnp.int32), variables, jax.jit(optimizer.init)(variables['params']))


def abstract_state(config: ml_collections.ConfigDict, model: nn.Module) -> TrainState:
  """create_state's shapes and dtypes (config's optimizer) on the first local device, traced only (nothing compiles
  or runs), or read from the program store where an earlier process traced them.

  A resumed run restores its checkpoint straight into these targets instead of initialising what it overwrites.
  """

  def trace() -> TrainState:
    variables = jax.eval_shape(functools.partial(model.init, train=False), *_init_inputs(config))
    return TrainState.from_variables(jax.ShapeDtypeStruct((), jnp.int32), variables,
                                     jax.eval_shape(make_optimizer(config).init, variables['params']))

  state = program_store.shapes(f'abstract_state {program_identity(config, model)}', trace)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), state)


def pmapped_train_step(config: ml_collections.ConfigDict, model: nn.Module) -> 'TrainStep':
  """The train step with config's optimizer (AdamW; its learning-rate schedule over config.train.num_steps is
  compiled into the update program)."""
  return TrainStep(model, make_optimizer(config), config.loss, identity=program_identity(config, model))


def program_identity(config: ml_collections.ConfigDict, model: nn.Module) -> str:
  """What fixes this module's programs besides their arguments' shapes: the config and the model's attributes."""
  return f'{config.to_json_best_effort(sort_keys=True)} {model!r}'


class TrainStep:
  """One training step over the local devices as two pmapped programs: compute_gradients, then apply_gradients.

  The two compile side by side in the background threads (programs.Precompiled): on a 2-core CPU the first step
  comes sooner than from one program that holds both. The update takes the state donated.
  """

  def __init__(self, model: nn.Module, optimizer: optax.GradientTransformation,
               loss_config: ml_collections.ConfigDict, devices: list[jax.Device] | None = None,
               identity: str | None = None):
    """`identity`: a text that fixes model, optimizer and losses (the run's config), under which the compiled
    programs are stored (programs.lower_and_compile); None stores nothing."""
    self.gradients = programs.Precompiled(jax.pmap(
        functools.partial(compute_gradients, model=model, loss_config=loss_config), axis_name=AXIS, devices=devices),
        identity=identity and f'compute_gradients {devices} {identity}')
    self.update = programs.Precompiled(jax.pmap(functools.partial(apply_gradients, optimizer=optimizer),
                                                axis_name=AXIS, donate_argnums=(0,), devices=devices),
                                       identity=identity and f'apply_gradients {devices} {identity}')

  def precompile(self, abstract_state: TrainState, abstract_batch: dict[str, jax.ShapeDtypeStruct]) -> None:
    """Starts compiling both programs for per-device abstract state and batch (programs.per_device)."""
    self.gradients.precompile(abstract_state, abstract_batch)
    self.update.precompile(abstract_state, abstract_state.params, abstract_state.batch_stats)

  def wait(self) -> None:
    """Returns when both announced compiles are done."""
    self.gradients.wait()
    self.update.wait()

  def __call__(self, state: TrainState, batch: dict[str, Any]) -> tuple[TrainState, dict[str, jax.Array]]:
    grads, terms, batch_stats = self.gradients(state, batch)
    state, grad_norm = self.update(state, grads, batch_stats)
    return state, dict(terms, grad_norm=grad_norm)


def compute_gradients(state: TrainState, batch: dict[str, jnp.ndarray], model: nn.Module,
                      loss_config: ml_collections.ConfigDict) -> tuple[Any, dict[str, jnp.ndarray], Any]:
  """Per device: the gradients averaged over devices, the loss terms and the new BatchNorm statistics.

  Batch losses see the global batch; pmean, not psum: see the losses module docstring.
  """

  def loss_fn(params):
    outputs, mutated = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'], batch['text_ids'],
        batch['text_mask'], train=True, mutable=['batch_stats'])
    total, terms = losses.gathered_loss_fn(outputs, batch['label'], loss_config, AXIS, state.step)
    return total, (terms, mutated['batch_stats'])

  grads, (terms, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
  return jax.lax.pmean(grads, AXIS), terms, batch_stats


def apply_gradients(state: TrainState, grads: Any, batch_stats: Any,
                    optimizer: optax.GradientTransformation) -> tuple[TrainState, jnp.ndarray]:
  """Per device: the next state (optimizer update, new BatchNorm statistics) and the gradients' global norm."""
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return (TrainState(step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state),
          optax.global_norm(grads))
