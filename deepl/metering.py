"""Throughput and MFU of the train loop: one object, one call per step.

  meter = Meter(batch_size, StepCost(...))
  meter.step(host_batch, sums, (t_start, t_batch, t_dispatched))   # every step
  row.update(meter.row())     # steps/s, examples/s, tokens/s, FLOP/s, MFU, *_ms; a new window
  meter.reset()               # after time that is not training (an eval)

The first step of a process (the compile) is left out. A window also records
where its wall time went, per step: making and placing the batch (input_ms),
dispatching the step (dispatch_ms) and waiting for the device (wait_ms); a
loop that cannot keep the device busy shows it there.
"""

import copy
import functools
import sys
import time

import jax
import numpy as np

from deepl import config as config_lib
from deepl import flops as flops_lib


class StepCost:
  """Tokens and FLOPs of one global train step, by the shape of its batch.

  Text batches come in a few bucket widths, so each width is counted once
  (deepl.flops, from shapes only) and looked up after. A failed count only
  warns, once: a run must never stop for its speed report.

  Args:
    train_step: `train_step(state, batch, *, task, tx)`, counted with the
      experiment's init_task (pmap's task names an axis that only exists
      inside pmap) attending through XLA (see _with_xla_attention).
    experiment: a deepl.experiment.Experiment (its tasks, tx and config).
    state: the initial state as `runner` placed it (waited for, see below).
    runner: a deepl.parallel runner, for the state's unplaced shapes.
  """

  def __init__(self, train_step, experiment, state, runner):
    self._fn = functools.partial(train_step, task=_with_xla_attention(experiment.init_task),
                                 tx=experiment.tx)
    self._state = jax.eval_shape(runner.to_saveable, state)
    self._task = experiment.task
    self._batch_size = experiment.config.train.batch_size
    self._dtype = config_lib.compute_dtype(experiment.config)
    self._known = {}
    self.failed = False
    self.peak = None
    try:
      # The CPU's peak is a matmul timed now: wait until the state's init has
      # run, or it shares the cores with it (a peak of 109 GFLOP/s, not ~200).
      jax.block_until_ready(state)
      self.peak = flops_lib.system_peak_flops(self._dtype)
    except Exception as err:  # pylint: disable=broad-except
      self._warn(err)

  def second_look(self) -> None:
    """On a CPU, times the peak again and keeps the faster reading.

    This VM's host at times takes one of the two cores for ~0.5 s: 12 of 52
    back-to-back readings read 103-110 GFLOP/s instead of ~200, which doubles
    an MFU. Call it with the device idle, outside any timing, seconds after
    the first reading (after the compile, say), so one stall rarely hits both.
    """
    if self.peak:  # GPUs and TPUs: the same published figure again
      self.peak = max(self.peak, flops_lib.system_peak_flops(self._dtype, again=True))

  def _warn(self, err):
    if not self.failed:
      print(f'deepl: warning: no FLOP count or MFU for this run ({type(err).__name__}: '
            f'{err})', file=sys.stderr, flush=True)
    self.failed = True

  def __call__(self, host_batch) -> tuple[float, float]:
    """(tokens, FLOPs) of the global step whose local batch is `host_batch`."""
    return self.counts(host_batch)[:2]

  def counts(self, host_batch) -> tuple[float, float, float]:
    """(tokens, FLOPs, XLA's own FLOP count with each scan body once)."""
    key = tuple((k, v.shape[1:], str(v.dtype)) for k, v in sorted(host_batch.items()))
    if key not in self._known:
      batch = {k: jax.ShapeDtypeStruct((self._batch_size,) + v.shape[1:], v.dtype)
               for k, v in host_batch.items()}
      flops = xla = float('nan')
      if not self.failed:
        try:
          flops, xla = flops_lib.flop_counts(self._fn, self._state, batch)
        except Exception as err:  # pylint: disable=broad-except
          self._warn(err)
      tokens = self._task.tokens_per_example(host_batch)
      self._known[key] = ((tokens or 0) * self._batch_size, flops, xla)
    return self._known[key]


def _with_xla_attention(task):
  """`task` whose model attends through XLA: a fused kernel (a custom call) counts 0 FLOPs
  to XLA, while its matmuls are the XLA path's."""
  if getattr(task.model, 'attention_implementation', None) in (None, 'xla'):
    return task
  counted = copy.copy(task)
  counted.model = task.model.clone(attention_implementation='xla')
  return counted


class Meter:
  """The figures of the train steps since the last row; see the module docstring.

  Args:
    batch_size: the global batch, for examples/s.
    cost: a StepCost, or None (processes other than 0 log nothing).
    clock: seconds, monotonic; the loop's timestamps must come from the same clock.
  """

  def __init__(self, batch_size: int, cost: StepCost | None = None,
               clock=time.perf_counter):
    self._batch_size = batch_size
    self._cost = cost
    self._clock = clock
    self.reset()
    self._started = None  # the window's start: none until the first step (the compile) is done

  def reset(self) -> None:
    """A new window, from now."""
    self._started = self._clock()
    self._steps = 0
    self._tokens = self._flops = 0.0
    self._host = np.zeros(3)  # input, dispatch, wait seconds

  def step(self, host_batch, sums, times) -> None:
    """One step done: `times` = (started, batch placed, step dispatched) on `clock`."""
    started, placed, dispatched = times
    if self._started is None:  # the compile: its step is waited for and left out
      jax.block_until_ready(sums)
      if self._cost:
        self._cost(host_batch)  # the first count of a shape happens outside the timing
        self._cost.second_look()
      self.reset()
      return
    self._steps += 1
    self._host += (placed - started, dispatched - placed, self._clock() - dispatched)
    if self._cost:
      tokens, flops = self._cost(host_batch)
      self._tokens += tokens
      self._flops += flops

  def row(self) -> dict:
    """The window's figures, then a new window; {} before any timed step."""
    elapsed = self._clock() - self._started if self._started is not None else 0.0
    out = {}
    if self._steps and elapsed > 0:
      out['steps_per_sec'] = self._steps / elapsed
      out['examples_per_sec'] = out['steps_per_sec'] * self._batch_size
      if self._tokens:
        out['tokens_per_sec'] = self._tokens / elapsed
      if np.isfinite(self._flops) and self._flops:
        out['flops_per_sec'] = self._flops / elapsed
        if self._cost.peak:
          out['mfu'] = out['flops_per_sec'] / self._cost.peak
      out.update(zip(('input_ms', 'dispatch_ms', 'wait_ms'), 1e3 * self._host / self._steps))
    if self._started is not None:
      self.reset()
    return out
