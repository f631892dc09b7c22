"""2-D convolution: flax.linen.Conv's variables and math, lowered faster on XLA:CPU.

`Conv` is a drop-in for `nn.Conv` on [..., H, W, C] inputs as deepl's models
use it: the same parameters ('kernel' [kh, kw, C_in, C_out], 'bias' [C_out])
and initialisers, equal values and gradients (tested against flax). Two
things differ on a CPU, both measured in the train steps of
experiments/benchmarks.py on 2 cores:

- Few input channels (kh * kw * C_in <= 27, stride 1: the first layer of an
  image model). XLA:CPU's convolution ran the MNIST CNN's 1-channel first
  layer at ~20 GFLOP/s (3.1 ms forward). Here the forward pass is that many
  shifted multiply-adds, which XLA fuses into one loop with the bias and
  ReLU after it (0.5 ms), and the kernel's gradient is one matmul of the
  input's patches with the output gradient.
- The bias gradient is a `channels.channel_sum`, not XLA's slow form of
  that reduction, and the gradient reaching the convolution is kept as one
  buffer for it and the kernel's gradient (XLA had computed it twice).

With both, the MNIST CNN's train step (benchmarks.py:cnn) went from ~20 to
~34 steps/s.

GPUs and TPUs get `lax.conv_general_dilated` as flax calls it.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from deepl.models.channels import add_bias

_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')
# Kernel taps (kh * kw * C_in) up to which the CPU forward is shifted
# multiply-adds: MNIST's 3x3x1 first layer ran 5.8x and CIFAR's 3x3x3 stem 3.8x
# as fast as XLA's convolution, forward only.
_MAX_SHIFT_TAPS = 27


def _lax_conv(x, kernel, strides, padding):
  return jax.lax.conv_general_dilated(x, kernel, strides, padding,
                                      dimension_numbers=_DIMENSIONS)


def _patches(x, kernel_shape, padding):
  """[N, H', W', kh * kw * C]: each output position's receptive field, (i, j, c) order."""
  kh, kw, _, _ = kernel_shape
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  h, w = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
  return [xp[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _shift_conv(x, kernel, padding):
  """A stride-1 convolution as one multiply-add per kernel tap, in float32."""
  k = kernel.astype(jnp.float32)
  y = 0.0
  for t, window in enumerate(_patches(x.astype(jnp.float32), kernel.shape, padding)):
    i, j = divmod(t, kernel.shape[1])
    for c in range(kernel.shape[2]):
      y = y + window[..., c:c + 1] * k[i, j, c]
  return y.astype(x.dtype)


def _shift_conv_fwd(x, kernel, padding):
  return _shift_conv(x, kernel, padding), (x, kernel)


def _shift_conv_bwd(padding, residuals, dy):
  x, kernel = residuals
  kh, kw, c_in, c_out = kernel.shape
  patches = jnp.concatenate(_patches(x, kernel.shape, padding), axis=-1)
  dkernel = (patches.reshape(-1, kh * kw * c_in).T @ dy.reshape(-1, c_out)).reshape(kernel.shape)
  # The input's gradient (not needed for a first layer: XLA then drops it).
  dx, = jax.vjp(lambda x: _lax_conv(x, kernel, (1, 1), padding), x)[1](dy)
  return dx, dkernel


_shift_conv.defvjp(_shift_conv_fwd, _shift_conv_bwd)


def conv2d(x, kernel, strides=(1, 1), padding='SAME'):
  """NHWC x HWIO convolution, with the CPU lowering described above.

  padding: 'SAME', 'VALID', or ((top, bottom), (left, right)).
  """
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], strides, padding)
  padding = tuple(tuple(p) for p in padding)
  kh, kw, c_in, _ = kernel.shape
  if (jax.default_backend() == 'cpu' and tuple(strides) == (1, 1)
      and kh * kw * c_in <= _MAX_SHIFT_TAPS):
    return _shift_conv(x, kernel, padding)
  return _lax_conv(x, kernel, strides, padding)


def _pair(v) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class Conv(nn.Module):
  """A 2-D convolution over [..., H, W, C]; flax.linen.Conv's fields and variables.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw) or one int for both.
    strides: (sh, sw) or one int.
    padding: 'SAME', 'VALID', one int for every side, ((top, bottom), (left,
      right)), or (pad_h, pad_w).
    use_bias: add a learned per-channel bias.
    dtype: computation dtype (None: the input's). Parameters stay float32.
    kernel_init, bias_init: initialisers (flax's defaults).
  """
  features: int
  kernel_size: int | Sequence[int]
  strides: int | Sequence[int] = 1
  padding: Any = 'SAME'
  use_bias: bool = True
  dtype: Any = None
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  bias_init: Callable[..., Any] = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    kh, kw = _pair(self.kernel_size)
    kernel = self.param('kernel', self.kernel_init, (kh, kw, x.shape[-1], self.features),
                        jnp.float32)
    dtype = self.dtype or x.dtype
    batch_shape = x.shape[:-3]
    x = x.reshape((-1,) + x.shape[-3:]).astype(dtype)
    padding = self.padding
    if isinstance(padding, int):
      padding = ((padding, padding),) * 2
    elif not isinstance(padding, str):
      padding = tuple(_pair(p) for p in padding)
    y = conv2d(x, kernel.astype(dtype), _pair(self.strides), padding)
    if self.use_bias:
      y = add_bias(y, self.param('bias', self.bias_init, (self.features,), jnp.float32)
                   .astype(dtype))
    return y.reshape(batch_shape + y.shape[1:])
