"""A split read record by record from its prepared array_record files.

The streaming path: `builder.as_data_source(split)` (what `tfds.data_source`
returns) gives random access by index without TensorFlow, through epath, so
the files may sit on a local disk or in a bucket (gs://). Only the records of
a batch are read, so host memory is bounded by the pipeline's buffers, not by
the split's size; each process reads only its own rows.

Records whose image is stored encoded (JPEG, PNG, ...) are decoded here, by
an `ImagePreprocess`; the pipeline runs `gather` in Grain's worker processes,
so the decoding runs there in parallel.
"""

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.proto import tf_example_pb2

from deepl.data import images as images_lib


def split_megabytes(builder, split: str) -> float:
  """The size of a prepared split's files, in MiB (0 where TFDS did not record it)."""
  return int(builder.info.splits[split].num_bytes) / 2**20


def read_scalar_columns(builder, split: str, names) -> dict[str, list]:
  """Every record of a prepared split, as one list per named scalar feature: bytes for text
  (TFDS stores it utf-8 encoded), int for integers and class labels.

  TFDS's own decoding of a record (its FeaturesDict, in Python) takes ~60 us: 4 s for the
  67k sentences of SST-2's train split at every start of a run. The records are
  tf.train.Example protos, which protobuf's C parser reads in ~5 us.
  """
  source = builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  columns = {name: [] for name in names}
  for record in source.__getitems__(range(len(source))):
    features = tf_example_pb2.Example.FromString(record).features.feature
    for name, column in columns.items():
      feature = features[name]
      column.append(getattr(feature, feature.WhichOneof('kind')).value[0])
  return columns


class RecordSource:
  """Random access to a split's records: `len`, `[i]`, and `gather(indices, keys=None)`.

  Args:
    records: a random-access source of record dicts ({'image', 'label'}):
      TFDS's array_record data source, or a list of records held in memory.
    preprocess: an `images.ImagePreprocess` for records whose image is
      encoded bytes; None where it is already an array.
    random: whether training batches draw a random augmentation (the
      pipeline then passes one key per row).
  """

  parallel = True  # reading and decoding records is worth worker processes

  def __init__(self, records, *, preprocess: images_lib.ImagePreprocess | None = None,
               random: bool = False):
    self._records = records
    self.preprocess = preprocess
    self.random = random

  def __len__(self) -> int:
    return len(self._records)

  def _read(self, indices) -> list[dict]:
    indices = [int(i) for i in indices]
    if hasattr(self._records, '__getitems__'):
      return self._records.__getitems__(indices)
    return [self._records[i] for i in indices]

  def gather(self, indices, keys=None) -> dict[str, np.ndarray]:
    """The rows `indices` as a batch; `keys` (one per row) draw the train augmentation."""
    records = self._read(indices)
    if self.preprocess is None:
      images = [np.asarray(r['image']) for r in records]
      shape, dtype = (images[0].shape if images else ()), np.uint8
    else:
      keys = [None] * len(records) if keys is None else keys
      images = [self.preprocess(r['image'], key) for r, key in zip(records, keys)]
      shape, dtype = self.preprocess.shape, self.preprocess.dtype
    if not images:  # an empty batch still has the feature shapes
      shape = shape or np.asarray(self._read([0])[0]['image']).shape
      return {'image': np.zeros((0, *shape), dtype), 'label': np.zeros(0, np.int32)}
    return {'image': np.stack(images),
            'label': np.array([r['label'] for r in records], np.int32)}

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    batch = self.gather([index])
    return {key: value[0] for key, value in batch.items()}

  def __repr__(self) -> str:
    kind = 'in memory' if isinstance(self._records, list) else 'streamed'
    return f'RecordSource({len(self)} records, {kind}, preprocess={self.preprocess})'
