"""The one exception type for bad user input, and the one way the command stops at once.

Anything raised as `UserError` reaches the user as a single line and exit code 2
(see `deepl.cli.main`), never as a traceback. Raise it with a message that names the
problem and the fix. `exit_now` ends the process on a signal: one line, 128 + the signal.
"""

import difflib
import os
import signal
import sys


class UserError(Exception):
  """Bad input from the user: a config, a path, a name, a shape."""


def suggest(word, choices, cutoff: float = 0.6) -> str:
  """" — did you mean 'x'?" for the closest of `choices`, or '' if none is close."""
  close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=cutoff)
  return f" — did you mean '{close[0]}'?" if close else ''


def exit_now(message: str, code: int) -> None:
  """Prints 'deepl: <message>' on stderr and ends the process at once, running nothing more.

  os._exit: unwinding from a signal handler while Orbax, Grain and XLA threads
  run crashed the interpreter on its way out (a segfault, 2 times in 7).
  """
  try:
    sys.stdout.flush()
    print(f'\ndeepl: {message}', file=sys.stderr, flush=True)
  except (OSError, ValueError):  # a closed pipe: the exit code still says it
    pass
  os._exit(code)  # pylint: disable=protected-access


def stop_on_signal(signum, frame) -> None:
  """A signal handler: Ctrl-C (exit 130) or SIGTERM (143) while nothing needs saving."""
  del frame
  name = signal.Signals(signum).name
  exit_now(f'{name}: stopped' + (' (Ctrl-C)' if signum == signal.SIGINT else ''), 128 + signum)
