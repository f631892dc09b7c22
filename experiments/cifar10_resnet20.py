"""CIFAR-10 with ResNet-20 (He et al. 2016), random crop + flip.

  deepl train --config=experiments/cifar10_resnet20.py --workdir=runs/cifar10_resnet20 \
      [--config.data.manual_dir=../shared/data/cifar10_subset]   # offline: a 4,000/1,000 subset

On the offline subset: 66.3% on its 1,000 test images after 1,000 steps, 348 s wall on 2 CPU
cores. History: docs/experiments.md.
"""

from deepl.config import default_config
from deepl.config import variant


def get_config(arg=None):
  variant(arg)
  c = default_config()
  c.model.name = 'resnet20'
  c.data.name = 'cifar10'
  c.data.augment = 'crop_flip'
  c.train.batch_size = 128
  c.train.num_steps = 1000
  c.train.log_every_steps = 50
  c.optim.lr = 0.1
  c.optim.nesterov = True
  c.optim.weight_decay = 5e-4
  c.optim.warmup_steps = 100
  c.eval.every_steps = 500
  c.eval.batch_size = 500
  c.checkpoint.every_steps = 500
  return c
