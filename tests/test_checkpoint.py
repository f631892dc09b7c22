"""Checkpointer: what is kept, and a restore that brings back state, data
position and loop counters together."""

import numpy as np
import pytest

from deepl import checkpoint
from deepl import data as data_lib
from deepl.errors import UserError
from deepl.state import TrainState


class _Source:
  def __init__(self, n=50):
    self.x = np.arange(n, dtype=np.int32)

  def __len__(self):
    return len(self.x)

  def gather(self, idx):
    return {'x': self.x[idx]}


def _iterator():
  return data_lib.train_iterator(_Source(), global_batch_size=4, seed=0)


def _state(v, shape=(3,)):
  return TrainState(step=np.array(v, np.int32), params={'w': np.full(shape, v, np.float32)},
                    model_state={}, opt_state=(), rng=np.zeros((2,), np.uint32))


def _steps(directory):
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def test_keeps_the_last_n_and_the_best(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'ckpt'), keep=2, best_metric='accuracy')
  it = _iterator()
  accuracy = {1: 0.5, 2: 0.9, 3: 0.6, 4: 0.7, 5: 0.8}
  for step in range(1, 6):
    next(it)
    ckpt.save(step, _state(step), it, {'window': None}, metrics={'accuracy': accuracy[step]})
  ckpt.wait()
  assert _steps(tmp_path / 'ckpt') == [2, 4, 5]
  ckpt.close()


def test_restore_brings_back_state_data_and_loop(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'ckpt'), keep=3)
  it = _iterator()
  for _ in range(3):
    next(it)
  ckpt.save(3, _state(3), it, {'window': {'loss': 1.25, 'count': 4.0}})
  ckpt.wait()
  expected_next = next(it)['x']

  fresh = _iterator()
  step, state, loop = checkpoint.Checkpointer(str(tmp_path / 'ckpt'), keep=3).restore_latest(
      _state(0), fresh)
  assert step == 3 and loop == {'window': {'loss': 1.25, 'count': 4.0}}
  np.testing.assert_array_equal(state.params['w'], np.full((3,), 3, np.float32))
  np.testing.assert_array_equal(next(fresh)['x'], expected_next)


def test_params_of_another_shape_are_a_user_error(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'ckpt'), keep=3)
  ckpt.save(1, _state(1), _iterator(), {'window': None})
  ckpt.wait()
  other = _state(0, shape=(4,))
  with pytest.raises(UserError, match='different model'):
    ckpt.restore_latest(other, _iterator())


def test_a_fault_outside_the_files_moves_nothing(tmp_path):
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'ckpt'), keep=3)
  for step in (1, 2):
    ckpt.save(step, _state(step), _iterator(), {'window': None})
  ckpt.wait()
  wrong_target = _state(0).replace(step=np.int32(0))  # a type orbax cannot restore into
  with pytest.raises(UserError, match=r'no checkpoint .* can be restored \(the newest, step 2'):
    ckpt.restore_latest(wrong_target, _iterator())
  assert _steps(tmp_path / 'ckpt') == [1, 2]


def test_a_non_finite_checkpoint_is_moved_aside(tmp_path, capsys):
  """One an earlier deepl saved: the one before it is resumed from."""
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'ckpt'), keep=3)
  for step in (1, 2):
    state = _state(step)
    if step == 2:
      state = state.replace(params={'w': np.array([1.0, np.nan, np.inf], np.float32)})
    ckpt.save(step, state, _iterator(), {'window': None})
  ckpt.wait()
  step, state, _ = ckpt.restore_latest(_state(0), _iterator())
  assert step == 1 and np.isfinite(state.params['w']).all()
  assert 'checkpoint 2 is unusable (it holds non-finite values' in capsys.readouterr().err
  assert _steps(tmp_path / 'ckpt') == [1] and (tmp_path / 'corrupt_checkpoints' / '2').is_dir()
