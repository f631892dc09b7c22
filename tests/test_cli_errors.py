"""Bad input: one line naming the problem and the fix, exit code 2, no
traceback, and no existing checkpoint touched."""

import hashlib
import os
import pathlib
import stat
import sys
import textwrap

from ml_collections import config_dict
import pytest

from deepl import config as config_lib
from deepl.cli import main as cli_main
from deepl.errors import UserError
from tests import helpers

pytestmark = pytest.mark.usefixtures('fast_compile')  # short runs, compared among themselves


_assert_user_error = helpers.assert_user_error


def _tree_digest(path: pathlib.Path) -> str:
  h = hashlib.sha256()
  for p in sorted(path.rglob('*')):
    # The lock file names whoever last asked for the workdir (deepl inspect shows it).
    if p.is_file() and not p.name.endswith('.lock'):
      h.update(str(p.relative_to(path)).encode())
      h.update(p.read_bytes())
  return h.hexdigest()


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, tfds_data_dir):
  """A short finished digits run whose checkpoints the bad inputs must not touch."""
  return helpers.train_digits(tmp_path_factory.mktemp('finished') / 'run', tfds_data_dir, steps=4)


def test_missing_config_file(tmp_path):
  _assert_user_error(helpers.deepl_here(f'--config={tmp_path}/nope.py'), 'does not exist')


def test_config_without_get_config(tmp_path):
  path = tmp_path / 'exp.py'
  path.write_text('x = 1\n')
  _assert_user_error(helpers.deepl_here(f'--config={path}'), 'get_config')


@pytest.mark.parametrize('body,needle', [
    ("raise RuntimeError('no such variant here')",
     'get_config() raised RuntimeError: no such variant here'),
    ("return {'seed': 1}", 'get_config() returned a dict, not an ml_collections ConfigDict'),
    ('return None', 'get_config() returned None, not an ml_collections ConfigDict'),
])
def test_get_config_that_fails_is_one_line(tmp_path, body, needle, capsys, monkeypatch):
  path = tmp_path / 'exp.py'
  path.write_text(f'def get_config(arg=None):\n  {body}\n')
  monkeypatch.setattr(sys, 'argv', list(sys.argv))  # parse sets it
  with pytest.raises(SystemExit) as exit_:  # parsed in this process: a start costs seconds
    cli_main.parse(['deepl', f'--config={path}'])
  assert exit_.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith(f'deepl: error: {path}: {needle}') and err.count('\n') == 1, err


def test_mistyped_key_suggests(tmp_path):
  _assert_user_error(helpers.deepl_here(f'--config={helpers.EXPERIMENTS}/digits_cnn.py',
                                   '--config.train.batch_sise=32'),
                     "'train.batch_sise'", "did you mean 'train.batch_size'")


def test_unknown_key_in_experiment_file(tmp_path):
  path = tmp_path / 'exp.py'
  path.write_text(textwrap.dedent('''
      from deepl.config import default_config
      def get_config(arg=None):
        c = default_config()
        c.optim.learning_rate = 0.1
        return c
  '''))
  _assert_user_error(helpers.deepl_here(f'--config={path}'), "'optim.learning_rate'")


def test_wrong_type():
  _assert_user_error(helpers.deepl_here('--config.train.batch_size=abc'), 'batch_size')


@pytest.mark.parametrize('override,needle', [
    ('--config.train.batch_size=0', 'train.batch_size=0'),
    ('--config.train.num_steps=-5', 'train.num_steps=-5'),
    ('--config.parallel=pmapp', "did you mean 'pmap'"),
])
def test_bad_values(override, needle):
  _assert_user_error(helpers.deepl_here(override), needle)


