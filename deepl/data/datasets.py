"""get_dataset: prepare a dataset once with TFDS, then serve it from memory or stream it.

Two paths, one interface (`len`, `gather`), chosen per split by its size:

  in memory  a split of at most `in_memory_max_mb` (data.in_memory_max_mb) of
             prepared files is read once into numpy arrays (`ArraySource`):
             a batch is one numpy gather (~0.1 ms for MNIST) instead of 128
             record decodes (~6 ms through `as_data_source`);
  streamed   a bigger one stays in its array_record files (`RecordSource`):
             each batch reads only its own records, by index, so memory is
             bounded by the pipeline's buffers and each process reads only
             its rows.

Images stored encoded (image_folder) are decoded per batch on either path, in
the pipeline's worker processes. Text sets come back as raw texts
(`TextSplit`), or for a big text_files corpus as files (`TextFiles`): their
sources depend on a tokenizer, built from the train split; see
`deepl.data.text.text_splits`.
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
from deepl.data import images as images_lib
from deepl.data import records as records_lib
from deepl.data import seq2seq_text
from deepl.data import text as text_lib
from deepl.data import text_files
from deepl.data.builders import BUILDERS
from deepl.data.builders import speech_commands
from deepl.data.builders import _features
from deepl.data.builders import image_folder
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
  splits: dict[str, Any]  # ArraySource/RecordSource (images), TextSplit/TextFiles (text)
  num_classes: int | None  # None: no labels (a language-modelling corpus)
  image_shape: tuple[int, ...] | None
  train_split: str = 'train'
  eval_split: str = 'test'
  data_dir: str = ''  # Where TFDS keeps the prepared files.
  sample_rate: int | None = None  # speech: the waveforms' rate; None otherwise

  @property
  def is_audio(self) -> bool:
    return self.sample_rate is not None
  label_names: tuple[str, ...] | None = None  # the classes' names, where the data names them

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


IN_MEMORY_MAX_MB = 1024
# Label counts live here rather than in the builders: `label` is a plain int64
# Tensor feature (ClassLabel would add nothing but names). image_folder's come
# from its folders.
NUM_CLASSES = {'digits': 10, 'mnist': 10, 'fashion_mnist': 10, 'cifar10': 10,
               'glue/sst2': 2, 'tiny_shakespeare': None, 'dates': None,
               'spoken_digits': 10, 'spoken_digits/tiny': 10, 'spoken_digit': 10,
               'speech_commands': 12, 'spoken_numbers': None, 'spoken_numbers/tiny': None,
               'imagenet2012': 1000}
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
               'spoken_numbers/tiny': 'validation', 'text_files': 'validation'}
# Data sets made of the user's own files, with no fixed builder.
OWN_DATA = ('text_files',)


def known_names() -> list[str]:
  return sorted([*BUILDERS, *OWN_DATA])


def check_name(name: str) -> None:
  if name not in known_names():
    raise UserError(f'unknown dataset {name!r}{suggest(name, known_names())}; '
                    f'known: {", ".join(known_names())}')


def get_builder(name: str, data_dir: str | None = None, manual_dir: str | None = None,
                max_unreadable: float | None = None):
  """Returns the TFDS builder for `name` (writing array_record files).

  image_folder has one builder config per folder (data.manual_dir).
  """
  check_name(name)
  if name in OWN_DATA:
    raise UserError(f'{name} is not a TFDS data set: it has no builder')
  kwargs = {}
  if name == 'image_folder':
    if manual_dir is None:
      raise UserError("data.name='image_folder' needs data.manual_dir: a folder with "
                      f'{image_folder.LAYOUT}')
    kwargs['config'] = image_folder.config_for(manual_dir)
    if max_unreadable is not None:
      kwargs['max_unreadable'] = max_unreadable
  return BUILDERS[name](data_dir=data_dir, file_format='array_record', **kwargs)


def get_dataset(name: str, *, data_dir: str | None = None,
                manual_dir: str | None = None, in_memory_max_mb: float = IN_MEMORY_MAX_MB,
                image: images_lib.ImagePreprocess | None = None,
                max_unreadable: float | None = None,
                tokenizer_sample_mb: float = 32) -> Dataset:
  """Prepares `name` (once; cached in data_dir) and opens its splits.

  Args:
    name: one of `known_names()`.
    data_dir: where TFDS keeps prepared datasets (a local path or gs://...);
      None means TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets).
    manual_dir: a folder with the original files, so preparing never goes to
      the network. Only read the first time; ignored by 'digits'. The data
      itself for image_folder and text_files.
    in_memory_max_mb: splits up to this size are held in memory, bigger ones
      streamed from their files (see the module docstring).
    image: how encoded images become arrays (image_folder): size, the train
      split's augmentation, normalisation. Default: 224 px, no augmentation.
    max_unreadable: image_folder: the fraction of a split's images that may
      fail to decode (skipped) before it is an error.
    tokenizer_sample_mb: text_files: how much text `texts('train')` gives a
      tokenizer to learn from, when the corpus is streamed.

  Returns:
    A `Dataset` whose splits are `ArraySource`s or `RecordSource`s (images),
    or `TextSplit`s or `TextFiles` (text).

  Raises:
    UserError: unknown name, a manual_dir that lacks the right files, or a
      download that failed.
  """
  if name == 'text_files':
    return _text_files(manual_dir, data_dir, in_memory_max_mb, tokenizer_sample_mb)
  builder = get_builder(name, data_dir, manual_dir, max_unreadable)
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
  label_names = LABEL_NAMES.get(name)
  sample_rate = None
  num_classes = NUM_CLASSES.get(name)
  eval_split = EVAL_SPLITS.get(name, 'test')
  if 'image' in features:
    image = image or images_lib.ImagePreprocess()
    encoded = features['image'].shape == ()
    if not encoded and image.augment != 'none':
      raise UserError(f"data.augment='{image.augment}' crops encoded images as they are "
                      f"decoded; {name} holds arrays: use 'crop' or 'crop_flip'")
    if encoded:
      label_names = tuple(_features.classes(builder))
      num_classes = len(label_names)
      eval_split = 'test' if 'test' in builder.info.splits else 'validation'
    image_shape = image.shape if encoded else tuple(features['image'].shape)
    splits = {split: _image_split(builder, split, in_memory_max_mb,
                                  image if encoded else None, train=split == 'train')
              for split in builder.info.splits}
  else:
    image_shape = None
    if 'audio' in features:  # waveforms with labels or transcripts
      load, sample_rate = audio_splits.load_audio_split, audio_io.SAMPLE_RATE
    elif 'source' in features:  # source -> target text pairs (seq2seq)
      load = seq2seq_text.load_pair_split
    else:
      load = text_lib.load_text_split
    splits = {split: load(builder, split) for split in builder.info.splits}
  return Dataset(name=name, splits=splits, num_classes=num_classes, image_shape=image_shape,
                 eval_split=eval_split, data_dir=str(builder.data_dir), label_names=label_names,
                 sample_rate=sample_rate)


def _image_split(builder, split: str, in_memory_max_mb: float, preprocess, *, train: bool):
  """An ArraySource (small, arrays), else a RecordSource: in memory, or streamed from the files."""
  in_memory = records_lib.split_megabytes(builder, split) <= in_memory_max_mb
  if in_memory and preprocess is None:
    return _load_split(builder, split)
  records = builder.as_data_source(split)
  if in_memory:  # encoded images: the bytes in memory, decoded per batch
    records = records.__getitems__(range(len(records)))
  if preprocess is not None and not train:
    preprocess = dataclasses.replace(preprocess, augment='none')
  return records_lib.RecordSource(
      records, preprocess=preprocess,
      random=preprocess is not None and preprocess.augment != 'none')


def _text_files(manual_dir, data_dir, in_memory_max_mb: float, sample_mb: float) -> Dataset:
  """text_files: each split a TextSplit (small) or TextFiles (tokenized later, to shards)."""
  files = text_files.find_splits(manual_dir)
  splits = {}
  for split, paths in files.items():
    on_disk = text_files.TextFiles(tuple(paths), int(sample_mb * 2**20))
    if on_disk.num_bytes / 2**20 <= in_memory_max_mb:
      splits[split] = text_lib.TextSplit([text_files.read_whole(paths)])
    else:
      splits[split] = on_disk
  data_dir = data_dir or str(tfds.core.constants.DATA_DIR)
  return Dataset(name='text_files', splits=splits, num_classes=None, image_shape=None,
                 eval_split='validation', data_dir=str(epath.Path(data_dir).expanduser()))


def _load_split(builder, split: str) -> ArraySource:
  source = builder.as_data_source(split)
  records = source.__getitems__(range(len(source)))
  images = np.stack([r['image'] for r in records])
  labels = np.array([r['label'] for r in records])
  return ArraySource(images, labels)
