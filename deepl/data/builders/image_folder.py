"""Your own images in class folders, prepared once into array_record, kept encoded.

  data.manual_dir/
    train/<class>/*.jpg|jpeg|png|bmp|gif|webp|tif|tiff
    test/<class>/...         and/or  validation/<class>/...

The classes are the sorted folder names of train/ (label i is the i-th name);
they are stored in the prepared data's metadata and saved with each run.
Images stay in their own encoding (a JPEG is written byte for byte), so the
prepared files are as small as the originals; the pipeline decodes, crops
and resizes them in its worker processes (deepl.data.images).

Every image is test-decoded once while preparing: an unreadable one is
skipped and counted, and more than `max_unreadable` (a fraction) of a split
is an error. The prepared copy is keyed by the folder's absolute path (one
data_dir can hold several folders); after changing the folder's contents,
prepare again into a new data.data_dir.
"""

import hashlib
import re
import sys

from etils import epath
import tensorflow_datasets as tfds

from deepl.data import images as images_lib
from deepl.data.builders import _features
from deepl.data.builders import _manual
from deepl.errors import UserError

EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif', '.tiff')
SPLITS = ('train', 'validation', 'test')
LAYOUT = 'train/<class>/<image> and test/<class>/<image> (or validation/<class>/<image>)'


def config_for(manual_dir) -> tfds.core.BuilderConfig:
  """The builder config of one folder: its name plus a hash of its absolute path."""
  path = str(epath.Path(manual_dir).expanduser().absolute()) if '://' not in str(
      manual_dir) else str(manual_dir)
  stem = re.sub(r'[^A-Za-z0-9_]', '_', path.rstrip('/').rsplit('/', 1)[-1])[:40] or 'root'
  return tfds.core.BuilderConfig(
      name=f'{stem}_{hashlib.sha256(path.encode()).hexdigest()[:12]}',
      description=f'the images in {path}')


def is_image(path: epath.Path) -> bool:
  return path.suffix.lower() in EXTENSIONS and not path.name.startswith('.')


def list_split(root: epath.Path, split: str, classes=None) -> tuple[list, list]:
  """(class names, [(path, label)]) of root/split; UserError for a layout that is not one."""
  folder = root / split
  entries = sorted(folder.iterdir(), key=lambda p: p.name)
  loose = [p.name for p in entries if p.is_file() and is_image(p)]
  if loose:
    raise UserError(f'{folder} holds images directly ({loose[0]}, ...): put each in a folder '
                    f'named for its class, {LAYOUT}')
  names = [p.name for p in entries if p.is_dir() and not p.name.startswith('.')]
  if not names:
    raise UserError(f'{folder} has no class folders: data.manual_dir needs {LAYOUT}')
  if classes is None:
    classes = names
  unknown = sorted(set(names) - set(classes))
  if unknown:
    raise UserError(f'{folder}/{unknown[0]} is a class that train/ does not have: every '
                    f'{split} class must be one of the {len(classes)} train classes')
  files = []
  for name in names:
    found = sorted((p for p in (folder / name).iterdir() if p.is_file() and is_image(p)),
                   key=lambda p: p.name)
    if not found:
      raise UserError(f'class folder {folder / name} has no images (.jpg, .png, ...): add '
                      'some or remove the folder')
    files += [(p, classes.index(name)) for p in found]
  return classes, files


def check_readable(files, split: str, max_unreadable: float) -> list:
  """The files that decode; skips the others with a count, fails above the fraction."""
  good, bad = [], []
  for path, label in files:
    try:
      images_lib.check_image(path.read_bytes())
    except Exception:  # pylint: disable=broad-except  (PIL raises many kinds)
      bad.append(path)
      continue
    good.append((path, label))
  if bad:
    fraction = len(bad) / len(files)
    if fraction > max_unreadable:
      raise UserError(f'{len(bad)} of {len(files)} {split} images cannot be decoded '
                      f'(first: {bad[0]}), more than data.max_unreadable={max_unreadable}: '
                      'fix or remove them, or raise data.max_unreadable')
    print(f'deepl: warning: skipped {len(bad)} unreadable {split} image(s) of '
          f'{len(files)} (first: {bad[0]})', file=sys.stderr)
  return good


class ImageFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Images in train/<class>/ and test/<class>/ folders, stored encoded."""

  name = 'image_folder'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Encoded images, classes in metadata.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f'Point data.manual_dir at a folder with {LAYOUT}.'

  def __init__(self, *, max_unreadable: float = 0.001, **kwargs):
    self._max_unreadable = max_unreadable
    super().__init__(**kwargs)

  def _info(self):
    return _features.encoded_image_info(self)

  def _split_generators(self, dl_manager):
    root = _manual.given_manual_dir(dl_manager)
    if root is None:
      raise UserError(f"data.name='image_folder' needs data.manual_dir: a folder with {LAYOUT}")
    if not root.is_dir():
      raise UserError(f'data.manual_dir {root} is not a folder: point it at a folder with '
                      f'{LAYOUT}')
    present = [s for s in SPLITS if (root / s).is_dir()]
    if 'train' not in present or len(present) < 2:
      raise UserError(f'data.manual_dir {root} has {", ".join(present) or "no split folders"}: '
                      f'it needs {LAYOUT}')
    classes, listed = list_split(root, 'train')
    files = {'train': listed}
    for split in present[1:]:
      files[split] = list_split(root, split, classes)[1]
    files = {split: check_readable(f, split, self._max_unreadable)
             for split, f in files.items()}
    self.info.metadata['classes'] = classes
    return {split: self._generate_examples(f) for split, f in files.items()}

  def _generate_examples(self, files):
    for i, (path, label) in enumerate(files):
      yield i, {'image': path.read_bytes(), 'label': label}
