"""Checkpoints: writing them, and every way of reading them back.

  Checkpointer     the train loop's: Orbax checkpoints of the train state (each
                   process writes its shards; they restore onto any mesh), and
                   the data iterator's position and the loop's own counters, saved
                   together so a resumed run continues bit for bit, with any
                   number of processes (`restore_latest`).
  read_variables   a model's variables (params and e.g. batch statistics) of
                   any checkpoint, onto one device: evaluate, sample, predict.
  init_from        fine-tuning (config.init_from): another run's parameters
                   wherever this model has the same path and shape.

Async saves; the last `keep` are kept, plus optionally the best by an eval
metric. A latest checkpoint that cannot be read (a crash mid-write, a damaged
disk) is moved aside with a warning and the previous one is used; one whose
arrays have other shapes than the model's is a user error (wrong workdir).
"""

import sys

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from deepl import workdir as workdir_lib
from deepl.errors import UserError


def _warn(message: str) -> None:
  print(f'deepl: warning: {message}', file=sys.stderr)


def _shapes(tree) -> dict:
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _saved_tree(state_dir) -> dict:
  """The metadata (shape, dtype, ...) of every array a checkpoint's state/ folder holds.

  Read by the item's handler: StandardCheckpointer would also look for a
  checkpoint-level _CHECKPOINT_METADATA inside the item (it sits one level up)
  and log a warning on every resume.
  """
  return ocp.StandardCheckpointHandler().metadata(workdir_lib.path(state_dir)).tree


def _check_shapes(directory: str, step: int, params) -> None:
  """Raises UserError if the saved params are not shaped as `params` (arrays or abstract)."""
  try:
    saved = _shapes(_saved_tree(workdir_lib.path(directory) / str(step) / 'state')['params'])
  except Exception:  # pylint: disable=broad-except
    return  # unreadable metadata: restoring fails, and says so
  wanted = _shapes(params)
  if saved != wanted:
    diff = sorted(set(saved.items()) ^ set(wanted.items()))[0][0]
    raise UserError(
        f'{directory} holds a checkpoint of a different model (first '
        f'difference at params{diff}): use a new --workdir, or the config that wrote it')


class Checkpointer:

  def __init__(self, directory: str, *, keep: int, best_metric: str = '',
               best_mode: str = 'max'):
    self.directory = workdir_lib.path(directory)
    policies = [ocp.checkpoint_managers.LatestN(keep)]
    if best_metric:
      policies.append(ocp.checkpoint_managers.BestN(
          get_metric_fn=lambda m: m[best_metric], reverse=best_mode == 'min', n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        enable_async_checkpointing=True, cleanup_tmp_directories=True, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self):
    return self._manager.latest_step()

  def save(self, step: int, state, data_iterator, loop_state: dict, metrics=None):
    # The iterator's position goes into the loop's JSON, written once for all
    # processes: it is the same on each (the global batches consumed), so a run
    # resumes with any number of processes. Grain's own checkpoint item is a
    # file per process, named by the process count.
    loop_state = {**loop_state, 'data': data_iterator.get_state()}
    args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                              loop=ocp.args.JsonSave(loop_state))
    self._manager.save(step, args=args, metrics=metrics, force=True)

  def restore_latest(self, abstract_state, data_iterator):
    """(step, state, loop_state) of the newest readable checkpoint, or None.

    `data_iterator` is restored in place. Newer checkpoints that failed are
    moved aside only once an older one restores: if every one fails the same
    way, the fault is not in the files, and nothing is moved.
    """
    failed = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      _check_shapes(self.directory, step, abstract_state.params)
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), loop=ocp.args.JsonRestore()))
      except Exception as err:  # pylint: disable=broad-except
        failed.append((step, err))
        continue
      # Checkpoints of earlier deepl kept it in grain's item: there, as ever,
      # the position was the number of batches taken, the step.
      data_iterator.set_state(restored.loop.pop('data', None) or {'next_index': step})
      for bad_step, err in failed:
        self._quarantine(bad_step, err)
      return step, restored.state, restored.loop
    if failed:
      step, err = failed[0]
      raise RuntimeError(f'no checkpoint in {self.directory} could be restored; the '
                         f'latest (step {step}) failed with: {err}') from err
    return None

  def _quarantine(self, step, err):
    aside = self.directory.parent / 'corrupt_checkpoints' / str(step)
    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    _warn(f'checkpoint {step} is unreadable ({first_line}); moved it to {aside} '
          'and using an earlier one')
    if jax.process_index() == 0:
      aside.parent.mkdir(parents=True, exist_ok=True)
      if aside.exists():
        aside.rmtree()
      (self.directory / str(step)).rename(aside)
    self._manager.reload()

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    """Waits for the saves under way, then lets go of the manager."""
    self._manager.wait_until_finished()
    self._manager.close()


