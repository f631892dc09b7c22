"""Character-level language model on Tiny Shakespeare: shakespeare_lstm with a GRU.

  deepl train --config=experiments/shakespeare_gru.py --workdir=runs/shakespeare_gru \
      --config.data.manual_dir=../shared/data/tiny_shakespeare

Validation loss 1.411 nats/char (2.04 bits/char) after 1,500 steps, 757 s wall on 2 CPU cores.
History: docs/experiments.md.
"""

from deepl.config import sibling_config
from deepl.config import variant


def get_config(arg=None):
  variant(arg)
  return sibling_config(__file__, 'shakespeare_lstm', 'gru')
