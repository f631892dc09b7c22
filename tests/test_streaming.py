"""The streaming path and Grain worker processes: the same batches as the in-memory path, for any
worker and process count and across a resume; each process reads only its rows; no orphans.

Data: the bundled digits (prepared in a test data_dir) and a tiny generated image folder.
"""

import os
import signal
import subprocess
import sys
import time

from absl import flags
import numpy as np
import pytest

from deepl import data
from deepl.data import pipeline
from deepl.data import records
from tests import helpers
from tests.test_own_data import make_image_folder

pytestmark = pytest.mark.usefixtures('fast_compile')  # short runs, compared among themselves


@pytest.fixture(scope='module', autouse=True)
def absl_flags():
  """grain reads its options from absl flags, parsed by `deepl` itself (absl.app)."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


@pytest.fixture(scope='module')
def digits(tfds_data_dir):
  """The digits twice: held in memory (the default) and streamed from their files."""
  in_memory = data.get_dataset('digits', data_dir=str(tfds_data_dir))
  streamed = data.get_dataset('digits', data_dir=str(tfds_data_dir), in_memory_max_mb=0)
  return in_memory, streamed


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """A generated image folder, prepared once (JPEGs and PNGs of several sizes)."""
  root = make_image_folder(tmp_path_factory.mktemp('images'), train=12, test=4)
  data_dir = tmp_path_factory.mktemp('tfds_folder')
  image = data.ImagePreprocess(size=24, augment='inception_crop', normalize='imagenet')
  return data.get_dataset('image_folder', data_dir=str(data_dir), manual_dir=str(root),
                          image=image, in_memory_max_mb=0)


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_same(batches, want):
  assert len(batches) == len(want)
  for got, expected in zip(batches, want):
    assert got.keys() == expected.keys()
    for key in got:
      assert got[key].dtype == expected[key].dtype
      np.testing.assert_array_equal(got[key], expected[key])


def test_a_split_over_the_threshold_streams_the_same_batches(digits):
  in_memory, streamed = digits
  assert isinstance(in_memory.splits['train'], data.ArraySource)
  assert isinstance(streamed.splits['train'], data.RecordSource)
  assert len(streamed.splits['train']) == 1437
  for p, count in ((0, 1), (0, 2), (1, 2)):
    want = take(data.train_iterator(in_memory.splits['train'], global_batch_size=32, seed=4,
                                     process_index=p, process_count=count), 50)
    got = take(data.train_iterator(streamed.splits['train'], global_batch_size=32, seed=4,
                                   process_index=p, process_count=count, workers=0), 50)
    assert_same(got, want)
  assert_same(list(data.eval_batches(streamed.splits['test'], global_batch_size=100)),
              list(data.eval_batches(in_memory.splits['test'], global_batch_size=100)))


def test_a_huge_split_is_shuffled_without_an_index_array(monkeypatch):
  # Above LAZY_PERMUTATION_ROWS the order comes from grain's index_shuffle: still one
  # permutation per epoch, new each epoch, and the same for any process count.
  monkeypatch.setattr(pipeline, 'LAZY_PERMUTATION_ROWS', 10)
  toy = data.ArraySource(np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1), np.zeros(50))
  single = take(data.train_iterator(toy, global_batch_size=12, seed=3), 25)
  stream = np.concatenate([b['image'].reshape(-1) for b in single])
  epochs = [stream[e * 50:(e + 1) * 50] for e in range(6)]
  assert all(sorted(e) == list(range(50)) for e in epochs)
  assert len({tuple(e) for e in epochs}) == 6
  halves = [take(data.train_iterator(toy, global_batch_size=12, seed=3, process_index=p,
                                     process_count=2), 25) for p in range(2)]
  for k in range(25):
    np.testing.assert_array_equal(
        np.concatenate([halves[0][k]['image'], halves[1][k]['image']]), single[k]['image'])


class _CountingRecords(list):
  """Records that note every index read."""

  def __init__(self, items):
    super().__init__(items)
    self.read = []

  def __getitem__(self, index):
    self.read.append(index)
    return super().__getitem__(index)


def test_each_process_reads_only_its_own_rows(digits):
  _, streamed = digits
  source = streamed.splits['train']
  rows = [source._read([i])[0] for i in range(len(source))]  # pylint: disable=protected-access
  read = []
  for p in range(2):
    counting = _CountingRecords(rows)
    it = data.train_iterator(records.RecordSource(counting), global_batch_size=8, seed=1,
                             process_index=p, process_count=2)
    take(it, 10)
    assert len(counting.read) == 40  # 10 batches of 4 rows, nothing else
    read.append(counting.read)
  # Together: the 80 rows of the one-process stream, each read by one process.
  order = pipeline._EpochPermutations(len(rows), 1)  # pylint: disable=protected-access
  stream = order.rows(0, 80).reshape(10, 8)
  np.testing.assert_array_equal(np.reshape(read[0], (10, 4)), stream[:, :4])
  np.testing.assert_array_equal(np.reshape(read[1], (10, 4)), stream[:, 4:])


def test_workers_make_bitwise_the_same_batches_and_resume(folder):
  # Each worker start costs seconds (it imports grain, jax and TFDS): 3 starts in all.
  train = folder.splits['train']
  assert train.random and train.preprocess.augment == 'inception_crop'
  want = take(data.train_iterator(train, global_batch_size=6, seed=2, workers=0), 6)
  assert want[0]['image'].shape == (6, 24, 24, 3) and want[0]['image'].dtype == np.float32
  assert not np.array_equal(want[0]['image'], want[4]['image'])  # epoch 2: new crops
  one = data.train_iterator(train, global_batch_size=6, seed=2, workers=1)
  assert_same(take(one, 3), want[:3])
  state = one.get_state()
  assert state == {'next_index': 3}
  one.close()
  # Resumed with another worker count: the same batches still.
  two = data.train_iterator(train, global_batch_size=6, seed=2, workers=2)
  two.set_state(state)
  assert_same(take(two, 3), want[3:])
  two.close()


@pytest.mark.slow
def test_eval_batches_with_workers(folder):
  evals = list(data.eval_batches(folder.splits['test'], global_batch_size=5, workers=0))
  assert_same(list(data.eval_batches(folder.splits['test'], global_batch_size=5, workers=2)),
              evals)


def _children(pid: int) -> list[int]:
  """The pids whose parent is `pid` (from /proc)."""
  out = []
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        with open(f'/proc/{entry}/stat') as f:
          fields = f.read().rsplit(')', 1)[1].split()
      except OSError:
        continue
      if int(fields[1]) == pid:
        out.append(int(entry))
  return out


def _alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


@pytest.mark.parametrize('how', [signal.SIGKILL,
                                 pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_no_worker_outlives_a_killed_run(tfds_data_dir, tmp_path, how):
  proc = subprocess.Popen(
      [sys.executable, '-m', 'deepl.cli.main', 'train', f'--workdir={tmp_path}/run',
       f'--config.data.data_dir={tfds_data_dir}', '--config.data.in_memory_max_mb=0',
       '--config.data.workers=2', '--config.train.num_steps=1000000'],
      cwd=helpers.ROOT, env=helpers.env_for(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True)
  try:
    deadline = time.time() + 120
    workers = []
    while len(workers) < 2 and time.time() < deadline and proc.poll() is None:
      time.sleep(0.5)
      workers = [c for c in _children(proc.pid) if 'spawn_main' in _cmdline(c)]
    assert len(workers) == 2, proc.stderr.read() if proc.poll() is not None else 'no workers'
    time.sleep(2)  # the workers are making batches
    workers = _children(proc.pid)  # and any helper, e.g. multiprocessing's resource tracker
    proc.send_signal(how)
    out, err = proc.communicate(timeout=120)
    if how == signal.SIGTERM:
      assert proc.returncode == 0, err
      assert 'rerun the same command to resume' in out
    deadline = time.time() + 10
    while any(map(_alive, workers)) and time.time() < deadline:
      time.sleep(0.25)
    assert not any(map(_alive, workers)), [(w, _cmdline(w)) for w in workers if _alive(w)]
  finally:
    proc.kill()


def _cmdline(pid: int) -> str:
  try:
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      return f.read().replace(b'\0', b' ').decode()
  except OSError:
    return ''


@pytest.mark.slow
def test_two_streaming_processes_with_workers_match_one_in_memory(tfds_data_dir, tmp_path):
  from tests import test_multihost  # pylint: disable=g-import-not-at-top
  args = (f'--config.data.data_dir={tfds_data_dir}', '--config.train.num_steps=20',
          '--config.train.log_every_steps=1', '--config.eval.every_steps=20',
          '--config.checkpoint.every_steps=20', '--config.train.batch_size=32')
  single = helpers.deepl(f'--workdir={tmp_path}/single', *args)
  assert single.returncode == 0, single.stderr
  procs = test_multihost._processes(  # pylint: disable=protected-access
      2, tmp_path / 'multi', *args, '--config.data.in_memory_max_mb=0',
      '--config.data.workers=1')
  for code, _, err in test_multihost._finish(procs):  # pylint: disable=protected-access
    assert code == 0, err
  np.testing.assert_allclose(test_multihost._losses(tmp_path / 'multi'),  # pylint: disable=protected-access
                             test_multihost._losses(tmp_path / 'single'), rtol=2e-5)
