"""ImageNet 2012 (ILSVRC 2012) from its manual tar files, images kept encoded.

  data.manual_dir/ILSVRC2012_img_train.tar   1,281,167 images (a tar of 1,000 synset tars)
  data.manual_dir/ILSVRC2012_img_val.tar        50,000 images

From image-net.org, after accepting its terms; TFDS cannot download them.
Labels follow TFDS's imagenet2012: the class order of its labels.txt (sorted
synset ids), the validation labels from its validation_labels.txt (line i is
ILSVRC2012_val_<i+1>.JPEG), both shipped inside tensorflow_datasets. Unlike
TFDS's builder (which re-encodes the 22 CMYK JPEGs and the one PNG named
.JPEG with TensorFlow) the bytes are kept as they are: PIL decodes all of them.

The tars are read as streams, one synset tar in memory at a time (~150 MB).
The same images in folders (train/<synset>/, validation/<synset>/) work as
data.name='image_folder'.
"""

import io
import tarfile

from etils import epath
import tensorflow_datasets as tfds

from deepl.data.builders import _features
from deepl.data.builders import _manual
from deepl.errors import UserError

TRAIN_TAR = 'ILSVRC2012_img_train.tar'
VAL_TAR = 'ILSVRC2012_img_val.tar'
_TFDS_FILES = 'datasets/imagenet2012'


def synsets() -> list[str]:
  return _tfds_lines('labels.txt')


def validation_synsets() -> list[str]:
  return _tfds_lines('validation_labels.txt')


def _tfds_lines(name: str) -> list[str]:
  return (tfds.core.tfds_path(_TFDS_FILES) / name).read_text().strip().splitlines()


def _images(fileobj):
  """(file name, bytes) of each file of a tar stream."""
  with tarfile.open(fileobj=fileobj, mode='r|') as tar:
    for member in tar:
      if member.isfile():
        yield member.name.rsplit('/', 1)[-1], tar.extractfile(member).read()


class Imagenet2012(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """ILSVRC 2012 classification: 1,000 classes, train and validation."""

  name = 'imagenet2012'
  # TFDS's own is 5.x (Image features, TensorFlow): another version keeps a copy
  # TFDS prepared in the same data_dir from being taken for this one.
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Encoded bytes as in the tars; TFDS labels.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f'Put {TRAIN_TAR} and {VAL_TAR} (image-net.org) in manual_dir.'

  def _info(self):
    return _features.encoded_image_info(self)

  def _split_generators(self, dl_manager):
    root = _manual.given_manual_dir(dl_manager)
    fix = (f'point data.manual_dir at a folder with {TRAIN_TAR} and {VAL_TAR} from '
           'image-net.org (or use data.name=image_folder on extracted folders)')
    if root is None:
      raise UserError(f'imagenet2012 cannot be downloaded: {fix}')
    for name in (TRAIN_TAR, VAL_TAR):
      if not (root / name).exists():
        raise UserError(f'data.manual_dir {root} has no {name}: {fix}')
    classes = synsets()
    self.info.metadata['classes'] = classes
    return {'train': self._generate_examples(root / TRAIN_TAR, classes, validation=False),
            'validation': self._generate_examples(root / VAL_TAR, classes, validation=True)}

  def _generate_examples(self, path: epath.Path, classes: list, validation: bool):
    label_of = {s: i for i, s in enumerate(classes)}
    with path.open('rb') as f:
      if validation:
        labels = validation_synsets()
        for name, image in _images(f):
          number = int(name.rsplit('_', 1)[-1].split('.')[0])  # ILSVRC2012_val_00000001.JPEG
          yield name, {'image': image, 'label': label_of[labels[number - 1]]}
        return
      for synset_tar, data in _images(f):  # the train tar holds one tar per synset
        label = label_of[synset_tar.removesuffix('.tar')]
        for name, image in _images(io.BytesIO(data)):
          yield name, {'image': image, 'label': label}
