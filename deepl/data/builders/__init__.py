"""TFDS builders for the datasets deepl knows, usable offline via manual_dir.

They write array_record files with plain `Tensor` features, so neither writing
nor reading needs TensorFlow. `deepl.data.get_dataset` is the usual way in.
"""

from deepl.data.builders.cifar10 import Cifar10
from deepl.data.builders.digits import Digits
from deepl.data.builders.mnist import FashionMNIST
from deepl.data.builders.mnist import MNIST

BUILDERS = {b.name: b for b in (Digits, MNIST, FashionMNIST, Cifar10)}
