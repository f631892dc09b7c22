"""`Conv`: flax.linen.Conv, with the 2-D convolutions deepl's models use lowered faster on XLA:CPU.

`Conv` is `nn.Conv` itself (every field, the same variables, init and
values; tested against flax) whose `conv_general_dilated` is this module's.
For a 2-D NHWC convolution without dilation or groups that is two
rewrites, each measured in the train steps of experiments/benchmarks.py on 2
cores, and XLA's own convolution otherwise:

- Few input channels (kh * kw * C_in <= 27, stride 1: the first layer of an
  image model). XLA:CPU's convolution ran the MNIST CNN's 1-channel first
  layer at ~20 GFLOP/s (3.1 ms forward). Here the forward pass is that many
  shifted multiply-adds, which XLA fuses into one loop with the bias and
  ReLU after it (0.5 ms). With one input channel the kernel's gradient is
  one matmul of the input's patches with the output gradient; with more,
  XLA's (ResNet-20's step 1.023x as fast with XLA's for its 3-channel stem).
- Few channels in and out (at most 16 each, 3x3, 'SAME', stride 1, an even
  width: the first stage of a CIFAR ResNet). XLA:CPU's convolution runs
  these at ~100 GFLOP/s, against ~170 at 32 or 64 channels. Here two
  neighbouring output columns are computed as one output pixel with twice
  the channels: a stride-(1, 2) convolution with a (3, 4, C_in, 2 C_out)
  kernel holding the 3x3 kernel twice, shifted one column (a reshape then
  gives the usual layout). A third more multiply-adds, at the faster rate:
  ResNet-20's 16-channel convolution 6.3 -> 5.3 ms forward, and the same for
  the input's gradient, which is that convolution of the output gradient
  with the flipped kernel. The kernel's gradient stays XLA's.

Every convolution's input is also kept as a buffer (`buffers.materialize`),
so XLA does not recompute the chain that made it inside the transpose that
feeds the kernel's gradient.

The rewrites carry custom VJPs: no forward-mode AD (`jax.jvp`) through them;
use the stock layers (kernels='xla') for that.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from deepl.kernels.cpu.buffers import channel_sum
from deepl.kernels.cpu.buffers import materialize

_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')
# Kernel taps (kh * kw * C_in) up to which the CPU forward is shifted
# multiply-adds: MNIST's 3x3x1 first layer ran 5.8x and CIFAR's 3x3x3 stem 3.8x
# as fast as XLA's convolution, forward only.
_MAX_SHIFT_TAPS = 27
# Input and output channels up to which a 3x3 stride-1 'SAME' convolution
# computes column pairs (measured at 8 and 16; 32 out was slower, 32 in the same).
_MAX_PAIRED_CHANNELS = 16
_SAME_3X3 = ((1, 1), (1, 1))


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


def _kernel_grad(x, kernel, dy, strides, padding):
  """XLA's own gradient of `_lax_conv` with respect to the kernel."""
  return jax.vjp(lambda k: _lax_conv(x, k, strides, padding), kernel)[1](dy)[0]


def _shift_conv_bwd(padding, residuals, dy):
  x, kernel = residuals
  # The input's gradient (not needed for a first layer: XLA then drops it).
  dx, = jax.vjp(lambda x: _lax_conv(x, kernel, (1, 1), padding), x)[1](dy)
  kh, kw, c_in, c_out = kernel.shape
  if c_in > 1:
    return dx, _kernel_grad(x, kernel, dy, (1, 1), padding)
  # One matmul of the input's patches with dy: 1.9 ms against XLA's 2.1-2.4 for
  # MNIST's 1 -> 32 channels at 28x28. At CIFAR's 3 -> 16 at 32x32 it took
  # 6.5-7.9 ms against XLA's 2.7-3.7.
  patches = jnp.concatenate(_patches(x, kernel.shape, padding), axis=-1)
  return dx, (patches.reshape(-1, kh * kw).T @ dy.reshape(-1, c_out)).reshape(kernel.shape)


_shift_conv.defvjp(_shift_conv_fwd, _shift_conv_bwd)


