"""Fashion-MNIST with the flax-examples CNN (conv32-pool-conv64-pool-dense256-dense10).

  deepl train --config=experiments/fashion_mnist_cnn.py --workdir=runs/fashion_mnist_cnn
  # offline, from the four original IDX files (checked against TFDS's sha256):
  deepl train --config=experiments/fashion_mnist_cnn.py --workdir=runs/fashion_mnist_cnn \
      --config.data.manual_dir=../shared/data/fashion_mnist

Measured here (2 CPU cores): RESULT_FASHION
"""

from deepl.config import default_config


def get_config(arg=None):
  del arg
  c = default_config()
  c.data.name = 'fashion_mnist'
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
