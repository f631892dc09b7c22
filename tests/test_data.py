"""deepl.data: builders (on the real offline files), pipelines, augmentation.

Everything here is offline: builders get a manual_dir, and a test data_dir from
tmp_path_factory, so a TFDS download can never start.
"""

import io
import tarfile
import time

import grain
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from deepl import data
from deepl.data import augment
from deepl.data.builders import cifar10 as cifar10_builder
from deepl.errors import UserError

MNIST_TRAIN_HIST = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_HIST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CIFAR_TRAIN_HIST = [396, 366, 420, 384, 422, 393, 414, 385, 407, 413]
CIFAR_TEST_HIST = [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]


# An accidental TFDS download fails at once (tests/conftest.py).
pytestmark = pytest.mark.usefixtures('no_network')


def histogram(source) -> list[int]:
  return np.bincount(source.labels, minlength=10).tolist()


@pytest.fixture(scope='module')
def mnist(shared_data, tfds_data_dir):
  start = time.time()
  ds = data.get_dataset('mnist', data_dir=str(tfds_data_dir),
                        manual_dir=str(shared_data / 'mnist'))
  print(f'prepare + load mnist: {time.time() - start:.1f} s')
  return ds


# --- Builders ------------------------------------------------------------------


def test_mnist_counts_shapes_histograms(mnist):
  train, test = mnist.splits['train'], mnist.splits['test']
  assert (len(train), len(test)) == (60000, 10000)
  assert mnist.image_shape == (28, 28, 1) and mnist.num_classes == 10
  assert train.images.shape == (60000, 28, 28, 1)
  assert train.images.dtype == np.uint8 and train.labels.dtype == np.int32
  assert histogram(train) == MNIST_TRAIN_HIST
  assert histogram(test) == MNIST_TEST_HIST
  # Stored in source order, pixel for pixel (README: mean/255 = 0.1307).
  assert train.images.mean() / 255 == pytest.approx(0.1307, abs=1e-4)
  assert (mnist.train_split, mnist.eval_split) == ('train', 'test')


def test_mnist_second_call_reuses_cache(mnist, tfds_data_dir):
  # No manual_dir now: a cache miss would try the network, so this must hit.
  again = data.get_dataset('mnist', data_dir=str(tfds_data_dir))
  np.testing.assert_array_equal(again.splits['test'].labels,
                                mnist.splits['test'].labels)


def test_cifar10_subset(shared_data, tfds_data_dir):
  ds = data.get_dataset('cifar10', data_dir=str(tfds_data_dir),
                        manual_dir=str(shared_data / 'cifar10_subset'))
  train, test = ds.splits['train'], ds.splits['test']
  assert (len(train), len(test)) == (4000, 1000)
  assert ds.image_shape == (32, 32, 3) and train.images.dtype == np.uint8
  assert histogram(train) == CIFAR_TRAIN_HIST
  assert histogram(test) == CIFAR_TEST_HIST
  assert train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
  assert test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
  np.testing.assert_allclose(train.images.mean((0, 1, 2)) / 255,
                             [0.4916, 0.4818, 0.4447], atol=1e-4)


def test_digits(tfds_data_dir):
  ds = data.get_dataset('digits', data_dir=str(tfds_data_dir))
  train, test = ds.splits['train'], ds.splits['test']
  assert (len(train), len(test)) == (1437, 360)
  assert ds.image_shape == (8, 8, 1) and ds.num_classes == 10
  assert train.images.dtype == np.uint8 and train.images.max() == 255
  assert set(np.unique(test.labels)) == set(range(10))


def _fake_cifar_tarball(tmp_path):
  """A cifar-10-binary.tar.gz with 3 records per batch file, and its images."""
  rng = np.random.default_rng(0)
  chw = rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
  records = np.concatenate([np.array([[7], [1], [2]], np.uint8),
                            chw.reshape(3, -1)], axis=1).tobytes()
  path = tmp_path / 'cifar-10-binary.tar.gz'
  with tarfile.open(path, 'w:gz') as tar:
    for name in [f'data_batch_{i}.bin' for i in range(1, 6)] + ['test_batch.bin']:
      info = tarfile.TarInfo(f'cifar-10-batches-bin/{name}')
      info.size = len(records)
      tar.addfile(info, io.BytesIO(records))
  return path, chw.transpose(0, 2, 3, 1)


