"""TFDS builders for the datasets deepl knows, usable offline via manual_dir.

They write array_record files with plain `Tensor` (and encoder-less `Text`)
features, so neither writing nor reading needs TensorFlow.
`deepl.data.get_dataset` is the usual way in.
"""

import functools

from deepl.data.builders.cifar10 import Cifar10
from deepl.data.builders.dates import Dates
from deepl.data.builders.digits import Digits
from deepl.data.builders.glue import Glue
from deepl.data.builders.image_folder import ImageFolder
from deepl.data.builders.imagenet2012 import Imagenet2012
from deepl.data.builders.mnist import FashionMNIST
from deepl.data.builders.mnist import MNIST
from deepl.data.builders.speech_commands import SpeechCommands
from deepl.data.builders.spoken import SpokenDigits
from deepl.data.builders.spoken import SpokenNumbers
from deepl.data.builders.spoken_digit import SpokenDigit
from deepl.data.builders.tiny_shakespeare import TinyShakespeare

# name -> callable(data_dir=..., file_format=...) returning the builder. A
# 'builder/config' name is TFDS's spelling for one config of a builder.
BUILDERS = {b.name: b for b in (Digits, MNIST, FashionMNIST, Cifar10,
                                TinyShakespeare, Dates, SpokenDigits, SpokenNumbers,
                                SpokenDigit, SpeechCommands, ImageFolder,
                                Imagenet2012)}
BUILDERS['glue/sst2'] = functools.partial(Glue, config='sst2')
# The synthesized speech sets' small configs, for tests and smoke runs.
BUILDERS['spoken_digits/tiny'] = functools.partial(SpokenDigits, config='tiny')
BUILDERS['spoken_numbers/tiny'] = functools.partial(SpokenNumbers, config='tiny')
