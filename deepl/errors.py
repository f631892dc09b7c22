"""The one exception type for bad user input.

Anything raised as `UserError` reaches the user as a single line and exit code 2
(see `deepl.cli.main`), never as a traceback. Raise it with a message that names the
problem and the fix.
"""

import difflib


class UserError(Exception):
  """Bad input from the user: a config, a path, a name, a shape."""


def suggest(word, choices, cutoff: float = 0.6) -> str:
  """" — did you mean 'x'?" for the closest of `choices`, or '' if none is close."""
  close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=cutoff)
  return f" — did you mean '{close[0]}'?" if close else ''
