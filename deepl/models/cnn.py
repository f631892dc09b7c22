"""The small convolutional classifier from flax/examples/mnist.

Two 3x3 convolutions with average pooling, then two dense layers: 824,458
parameters on 28x28x1 inputs with 10 classes. It is the model behind the quick
experiments, so it stays exactly the reference architecture.

  model = CNN(num_classes=10)
  variables = model.init(jax.random.key(0), images, train=False)
  logits = model.apply(variables, images, train=False)  # images [..., H, W, C]
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from deepl.models import dense
from deepl.models.conv import Conv


class CNN(nn.Module):
  """Conv(32) relu avgpool, Conv(64) relu avgpool, Dense(256) relu, Dense.

  Attributes:
    num_classes: number of output logits.
    dtype: computation dtype (e.g. jnp.bfloat16). Parameters stay float32
      (flax's default `param_dtype`), so the optimizer updates full-precision
      weights.
  """
  num_classes: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    """Maps images [..., H, W, C] to float32 logits [..., num_classes].

    `train` is unused (no dropout or batch norm) but required so that every
    classifier is called the same way.
    """
    del train
    x = Conv(32, kernel_size=(3, 3), dtype=self.dtype)(x)
    x = nn.relu(x)
    x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = Conv(64, kernel_size=(3, 3), dtype=self.dtype)(x)
    x = nn.relu(x)
    x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    # Flatten only the trailing H, W, C so the model also runs on a single
    # unbatched image (e.g. under jax.vmap for per-example gradients).
    x = x.reshape(x.shape[:-3] + (-1,))
    x = dense.Dense(256, dtype=self.dtype)(x)
    x = nn.relu(x)
    x = dense.Dense(self.num_classes, dtype=self.dtype)(x)
    # Losses and softmax are unstable in half precision; hand tasks float32.
    return x.astype(jnp.float32)
