"""SST-2 sentiment with a bidirectional LSTM over words (length-sorted batches).

  deepl train --config=experiments/sst2_lstm.py --workdir=runs/sst2_lstm \
      [--config.data.manual_dir=../shared/data/sst2]   # offline: GLUE's TSVs
  # the GRU variant: --config=experiments/sst2_lstm.py:gru

84.29% validation accuracy (GLUE dev) after 3,000 steps, 188 s wall on 2 CPU cores.
History: docs/experiments.md.
"""

from ml_collections import config_dict

from deepl.config import default_config
from deepl.config import variant


def get_config(arg=None):
  cell = variant(arg, ('lstm', 'gru', 'rnn'), default='lstm')
  c = default_config()
  c.model = config_dict.ConfigDict({
      'name': 'rnn_classifier', 'cell': cell, 'embed_dim': 128, 'hidden_dim': 256,
      'num_layers': 1, 'bidirectional': True, 'dropout': 0.5, 'pool': 'mean'})
  c.data.name = 'glue/sst2'
  c.data.tokenizer = 'word'
  c.data.min_count = 2
  c.data.max_length = 64
  c.data.sort_window = 16  # batches of similar lengths: ~3x faster here than random ones
  c.train.batch_size = 64
  c.train.num_steps = 3000
  c.train.log_every_steps = 100
  c.optim.name = 'adamw'
  c.optim.lr = 2e-3
  c.optim.weight_decay = 1e-4
  c.optim.schedule = 'warmup_cosine'
  c.optim.warmup_steps = 100
  c.optim.clip_norm = 1.0
  c.eval.every_steps = 500
  c.eval.batch_size = 64
  c.checkpoint.every_steps = 500
  c.checkpoint.best_metric = 'accuracy'
  return c
