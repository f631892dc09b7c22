"""Placement: the train state and batches on a device mesh for `jax.jit`, or `jax.pmap`.

Both runners take the same pure step functions `f(state, batch, ...)` and the
same host batches (this process's rows), so the train loop never branches on
the mode.

MeshRunner (parallel='jit') lays the devices out as the ('data', 'fsdp',
'tensor') mesh of config.mesh (deepl/sharding.py). Its `init` traces the
state's shapes once with the models' logical axis names, maps them to mesh
axes, and creates the state already sharded (`jit(init, out_shardings=...)`:
no full copy on one device first); the optimizer state follows its
parameters. Steps run with the mesh and rules in force, so the models'
activation constraints apply. Checkpoints hold the sharded state (Orbax
writes each process's shards) and restore onto any mesh: `abstract` gives the
target shardings. The default mesh, data=-1, is plain data parallelism.

PmapRunner (parallel='pmap') is data parallelism only: `jax.pmap` over this
process's devices, the state replicated with a leading device axis.

`compiler_options` (XLA options the model's kernels ask for, see
deepl.kernels, settled in `init` from the model it initialises) go to every
`jax.jit`; `jax.pmap` takes none.
"""

import functools

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from deepl import kernels
from deepl import sharding
from deepl.errors import UserError

PMAP_AXIS = 'batch'  # the pmap axis name collectives use


def check_processes(global_batch: int, what: str = 'train.batch_size') -> None:
  if global_batch % jax.process_count():
    raise UserError(f'config.{what}={global_batch} is not divisible by the '
                    f'{jax.process_count()} processes: pick a multiple of {jax.process_count()}')


def _on_cpu_with_many_devices() -> bool:
  # Measured on 2 cores with forced host devices: queuing many sharded steps
  # without waiting deadlocks XLA's in-process all-reduce; waiting on each
  # step's result avoids it. Accelerators keep the asynchronous queue.
  return jax.devices()[0].platform == 'cpu' and jax.local_device_count() > 1


class _Runner:

  sync_each_step = False

  def throttle(self, previous, current) -> None:
    """Keeps at most one step queued behind the running one.

    The host still overlaps the next batch with compute, but a SIGTERM is
    answered within a step or two instead of after every queued step has run.
    `previous`, `current`: the outputs of the step before and of this one.
    """
    jax.block_until_ready(current if self.sync_each_step else previous)


class _InRules:
  """A jitted function called (and so traced) with the mesh and logical axis rules in force."""

  def __init__(self, jitted, rules, mesh):
    self._jitted, self._rules, self._mesh = jitted, rules, mesh

  def __call__(self, *args):
    with sharding.axis_rules(self._rules, self._mesh):
      return self._jitted(*args)

  def lower(self, *args):
    with sharding.axis_rules(self._rules, self._mesh):
      return self._jitted.lower(*args)


class MeshRunner(_Runner):
  """The state sharded by the models' logical axes, the batch over ('data', 'fsdp')."""

  mode = 'jit'

  def __init__(self, compiler_options=None, mesh=None, rules=None, *, model='the model',
               layer_set='xla'):
    """mesh: config.mesh (default data=-1); rules: config.mesh.rules overrides.

    compiler_options: None for the options of `layer_set` (config.kernels).
    """
    self.compiler_options = compiler_options
    self.layer_set = layer_set
    # Auto axes: XLA's partitioner propagates the shardings through the step;
    # models add constraints where the anchors put them.
    self.mesh = sharding.make_mesh(mesh or {'data': -1, 'fsdp': 1, 'tensor': 1})
    self.rules = sharding.logical_rules(rules)
    self.model = model
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, sharding.batch_spec(self.rules))
    self.state_sharding = None  # set by init
    self.notes = []             # parameter dimensions kept whole (do not divide)
    self.sync_each_step = _on_cpu_with_many_devices()

  def check_batch(self, global_batch: int, what: str = 'train.batch_size') -> None:
    check_processes(global_batch, what)
    sharding.check_batch(global_batch, self.mesh, self.rules, what)

  def init(self, init_fn, *args):
    """init_fn(*args), created sharded; sets `state_sharding` (and `notes`)."""
    if self.compiler_options is None:  # the layer set's, for the model init_fn runs
      # Traced in the rules as init_sharded traces it: JAX caches traces by
      # function and arguments, and flax's rules are not part of that key.
      with sharding.axis_rules(self.rules):
        self.compiler_options = kernels.compiler_options(self.layer_set, init_fn, *args)
    state, self.state_sharding, self.notes = sharding.init_sharded(
        init_fn, *args, mesh=self.mesh, rules=self.rules, model=self.model,
        compiler_options=self.compiler_options)
    return state

  def compile_train(self, step_fn):
    return _InRules(jax.jit(step_fn, in_shardings=(self.state_sharding, self.batch_sharding),
                            out_shardings=(self.state_sharding, self.replicated),
                            donate_argnums=0, compiler_options=self.compiler_options),
                    self.rules, self.mesh)

  def compile_eval(self, eval_fn):
    return _InRules(jax.jit(eval_fn, in_shardings=(self.state_sharding, self.batch_sharding),
                            out_shardings=self.replicated,
                            compiler_options=self.compiler_options),
                    self.rules, self.mesh)

  def put_batch(self, batch):
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.batch_sharding, x), batch)

  def abstract(self, tree):
    """Shapes and target shardings, for restoring a checkpoint straight into place."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, self.state_sharding)

  def to_saveable(self, state):
    return state

  def from_saveable(self, state):
    return jax.device_put(state, self.state_sharding)

  def fetch(self, tree):
    """Host numpy copies of replicated outputs (works across processes)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


