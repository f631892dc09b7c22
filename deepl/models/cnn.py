"""The small convolutional classifier from flax/examples/mnist.

Two 3x3 convolutions with average pooling, then two dense layers: 824,458
parameters on 28x28x1 inputs with 10 classes. It is the model behind the quick
experiments, so it stays exactly the reference architecture.

  model = CNN(num_classes=10)
  variables = model.init(jax.random.key(0), images, train=False)
  logits = model.apply(variables, images, train=False)  # images [..., H, W, C]
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from deepl.models import checks
from deepl.models import layers


class CNN(nn.Module):
  """Conv(32) relu avgpool, Conv(64) relu avgpool, Dense(256) relu, Dense.

  Attributes:
    num_classes: number of output logits.
    dtype: computation dtype (e.g. jnp.bfloat16).
    param_dtype: dtype of the parameters (float32: the optimizer updates
      full-precision weights whatever the compute dtype).
    kernels: the layer set (deepl.models.layers): 'xla', flax's layers; 'cpu',
      deepl's CPU speed paths.
  """
  num_classes: int = 10
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'xla'

  @nn.compact
  def __call__(self, x, *, train: bool):
    """Maps images [..., H, W, C] to float32 logits [..., num_classes].

    `train` is unused (no dropout or batch norm) but required so that every
    classifier is called the same way.
    """
    del train
    checks.expect(x, 'CNN', 'images [..., height, width, channels]', min_ndim=3,
                  kind='floating')
    ops = layers.get(self.kernels)
    conv = functools.partial(
        ops.Conv, kernel_size=(3, 3), dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=layers.axes(nn.initializers.lecun_normal(), None, None, 'conv_in', 'conv_out'),
        bias_init=layers.axes(nn.initializers.zeros, 'conv_out'))
    dense = lambda features, axes: ops.Dense(
        features, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=layers.axes(nn.initializers.lecun_normal(), *axes),
        bias_init=layers.axes(nn.initializers.zeros, axes[1]))
    # Activations split by examples only (FSDP gathers the weights to them).
    images = lambda x: layers.constrain(x, 'batch', None, None, None)
    x = conv(32)(images(x))
    x = nn.relu(images(x))
    x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = conv(64)(x)
    x = nn.relu(images(x))
    x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    # Flatten only the trailing H, W, C so the model also runs on a single
    # unbatched image (e.g. under jax.vmap for per-example gradients).
    x = x.reshape(x.shape[:-3] + (-1,))
    x = dense(256, ('embed', 'mlp'))(x)
    x = nn.relu(x)
    x = dense(self.num_classes, ('mlp', 'classes'))(x)
    # Losses and softmax are unstable in half precision; hand tasks float32.
    return x.astype(jnp.float32)
