"""SST-2 sentiment with a bidirectional GRU over words: sst2_lstm with cell='gru'.

  deepl train --config=experiments/sst2_gru.py --workdir=runs/sst2_gru \
      --config.data.manual_dir=../shared/data/sst2
  deepl predict --workdir=runs/sst2_gru --input="a gorgeous , witty film"   # positive<TAB>1.0000

84.86% validation accuracy (GLUE dev) after 3,000 steps, 165 s wall on 2 CPU cores.
History: docs/experiments.md.
"""

from deepl.config import sibling_config
from deepl.config import variant


def get_config(arg=None):
  variant(arg)
  return sibling_config(__file__, 'sst2_lstm', 'gru')
