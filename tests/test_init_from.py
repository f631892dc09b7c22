"""init_from: copy what matches, keep new heads fresh, refuse other architectures."""

import os

import numpy as np
import pytest

from deepl import checkpoint
from deepl import data as data_lib
from deepl.errors import UserError
from deepl.state import TrainState
from tests import helpers
from tests.test_checkpoint import _Source

pytestmark = pytest.mark.usefixtures('fast_compile')  # short runs, compared among themselves


def _save(workdir, params, steps=(7,)):
  ckpt = checkpoint.Checkpointer(str(workdir / 'checkpoints'), keep=len(steps))
  it = data_lib.train_iterator(_Source(), global_batch_size=2, seed=0)
  for step in steps:
    state = TrainState(step=np.array(step, np.int32), params=params(step) if callable(params)
                       else params, model_state={}, opt_state=(), rng=np.zeros((2,), np.uint32))
    ckpt.save(step, state, it, {'window': None})
    ckpt.wait()
  ckpt.close()


def test_encoder_comes_from_the_checkpoint_and_the_head_is_new(tmp_path):
  rng = np.random.default_rng(0)
  encoder = {'layer0': {'kernel': rng.normal(size=(4, 4)).astype(np.float32)}}
  _save(tmp_path, {'encoder': encoder, 'mlm_head': {'kernel': np.ones((4, 9), np.float32)}})
  fresh_head = {'kernel': np.full((4, 2), 0.5, np.float32)}
  new = {'encoder': {'layer0': {'kernel': np.zeros((4, 4), np.float32)}}, 'cls_head': fresh_head}
  step_folder = tmp_path / 'checkpoints' / '7'
  # A workdir or a step folder, absolute or relative (Orbax itself reads absolute paths only).
  for path in (tmp_path, step_folder, os.path.relpath(tmp_path), os.path.relpath(step_folder)):
    params, fresh = checkpoint.init_from(str(path), new)
    np.testing.assert_array_equal(params['encoder']['layer0']['kernel'],
                                  encoder['layer0']['kernel'])
    np.testing.assert_array_equal(params['cls_head']['kernel'], fresh_head['kernel'])
    assert fresh == ["['cls_head']['kernel']"]


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
  _save(tmp_path, lambda step: {'dense': {'kernel': np.full((2, 2), step, np.float32)}},
        steps=(7, 9))
  for f in (tmp_path / 'checkpoints' / '9' / 'state').rglob('*'):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(b'\0garbage' * 8)
  fresh = {'dense': {'kernel': np.zeros((2, 2), np.float32)}}
  params, _ = checkpoint.init_from(str(tmp_path), fresh)
  np.testing.assert_array_equal(params['dense']['kernel'], np.full((2, 2), 7))
  assert 'checkpoint 9 is unreadable' in capsys.readouterr().err


def test_other_architectures_and_empty_paths_are_user_errors(tmp_path):
  _save(tmp_path, {'dense': {'kernel': np.ones((4, 4), np.float32)}})
  with pytest.raises(UserError, match=r"different architecture: \['dense'\]\['kernel'\] has shape"):
    checkpoint.init_from(str(tmp_path), {'dense': {'kernel': np.ones((4, 5), np.float32)}})
  with pytest.raises(UserError, match='shares no parameter'):
    checkpoint.init_from(str(tmp_path), {'conv': {'kernel': np.ones((4, 4), np.float32)}})
  with pytest.raises(UserError, match='holds no checkpoint'):
    checkpoint.init_from(str(tmp_path / 'nothing'), {})


def test_cli_fine_tune_start(tmp_path, tfds_data_dir):
  """A digits run started from another: it says what it loaded; a mismatch is exit 2."""
  first = tmp_path / 'first'
  args = (f'--config.data.data_dir={tfds_data_dir}', '--config.train.num_steps=3',
          '--config.eval.every_steps=3', '--config.checkpoint.every_steps=3')
  assert helpers.deepl_here(f'--workdir={first}', *args).returncode == 0
  second = helpers.deepl_here(f'--workdir={tmp_path}/second', f'--config.init_from={first}', *args)
  assert second.returncode == 0, second.stderr
  assert f'deepl: parameters from {first}; fresh: none' in second.stdout
  bad = helpers.deepl_here(f'--workdir={tmp_path}/third', f'--config.init_from={first}',
                      '--config.model.name=resnet20', *args)
  assert bad.returncode == 2 and 'shares no parameter' in bad.stderr


def test_tokenizer_dir_of_a_workdir_or_a_step_folder(tmp_path):
  (tmp_path / 'run' / 'tokenizer').mkdir(parents=True)
  (tmp_path / 'run' / 'checkpoints' / '7').mkdir(parents=True)
  expected = str(tmp_path / 'run' / 'tokenizer')
  assert checkpoint.tokenizer_dir(str(tmp_path / 'run')) == expected
  assert checkpoint.tokenizer_dir(str(tmp_path / 'run' / 'checkpoints' / '7')) == expected
  assert checkpoint.tokenizer_dir(str(tmp_path / 'elsewhere')) is None
