"""get_dataset: prepare a dataset once with TFDS, then serve it from memory.

The image sets here are small (MNIST's train split is 47 MB), so each split is
read from its array_record files once into numpy arrays. A batch is then one
numpy gather (~0.1 ms) instead of 128 record decodes (~6 ms through
`as_data_source`).

Text sets come back as raw texts (`TextSplit`): their sources depend on a
tokenizer, built from the train split; see `deepl.data.text.text_splits`.
Speech sets come back as waveforms with labels or transcripts (`AudioSplit`,
deepl.data.audio_splits).
"""

import dataclasses
import sys
from typing import Any

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from deepl.data import audio_io
from deepl.data import audio_splits
from deepl.data import seq2seq_text
from deepl.data import text as text_lib
from deepl.data.builders import BUILDERS
from deepl.data.builders import speech_commands
from deepl.errors import suggest
from deepl.errors import UserError


class ArraySource:
  """A split held in memory: random access by index, or a batch at a time.

  Satisfies grain's RandomAccessDataSource protocol (`len`, `[i]`), and adds
  `gather` so the pipeline can fetch a whole batch with one numpy indexing op.
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    if len(images) != len(labels):
      raise ValueError(f'{len(images)} images but {len(labels)} labels')
    self.images = np.ascontiguousarray(images, np.uint8)
    # int32: what the train step wants, and JAX's default integer width.
    self.labels = np.asarray(labels, np.int32)

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {'image': self.images[index], 'label': self.labels[index]}

  def gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {'image': self.images[indices], 'label': self.labels[indices]}

  def __repr__(self) -> str:
    return f'ArraySource({len(self)} x {self.images.shape[1:]})'


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A prepared dataset: its splits in memory plus what a model needs to know.

  Images: `splits` are `ArraySource`s, ready to batch. Text: `image_shape` is
  None and `splits` are `TextSplit`s of raw texts (and labels), to tokenize.
  Speech: `sample_rate` is set and `splits` are `AudioSplit`s, ready to batch
  where they hold labels; their transcripts, if any, are its texts.
  """

  name: str
  splits: dict[str, Any]  # ArraySource (images) or TextSplit (text)
  num_classes: int | None  # None: no labels (a language-modelling corpus)
  image_shape: tuple[int, ...] | None
  train_split: str = 'train'
  eval_split: str = 'test'
  data_dir: str = ''  # Where TFDS keeps the prepared files.
  sample_rate: int | None = None  # speech: the waveforms' rate; None otherwise

  @property
  def is_audio(self) -> bool:
    return self.sample_rate is not None

  @property
  def is_text(self) -> bool:
    return self.image_shape is None and not self.is_audio

  @property
  def has_texts(self) -> bool:
    """Texts to build a tokenizer from: a text set's, or a speech set's transcripts."""
    if self.is_audio:
      return self.splits[self.train_split].texts is not None
    return self.is_text

  def texts(self, split: str) -> list[str]:
    """A text split's raw texts (a speech split's transcripts), e.g. to build a tokenizer."""
    if not self.has_texts:
      raise UserError(f'{self.name} holds {"audio" if self.is_audio else "images"} without '
                      'texts')
    return self.splits[split].texts


# Label counts live here rather than in the builders: `label` is a plain int64
# Tensor feature (ClassLabel would add nothing but names).
NUM_CLASSES = {'digits': 10, 'mnist': 10, 'fashion_mnist': 10, 'cifar10': 10,
               'glue/sst2': 2, 'tiny_shakespeare': None, 'dates': None,
               'spoken_digits': 10, 'spoken_digits/tiny': 10, 'spoken_digit': 10,
               'speech_commands': 12, 'spoken_numbers': None, 'spoken_numbers/tiny': None}