def test_cifar10_binary_tarball_reader(tmp_path):
  # The online path reads the official archive: planar CHW, label byte first.
  path, images = _fake_cifar_tarball(tmp_path)
  arrays = cifar10_builder.read_binary_tarball(path)
  np.testing.assert_array_equal(arrays['test'][0], images)
  assert arrays['test'][1].tolist() == [7, 1, 2]
  assert arrays['train'][0].shape == (15, 32, 32, 3)


def test_online_path_asks_tfds_download_manager(tmp_path, monkeypatch):
  path, _ = _fake_cifar_tarball(tmp_path)
  asked = []

  def fake_download(self, url):
    del self
    asked.append(url)
    return path

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', fake_download)
  ds = data.get_dataset('cifar10', data_dir=str(tmp_path / 'tfds'))
  assert asked == ['https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz']
  assert (len(ds.splits['train']), len(ds.splits['test'])) == (15, 3)


def test_failed_download_is_one_user_error(tmp_path, monkeypatch):
  def offline(self, url):
    del self, url  # requests raises its ConnectionError, an OSError, after its retries
    raise ConnectionError("HTTPSConnectionPool(host='www.cs.toronto.edu'): Max retries\nmore")

  monkeypatch.setattr(tfds.download.DownloadManager, 'download', offline)
  with pytest.raises(UserError, match=r"could not download or prepare cifar10 \(HTTPSConnection"
                                      r"Pool\(host='www.cs.toronto.edu'\): Max retries\); "
                                      r'offline, set data.manual_dir') as err:
    data.get_dataset('cifar10', data_dir=str(tmp_path / 'tfds'))
  assert '\n' not in str(err.value)
  assert not data.datasets.get_builder('cifar10', str(tmp_path / 'tfds')).is_prepared()


