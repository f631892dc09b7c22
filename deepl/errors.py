"""The one exception type for bad user input.

Anything raised as `UserError` reaches the user as a single line and exit code 2
(see `deepl.main`), never as a traceback. Raise it with a message that names the
problem and the fix.
"""


class UserError(Exception):
  """Bad input from the user: a config, a path, a name, a shape."""