class PmapRunner(_Runner):
  """`jax.pmap` over this process's devices; the state has a leading device axis."""

  mode = 'pmap'

  def __init__(self, compiler_options=None, mesh=None, rules=None, *, model='the model',
               layer_set='xla'):
    del compiler_options, rules, model, layer_set  # pmap takes no options; replicated state
    sizes = dict(mesh or {})
    if sizes.get('fsdp', 1) != 1 or sizes.get('tensor', 1) != 1:
      raise UserError("parallel='pmap' is data parallelism only: set mesh.fsdp=1 and "
                      "mesh.tensor=1, or parallel='jit' to shard the state")
    self.n = jax.local_device_count()
    self.sync_each_step = _on_cpu_with_many_devices()
    self._local = jax.local_devices()[0]

  def check_batch(self, global_batch: int, what: str = 'train.batch_size') -> None:
    check_processes(global_batch, what)
    devices = self.n * jax.process_count()
    if global_batch % devices:
      raise UserError(f'config.{what}={global_batch} is not divisible by the '
                      f'{devices} devices: pick a multiple of {devices}')

  def init(self, init_fn, *args):
    return self.from_saveable(jax.jit(init_fn)(*args))

  def compile_train(self, step_fn):
    return jax.pmap(functools.partial(step_fn, axis_name=PMAP_AXIS),
                    axis_name=PMAP_AXIS, donate_argnums=0)

  def compile_eval(self, eval_fn):
    return jax.pmap(functools.partial(eval_fn, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS)

  def put_batch(self, batch):
    return jax.tree.map(lambda x: x.reshape((self.n, -1) + x.shape[1:]), batch)

  def abstract(self, tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                       sharding=jax.sharding.SingleDeviceSharding(self._local)),
                        tree)

  def to_saveable(self, state):
    return jax.tree.map(lambda x: x[0], state)

  def from_saveable(self, state):
    # pmap places a host array with a leading device axis one slice per device.
    return jax.tree.map(lambda x: np.stack([np.asarray(x)] * self.n), state)

  def fetch(self, tree):
    return jax.tree.map(lambda x: np.asarray(x[0]), tree)


def make_runner(config, *, for_training: bool = True, compiler_options=None):
  """The runner config.parallel names, compiled with config.kernels' XLA options.

  for_training: on config.mesh (rules: config.mesh.rules), once the train and
  eval batches fit it. Otherwise, to read a finished run whatever mesh trained
  it: data parallel over this process's devices, once the eval batch fits.
  compiler_options: instead of the layer set's (tools/kernel_gains.py).
  """
  mesh, rules = (config.mesh, config.mesh.rules) if for_training else (None, None)
  runner = {'jit': MeshRunner, 'pmap': PmapRunner}[config.parallel](
      compiler_options, mesh, rules, model=config.model.name, layer_set=config.kernels)
  if for_training:
    runner.check_batch(config.train.batch_size)
  runner.check_batch(config.eval.batch_size or config.train.batch_size, 'eval.batch_size')
  return runner
