"""Speed benchmarks: four model families at fixed shapes, SGD with momentum.

For measuring speed (steps/s, MFU), not accuracy: the shapes are those of the
performance issue (#5), the optimizer is the same plain SGD (momentum 0.9,
constant lr 0.1, no clipping, decay or augmentation) for all four, so the
PyTorch twins in tools/torch_benchmark.py compute exactly the same step.

  cnn       flax-examples MNIST CNN, batch 128, on mnist
  resnet20  CIFAR ResNet-20, batch 128, on cifar10
  lstm      char LSTM, 2 layers x 512 hidden, embed 128, context 128, batch 32,
            on tiny_shakespeare
  gpt_mini  GPT, 4 layers, 4 heads, width 256, context 256, batch 16, no
            dropout, on tiny_shakespeare

and two for accelerators, not in the PyTorch comparison:

  gpt2_small  GPT-2 small: 12 layers, 12 heads, width 768, context 1024,
            vocabulary 50,304 (GPT-2's 50,257 padded as nanoGPT does),
            124M parameters, batch 16, bf16 compute, AdamW (nanoGPT's
            betas, decay and clipping). Speed only: there is no GPT-2
            tokenizer here, so `deepl train` would fit Shakespeare's
            characters with a 50,304-way output.
  gpt2_medium the same at GPT-2 medium's shape: 24 layers, 16 heads, width
            1024, 355M parameters (for the sharded-state memory table).

Synthetic batches of the real shapes (no data needed; char models use a
65-token vocabulary unless --vocab_size says otherwise):

  python tools/benchmark.py --config=experiments/benchmarks.py:gpt_mini \
      [--steps=20 --windows=3 --json=gpt_mini.json]
  python tools/torch_benchmark.py [--models=cnn,lstm --steps=10 --windows=3]

They are real experiments too (real data; the tokenizer's vocabulary then
comes from the text, 66 ids for Tiny Shakespeare with the pad id):

  deepl train --config=experiments/benchmarks.py:lstm --workdir=runs/bench_lstm \
      --config.data.manual_dir=../shared/data/tiny_shakespeare
"""

from ml_collections import config_dict

from deepl.config import default_config

VARIANTS = ('cnn', 'resnet20', 'lstm', 'gpt_mini', 'gpt2_small', 'gpt2_medium')


def get_config(arg=None):
  if arg not in VARIANTS:
    raise ValueError(f'benchmarks.py needs a variant: one of {", ".join(VARIANTS)} '
                     f'(e.g. --config=experiments/benchmarks.py:cnn), not {arg!r}')
  c = default_config()
  c.optim.name = 'sgd'
  c.optim.lr = 0.1
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.schedule = 'constant'
  c.optim.warmup_steps = 0
  c.train.num_steps = 1000
  c.train.log_every_steps = 50
  c.eval.every_steps = 500
  c.checkpoint.every_steps = 500
  if arg == 'cnn':
    c.model = config_dict.ConfigDict({'name': 'cnn'})
    c.data.name = 'mnist'
    c.train.batch_size = 128
  elif arg == 'resnet20':
    c.model = config_dict.ConfigDict({'name': 'resnet20'})
    c.data.name = 'cifar10'
    c.train.batch_size = 128
  elif arg == 'lstm':
    c.task = 'causal_lm'
    c.model = config_dict.ConfigDict({
        'name': 'rnn_lm', 'cell': 'lstm', 'embed_dim': 128, 'hidden_dim': 512,
        'num_layers': 2, 'dropout': 0.0})
    c.data.name = 'tiny_shakespeare'
    c.data.tokenizer = 'char'
    c.data.context = 128
    c.train.batch_size = 32
  elif arg == 'gpt_mini':
    c.task = 'causal_lm'
    c.model = config_dict.ConfigDict({
        'name': 'gpt', 'num_layers': 4, 'num_heads': 4, 'width': 256, 'max_len': 256,
        'dropout': 0.0})
    c.data.name = 'tiny_shakespeare'
    c.data.tokenizer = 'char'
    c.data.context = 256
    c.train.batch_size = 16
  else:  # gpt2_small, gpt2_medium
    c.task = 'causal_lm'
    layers, heads, width = (12, 12, 768) if arg == 'gpt2_small' else (24, 16, 1024)
    c.model = config_dict.ConfigDict({
        'name': 'gpt', 'num_layers': layers, 'num_heads': heads, 'width': width,
        'max_len': 1024, 'dropout': 0.0, 'vocab_size': 50304})
    c.data.name = 'tiny_shakespeare'
    c.data.tokenizer = 'char'
    c.data.context = 1024
    c.train.batch_size = 16
    c.train.compute_dtype = 'bfloat16'
    c.optim.name = 'adamw'
    c.optim.lr = 6e-4
    c.optim.b1, c.optim.b2 = 0.9, 0.95
    c.optim.weight_decay = 0.1
    c.optim.clip_norm = 1.0
  return c
