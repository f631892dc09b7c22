"""MNIST with the flax-examples CNN (conv32-pool-conv64-pool-dense256-dense10).

  deepl train --config=experiments/mnist_cnn.py --workdir=runs/mnist_cnn \
      [--config.data.manual_dir=../shared/data/mnist]   # offline: the four IDX files

99.22% on the full test split after 1,800 steps, 75 s wall on 2 CPU cores.
History: docs/experiments.md.
"""

from deepl.config import default_config
from deepl.config import variant


def get_config(arg=None):
  variant(arg)
  c = default_config()
  c.data.name = 'mnist'
  c.train.batch_size = 128
  c.train.num_steps = 1800
  c.train.log_every_steps = 100
  c.optim.lr = 0.1
  c.optim.nesterov = True
  c.optim.warmup_steps = 100
  c.eval.every_steps = 600
  c.eval.batch_size = 1000
  c.checkpoint.every_steps = 600
  return c
