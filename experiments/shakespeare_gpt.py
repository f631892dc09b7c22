"""Character-level GPT on Tiny Shakespeare: nanoGPT's "baby GPT" shape.

  # full size (6 layers, 6 heads, 384 wide, context 256, dropout 0.2), for a GPU/TPU:
  deepl train --config=experiments/shakespeare_gpt.py --workdir=runs/shakespeare_gpt \
      --config.train.compute_dtype=bfloat16
  # sized for a 2-core CPU (4 layers, 4 heads, 128 wide, rotary positions):
  deepl train --config=experiments/shakespeare_gpt.py:cpu --workdir=runs/shakespeare_gpt_cpu \
      --config.data.manual_dir=../shared/data/tiny_shakespeare
  deepl sample --workdir=runs/shakespeare_gpt_cpu --prompt="ROMEO:" --length=500 \
      --temperature=0.8 --top_k=40

Full size on one H100, bf16: best validation loss 1.4075 nats/char (2.03 bits/char) at step
1,250 (the best checkpoint is kept: it overfits after). :cpu on 2 CPU cores: 1.461 (2.11
bits/char) after 2,500 steps, 691 s wall. History: docs/experiments.md.
"""

from ml_collections import config_dict

from deepl.config import default_config
from deepl.config import variant


def get_config(arg=None):
  c = default_config()
  c.task = 'causal_lm'
  c.data.name = 'tiny_shakespeare'
  c.data.tokenizer = 'char'
  c.optim.name = 'adamw'
  c.optim.b2 = 0.99
  c.optim.weight_decay = 0.1
  c.optim.schedule = 'warmup_cosine'
  c.optim.end_lr_ratio = 0.1
  c.optim.clip_norm = 1.0
  c.train.log_every_steps = 100
  c.eval.batch_size = 64
  if variant(arg, ('cpu',)) == 'cpu':
    c.model = config_dict.ConfigDict({
        'name': 'gpt', 'num_layers': 4, 'num_heads': 4, 'width': 128, 'max_len': 128,
        'dropout': 0.1, 'position': 'rotary'})
    c.data.context = 128
    c.train.batch_size = 32
    c.train.num_steps = 2500
    c.optim.lr = 2e-3
    c.optim.warmup_steps = 100
    c.eval.every_steps = 500
    c.checkpoint.every_steps = 500
  else:
    c.model = config_dict.ConfigDict({
        'name': 'gpt', 'num_layers': 6, 'num_heads': 6, 'width': 384, 'max_len': 256,
        'dropout': 0.2})
    c.data.context = 256
    c.train.batch_size = 64
    c.train.num_steps = 5000
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 100
    c.eval.every_steps = 250
    c.checkpoint.every_steps = 250  # with each eval: it overfits after ~1,250 steps
    c.checkpoint.best_metric = 'loss'
    c.checkpoint.best_mode = 'min'
  return c
