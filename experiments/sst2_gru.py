"""SST-2 sentiment with a bidirectional GRU over words: sst2_lstm with cell='gru'.

  deepl train --config=experiments/sst2_gru.py --workdir=runs/sst2_gru \
      --config.data.manual_dir=../shared/data/sst2

Measured here (2 CPU cores): RESULT_SST2_GRU
"""

from deepl.config import sibling_config


def get_config(arg=None):
  del arg
  return sibling_config(__file__, 'sst2_lstm', 'gru')
