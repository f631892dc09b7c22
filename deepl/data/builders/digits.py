"""scikit-learn's bundled 8x8 digits (1,797 images): the offline default.

The data ships inside scikit-learn, so preparing it never downloads anything.
Pixels are 0..16 counts; they are stored as uint8 0..255 (x * 16, clipped at
255) so every image dataset here has the same 0..255 scale.

Split: the last 360 images are the test set (1,437 train / 360 test). The
images are ordered by writer, so this is also a split by writer, and it is
fixed without any random seed.
"""

import numpy as np
import tensorflow_datasets as tfds

NUM_TEST = 360


def load_arrays():
  """Returns {'train': (images, labels), 'test': (images, labels)}."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top  (slow)
  digits = datasets.load_digits()
  images = np.minimum(digits.images * 16, 255).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int64)
  return {
      'train': (images[:-NUM_TEST], labels[:-NUM_TEST]),
      'test': (images[-NUM_TEST:], labels[-NUM_TEST:]),
  }


class Digits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """8x8 grey digits from scikit-learn, 1,437 train / 360 test."""

  name = 'digits'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Last 360 images as test; pixels x16 as uint8.'}

  def _info(self):
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
            'label': tfds.features.Tensor(shape=(), dtype=np.int64),
        }),
        supervised_keys=('image', 'label'),
        # Keep the source order, so record i is example i of the original.
        disable_shuffling=True,
        homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data is inside scikit-learn.
    arrays = load_arrays()
    return {split: self._generate_examples(*arrays[split]) for split in arrays}

  def _generate_examples(self, images, labels):
    for i in range(len(images)):
      yield i, {'image': images[i], 'label': labels[i]}
