"""ViT: the Vision Transformer (Dosovitskiy et al. 2021) for small images.

Non-overlapping patch_size x patch_size patches, each linearly embedded (a
Conv with stride = kernel = patch_size, which is exactly a Dense on the
flattened patch), a learned [CLS] token, learned positions, `num_layers`
pre-LayerNorm encoder blocks, a final LayerNorm and a linear head on the [CLS]
output ('cls') or on the mean over patches ('mean'). Init as the original
code: Xavier-uniform kernels, normal(0.02) positions, zero [CLS] and a zero
head, so every class starts at logit 0.

The defaults are ViT-Tiny's width/heads (192/3) with 6 layers and 4x4
patches: 28x28 MNIST gives 49 patches, 32x32 CIFAR 64.

  model = ViT(num_classes=10)
  variables = model.init(rng, images, train=False)     # images [..., H, W, C]
  logits = model.apply(variables, images, train=True,
                       rngs={'dropout': dropout_rng})   # [..., num_classes]
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from deepl.models import checks
from deepl.models import layers
from deepl.models import transformer

POOLS = ('cls', 'mean')


class ViT(nn.Module):
  """Patch embedding, [CLS] + positions, encoder blocks, LayerNorm, head.

  Attributes:
    num_classes: number of output logits.
    patch_size: side of the square patches; must divide the image height and
      width.
    width: model width.
    num_layers: encoder blocks.
    num_heads: attention heads; must divide width.
    mlp_dim: hidden width of each MLP; 0 means 4 * width.
    dropout: rate after the position embedding and on every residual branch;
      active only with train=True.
    pool: 'cls' (the [CLS] token's output) or 'mean' (mean over patches, and
      no [CLS] token at all).
    dtype: compute dtype; logits are float32.
    param_dtype: dtype of the parameters.
    remat: recompute each block's activations in the backward pass (less
      memory for about a third more compute).
    attention_implementation: 'xla', or 'cudnn' for the fused kernel on a GPU
      (see transformer.dot_product_attention).
    kernels: the layer set (deepl.models.layers): 'xla', stock; 'cpu', deepl's
      CPU speed paths.
  """
  num_classes: int = 10
  patch_size: int = 4
  width: int = 192
  num_layers: int = 6
  num_heads: int = 3
  mlp_dim: int = 0
  dropout: float = 0.0
  pool: str = 'cls'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False
  attention_implementation: str | None = 'xla'
  kernels: str = 'xla'

  @nn.compact
  def __call__(self, images, *, train: bool):
    """Maps float images [..., H, W, C] to float32 logits [..., num_classes]."""
    checks.expect(images, 'ViT', 'images [..., height, width, channels]', min_ndim=3,
                  kind='floating')
    transformer.check_heads(self.width, self.num_heads)
    if self.pool not in POOLS:
      raise ValueError(f'ViT pool must be one of {POOLS}, got {self.pool!r}')
    height, width_px, channels = images.shape[-3:]
    p = self.patch_size
    if height % p or width_px % p:
      raise ValueError(f'image {height}x{width_px} does not split into '
                       f'{p}x{p} patches: use a patch_size that divides both')
    # Any leading dims (none for one image under vmap) become one batch axis.
    lead = images.shape[:-3]
    x = images.reshape((-1, height, width_px, channels))

    ops = layers.get(self.kernels)
    x = ops.Conv(self.width, (p, p), strides=(p, p), padding='VALID', dtype=self.dtype,
                 param_dtype=self.param_dtype,
                 kernel_init=layers.axes(nn.initializers.lecun_normal(), None, None, None, 'embed'),
                 bias_init=layers.axes(nn.initializers.zeros, 'embed'), name='patch_embed')(x)
    x = x.reshape(x.shape[0], -1, self.width)             # (b, patches, W)
    if self.pool == 'cls':
      cls = self.param('cls', layers.axes(nn.initializers.zeros, None, None, 'embed'),
                       (1, 1, self.width), self.param_dtype)
      cls = jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, self.width))
      x = jnp.concatenate([cls, x], axis=1)
    positions = self.param('pos_embedding',
                           layers.axes(nn.initializers.normal(0.02), None, 'position', 'embed'),
                           (1,) + x.shape[1:], self.param_dtype)
    x = x + positions.astype(x.dtype)
    x = nn.Dropout(self.dropout, deterministic=not train)(x)

    init = nn.initializers.xavier_uniform()
    for i in range(self.num_layers):
      block = transformer.Block(
          self.num_heads, self.mlp_dim or 4 * self.width, dropout=self.dropout,
          layer_norm_epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype,
          kernel_init=init, residual_init=init,
          implementation=self.attention_implementation, kernels=self.kernels,
          name=f'block{i}')
      x = transformer.run_block(block, x, remat=self.remat, train=train)
    x = layers.layer_norm(epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype,
                          name='ln_f')(x)

    x = x[:, 0] if self.pool == 'cls' else x.mean(axis=1)
    x = ops.Dense(self.num_classes, kernel_init=layers.axes(nn.initializers.zeros, 'embed', 'classes'),
                  bias_init=layers.axes(nn.initializers.zeros, 'classes'), dtype=self.dtype,
                  param_dtype=self.param_dtype, name='head')(x)
    # Losses and softmax are unstable in half precision; hand tasks float32.
    return x.astype(jnp.float32).reshape(lead + (self.num_classes,))
