"""Character-level language model on Tiny Shakespeare: a 2x512 LSTM.

  deepl train --config=experiments/shakespeare_lstm.py --workdir=runs/shakespeare_lstm \
      [--config.data.manual_dir=../shared/data/tiny_shakespeare]   # offline: input.txt
  deepl sample --workdir=runs/shakespeare_lstm --prompt="ROMEO:" --length=500 \
      --temperature=0.8 --top_k=40

Validation loss 1.458 nats/char (2.10 bits/char) after 1,500 steps, 958 s wall on 2 CPU cores.
History: docs/experiments.md.
"""

from ml_collections import config_dict

from deepl.config import default_config
from deepl.config import variant


def get_config(arg=None):
  cell = variant(arg, ('lstm', 'gru', 'rnn'), default='lstm')
  c = default_config()
  c.task = 'causal_lm'
  c.model = config_dict.ConfigDict({
      'name': 'rnn_lm', 'cell': cell, 'embed_dim': 128, 'hidden_dim': 512,
      'num_layers': 2, 'dropout': 0.1})
  c.data.name = 'tiny_shakespeare'
  c.data.tokenizer = 'char'
  c.data.context = 128
  c.train.batch_size = 32
  c.train.num_steps = 1500
  c.train.log_every_steps = 100
  c.optim.name = 'adamw'
  c.optim.lr = 3e-3
  c.optim.schedule = 'warmup_cosine'
  c.optim.warmup_steps = 100
  c.optim.clip_norm = 1.0
  c.eval.every_steps = 500
  c.eval.batch_size = 64
  c.checkpoint.every_steps = 500
  return c
