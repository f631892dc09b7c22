"""The feature spec every image-classification builder here shares."""

import numpy as np
import tensorflow_datasets as tfds


def image_label_info(builder, image_shape, homepage: str):
  """uint8 `image` of `image_shape` and int64 `label`, as Tensor features
  (Image features would need TensorFlow to encode)."""
  return builder.dataset_info_from_configs(
      features=tfds.features.FeaturesDict({
          'image': tfds.features.Tensor(shape=image_shape, dtype=np.uint8),
          'label': tfds.features.Tensor(shape=(), dtype=np.int64),
      }),
      supervised_keys=('image', 'label'),
      # Keep the source order, so record i is example i of the original.
      disable_shuffling=True,
      homepage=homepage,
  )
