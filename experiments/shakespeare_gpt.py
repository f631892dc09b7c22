"""Character-level GPT on Tiny Shakespeare: nanoGPT's "baby GPT" shape.

  # full size (6 layers, 6 heads, 384 wide, context 256, dropout 0.2), for a GPU/TPU:
  deepl train --config=experiments/shakespeare_gpt.py --workdir=runs/shakespeare_gpt
  # sized for a 2-core CPU:
  deepl train --config=experiments/shakespeare_gpt.py:cpu --workdir=runs/shakespeare_gpt_cpu \
      --config.data.manual_dir=../shared/data/tiny_shakespeare
  deepl sample --workdir=runs/shakespeare_gpt_cpu --prompt="ROMEO:" --length=500 \
      --temperature=0.8 --top_k=40

nanoGPT reports a best validation loss of 1.4697 in 5,000 steps on one A100 for the full size.

Full size on one H100 (80GB HBM3; JAX 0.11.2, bf16 compute, `--config.train.compute_dtype=bfloat16
--config.data.prefetch=2`): best validation loss 1.4075 nats/char (2.03 bits/char) at step 1,250,
after ~45 s of training steps (1.4855 at 750, 1.4418 at 1,000, 1.4149 at 1,500); then it overfits
as nanoGPT's does (train 0.59, validation 1.94 at step 4,500; the run was stopped at step 4,635 by
the device's time limit). Hence a checkpoint with every eval, the best by validation loss kept. Not
the same split as nanoGPT's (the last 10% of the text; TFDS holds out 2 x 55,770 characters). The
loop ran at 20-33 steps/s, ~430,000 tokens/s, MFU 2.5-4% of the bf16 peak, while
tools/benchmark.py runs the same step at 128 steps/s (MFU 15%). A later trace on an H200 found
why: the embedding's gradient, a bfloat16 scatter-add into 65 rows, took 21-39 ms a step. The
embeddings now gather float32 rows and cast them (deepl/models/embed.py); not yet re-timed.

Measured here (2 CPU cores, 2026-11-27), :cpu (4 layers, 4 heads, width 128, rotary positions,
dropout 0.1, 801,792 parameters): validation loss 1.461 nats/char (2.11 bits/char) after 2,500
steps, 691 s wall; 1.623 at step 1,000 (4.3 min of training), 1.482 at step 2,000 (8.9 min).
3.85 steps/s, 15,800 tokens/s, 87 GFLOP/s (MFU 45% of the matmul peak measured in the run). The
first run (before the 2-D Dense layers, CPU attention and huge pages) reached the same losses at
2.34 steps/s, 1,130 s. At equal training time it is ahead of shakespeare_lstm (1.659 at 5.5 min,
1.490 at 10.7 min, 1.458 at 15.7 min), not of shakespeare_gru (1.438 at 11.9 min). The same shape with learned positions and no dropout
reached 1.494 (1.719 at step 1,000).
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
