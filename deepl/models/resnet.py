"""Residual networks with batch norm (He et al. 2015, arXiv:1512.03385).

One generic `ResNet` covers both families in the paper:

  ImageNet  7x7/2 conv + 3x3/2 max-pool stem, four stages of width 64..512.
            ResNet-18/34 use basic blocks, ResNet-50 bottleneck blocks.
  CIFAR     3x3 conv stem of width 16, three stages of width 16/32/64 with n
            basic blocks each (depth 6n+2): ResNet-20 (n=3), ResNet-56 (n=9).

Choices where the papers leave room, all matching torchvision:
  - The first block of every stage after the first downsamples by stride 2,
    and in bottleneck blocks that stride sits on the 3x3 conv ("ResNet v1.5"),
    which is more accurate than striding the first 1x1 conv.
  - Shortcuts are identity unless the shape changes, then a 1x1 conv + BN
    (option B). The CIFAR paper used zero-padding (option A); projections add
    ~3k parameters to ResNet-20 and are what most reimplementations use.
  - Convs use He-normal (fan-out) init and no bias, since BN follows each one.
  - `zero_init_residual=True` starts the last BN scale of each block at zero
    so every block begins as the identity (Goyal et al. 2017); it helps large
    batches. Off by default, as in the papers.

Calling convention (the same for every classifier in deepl.models):

  variables = model.init(rng, images, train=False)
  logits = model.apply(variables, images, train=False)  # running BN averages
  logits, updates = model.apply(variables, images, train=True,
                                mutable=['batch_stats'])
  variables = {**variables, 'batch_stats': updates['batch_stats']}

Under `jax.pmap(..., axis_name='batch')` (or a named `jax.vmap`, or
`shard_map`) pass `bn_axis_name='batch'` so training batch statistics are
averaged over the whole global batch rather than each device's shard. Under
`jax.jit` with a sharded batch, leave it None: the mean over the batch axis is
already global.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from deepl.models import checks
from deepl.models import layers

# He et al. 2015 ("Delving deep into rectifiers"): keeps activation variance
# constant through ReLU layers. Fan-out as in torchvision's ResNets.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
CONV_AXES = (None, None, 'conv_in', 'conv_out')


def _last_scale_init(zero: bool):
  return layers.axes(nn.initializers.zeros if zero else nn.initializers.ones, 'norm')


def _images(x):
  """Activations split by examples only (FSDP gathers the weights to them)."""
  return layers.constrain(x, 'batch', None, None, None)


def _shortcut(block, x, width, strides):
  """Identity when shapes agree, else a strided 1x1 projection + BN.

  Called inside a block's `__call__`, so the projection becomes a submodule of
  that block (`proj_conv`, `proj_bn`).
  """
  if x.shape[-1] == width and strides == (1, 1):
    return x
  x = block.conv(width, (1, 1), strides, name='proj_conv')(x)
  return block.norm(name='proj_bn')(x)


class BasicBlock(nn.Module):
  """Two 3x3 convs; output width `width` (ResNet-18/34, CIFAR ResNets)."""
  width: int
  strides: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x):
    s = (self.strides, self.strides)
    x = _images(x)
    y = self.conv(self.width, (3, 3), s, padding=1, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.width, (3, 3), padding=1, name='conv2')(y)
    y = self.norm(scale_init=_last_scale_init(self.zero_init_residual),
                  name='bn2')(y)
    return nn.relu(y + _shortcut(self, x, y.shape[-1], s))


class BottleneckBlock(nn.Module):
  """1x1 reduce, 3x3, 1x1 expand; output width 4 * `width` (ResNet-50)."""
  width: int
  strides: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  zero_init_residual: bool = False

  @nn.compact
  def __call__(self, x):
    s = (self.strides, self.strides)
    x = _images(x)
    y = self.conv(self.width, (1, 1), name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.width, (3, 3), s, padding=1, name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(4 * self.width, (1, 1), name='conv3')(y)
    y = self.norm(scale_init=_last_scale_init(self.zero_init_residual),
                  name='bn3')(y)
    return nn.relu(y + _shortcut(self, x, y.shape[-1], s))


BLOCKS = {'basic': BasicBlock, 'bottleneck': BottleneckBlock}
STEMS = ('imagenet', 'cifar')


class ResNet(nn.Module):
  """A ResNet classifier; see the module docstring for the variants.

  Attributes:
    stage_sizes: number of blocks in each stage, e.g. (2, 2, 2, 2).
    block: 'basic' (two 3x3 convs) or 'bottleneck' (1x1-3x3-1x1, 4x wide out).
    widths: width of each stage; the stem has width widths[0].
    stem: 'imagenet' (7x7/2 conv + 3x3/2 max-pool, for ~224px inputs) or
      'cifar' (3x3 conv, for ~32px inputs).
    num_classes: number of output logits.
    dtype: computation dtype; BN statistics stay float32.
    param_dtype: dtype of the parameters.
    bn_axis_name: mapped axis to average batch statistics over (pmap/vmap).
    zero_init_residual: start each block's last BN scale at zero.
    kernels: the layer set (deepl.models.layers): 'xla', flax's layers; 'cpu',
      deepl's CPU speed paths.
  """
  stage_sizes: Sequence[int]
  block: str = 'basic'
  widths: Sequence[int] = (64, 128, 256, 512)
  stem: str = 'imagenet'
  num_classes: int = 1000
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_axis_name: str | None = None
  zero_init_residual: bool = False
  kernels: str = 'xla'

  @nn.compact
  def __call__(self, x, *, train: bool):
    """Maps images [..., H, W, C] to float32 logits [..., num_classes]."""
    checks.expect(x, 'ResNet', 'images [..., height, width, channels]', min_ndim=3,
                  kind='floating')
    if self.block not in BLOCKS:
      raise ValueError(f'ResNet block must be one of {sorted(BLOCKS)}, '
                       f'got {self.block!r}')
    if self.stem not in STEMS:
      raise ValueError(f'ResNet stem must be one of {STEMS}, got {self.stem!r}')
    if len(self.stage_sizes) != len(self.widths):
      raise ValueError(
          f'ResNet needs one width per stage: stage_sizes='
          f'{tuple(self.stage_sizes)}, widths={tuple(self.widths)}')

    ops = layers.get(self.kernels)
    conv = functools.partial(ops.Conv, use_bias=False,
                             kernel_init=layers.axes(conv_init, *CONV_AXES),
                             dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(ops.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                             param_dtype=self.param_dtype, axis_name=self.bn_axis_name,
                             scale_init=_last_scale_init(False),
                             bias_init=layers.axes(nn.initializers.zeros, 'norm'))
    x = _images(x)

    if self.stem == 'imagenet':
      x = conv(self.widths[0], (7, 7), (2, 2), padding=3, name='stem_conv')(x)
      x = nn.relu(norm(name='stem_bn')(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      x = conv(self.widths[0], (3, 3), padding=1, name='stem_conv')(x)
      x = nn.relu(norm(name='stem_bn')(x))

    block_cls = BLOCKS[self.block]
    for i, (size, width) in enumerate(zip(self.stage_sizes, self.widths)):
      for j in range(size):
        # Downsample once per stage, at its first block (not in the first
        # stage: the stem has already reduced the resolution).
        strides = 2 if i > 0 and j == 0 else 1
        x = block_cls(width, strides, conv, norm, self.zero_init_residual,
                      name=f'stage{i + 1}_block{j + 1}')(x)

    x = jnp.mean(x, axis=(-3, -2))  # global average pool over H, W
    x = ops.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                  kernel_init=layers.axes(nn.initializers.lecun_normal(), 'embed', 'classes'),
                  bias_init=layers.axes(nn.initializers.zeros, 'classes'), name='head')(x)
    # Losses and softmax are unstable in half precision; hand tasks float32.
    return x.astype(jnp.float32)


# The named networks: subclasses that only change defaults, so each is still a
# Module class whose every field can be overridden (e.g. num_classes).


class ResNet18(ResNet):
  """ResNet-18: basic blocks (2, 2, 2, 2); 11.69M params at 1000 classes."""
  stage_sizes: Sequence[int] = (2, 2, 2, 2)


class ResNet34(ResNet):
  """ResNet-34: basic blocks (3, 4, 6, 3); 21.80M params at 1000 classes."""
  stage_sizes: Sequence[int] = (3, 4, 6, 3)


class ResNet50(ResNet):
  """ResNet-50: bottleneck blocks (3, 4, 6, 3); 25.56M params, 1000 classes."""
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = 'bottleneck'


class ResNet20(ResNet):
  """CIFAR ResNet-20: 3 basic blocks per stage of width 16/32/64; 0.27M."""
  stage_sizes: Sequence[int] = (3, 3, 3)
  widths: Sequence[int] = (16, 32, 64)
  stem: str = 'cifar'
  num_classes: int = 10


class ResNet56(ResNet20):
  """CIFAR ResNet-56: 9 basic blocks per stage of width 16/32/64; 0.86M."""
  stage_sizes: Sequence[int] = (9, 9, 9)
