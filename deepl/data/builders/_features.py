"""The feature specs the image-classification builders here share."""

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


def encoded_image_info(builder):
  """`image` as the file's encoded bytes (JPEG, PNG, ...: a string Tensor needs no
  TensorFlow) and int64 `label`; the class names go in `metadata['classes']`."""
  return builder.dataset_info_from_configs(
      features=tfds.features.FeaturesDict({
          'image': tfds.features.Tensor(shape=(), dtype=np.object_),
          'label': tfds.features.Tensor(shape=(), dtype=np.int64),
      }),
      supervised_keys=('image', 'label'),
      disable_shuffling=True,  # record i is the i-th file in the source's order
      metadata=tfds.core.MetadataDict(),
  )


def classes(builder) -> list[str]:
  """The class names of a prepared encoded-image builder, in label order."""
  return list(builder.info.metadata['classes'])
