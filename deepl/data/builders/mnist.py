"""MNIST and Fashion-MNIST as array_record files with Tensor features.

Same names, URLs and sha256 as TFDS's own builders, but `Tensor` features
instead of `Image` (which needs TensorFlow) and a manual_dir that never falls
through to the network. Registration is skipped so they do not clash with the
TFDS builders of the same name.
"""

import gzip
import struct

import numpy as np
import tensorflow_datasets as tfds

from deepl.data.builders import _features
from deepl.data.builders import _manual

_FILES = {
    'train_images': 'train-images-idx3-ubyte.gz',
    'train_labels': 'train-labels-idx1-ubyte.gz',
    'test_images': 't10k-images-idx3-ubyte.gz',
    'test_labels': 't10k-labels-idx1-ubyte.gz',
}


def read_idx(path) -> np.ndarray:
  """Reads a gzipped IDX file (big-endian dims, then raw uint8) into numpy."""
  with gzip.open(path, 'rb') as f:
    data = f.read()
  if data[2] != 0x08:
    raise ValueError(f'{path}: IDX type {data[2]:#x} is not uint8')
  ndim = data[3]
  dims = struct.unpack('>' + 'I' * ndim, data[4:4 + 4 * ndim])
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


class MNIST(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """MNIST: 28x28 grey digits, 60,000 train / 10,000 test."""

  name = 'mnist'
  URL = 'https://storage.googleapis.com/cvdf-datasets/mnist/'
  HOMEPAGE = 'http://yann.lecun.com/exdb/mnist/'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Tensor features (no TensorFlow needed).'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put the 4 original files (train-images-idx3-ubyte.gz, '
      'train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, '
      't10k-labels-idx1-ubyte.gz) in manual_dir.')

  def _info(self):
    return _features.image_label_info(self, (28, 28, 1), self.HOMEPAGE)

  def _split_generators(self, dl_manager):
    urls = {key: self.URL + name for key, name in _FILES.items()}
    manual_dir = _manual.given_manual_dir(dl_manager)
    if manual_dir is not None:
      fix = (f'download them from {self.URL} or point data.manual_dir at a '
             f'folder with the 4 original {self.name} .gz files')
      expected = _manual.expected_from_url_infos(self.url_infos, urls.values())
      found = _manual.check_files(manual_dir, expected, fix=fix)
      paths = {key: found[name] for key, name in _FILES.items()}
    else:
      paths = dl_manager.download(urls)
    return {
        split: self._generate_examples(paths[f'{split}_images'],
                                       paths[f'{split}_labels'])
        for split in ('train', 'test')
    }

  def _generate_examples(self, images_path, labels_path):
    images = read_idx(images_path)[..., None]
    labels = read_idx(labels_path).astype(np.int64)
    if len(images) != len(labels):
      raise ValueError(f'{images_path}: {len(images)} images, '
                       f'{len(labels)} labels')
    for i in range(len(images)):
      yield i, {'image': images[i], 'label': labels[i]}


class FashionMNIST(MNIST, skip_registration=True):
  """Fashion-MNIST: 28x28 grey clothes, 60,000 train / 10,000 test."""

  name = 'fashion_mnist'
  URL = 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/'
  HOMEPAGE = 'https://github.com/zalandoresearch/fashion-mnist'
