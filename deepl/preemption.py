"""SIGTERM and Ctrl-C during training: save a checkpoint, then exit cleanly.

  with Preemption() as preemption:
    while step < num_steps and not preemption.stop(step):
      ...

One process: the first SIGTERM or Ctrl-C sets a flag the loop reads between
steps; a second one stops at once (finished checkpoints stand).

Several processes (a TPU pod slice, a SLURM job): a maintenance SIGTERM may
reach only some hosts, and every process must save the same step. JAX's
coordination service hears a SIGTERM on any process, and `stop(step)`, which
every process calls at every step, turns true on all of them at the same
step (multihost_utils.reached_preemption_sync_point): all save it and exit 0.
So SIGTERM is left to JAX there; Ctrl-C, which no other host hears, stops this
process at once with exit code 130.
"""

import signal
import sys

import jax
from jax.experimental import multihost_utils


class Preemption:

  def __init__(self):
    self.requested = False
    self._previous = {}
    self._hosts = 1

  def __enter__(self):
    self._hosts = jax.process_count()
    signals = (signal.SIGTERM, signal.SIGINT) if self._hosts == 1 else (signal.SIGINT,)
    for sig in signals:
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def stop(self, step: int) -> bool:
    """Whether to save and stop now, after `step` steps; the same answer on every process."""
    if self._hosts > 1 and not self.requested:
      self.requested = multihost_utils.reached_preemption_sync_point(step)
      if self.requested:
        print(f'\ndeepl: preempted: every process saves step {step}, then exits', flush=True)
    return self.requested

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if self.requested or self._hosts > 1:  # a second signal, or no way to agree: stop now
      print(f'\ndeepl: {name}: stopping without saving; finished checkpoints stand', flush=True,
            file=sys.stderr)
      raise SystemExit(128 + signum)
    self.requested = True
    print(f'\ndeepl: {name}: saving a checkpoint, then exiting', flush=True)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
