"""Encoded images (JPEG, PNG, ...) -> fixed-size arrays, on the host, in numpy and PIL.

What the flax ImageNet example and big_vision do before a ResNet-50:

  train  Inception crop: a random box of 8%..100% of the area and aspect
         3/4..4/3 (10 tries, else the central crop), resized to size x size,
         then a random left-right flip;
  eval   the central crop of size/(size+32) of the shorter side, resized to
         size x size (224 from a 256-px resize, in effect).

Both decode through PIL's JPEG draft mode: the decoder scales by 1/2, 1/4 or
1/8 on the fly when the box is that much bigger than the output, which makes
a 224-px crop of a large photo several times cheaper to decode.

`normalize='imagenet'` gives float32 (x - mean) / std with the ImageNet RGB
statistics; 'none' keeps uint8 0..255, which the classification task scales
to [0, 1] in the step (4x less to copy between processes).

Every random choice comes from the `key` the pipeline derives from (seed,
position in the global stream), so a batch is the same for any worker or
process count and after a resume.
"""

import dataclasses
import io
import math

import numpy as np

CROP_PADDING = 32
MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32) * 255
STDDEV_RGB = np.array([0.229, 0.224, 0.225], np.float32) * 255
NORMALIZATIONS = ('none', 'imagenet')
# Host-side training augmentations, for encoded images (deepl.data.augment
# holds the in-step ones for arrays).
HOST_AUGMENTATIONS = ('inception_crop',)
DEFAULT_SIZE = 224


def open_image(data: bytes):
  """A PIL image of encoded bytes, not yet decoded (PIL decodes lazily)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return Image.open(io.BytesIO(data))


def check_image(data: bytes) -> None:
  """Raises (PIL's errors) if `data` is not a whole image PIL can decode.

  Decodes at the smallest draft scale: truncated or corrupt data still fails,
  at an eighth of the cost of a full decode.
  """
  image = open_image(data)
  image.draft('RGB', (1, 1))
  image.load()


def _center_box(width: int, height: int, size: int) -> tuple[float, float, float, float]:
  side = size / (size + CROP_PADDING) * min(width, height)
  left, top = (width - side) / 2, (height - side) / 2
  return left, top, left + side, top + side


def _inception_box(width: int, height: int, rng: np.random.Generator, size: int):
  """big_vision's inception_crop box (TF's sample_distorted_bounding_box)."""
  area = width * height
  for _ in range(10):
    target = area * rng.uniform(0.08, 1.0)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      left = rng.integers(0, width - w + 1)
      top = rng.integers(0, height - h + 1)
      return float(left), float(top), float(left + w), float(top + h)
  return _center_box(width, height, size)


@dataclasses.dataclass(frozen=True)
class ImagePreprocess:
  """Encoded bytes -> (size, size, 3) array; see the module docstring."""

  size: int = DEFAULT_SIZE
  augment: str = 'none'       # 'inception_crop' (train) or 'none'
  normalize: str = 'none'     # 'imagenet' or 'none'

  def replace(self, **changes) -> 'ImagePreprocess':
    return dataclasses.replace(self, **changes)

  @property
  def dtype(self):
    return np.float32 if self.normalize == 'imagenet' else np.uint8

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self.size, self.size, 3)

  def __call__(self, data: bytes, key: int | None = None) -> np.ndarray:
    """One image; `key` (an int) draws the training crop and flip, None: the eval crop."""
    from PIL import Image  # pylint: disable=g-import-not-at-top
    image = open_image(data)
    width, height = image.size
    rng = None
    if key is not None and self.augment == 'inception_crop':
      rng = np.random.default_rng(key)
      box = _inception_box(width, height, rng, self.size)
    else:
      box = _center_box(width, height, self.size)
    # Ask the decoder for the smallest scale that keeps the box >= size.
    scale = min((box[2] - box[0]) / self.size, (box[3] - box[1]) / self.size)
    if scale > 1:
      image.draft('RGB', (math.ceil(width / scale), math.ceil(height / scale)))
    factor_x, factor_y = image.size[0] / width, image.size[1] / height
    box = (box[0] * factor_x, box[1] * factor_y, box[2] * factor_x, box[3] * factor_y)
    image = image.convert('RGB').resize((self.size, self.size), Image.BICUBIC, box=box)
    out = np.asarray(image)
    if rng is not None and rng.random() < 0.5:
      out = out[:, ::-1]
    if self.normalize == 'imagenet':
      return (out.astype(np.float32) - MEAN_RGB) / STDDEV_RGB
    return np.ascontiguousarray(out)
