"""Shared pytest fixtures. Keep this small: each test file owns its own setup."""

import os
import pathlib

import jax
import pytest

from tests import helpers

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def find_shared_data() -> pathlib.Path | None:
  """The offline raw data: <repo>/../shared/data, else $DEEPL_SHARED_DATA."""
  for candidate in (REPO_ROOT.parent / 'shared' / 'data',
                    os.environ.get('DEEPL_SHARED_DATA')):
    if candidate and pathlib.Path(candidate).is_dir():
      return pathlib.Path(candidate)
  return None


@pytest.fixture(scope='session')
def shared_data() -> pathlib.Path:
  """Skips (locally) or fails (CI=true) when the offline data is absent."""
  path = find_shared_data()
  if path is None:
    reason = ('offline data not found: expected ../shared/data next to the '
              'repo or $DEEPL_SHARED_DATA')
    if os.environ.get('CI', '').lower() == 'true':
      pytest.fail(reason)
    pytest.skip(reason)
  return path


@pytest.fixture(scope='session')
def tfds_data_dir(tmp_path_factory) -> pathlib.Path:
  """A fresh TFDS data_dir for the session, so tests never read ~/ or the net."""
  return tmp_path_factory.mktemp('tensorflow_datasets')


@pytest.fixture(scope='session', autouse=True)
def compilation_cache(tmp_path_factory):
  """The `deepl` runs of a test run share one compilation cache, not the user's ~/.cache: those
  in their own process through the variables, those in this one (helpers.deepl_here) through
  jax.config, as JAX read the variables when it was imported. Compiling is most of a short run,
  and most of the suite's programs recur (the same default run stopped, resumed, predicted
  from, on either xdist worker): every program is cached, also those JAX's default skips for
  compiling in under 1 s."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):  # each worker's basetemp is a folder of the run's
    root = root.parent
  folder = root / 'xla_cache'
  folder.mkdir(exist_ok=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = str(folder)
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  jax.config.update('jax_compilation_cache_dir', str(folder))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)


@pytest.fixture(scope='module')
def fast_compile():
  """helpers.fast_compile for a whole file whose programs compile for longer than they run
  and are checked against each other or a reference: the models' math, the kernels, the
  short runs of the loop's tests. Opt in with
  `pytestmark = pytest.mark.usefixtures('fast_compile')`."""
  with helpers.fast_compile():
    yield


@pytest.fixture
def no_network(monkeypatch):
  """Makes an accidental TFDS download fail at once instead of hanging ~3.5 min."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (only where used)

  def refuse(self, resource, *args, **kwargs):
    del self, args, kwargs
    raise AssertionError(f'test tried to download {resource.url}')
  monkeypatch.setattr(tfds.download.DownloadManager, '_download', refuse)


@pytest.fixture
def cpu_device():
  """Runs a test on the host's CPU, whatever the default device (the CPU kernels' tests)."""
  with jax.default_device(jax.devices('cpu')[0]):
    yield


def pytest_addoption(parser):
  parser.addoption('--runslow', action='store_true',
                   help='also run the long training runs marked slow')


# The files that take longest (worker seconds, 2 cores), run first: pytest-xdist hands out
# files in collection order, and one of these started last keeps one worker busy alone at the
# end while the other waits.
_LONGEST_FIRST = ('test_train.py', 'test_models_as_flax.py', 'test_meshes.py',
                  'test_multihost.py', 'test_predict.py', 'test_transformer.py')


def pytest_collection_modifyitems(config, items):
  rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: files stay whole
  if config.getoption('--runslow'):
    return
  skip = pytest.mark.skip(reason='long training run: pass --runslow')
  for item in items:
    if 'slow' in item.keywords:
      item.add_marker(skip)
