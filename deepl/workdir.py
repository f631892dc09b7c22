"""A train run's workdir: taken by one run at a time, refused to another experiment.

  changes = prepare(config, workdir)   # before any data: creates it, locks it, checks the config
  record_config(config, workdir, changes, step)   # once resumed: config.json, config_history.jsonl
  path(workdir) / 'config.json'

What identifies a run is its model, task and data set: a workdir whose
config.json differs in these belongs to another experiment, and resuming
from it would be wrong. Any other difference from the config the run was
trained with is printed key by key (`optim.lr: 0.1 -> 0.05`). Keys that
leave the training as it was (how often to log, evaluate and checkpoint,
how many checkpoints to keep, where the data lies) are allowed; the rest
only with allow_change (--allow_config_change), and never a change of the
optimizer's state, which the checkpoints could not restore into. Each change
goes to workdir/config_history.jsonl with the step it took effect at, and
config.json holds the config in force.

A workdir is a local folder or a cloud one (gs://bucket/runs/x, for TPU
VMs): every file of a run (config, metrics, tokenizer, checkpoints) is read
and written through etils.epath, the same code for both. Only the lock
(an flock, deepl/run_lock.py) and TensorBoard's events are local-only.
"""

import datetime
import errno
import json
import os
import shutil
import uuid

from etils import epath
import jax

from deepl import config as config_lib
from deepl import optim
from deepl import run_lock
from deepl.errors import UserError

IDENTITY_KEYS = ('model', 'task', 'data.name')
# Keys a resume may change freely: what is logged, evaluated and kept, where the data
# lies, and how the same computation is placed and compiled (any mesh, any device).
FREE_KEYS = ('train.log_every_steps', 'eval.every_steps', 'eval.batch_size',
             'checkpoint.every_steps', 'checkpoint.keep', 'checkpoint.best_metric',
             'checkpoint.best_mode', 'data.data_dir', 'data.manual_dir', 'data.prefetch',
             'parallel', 'kernels', 'attention')
FREE_SECTIONS = ('mesh.',)
HISTORY = 'config_history.jsonl'


def is_remote(workdir) -> bool:
  """Whether `workdir` is a cloud path (gs://..., s3://...), not a local folder."""
  return '://' in str(workdir)


def path(workdir) -> epath.Path:
  """`workdir` as an epath.Path: a local one absolute (Orbax takes no other), a cloud one as is."""
  return epath.Path(workdir) if is_remote(workdir) else epath.Path(workdir).expanduser().absolute()


def prepare(config, workdir: str, *, allow_change: bool = False) -> dict:
  """Creates workdir and takes its lock; returns the config's changes since the run's config.json.

  Refuses another run's workdir, a change of the config that alters the
  training (unless `allow_change`) and one the checkpoints cannot restore
  into, before anything of the run is written. The lock (deepl/run_lock.py),
  taken first, refuses a second `deepl train` on the same workdir while this
  one runs.
  Returns {key: (before, now)}; `record_config` writes them once resumed.
  """
  root = path(workdir)
  check_writable(root, f'workdir {workdir}', 'pass a --workdir you can write to')
  if not is_remote(workdir):  # a bucket has no flock
    run_lock.hold(workdir, jax.process_index())  # a live run's config.json is its own
  changes = {}
  if (root / 'config.json').exists():
    old = config_lib.load_run_config(workdir)
    changes = config_changes(old, config)
    for key in IDENTITY_KEYS:
      if any(k == key or k.startswith(key + '.') for k in changes):
        raise UserError(f'workdir {workdir} holds a run with {key}={_get(old, key)}, not '
                        f'{_get(config, key)}: use a new --workdir (or the config that wrote '
                        'it) to resume')
    _check_changes(changes, old, config, workdir, allow_change)
  return changes


def check_writable(folder, name: str, fix: str) -> None:
  """Creates `folder` and writes a file there, else raises UserError: '<name> ... <fix>'."""
  try:
    folder.mkdir(parents=True, exist_ok=True)
    # A private probe: processes sharing a workdir must not remove each other's.
    probe = folder / f'.write_test-{uuid.uuid4().hex}'
    probe.write_text('')
    probe.unlink()
  except OSError as err:
    raise UserError(f'cannot write to {name} ({err.strerror or err}): {fix}') from None


def config_changes(old, new) -> dict:
  """{dotted key: (old value, new value)} of every key that differs, as config.json has them."""
  flat = [flatten_json(c) for c in (old, new)]
  keys = sorted(set(flat[0]) | set(flat[1]))
  return {k: (flat[0].get(k), flat[1].get(k)) for k in keys if flat[0].get(k) != flat[1].get(k)}


def format_changes(changes: dict) -> str:
  return ', '.join(f'{key}: {before!r} -> {now!r}' for key, (before, now) in changes.items())


