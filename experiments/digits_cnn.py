"""The default experiment: the flax-examples CNN on scikit-learn's 8x8 digits.

What `deepl train` runs with no --config; offline, no download (the data ships
inside scikit-learn).

  deepl train --config=experiments/digits_cnn.py --workdir=runs/digits_cnn

Measured here (2 CPU cores): RESULT_DIGITS
"""

from deepl.config import default_config


def get_config(arg=None):
  del arg
  return default_config()
