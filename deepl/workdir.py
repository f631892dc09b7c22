"""A train run's workdir: taken by one run at a time, refused to another experiment.

  prepare(config, workdir)   # before any data: creates it, locks it, writes config.json

What identifies a run is its model, task and data set: a workdir whose
config.json differs in these belongs to another experiment, and resuming
from it would be wrong.
"""

import json
import os
import tempfile

import jax

from deepl import config as config_lib
from deepl import run_lock
from deepl.errors import UserError

IDENTITY_KEYS = ('model', 'task', 'data.name')


def prepare(config, workdir: str) -> None:
  """Creates workdir and writes config.json, refusing another run's workdir.

  Also takes the workdir's lock (deepl/run_lock.py) for this process: a second
  `deepl train` on the same workdir is refused while this one runs.
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    # A private probe: processes sharing a workdir must not remove each other's.
    with tempfile.NamedTemporaryFile(dir=workdir, prefix='.write_test'):
      pass
  except OSError as err:
    raise UserError(f'cannot write to workdir {workdir} ({err.strerror}): '
                    'pass a --workdir you can write to') from None
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    with open(path) as f:
      old = config_lib.upgrade(json.load(f))
    for key in IDENTITY_KEYS:
      before, now = _get(old, key), _get(config, key)
      if before != now:
        raise UserError(f'workdir {workdir} holds a run with {key}={before}, not {now}: '
                        'use a new --workdir (or the config that wrote it) to resume')
  run_lock.hold(workdir, jax.process_index())  # before config.json, which may be a live run's
  if jax.process_index() == 0:
    # Written aside and renamed, so another process never reads half a file.
    with open(path + '.tmp', 'w') as f:
      f.write(config_lib.to_json(config))
    os.replace(path + '.tmp', path)


def release(workdir: str) -> None:
  run_lock.release(workdir, jax.process_index())


def _get(config, dotted):
  for part in dotted.split('.'):
    config = config[part]
  return config.to_dict() if hasattr(config, 'to_dict') else config
