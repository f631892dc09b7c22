"""Character-level language model on Tiny Shakespeare: shakespeare_lstm with a GRU.

  deepl train --config=experiments/shakespeare_gru.py --workdir=runs/shakespeare_gru \
      --config.data.manual_dir=../shared/data/tiny_shakespeare

Measured here (2 CPU cores): validation loss 1.411 nats/char (2.04 bits/char) after 1,500 steps
(1.528 at 500, 1.438 at 1,000), 757 s wall; 2.0 steps/s = 8,200 tokens/s (1,089 s and 1.5
steps/s before the hand-written GRU step and huge pages).
"""

from deepl.config import sibling_config
from deepl.config import variant


def get_config(arg=None):
  variant(arg)
  return sibling_config(__file__, 'shakespeare_lstm', 'gru')