@pytest.mark.parametrize('override,needle', [
    ('--config.train.remat=True', "model 'cnn' has no remat option"),
    ('--config.train.compute_dtype=fp8', 'use one of float32, bfloat16, float16'),
    ('--config.model.name=resnet2', "did you mean 'resnet20'"),
    ('--config.data.name=mnits', "did you mean 'mnist'"),
    ('--config.optim.name=adamm', "did you mean 'adamw'"),
])
def test_unknown_names(tmp_path, tfds_data_dir, override, needle):
  _assert_user_error(helpers.deepl_here(override, f'--workdir={tmp_path}/w',
                                   f'--config.data.data_dir={tfds_data_dir}'), needle)


@pytest.mark.parametrize('experiment,needle', [
    ('mnist_vit.py:cifar', "unknown variant 'cifar' — did you mean 'cifar10'?; choose from cifar10"),
    ('mnist_cnn.py:cifar10', "unknown variant 'cifar10'; this experiment has no variants"),
    ('shakespeare_lstm.py:lstn', "unknown variant 'lstn' — did you mean 'lstm'?"),
])
def test_unknown_variant(experiment, needle):
  _assert_user_error(helpers.deepl_here(f'--config={helpers.EXPERIMENTS}/{experiment}'), needle)


def test_overrides_may_come_before_config():
  # config_flags wanted --config first ("Found --config.train... in argv before a value for
  # --config was specified"); the override is applied wherever it was typed.
  _assert_user_error(helpers.deepl_here('--config.train.num_steps=-5',
                                   f'--config={helpers.EXPERIMENTS}/mnist_cnn.py'),
                     'config.train.num_steps=-5 must be a positive integer')


def test_stray_argument(tmp_path):
  # Before, absl left these over and the command ran without them.
  _assert_user_error(helpers.deepl_here('foo'), "unexpected argument 'foo'")
  _assert_user_error(helpers.deepl_here('experiments/mnist_cnn.py'),
                     'did you mean --config=experiments/mnist_cnn.py?')
  _assert_user_error(helpers.deepl_here(str(tmp_path), command='evaluate'),
                     f'did you mean --workdir={tmp_path}?')
  assert not list(tmp_path.iterdir())


def test_home_in_paths_is_expanded(tmp_path):
  # The shell leaves ~ in --workdir=~/x as it is; a folder named '~' would be made.
  home = {'HOME': str(tmp_path)}
  _assert_user_error(helpers.deepl_here('--workdir=~/nothing', command='evaluate', env=home),
                     f'{tmp_path}/nothing holds no run')
  _assert_user_error(helpers.deepl_here('--config.data.manual_dir=~/raw', '--workdir=~/w',
                                        '--config.data.data_dir=~/tfds', env=home),
                     f'manual_dir {tmp_path}/raw is not a folder')


def test_width_not_divisible_by_heads(tmp_path, tfds_data_dir):
  result = helpers.deepl_here(f'--config={helpers.EXPERIMENTS}/mnist_vit.py', '--config.data.name=digits',
                         '--config.model.num_heads=3', f'--workdir={tmp_path}/w',
                         f'--config.data.data_dir={tfds_data_dir}')
  _assert_user_error(result, 'width 128 is not divisible by num_heads 3')


def test_batch_not_divisible_by_devices(tmp_path, tfds_data_dir):
  result = helpers.deepl('--config.train.batch_size=30', f'--workdir={tmp_path}/w',
                         f'--config.data.data_dir={tfds_data_dir}', devices=4)
  _assert_user_error(result, 'batch_size=30', '4 devices')


def test_manual_dir_without_files(tmp_path):
  result = helpers.deepl_here(f'--config={helpers.EXPERIMENTS}/mnist_cnn.py',
                         f'--workdir={tmp_path}/w', f'--config.data.manual_dir={tmp_path}',
                         f'--config.data.data_dir={tmp_path}/tfds')
  _assert_user_error(result, str(tmp_path))


