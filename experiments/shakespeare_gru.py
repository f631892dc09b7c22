"""Character-level language model on Tiny Shakespeare: shakespeare_lstm with a GRU.

  deepl train --config=experiments/shakespeare_gru.py --workdir=runs/shakespeare_gru \
      --config.data.manual_dir=../shared/data/tiny_shakespeare

Measured here (2 CPU cores): RESULT_SHAKESPEARE_GRU
"""

from deepl.config import sibling_config


def get_config(arg=None):
  del arg
  return sibling_config(__file__, 'shakespeare_lstm', 'gru')