def _read_state(state_dir: str, keys=('params', 'model_state')) -> dict:
  """Entries `keys` of a checkpoint's saved train state (its state/ folder), as numpy arrays.

  Restored as they were saved (shapes and dtypes from its metadata) onto this
  process's first device, whatever devices wrote them. The other entries (the
  optimizer's state: twice the params for AdamW) are left unread.
  """
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  saved = _saved_tree(state_dir)
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                        {key: saved[key] for key in keys if key in saved})
  state = ocp.PyTreeCheckpointHandler().restore(
      workdir_lib.path(state_dir),
      args=ocp.args.PyTreeRestore(item=target, partial_restore=True,
                                  restore_args=ocp.checkpoint_utils.construct_restore_args(target)))
  return jax.tree.map(np.asarray, state)


def read_variables(directory: str, step: int | None = None, *, like=None,
                   keys=('params', 'model_state')):
  """(step, a model's variables: {'params': ..., **model_state}) of checkpoint `step`.

  Default the newest that reads. Read onto one device as numpy arrays, for
  code that builds no optimizer of its own (evaluate, sample, predict,
  init_from). `like`: params (arrays or abstract) the saved ones must match
  in shape, else UserError. `keys=('params',)` leaves the model state unread.
  """
  directory = workdir_lib.path(directory)
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # Orbax warns that a read-only manager is read-only
  try:
    manager = ocp.CheckpointManager(directory,
                                    options=ocp.CheckpointManagerOptions(read_only=True))
  finally:
    logging.set_verbosity(verbosity)
  steps = sorted(manager.all_steps(), reverse=True)
  if step is not None and step not in steps:
    raise UserError(f'{directory} has no checkpoint of step {step}; it has: '
                    f'{", ".join(map(str, sorted(steps))) or "none"}')
  for candidate in [step] if step is not None else steps:
    if like is not None:
      _check_shapes(directory, candidate, like)
    try:
      state = _read_state(directory / str(candidate) / 'state', keys)
    except Exception as err:  # pylint: disable=broad-except
      if step is not None:
        raise UserError(f'checkpoint {step} in {directory} is unreadable: {err}') from None
      _warn(f'checkpoint {candidate} is unreadable; trying an earlier one')
      continue
    return candidate, {'params': state['params'], **state.get('model_state', {})}
  raise UserError(f'{directory} has no readable checkpoint: let deepl train save one')


# --------------------------------------------------------------- init_from


def init_from(path: str, params):
  """`params` with every array the checkpoint at `path` also has replaced by its.

  The usual use is fine-tuning: pre-train a model with one head (say BERT
  with its masked-LM head), then train the same encoder with a new head.
  `path` is a workdir (its newest readable checkpoint) or one checkpoint's
  step folder. Parameters only this model has (the new head) keep their fresh
  init; a path both have with different shapes means a different
  architecture: a UserError.

  Returns (new params, names of the arrays that kept their fresh init).
  """
  try:
    saved = _flat(_params_at(path))
  except UserError:
    raise
  except Exception as err:  # pylint: disable=broad-except
    raise UserError(f'init_from={path}: cannot read it ({type(err).__name__}): '
                    'point it at a deepl checkpoint') from None
  fresh = []

  def take(key_path, x):
    key = jax.tree_util.keystr(key_path)
    if key not in saved:
      fresh.append(key)
      return x
    if tuple(saved[key].shape) != tuple(x.shape):
      raise UserError(
          f'init_from={path} is a different architecture: {key} has shape '
          f'{tuple(saved[key].shape)} there and {tuple(x.shape)} here')
    return np.asarray(saved[key]).astype(x.dtype)

  new = jax.tree_util.tree_map_with_path(take, params)
  if len(fresh) == len(_flat(params)):
    raise UserError(f'init_from={path} shares no parameter with this model: '
                    'it is a different architecture')
  return new, fresh


def tokenizer_dir(path: str) -> str | None:
  """The tokenizer folder of the run at `path` (a workdir or a step folder), if any."""
  path = workdir_lib.path(path)
  for run in (path, path.parent.parent):
    candidate = run / 'tokenizer'
    if candidate.is_dir():
      return str(candidate)
  return None


def _params_at(path: str):
  """Params of a step folder (holding state/) or of a workdir's newest readable checkpoint."""
  path = workdir_lib.path(path)
  if (path / 'state').is_dir():
    return _read_state(path / 'state', keys=('params',))['params']
  ckpts = path / 'checkpoints'
  if not (ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())):
    raise UserError(f'init_from={path} holds no checkpoint: point it at a workdir of a '
                    'finished run or at one of its checkpoints/<step> folders')
  return read_variables(ckpts, keys=('params',))[1]['params']  # a damaged newest: the one before


def _flat(tree) -> dict:
  return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}
