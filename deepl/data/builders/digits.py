"""scikit-learn's bundled 8x8 digits (1,797 images): the offline default.

The data ships inside scikit-learn, so preparing it never downloads anything.
Pixels are 0..16 counts; they are stored as uint8 0..255 (x * 16, clipped at
255) so every image dataset here has the same 0..255 scale.

Split: 1,437 train / 360 test, by a fixed permutation (numpy's PCG64 seeded
with 0, as scikit-learn users get from `train_test_split(random_state=...)`).
The source is ordered by writer; a random split is the usual benchmark (a
split by writer is harder: the CNN here scores ~90% on the last 360).
"""

import numpy as np
import tensorflow_datasets as tfds

from deepl.data.builders import _features

NUM_TEST = 360


def load_arrays():
  """Returns {'train': (images, labels), 'test': (images, labels)}."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top  (slow)
  digits = datasets.load_digits()
  images = np.minimum(digits.images * 16, 255).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int64)
  order = np.random.Generator(np.random.PCG64(0)).permutation(len(labels))
  train, test = np.sort(order[:-NUM_TEST]), np.sort(order[-NUM_TEST:])
  return {'train': (images[train], labels[train]), 'test': (images[test], labels[test])}


class Digits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """8x8 grey digits from scikit-learn, 1,437 train / 360 test."""

  name = 'digits'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': '360 test images by a fixed permutation; pixels x16 as uint8.'}

  def _info(self):
    return _features.image_label_info(
        self, (8, 8, 1), 'https://scikit-learn.org/stable/datasets/toy_dataset.html')

  def _split_generators(self, dl_manager):
    del dl_manager  # The data is inside scikit-learn.
    arrays = load_arrays()
    return {split: self._generate_examples(*arrays[split]) for split in arrays}

  def _generate_examples(self, images, labels):
    for i in range(len(images)):
      yield i, {'image': images[i], 'label': labels[i]}