# What `deepl predict` prints for a class where the data set names them (the sets' own
# orders); elsewhere the class index, which for the digit sets is the digit.
LABEL_NAMES = {
    'glue/sst2': ('negative', 'positive'),
    'fashion_mnist': ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
                      'Sneaker', 'Bag', 'Ankle boot'),
    'cifar10': ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                'truck'),
    'speech_commands': speech_commands.LABELS,
}
# Where the split to evaluate on is not 'test': SST-2's test labels are hidden
# (-1), and TFDS's tiny_shakespeare and the generated sets keep 'test' for the final number.
EVAL_SPLITS = {'glue/sst2': 'validation', 'tiny_shakespeare': 'validation',
               'dates': 'validation', 'spoken_digits': 'validation',
               'spoken_digits/tiny': 'validation', 'spoken_numbers': 'validation',
               'spoken_numbers/tiny': 'validation'}


def known_names() -> list[str]:
  return sorted(BUILDERS)


def check_name(name: str) -> None:
  if name not in BUILDERS:
    raise UserError(f'unknown dataset {name!r}{suggest(name, known_names())}; '
                    f'known: {", ".join(known_names())}')


def get_builder(name: str, data_dir: str | None = None):
  """Returns the TFDS builder for `name` (writing array_record files)."""
  check_name(name)
  return BUILDERS[name](data_dir=data_dir, file_format='array_record')


def get_dataset(name: str, *, data_dir: str | None = None,
                manual_dir: str | None = None) -> Dataset:
  """Prepares `name` (once; cached in data_dir) and loads its splits.

  Args:
    name: one of `known_names()`.
    data_dir: where TFDS keeps prepared datasets; None means TFDS's default
      ($TFDS_DATA_DIR or ~/tensorflow_datasets).
    manual_dir: a folder with the original files, so preparing never goes to
      the network. Only read the first time; ignored by 'digits'.

  Returns:
    A `Dataset` whose splits are in-memory `ArraySource`s (images) or
    `TextSplit`s (text).

  Raises:
    UserError: unknown name, a manual_dir that lacks the right files, or a
      download that failed.
  """
  builder = get_builder(name, data_dir)
  if not builder.is_prepared():
    if not sys.stderr.isatty():  # TFDS draws its bars anywhere: a log would fill with them
      tfds.disable_progress_bar()
    if manual_dir is not None and not epath.Path(manual_dir).is_dir():
      raise UserError(f'manual_dir {manual_dir} is not a folder: point '
                      f'data.manual_dir at the folder with the {name} files')
    try:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              manual_dir=manual_dir, try_download_gcs=False))
    except OSError as err:  # requests' ConnectionError is one: no network, a proxy, a timeout
      reason = (str(err).splitlines() or [type(err).__name__])[0]
      reason = reason if len(reason) <= 160 else reason[:160] + '...'
      raise UserError(f'could not download or prepare {name} ({reason}); offline, set '
                      f'data.manual_dir to a folder with its original files') from None
  features = builder.info.features
  sample_rate = None
  if 'image' in features:
    load, image_shape = _load_split, tuple(features['image'].shape)
  elif 'audio' in features:  # waveforms with labels or transcripts
    load, image_shape, sample_rate = audio_splits.load_audio_split, None, audio_io.SAMPLE_RATE
  elif 'source' in features:  # source -> target text pairs (seq2seq)
    load, image_shape = seq2seq_text.load_pair_split, None
  else:
    load, image_shape = text_lib.load_text_split, None
  return Dataset(
      name=name,
      splits={split: load(builder, split) for split in builder.info.splits},
      num_classes=NUM_CLASSES[name],
      image_shape=image_shape,
      eval_split=EVAL_SPLITS.get(name, 'test'),
      data_dir=str(builder.data_dir),
      sample_rate=sample_rate,
  )


def _load_split(builder, split: str) -> ArraySource:
  source = builder.as_data_source(split)
  records = source.__getitems__(range(len(source)))
  images = np.stack([r['image'] for r in records])
  labels = np.array([r['label'] for r in records])
  return ArraySource(images, labels)