def _manual_copy(shared_data, tmp_path, name, drop=None, corrupt=None):
  """A manual_dir of links to the real files, minus or with one bad file."""
  manual = tmp_path / 'manual'
  manual.mkdir()
  for src in (shared_data / name).iterdir():
    if src.name == drop or src.suffix == '.md':
      continue
    if src.name == corrupt:
      content = bytearray(src.read_bytes())
      content[len(content) // 2] ^= 0xFF
      (manual / src.name).write_bytes(bytes(content))
    else:
      (manual / src.name).symlink_to(src)
  return manual


def test_manual_dir_missing_file(shared_data, tmp_path):
  manual = _manual_copy(shared_data, tmp_path, 'fashion_mnist',
                        drop='t10k-images-idx3-ubyte.gz')
  with pytest.raises(UserError, match=r'has no t10k-images-idx3-ubyte\.gz'):
    data.get_dataset('fashion_mnist', data_dir=str(tmp_path / 'tfds'),
                     manual_dir=str(manual))
  assert not data.datasets.get_builder(
      'fashion_mnist', str(tmp_path / 'tfds')).is_prepared()


def test_manual_dir_bad_checksum(shared_data, tmp_path):
  manual = _manual_copy(shared_data, tmp_path, 'mnist',
                        corrupt='t10k-labels-idx1-ubyte.gz')
  with pytest.raises(UserError, match=r't10k-labels-idx1-ubyte\.gz has sha256'):
    data.get_dataset('mnist', data_dir=str(tmp_path / 'tfds'),
                     manual_dir=str(manual))


def test_cifar10_manual_dir_bad_checksum(shared_data, tmp_path):
  manual = _manual_copy(shared_data, tmp_path, 'cifar10_subset',
                        corrupt='cifar10_labels.js')
  with pytest.raises(UserError, match=r'cifar10_labels\.js has sha256'):
    data.get_dataset('cifar10', data_dir=str(tmp_path / 'tfds'),
                     manual_dir=str(manual))


def test_manual_dir_not_a_folder(tmp_path):
  with pytest.raises(UserError, match='is not a folder'):
    data.get_dataset('mnist', data_dir=str(tmp_path / 'tfds'),
                     manual_dir=str(tmp_path / 'nowhere'))


def test_unknown_dataset_suggests_close_match():
  with pytest.raises(UserError, match=r"'mnsit' — did you mean 'mnist'\?; known: .*mnist"):
    data.get_dataset('mnsit')


# --- Train iterator ----------------------------------------------------------

N = 50  # Not a multiple of any batch size below: batches straddle epochs.


@pytest.fixture(scope='module')
def toy():
  """A tiny source whose image pixel is its own index, to read order off."""
  images = np.arange(N, dtype=np.uint8).reshape(N, 1, 1, 1)
  return data.ArraySource(images, np.arange(N) % 10)


def take(it, n):
  return [next(it) for _ in range(n)]


def ids(batch):
  return batch['image'].reshape(-1).tolist()


def test_train_batches_shape_and_dtype(toy):
  batch = next(data.train_iterator(toy, global_batch_size=12, seed=0))
  assert batch['image'].shape == (12, 1, 1, 1)
  assert batch['image'].dtype == np.uint8 and batch['label'].dtype == np.int32
  assert isinstance(data.train_iterator(toy, global_batch_size=12, seed=0),
                    grain.DatasetIterator)


def test_train_order_is_seeded_and_reshuffled_each_epoch(toy):
  def stream(seed, steps=25):
    it = data.train_iterator(toy, global_batch_size=10, seed=seed)
    return sum((ids(b) for b in take(it, steps)), [])
  a = stream(0)
  assert a == stream(0)
  assert a != stream(1)
  epochs = [a[e * N:(e + 1) * N] for e in range(5)]
  assert all(sorted(e) == list(range(N)) for e in epochs)  # Each a permutation.
  assert len({tuple(e) for e in epochs}) == 5  # A new order every epoch.


@pytest.mark.parametrize('process_count,global_batch', [(2, 12), (3, 12),
                                                        (3, 120)])
def test_train_order_independent_of_process_count(toy, process_count,
                                                  global_batch):
  # 15 batches of 12 cross three epoch boundaries; a batch of 120 spans three
  # epochs by itself.
  steps = 15
  single = take(data.train_iterator(toy, global_batch_size=global_batch,
                                    seed=3), steps)
  stream = np.concatenate([b['image'].reshape(-1) for b in single])
  assert all(sorted(stream[e * N:(e + 1) * N]) == list(range(N))
             for e in range(len(stream) // N))
  per_process = [
      take(data.train_iterator(toy, global_batch_size=global_batch, seed=3,
                               process_index=p, process_count=process_count),
           steps) for p in range(process_count)]
  for k in range(steps):
    for key in ('image', 'label'):
      joined = np.concatenate([per_process[p][k][key]
                               for p in range(process_count)])
      np.testing.assert_array_equal(joined, single[k][key])


def test_train_resume_is_exact(toy):
  it = data.train_iterator(toy, global_batch_size=12, seed=5)
  take(it, 7)
  state = it.get_state()
  want = take(it, 10)
  fresh = data.train_iterator(toy, global_batch_size=12, seed=5)
  fresh.set_state(state)
  assert [ids(b) for b in take(fresh, 10)] == [ids(b) for b in want]


def test_train_resume_through_orbax(toy, tmp_path):
  ocp = pytest.importorskip('orbax.checkpoint')
  it = data.train_iterator(toy, global_batch_size=12, seed=5)
  take(it, 4)
  options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False)
  with ocp.CheckpointManager(tmp_path, options=options) as manager:
    manager.save(4, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointSave(it)))
    want = take(it, 6)
    fresh = data.train_iterator(toy, global_batch_size=12, seed=5)
    manager.restore(4, args=ocp.args.Composite(
        data=grain.checkpoint.CheckpointRestore(fresh)))
  assert [ids(b) for b in take(fresh, 6)] == [ids(b) for b in want]


def test_train_generic_source_and_prefetch_match(toy):
  class Records:  # Only the RandomAccessDataSource protocol: no `gather`.
    def __len__(self):
      return len(toy)

    def __getitem__(self, i):
      return toy[i]

  want = [ids(b) for b in take(
      data.train_iterator(toy, global_batch_size=12, seed=2), 8)]
  for source, prefetch in ((Records(), 0), (toy, 2)):
    it = data.train_iterator(source, global_batch_size=12, seed=2,
                             prefetch=prefetch)
    assert [ids(b) for b in take(it, 8)] == want


def test_batch_size_must_divide_by_process_count(toy):
  with pytest.raises(UserError, match='multiple of the process count'):
    data.train_iterator(toy, global_batch_size=10, seed=0, process_count=3)


def test_train_batch_is_fast(mnist):
  it = data.train_iterator(mnist.splits['train'], global_batch_size=128, seed=0)
  next(it)
  start = time.perf_counter()
  take(it, 200)
  ms = (time.perf_counter() - start) / 200 * 1e3
  print(f'mnist train batch of 128: {ms:.3f} ms')
  assert ms < 2


# --- Eval batches --------------------------------------------------------------


@pytest.mark.parametrize('process_count', [1, 3])
def test_eval_covers_each_example_once(toy, process_count):
  global_batch = 12  # 50 = 4 * 12 + 2: the last batch is mostly padding.
  runs = [list(data.eval_batches(toy, global_batch_size=global_batch,
                                 process_index=p, process_count=process_count))
          for p in range(process_count)]
  assert {len(r) for r in runs} == {5}  # Same count on every process.
  seen = []
  for k in range(5):
    for p in range(process_count):
      batch = runs[p][k]
      assert batch['image'].shape[0] == global_batch // process_count
      assert batch['mask'].dtype == np.float32
      real = batch['mask'] == 1
      assert not batch['image'][~real].any()  # Padding is zeros.
      seen += batch['image'][real].reshape(-1).tolist()
  assert seen == list(range(N))  # In order, each example exactly once.


# --- Augmentation --------------------------------------------------------------


# Jitted, as in the train step; op-by-op vmap would be several times slower.
augment_batch = jax.jit(augment.augment_batch, static_argnums=2)


def test_augment_crop_flip():
  images = jax.random.randint(jax.random.PRNGKey(0), (16, 8, 8, 3), 1, 256
                              ).astype(np.uint8)
  key = jax.random.PRNGKey(1)
  out = augment_batch(key, images, 'crop_flip')
  assert out.shape == images.shape and out.dtype == images.dtype
  np.testing.assert_array_equal(
      out, augment_batch(key, images, 'crop_flip'))
  other = augment_batch(jax.random.PRNGKey(2), images, 'crop_flip')
  assert (np.asarray(out) != np.asarray(other)).any()
  changed = (np.asarray(out) != np.asarray(images)).any(axis=(1, 2, 3))
  assert changed.sum() >= 12  # 1/(9*9*2) chance each to stay the same.
  assert (np.asarray(out) == 0).any()  # Zero padding shifted in.
  np.testing.assert_array_equal(
      augment_batch(key, images, 'none'), images)


def test_augment_flip_only_mirrors():
  image = np.arange(4 * 4 * 1, dtype=np.uint8).reshape(4, 4, 1)
  flip = jax.jit(jax.vmap(lambda key: data.random_crop_flip(key, image, pad=0)))
  outs = np.asarray(flip(jax.random.split(jax.random.PRNGKey(0), 16)))
  flipped = [(o == image[:, ::-1]).all() for o in outs]
  assert all(f or (o == image).all() for f, o in zip(flipped, outs))
  assert 0 < sum(flipped) < 16


def test_augment_unknown_name():
  with pytest.raises(UserError, match="did you mean 'crop_flip'"):
    augment.augment_batch(jax.random.PRNGKey(0), np.zeros((1, 4, 4, 1)),
                          'crop_flp')
