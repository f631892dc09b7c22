"""A train run's workdir: taken by one run at a time, refused to another experiment.

  prepare(config, workdir)   # before any data: creates it, locks it, writes config.json
  path(workdir) / 'config.json'

What identifies a run is its model, task and data set: a workdir whose
config.json differs in these belongs to another experiment, and resuming
from it would be wrong.

A workdir is a local folder or a cloud one (gs://bucket/runs/x, for TPU
VMs): every file of a run (config, metrics, tokenizer, checkpoints) is read
and written through etils.epath, the same code for both. Only the lock
(an flock, deepl/run_lock.py) and TensorBoard's events are local-only.
"""

import json
import uuid

from etils import epath
import jax

from deepl import config as config_lib
from deepl import run_lock
from deepl.errors import UserError

IDENTITY_KEYS = ('model', 'task', 'data.name')


def is_remote(workdir) -> bool:
  """Whether `workdir` is a cloud path (gs://..., s3://...), not a local folder."""
  return '://' in str(workdir)


def path(workdir) -> epath.Path:
  """`workdir` as an epath.Path: a local one absolute (Orbax takes no other), a cloud one as is."""
  return epath.Path(workdir) if is_remote(workdir) else epath.Path(workdir).expanduser().absolute()


def prepare(config, workdir: str) -> None:
  """Creates workdir and writes config.json, refusing another run's workdir.

  Also takes the workdir's lock (deepl/run_lock.py) for this process: a second
  `deepl train` on the same workdir is refused while this one runs.
  """
  root = path(workdir)
  try:
    root.mkdir(parents=True, exist_ok=True)
    # A private probe: processes sharing a workdir must not remove each other's.
    probe = root / f'.write_test-{uuid.uuid4().hex}'
    probe.write_text('')
    probe.unlink()
  except OSError as err:
    raise UserError(f'cannot write to workdir {workdir} ({err.strerror or err}): '
                    'pass a --workdir you can write to') from None
  config_json = root / 'config.json'
  if config_json.exists():
    old = config_lib.upgrade(json.loads(config_json.read_text()))
    for key in IDENTITY_KEYS:
      before, now = _get(old, key), _get(config, key)
      if before != now:
        raise UserError(f'workdir {workdir} holds a run with {key}={before}, not {now}: '
                        'use a new --workdir (or the config that wrote it) to resume')
  if not is_remote(workdir):  # a bucket has no flock
    run_lock.hold(workdir, jax.process_index())  # before config.json, which may be a live run's
  if jax.process_index() == 0:
    # Written aside and renamed, so another process never reads half a file.
    aside = root / 'config.json.tmp'
    aside.write_text(config_lib.to_json(config))
    aside.replace(config_json)


def release(workdir: str) -> None:
  run_lock.release(workdir, jax.process_index())


def _get(config, dotted):
  for part in dotted.split('.'):
    config = config[part]
  return config.to_dict() if hasattr(config, 'to_dict') else config
