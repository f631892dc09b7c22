"""Placement: one device mesh for `jax.jit`, or `jax.pmap` over local devices.

Both runners take the same pure step functions `f(state, batch, ...)` and the
same host batches (this process's rows), so the train loop never branches on
the mode. Checkpoints always hold the plain (unreplicated) state, so a run can
resume under the other mode or on another number of devices.
"""

import functools

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from deepl.errors import UserError

DATA_AXIS = 'data'   # the mesh axis the batch is split over
PMAP_AXIS = 'batch'  # the pmap axis name collectives use


def check_batch_size(global_batch: int, mode: str, what: str = 'train.batch_size') -> None:
  """UserError unless the global batch splits evenly over the processes and devices.

  The one check of a config that needs the devices: deepl.config.validate
  runs before JAX starts, this once the mesh is made (make_runner).
  """
  devices = jax.device_count() if mode == 'jit' else jax.local_device_count() * jax.process_count()
  if global_batch % jax.process_count():
    raise UserError(f'config.{what}={global_batch} is not divisible by the '
                    f'{jax.process_count()} processes: pick a multiple of {devices}')
  if global_batch % devices:
    raise UserError(f'config.{what}={global_batch} is not divisible by the '
                    f'{devices} devices: pick a multiple of {devices}')


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


class JitRunner(_Runner):
  """The batch is sharded over a 'data' mesh axis; the state is replicated."""

  mode = 'jit'

  def __init__(self):
    # Auto axes: XLA's partitioner propagates the batch sharding through the
    # step, so model and task code never mention shardings.
    self.mesh = jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                              axis_types=(jax.sharding.AxisType.Auto,))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P(DATA_AXIS))
    self.sync_each_step = _on_cpu_with_many_devices()

  def init(self, init_fn, *args):
    return jax.jit(init_fn, out_shardings=self.replicated)(*args)

  def compile_train(self, step_fn):
    return jax.jit(step_fn, in_shardings=(self.replicated, self.batch_sharding),
                   out_shardings=self.replicated, donate_argnums=0)

  def compile_eval(self, eval_fn):
    return jax.jit(eval_fn, in_shardings=(self.replicated, self.batch_sharding),
                   out_shardings=self.replicated)

  def put_batch(self, batch):
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.batch_sharding, x), batch)

  def abstract(self, tree):
    """Shapes and placement for restoring a checkpoint straight into place."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.replicated), tree)

  def to_saveable(self, state):
    return state

  def from_saveable(self, state):
    return jax.device_put(state, self.replicated)

  def fetch(self, tree):
    """Host numpy copies of replicated outputs (works across processes)."""
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


class PmapRunner(_Runner):
  """`jax.pmap` over this process's devices; the state has a leading device axis."""

  mode = 'pmap'

  def __init__(self):
    self.n = jax.local_device_count()
    self.sync_each_step = _on_cpu_with_many_devices()
    self._local = jax.local_devices()[0]

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


def make_runner(config):
  """The runner of config.parallel ('jit' or 'pmap'), once the config's batches fit its devices."""
  check_batch_size(config.train.batch_size, config.parallel)
  check_batch_size(config.eval.batch_size or config.train.batch_size, config.parallel,
                   'eval.batch_size')
  return {'jit': JitRunner, 'pmap': PmapRunner}[config.parallel]()