def test_manual_dir_with_wrong_checksum(tmp_path, shared_data):
  manual = tmp_path / 'mnist'
  manual.mkdir()
  for f in (shared_data / 'mnist').glob('*.gz'):
    (manual / f.name).write_bytes(f.read_bytes())
  bad = manual / 't10k-labels-idx1-ubyte.gz'
  data = bytearray(bad.read_bytes())
  data[100] ^= 0xFF
  bad.write_bytes(bytes(data))
  result = helpers.deepl_here(f'--config={helpers.EXPERIMENTS}/mnist_cnn.py',
                         f'--workdir={tmp_path}/w', f'--config.data.manual_dir={manual}',
                         f'--config.data.data_dir={tmp_path}/tfds')
  _assert_user_error(result, 'has sha256', 'expected f7ae60f92e00')


@pytest.mark.skipif(os.geteuid() == 0, reason='root can write anywhere')
def test_unwritable_workdir_as_user(tmp_path):
  parent = tmp_path / 'ro'
  parent.mkdir()
  parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
  _assert_user_error(helpers.deepl_here(f'--workdir={parent}/run'), 'cannot write')


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('not a directory')  # unwritable for root too
  _assert_user_error(helpers.deepl_here(f'--workdir={blocker}/run'), 'cannot write', str(blocker))


def test_workdir_of_a_different_model(finished_run, tfds_data_dir):
  before = _tree_digest(finished_run)
  result = helpers.deepl_here(f'--workdir={finished_run}', f'--config.data.data_dir={tfds_data_dir}',
                         '--config.model.name=resnet20')
  _assert_user_error(result, 'model', '--workdir')
  assert _tree_digest(finished_run) == before


def test_checkpoint_of_a_different_shape(finished_run, tfds_data_dir, tmp_path):
  """config.json edited away: the saved array shapes still give it away."""
  copy = tmp_path / 'copy'
  os.system(f'cp -r {finished_run} {copy}')
  (copy / 'config.json').unlink()
  before = _tree_digest(copy / 'checkpoints')
  result = helpers.deepl_here(f'--workdir={copy}', f'--config.data.data_dir={tfds_data_dir}',
                         '--config.model.name=resnet20')
  _assert_user_error(result, 'different model')
  assert _tree_digest(copy / 'checkpoints') == before


@pytest.mark.parametrize('model,remat,augment,needle', [
    ({'name': 'cnn'}, True, 'none', "model 'cnn' has no remat option"),
    ({'name': 'cnn', 'features': (32, 64)}, False, 'none', "unknown field 'features' for model 'cnn'"),
    ({'name': 'vit', 'num_heads': 5}, False, 'none', "model 'vit': width 192 is not divisible by num_heads 5"),
    ({'name': 'cnn'}, False, 'flipp', "unknown augmentation 'flipp'"),
    ({'name': 'vit', 'num_layers': 0}, False, 'none', "model 'vit': num_layers=0 must be positive"),
    ({'name': 'vit', 'dropout': 1.5}, False, 'none', r"dropout=1.5 must be a rate in \[0, 1\)"),
    ({'name': 'resnet20', 'widths': (16, 0, 64)}, False, 'none',
     r"widths=\(16, 0, 64\) must be positive"),
])
def test_model_config_is_checked_with_the_rest(model, remat, augment, needle):
  config = config_lib.default_config()
  config.data.name = 'mnist'
  config.model = config_dict.ConfigDict(model)
  config.train.remat = remat
  config.data.augment = augment
  with pytest.raises(UserError, match=needle):
    config_lib.validate(config)


def test_config_is_checked_before_any_data(tmp_path):
  """A bad config fails at once: before a download that can take minutes, and before the
  workdir is made. Were the data prepared first, the missing manual_dir would be the error."""
  result = helpers.deepl_here('--config.data.name=mnist', f'--config.data.manual_dir={tmp_path}/none',
                         f'--config.data.data_dir={tmp_path}/tfds', '--config.train.remat=True',
                         f'--workdir={tmp_path}/w')
  _assert_user_error(result, "model 'cnn' has no remat option")
  assert not (tmp_path / 'w').exists() and not (tmp_path / 'tfds').exists()