def _check_changes(changes, old, new, workdir, allow_change: bool) -> None:
  if not changes:
    return
  optimizer_keys = [k for k in changes if k.startswith('optim.') or k == 'train.num_steps']
  if optimizer_keys and _optimizer_state(old) != _optimizer_state(new):
    moved = format_changes({k: changes[k] for k in optimizer_keys})
    raise UserError(f'{moved} changes the optimizer state, which the checkpoints in {workdir} '
                    'cannot restore into: resume with the run\'s optimizer, or start a new '
                    f'--workdir with --config.init_from={workdir} to take its parameters')
  refused = {k: v for k, v in changes.items() if not is_free(k)}
  if refused and not allow_change:
    raise UserError(f'workdir {workdir} was trained with another config '
                    f'({format_changes(refused)}): rerun with its config, or pass '
                    '--allow_config_change to resume with this one (the change is recorded in '
                    f'{HISTORY})')


def is_free(key: str) -> bool:
  """Whether a resume may change config key `key` without --allow_config_change."""
  return key in FREE_KEYS or key.startswith(FREE_SECTIONS)


def _optimizer_state(config):
  """The optimizer state's structure, shapes and dtypes for a stand-in model: what restores."""
  tx = optim.make_optimizer(config.optim, config.train.num_steps)
  params = {'kernel': jax.ShapeDtypeStruct((2, 2), 'float32'),
            'bias': jax.ShapeDtypeStruct((2,), 'float32')}
  state = jax.eval_shape(tx.init, params)
  return jax.tree.structure(state), [(x.shape, x.dtype) for x in jax.tree.leaves(state)]


def record_config(config, workdir: str, changes: dict, step: int) -> None:
  """Writes config.json (the config in force) and appends `changes` to config_history.jsonl."""
  if jax.process_index() != 0:
    return
  root = path(workdir)
  if changes:
    for key, (before, now) in changes.items():
      free = '' if is_free(key) else ' (--allow_config_change)'
      print(f'deepl: config change from step {step}{free}: {key}: {before!r} -> {now!r}',
            flush=True)
    entry = {'step': int(step), 'time': datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds'), 'changes': {k: list(v) for k, v in changes.items()}}
    with (root / HISTORY).open('a') as f:
      f.write(json.dumps(entry) + '\n')
  # Written aside and renamed, so another process never reads half a file.
  aside = root / 'config.json.tmp'
  aside.write_text(config_lib.to_json(config))
  aside.replace(root / 'config.json')


def read_history(workdir: str) -> list[dict]:
  """The entries of workdir/config_history.jsonl, oldest first ([] if the config never changed)."""
  history = path(workdir) / HISTORY
  if not history.exists():
    return []
  return [json.loads(line) for line in history.read_text().splitlines() if line.strip()]


def storage_error(err: BaseException, workdir: str) -> str | None:
  """One line for a full disk or a folder that cannot be written, found anywhere in
  `err`'s chain (Orbax and TensorStore wrap the OSError, or only keep its text); else None."""
  seen = set()
  while err is not None and id(err) not in seen:
    seen.add(id(err))
    if isinstance(err, OSError) and err.errno in _STORAGE_ERRNOS:
      return _storage_line(err.errno, str(err.filename or f'in {path(workdir)}'))
    for code, needle in _STORAGE_TEXTS:
      if needle in str(err):
        return _storage_line(code, f'in {path(workdir)}')
    err = err.__cause__ or err.__context__
  return None


_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
_STORAGE_TEXTS = ((errno.ENOSPC, 'No space left on device'), (errno.EDQUOT, 'Disk quota exceeded'),
                  (errno.EROFS, 'Read-only file system'), (errno.EACCES, 'Permission denied'),
                  (errno.EPERM, 'Operation not permitted'))


def _storage_line(code: int, where: str) -> str:
  if code in (errno.ENOSPC, errno.EDQUOT):
    return (f'no space left writing {where}: free space there (the last complete checkpoint '
            'is intact) and rerun the same command to resume')
  return (f'no permission to write {where} ({os.strerror(code)}): make it writable, or pass '
          'another --workdir')


def check_space(folder, needed: int) -> None:
  """UserError, before a write of `needed` bytes that a local `folder`'s disk cannot hold."""
  if is_remote(folder):
    return
  free = shutil.disk_usage(str(folder)).free
  if free < needed:
    raise UserError(f'not enough space in {folder}: a checkpoint needs about '
                    f'{_megabytes(needed)}, {_megabytes(free)} are free; free some (the last '
                    'complete checkpoint is intact), then rerun the same command to resume')


def _megabytes(n: int) -> str:
  return f'{n / 2**20:,.1f} MB'


def release(workdir: str) -> None:
  run_lock.release(workdir, jax.process_index())


def _get(config, dotted):
  for part in dotted.split('.'):
    config = config[part]
  return config.to_dict() if hasattr(config, 'to_dict') else config


def flatten_json(config, prefix='') -> dict:
  """Dotted key -> value of a config as its config.json holds it (lists, not tuples)."""
  tree = json.loads(config_lib.to_json(config)) if not isinstance(config, dict) else config
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      out.update(flatten_json(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out
