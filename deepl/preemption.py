"""SIGTERM and Ctrl-C during training: save a checkpoint, then exit cleanly.

  with Preemption() as preemption:
    while ... and not preemption.requested:
      ...

The first signal sets a flag the loop reads between steps; a second one stops
at once (finished checkpoints stand).
"""

import signal


class Preemption:

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested:  # a second signal: stop now; finished checkpoints stand
      print(f'\ndeepl: second {signal.Signals(signum).name}: stopping without saving',
            flush=True)
      raise SystemExit(128 + signum)
    self.requested = True
    print(f'\ndeepl: {signal.Signals(signum).name}: saving a checkpoint, then exiting',
          flush=True)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
