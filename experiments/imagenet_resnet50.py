"""ImageNet (ILSVRC 2012) with ResNet-50, the flax ImageNet example's recipe.

  deepl train --config=experiments/imagenet_resnet50.py --workdir=gs://bucket/runs/imagenet \
      --config.data.manual_dir=/data/imagenet --config.data.data_dir=gs://bucket/tfds \
      --distributed                                     # on every host of a TPU VM slice
  deepl train --config=experiments/imagenet_resnet50.py:folders \
      --config.data.manual_dir=/data/imagenet           # train/<synset>/, validation/<synset>/

The default reads TFDS's imagenet2012 layout from its manual tar files
(ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar; prepared once into
array_record, the JPEGs kept encoded); ':folders' reads the same images as an
image_folder. Input runs in data.workers processes per host: Inception crop
(8-100% of the area, aspect 3/4-4/3), flip, 224 px, ImageNet mean/std; eval
resizes and takes the central 224/256 crop. Training: SGD with Nesterov
momentum 0.9, lr 0.1 per 256 images (0.4 at batch 1,024), 5 warmup epochs then
cosine to 0 over 90 epochs, weight decay 1e-4, label smoothing 0.1, bfloat16
compute.

Expected: ~76% top-1 on the 50,000 validation images after 90 epochs. Anchors:
the flax example's ResNet-50 (warmup + cosine, 100 epochs) reports 76.4-76.7%
on 8 V100s (13 h fp32, 5-6 h mixed precision); Haiku's ImageNet example
76.2-76.5% at batch 1,024 (130 min on 32 TPU v3 cores). Not run here: it needs
the 140 GB of data and about a day of an 8-accelerator host.

Input, measured (python tools/data_throughput.py decode, docs/data.md): this
pipeline on 20,000 generated 300-500 px JPEGs ran at 132 / 169 / 231 images/s
with 0 / 1 / 2 workers on this project's shared 2-core CPU, about 100-120
images/s per core. A host feeding 8 accelerators at ~2,500-3,000 images/s
therefore needs some 24+ cores for input: set data.workers to the host's cores
less one or two (the default, -1).
"""

from deepl.config import default_config
from deepl.config import variant

EPOCH = 1_281_167  # train images
BATCH = 1024


def get_config(arg=None):
  arg = variant(arg, ('folders',))
  c = default_config()
  c.model.name = 'resnet50'
  c.data.name = 'image_folder' if arg == 'folders' else 'imagenet2012'
  c.data.image_size = 224
  c.data.augment = 'inception_crop'
  c.data.normalize = 'imagenet'
  c.task_options.label_smoothing = 0.1
  c.train.batch_size = BATCH
  c.train.num_steps = 90 * EPOCH // BATCH
  c.train.compute_dtype = 'bfloat16'
  c.train.log_every_steps = 100
  c.optim.name = 'sgd'
  c.optim.lr = 0.1 * BATCH / 256
  c.optim.momentum = 0.9
  c.optim.nesterov = True
  c.optim.weight_decay = 1e-4
  c.optim.schedule = 'warmup_cosine'
  c.optim.warmup_steps = 5 * EPOCH // BATCH
  c.eval.every_steps = EPOCH // BATCH * 5
  c.eval.batch_size = 1000
  c.checkpoint.every_steps = EPOCH // BATCH
  c.checkpoint.best_metric = 'accuracy'
  return c
