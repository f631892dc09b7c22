"""Start a run from another run's parameters (`config.init_from`).

The usual use is fine-tuning: pre-train a model with one head (say BERT with
its masked-LM head), then train the same encoder with a new head. Every
parameter whose path and shape exist in the pre-trained checkpoint is copied;
parameters only the new model has (the new head) keep their fresh init. A path
both have with different shapes means a different architecture: an error.
"""

import os

import jax
import numpy as np

from deepl import checkpoint
from deepl.errors import UserError


def _read_params(path: str):
  """Params of a step folder (holding state/) or of a workdir's newest readable checkpoint."""
  if os.path.isdir(os.path.join(path, 'state')):
    return checkpoint.read_state(os.path.join(path, 'state'), keys=('params',))['params']
  ckpts = os.path.join(path, 'checkpoints')
  if not (os.path.isdir(ckpts) and any(p.isdigit() for p in os.listdir(ckpts))):
    raise UserError(f'init_from={path} holds no checkpoint: point it at a workdir of a '
                    'finished run or at one of its checkpoints/<step> folders')
  return checkpoint.restore_params(ckpts)[1]  # a damaged newest one: the one before, warned


def tokenizer_dir(path: str) -> str | None:
  """The tokenizer folder of the run at `path` (a workdir or a step folder), if any."""
  for run in (path, os.path.dirname(os.path.dirname(os.path.normpath(path)))):
    candidate = os.path.join(run, 'tokenizer')
    if os.path.isdir(candidate):
      return candidate
  return None


def _flat(tree) -> dict:
  return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def load_params(path: str, params):
  """`params` with every array the checkpoint at `path` also has replaced by its.

  Returns (new params, names of the arrays that kept their fresh init).
  """
  try:
    saved = _read_params(path)
  except UserError:
    raise
  except Exception as err:  # pylint: disable=broad-except
    raise UserError(f'init_from={path}: cannot read it ({type(err).__name__}): '
                    'point it at a deepl checkpoint') from None
  saved = _flat(saved)
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
