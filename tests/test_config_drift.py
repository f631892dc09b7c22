"""A resume whose config differs from the run's: printed key by key, allowed where the
training stays the same, refused otherwise unless --allow_config_change, and never for
an optimizer state the checkpoints cannot restore into. Nothing is written before the
check passes."""

import json

import pytest

from deepl import config as config_lib
from deepl import workdir as workdir_lib
from deepl.errors import UserError


@pytest.fixture
def run(tmp_path):
  """A workdir whose config.json holds the default config, as a first run leaves it."""
  workdir = str(tmp_path / 'run')
  workdir_lib.prepare(config_lib.default_config(), workdir)
  workdir_lib.record_config(config_lib.default_config(), workdir, {}, 0)
  workdir_lib.release(workdir)
  yield tmp_path / 'run'
  workdir_lib.release(workdir)


def _config(**overrides):
  config = config_lib.default_config()
  for dotted, value in overrides.items():
    section, key = dotted.split('__')
    config[section][key] = value
  return config


def _files(run):
  return {p.name: p.read_bytes() for p in run.iterdir() if not p.name.startswith('.')}


def test_the_same_config_is_no_change(run):
  assert workdir_lib.prepare(config_lib.default_config(), str(run)) == {}


def test_keys_that_leave_the_training_alone_are_allowed(run):
  changes = workdir_lib.prepare(_config(checkpoint__keep=5, train__log_every_steps=10,
                                        eval__every_steps=100, mesh__fsdp=2), str(run))
  assert changes == {'checkpoint.keep': (3, 5), 'eval.every_steps': (500, 100),
                     'mesh.fsdp': (1, 2), 'train.log_every_steps': (50, 10)}


@pytest.mark.parametrize('overrides,shown', [
    (dict(optim__lr=0.05), 'optim.lr: 0.1 -> 0.05'),
    (dict(train__batch_size=32, train__num_steps=3000),
     'train.batch_size: 64 -> 32, train.num_steps: 1500 -> 3000'),
    (dict(data__augment='crop'), "data.augment: 'none' -> 'crop'"),
    (dict(train__compute_dtype='bfloat16'), "train.compute_dtype: 'float32' -> 'bfloat16'"),
])
def test_a_change_of_the_training_is_refused_and_writes_nothing(run, overrides, shown):
  before = _files(run)
  with pytest.raises(UserError, match='was trained with another config') as err:
    workdir_lib.prepare(_config(**overrides), str(run))
  assert shown in str(err.value) and '--allow_config_change' in str(err.value)
  assert _files(run) == before


def test_a_seed_change_is_a_change():
  config = config_lib.default_config()
  config.seed = 1
  assert workdir_lib.config_changes(config_lib.default_config(), config) == {'seed': (0, 1)}


def test_allowed_change_is_recorded_with_its_step(run, capsys):
  config = _config(optim__lr=0.05, checkpoint__keep=4)
  changes = workdir_lib.prepare(config, str(run), allow_change=True)
  workdir_lib.record_config(config, str(run), changes, 700)
  out = capsys.readouterr().out
  assert 'config change from step 700 (--allow_config_change): optim.lr: 0.1 -> 0.05' in out
  assert 'config change from step 700: checkpoint.keep: 3 -> 4' in out
  [entry] = workdir_lib.read_history(str(run))
  assert entry['step'] == 700 and entry['changes'] == {'checkpoint.keep': [3, 4],
                                                      'optim.lr': [0.1, 0.05]}
  assert json.loads((run / 'config.json').read_text())['optim']['lr'] == 0.05  # in force


@pytest.mark.parametrize('overrides,shown', [
    (dict(optim__name='adamw'), "optim.name: 'sgd' -> 'adamw'"),
    (dict(optim__accum_steps=2), 'optim.accum_steps: 1 -> 2'),
    (dict(optim__momentum=0.0), 'optim.momentum: 0.9 -> 0.0'),
])
def test_an_optimizer_the_checkpoints_cannot_restore_into_is_refused_always(run, overrides,
                                                                             shown):
  before = _files(run)
  with pytest.raises(UserError, match='changes the optimizer state') as err:
    workdir_lib.prepare(_config(**overrides), str(run), allow_change=True)
  assert shown in str(err.value) and f'--config.init_from={run}' in str(err.value)
  assert _files(run) == before


def test_another_model_is_another_run(run):
  config = config_lib.default_config()
  config.model.name = 'resnet20'
  with pytest.raises(UserError, match="holds a run with model={'name': 'cnn'}"):
    workdir_lib.prepare(config, str(run), allow_change=True)