def _paired_columns(x, kernel):
  """A 3x3 'SAME' stride-1 convolution, two output columns per output pixel."""
  kh, _, c_in, c_out = kernel.shape
  zeros = jnp.zeros((kh, 1, c_in, c_out), kernel.dtype)
  # Output channel block 0 is column 2j (input columns 2j-1 .. 2j+1), block
  # 1 column 2j+1 (2j .. 2j+2): one window of 4 input columns at stride 2.
  pair = jnp.concatenate([jnp.concatenate([kernel, zeros], 1),
                          jnp.concatenate([zeros, kernel], 1)], axis=-1)
  y = _lax_conv(x, pair, (1, 2), _SAME_3X3)
  return y.reshape(x.shape[:3] + (c_out,))


@jax.custom_vjp
def _column_pair_conv(x, kernel):
  return _paired_columns(x, kernel)


def _column_pair_conv_fwd(x, kernel):
  return _paired_columns(x, kernel), (x, kernel)


def _column_pair_conv_bwd(residuals, dy):
  x, kernel = residuals
  # The input's gradient: dy convolved with the flipped, in/out-swapped kernel
  # (autodiff would differentiate the strided form, ~9x slower here).
  dx = _paired_columns(dy, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))
  return dx, _kernel_grad(x, kernel, dy, (1, 1), _SAME_3X3)


_column_pair_conv.defvjp(_column_pair_conv_fwd, _column_pair_conv_bwd)


def conv2d(x, kernel, strides=(1, 1), padding='SAME'):
  """An NHWC x HWIO convolution through the rewrites above where they apply.

  padding: 'SAME', 'VALID', or ((top, bottom), (left, right)).
  """
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], strides, padding)
  padding = tuple(tuple(p) for p in padding)
  kh, kw, c_in, c_out = kernel.shape
  strides = tuple(strides)
  if strides == (1, 1) and kh * kw * c_in <= _MAX_SHIFT_TAPS:
    return _shift_conv(x, kernel, padding)
  if (strides == (1, 1) and (kh, kw) == (3, 3) and padding == _SAME_3X3
      and x.shape[2] % 2 == 0 and max(c_in, c_out) <= _MAX_PAIRED_CHANNELS):
    return _column_pair_conv(x, kernel)
  return _lax_conv(x, kernel, strides, padding)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, **kwargs):
  """jax.lax.conv_general_dilated, through `conv2d` where it is a plain 2-D NHWC one."""
  plain = lhs.ndim == 4 and feature_group_count == 1 and precision is None and not kwargs and (
      jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DIMENSIONS)
      == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers))
  for dilation in (lhs_dilation, rhs_dilation):
    plain = plain and (dilation is None or all(d == 1 for d in dilation))
  if not plain:
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, precision=precision, **kwargs)
  return conv2d(materialize(lhs), rhs, window_strides, padding)


@jax.custom_vjp
def add_bias(y, bias):
  """y + bias over the last axis; the bias gradient a `channel_sum` of one kept buffer."""
  return y + bias


def _add_bias_fwd(y, bias):
  return y + bias, None


def _add_bias_bwd(_, g):
  # One buffer for this sum and the convolution's gradients: XLA:CPU otherwise
  # fuses g's producer (a ReLU's or a pool's backward) into both and computes it
  # twice. The sum in float32: in bfloat16 a sum of ~10^5 terms keeps few bits.
  g = materialize(g)
  return g, channel_sum(g.astype(jnp.float32)).astype(g.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class Conv(nn.Conv):
  """flax.linen.Conv (same fields, variables and values) with `conv_general_dilated` above,
  and the bias added by `add_bias`."""
  conv_general_dilated: Any = conv_general_dilated

  @nn.compact
  def __call__(self, inputs):
    if not self.use_bias:
      return super().__call__(inputs)
    # flax's convolution without its bias, in this module's scope (the same
    # variable tree), then the bias, created after the kernel as flax does.
    conv = self.clone(parent=self, use_bias=False, name="stock")
    nn.share_scope(self, conv)
    y = conv(inputs)
    bias = self.param('bias', self.bias_init, (self.features,), self.param_dtype)
    return add_bias(y, bias.astype(y.dtype))
