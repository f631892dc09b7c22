"""CIFAR-10 as array_record files with Tensor features.

Online: TFDS's URL and sha256 for the official binary tarball (50,000 train /
10,000 test). Offline, manual_dir holds either that tarball or the ConvNetJS
PNG-sprite subset (first 4,000 train / first 1,000 test images, lossless; see
shared/data/cifar10_subset/README.md). Which one was used is fixed when the
dataset is prepared: the cache in data_dir does not record it, so check
`len(split)` (or use a separate data_dir) when mixing the two.
"""

import json
import re
import tarfile

import numpy as np
import tensorflow_datasets as tfds

from deepl.data.builders import _features
from deepl.data.builders import _manual

URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz'
_TRAIN_MEMBERS = [f'data_batch_{i}.bin' for i in range(1, 6)]
_TEST_MEMBERS = ['test_batch.bin']

# The sprite subset: sha256 from its README. Sprite N holds global images
# 1000N..1000N+999; 0..49,999 are train and 50,000.. are test.
SPRITE_SHA256 = {
    'cifar10_batch_0.png':
        '0614720d69293a033786d5fe2924c4e9a9b48874f19ca4627c4662a864ee9f2d',
    'cifar10_batch_1.png':
        '2927e26ea68602e34a7424826b76b7336ce36b8f6bcc2e9fce0c05568ff6b4c1',
    'cifar10_batch_2.png':
        '0b2759e307bb405bb1a6531f8a0f557eaec46d7546050612fdb836f0fa60eae0',
    'cifar10_batch_3.png':
        'a4530ff15c83886058a97c352f53f38be07d191de8f410e998e91786b5900a26',
    'cifar10_batch_50.png':
        '5cea9e8fb7933540a2236a4bb25c1ed3a8447f345c55ae659143a95a5d8dac5e',
    'cifar10_labels.js':
        'f8e4cced3cb4ac08bc842380ad30f904622d1faea630a0c7e1a18bf29e39d845',
}
_SPRITES = {'train': [0, 1, 2, 3], 'test': [50]}


def read_binary_tarball(path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads cifar-10-binary.tar.gz without extracting it to disk."""
  chunks = {}
  with tarfile.open(path, 'r:gz') as tar:
    for member in tar:
      name = member.name.rsplit('/', 1)[-1]
      if name in _TRAIN_MEMBERS + _TEST_MEMBERS:
        chunks[name] = tar.extractfile(member).read()
  out = {}
  for split, members in (('train', _TRAIN_MEMBERS), ('test', _TEST_MEMBERS)):
    # A record is 1 label byte then 3,072 pixel bytes, planar (C, H, W).
    records = np.concatenate([
        np.frombuffer(chunks[m], np.uint8).reshape(-1, 3073) for m in members])
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    out[split] = (np.ascontiguousarray(images), records[:, 0].astype(np.int64))
  return out


def read_sprites(paths) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Reads the PNG-sprite subset: each sprite row is one HWC image."""
  from PIL import Image  # pylint: disable=g-import-not-at-top  (only here)
  text = paths['cifar10_labels.js'].read_text()
  labels = np.array(json.loads(re.search(r'\[.*\]', text).group(0)), np.int64)
  out = {}
  for split, sprites in _SPRITES.items():
    images, split_labels = [], []
    for n in sprites:
      with Image.open(paths[f'cifar10_batch_{n}.png']) as img:
        images.append(np.asarray(img.convert('RGB')).reshape(-1, 32, 32, 3))
      split_labels.append(labels[1000 * n:1000 * n + len(images[-1])])
    out[split] = (np.concatenate(images), np.concatenate(split_labels))
  return out


class Cifar10(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """CIFAR-10: 32x32 colour images in 10 classes."""

  name = 'cifar10'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Tensor features; tarball or sprite subset.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Put {URL.rsplit("/", 1)[-1]} (from {URL}) or the ConvNetJS sprite '
      'subset (cifar10_batch_{0,1,2,3,50}.png + cifar10_labels.js) in '
      'manual_dir.')

  def _info(self):
    return _features.image_label_info(self, (32, 32, 3),
                                      'https://www.cs.toronto.edu/~kriz/cifar.html')

  def _split_generators(self, dl_manager):
    manual_dir = _manual.given_manual_dir(dl_manager)
    if manual_dir is None:
      arrays = read_binary_tarball(dl_manager.download(URL))
    else:
      tarball = URL.rsplit('/', 1)[-1]
      fix = (f'point data.manual_dir at a folder with {tarball} (from {URL}) '
             'or with the 6 files of the cifar10_subset sprites')
      if (manual_dir / tarball).exists():
        expected = _manual.expected_from_url_infos(self.url_infos, [URL])
        paths = _manual.check_files(manual_dir, expected, fix=fix)
        arrays = read_binary_tarball(paths[tarball])
      else:
        paths = _manual.check_files(manual_dir, SPRITE_SHA256, fix=fix)
        arrays = read_sprites(paths)
    return {split: self._generate_examples(*arrays[split]) for split in arrays}

  def _generate_examples(self, images, labels):
    for i in range(len(images)):
      yield i, {'image': images[i], 'label': labels[i]}
