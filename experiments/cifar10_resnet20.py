"""CIFAR-10 with ResNet-20 (He et al. 2016), random crop + flip.

  deepl train --config=experiments/cifar10_resnet20.py --workdir=runs/cifar10_resnet20
  # offline, from the 4,000/1,000-image subset of real CIFAR-10 images:
  deepl train --config=experiments/cifar10_resnet20.py --workdir=runs/cifar10_resnet20 \
      --config.data.manual_dir=../shared/data/cifar10_subset

Measured here (2 CPU cores, the offline subset): 66.3% on the subset's 1,000 test images after
1,000 steps (32 epochs of its 4,000 training images), test loss 1.121, 348 s (2.5-3.3 steps/s).
The same math rounded in other orders: 67.3% (loss 1.142) before conv.py took XLA's
kernel gradient for the stem; 67.9%, 460 s, before also its column pairs and stride-2 input
gradients; before also deepl/models/batch_norm.py and conv.py: 67.1%, 508 s; before also the
fusion barriers of deepl/models/fusion.py: 66.7%, 677 s. A subset: no bar; the full 50,000-image set
would be the real benchmark (~91-92% for ResNet-20).
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
