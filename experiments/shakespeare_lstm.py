"""Character-level language model on Tiny Shakespeare: a 2x512 LSTM.

  deepl train --config=experiments/shakespeare_lstm.py --workdir=runs/shakespeare_lstm
  # offline, from input.txt (checked against TFDS's sha256):
  deepl train --config=experiments/shakespeare_lstm.py --workdir=runs/shakespeare_lstm \
      --config.data.manual_dir=../shared/data/tiny_shakespeare
  deepl sample --workdir=runs/shakespeare_lstm --prompt="ROMEO:" --length=500 \
      --temperature=0.8 --top_k=40

Measured here (2 CPU cores): validation loss 1.458 nats/char (2.10 bits/char) after 1,500 steps
(1.489 at step 1,000); 1.1 steps/s = 4,500 tokens/s on an otherwise idle machine, so about
23 minutes for the run. (The measured run was stopped with SIGTERM at step 600 and resumed.)
Measured before the LSTM's hand-written step and W_h^T copy in deepl/models/rnn.py (same
math): benchmarks.py:lstm, the same shape, ran ~1.2x as many steps/s after them; not re-run.
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
