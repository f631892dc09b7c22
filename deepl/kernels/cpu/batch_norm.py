"""Batch norm over the last axis, with reductions XLA:CPU runs fast.

`BatchNorm` is `flax.linen.BatchNorm` for features on the last axis: the
same fields and defaults, variables ('params': scale, bias; 'batch_stats':
mean, var), math (biased batch variance E[x^2] - E[x]^2 clipped at 0,
float32 statistics, running averages with `momentum`, no update at init),
and values and gradients to float rounding (tested against flax).

Why: a batch norm's four per-channel sums (of x and x^2 going forward, of dy
and dy * x_hat going back) reduce a long array to its few minor-most
elements, which XLA:CPU runs slowly unless asked as `buffers.channel_sum`
asks. Autodiff's own backward pass reduces in the slow form, so the
training-time normalisation carries a hand-written VJP. In CIFAR ResNet-20's
train step on a 2-core CPU that cut each batch norm's forward and backward
2-3x.

The custom VJP rules out forward-mode AD (`jax.jvp`), and its backward pass
sums over `axis_name` itself, so take gradients inside the named map
(pmap, a named vmap); flax's layer (kernels='xla') has neither limit.
Unsupported fields (another axis, axis_index_groups, use_fast_variance=False,
a mask) are a ValueError naming kernels='xla'.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from deepl.kernels.cpu.buffers import channel_sum
from deepl.kernels.cpu.buffers import materialize


def _stats(x, axis_name):
  """Per-channel mean and variance over the batch, across devices when axis_name is set."""
  n = x.size // x.shape[-1]
  mean, mean2 = channel_sum(x) / n, channel_sum(x * x) / n
  if axis_name is not None:
    mean, mean2 = jax.lax.pmean((mean, mean2), axis_name)
  return mean, jnp.maximum(mean2 - mean * mean, 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def normalize_batch(x, scale, bias, epsilon, axis_name):
  """(y, mean, var): x normalised by its own per-channel batch statistics.

  x is float32 [..., C]; scale and bias [C]. Under pmap or a named vmap,
  axis_name averages the statistics over every device's shard (equal shards).
  """
  return _normalize_fwd(x, scale, bias, epsilon, axis_name)[0]


def _normalize_fwd(x, scale, bias, epsilon, axis_name):
  mean, var = _stats(x, axis_name)
  rstd = jax.lax.rsqrt(var + epsilon)
  y = (x - mean) * (rstd * scale) + bias
  return (y, mean, var), (x, mean, rstd, scale)


def _normalize_bwd(epsilon, axis_name, residuals, cotangents):
  del epsilon
  x, mean, rstd, scale = residuals
  dy, dmean, dvar = cotangents
  dy = materialize(dy)  # read by both sums and by dx: one buffer
  n = x.size // x.shape[-1]
  xhat = (x - mean) * rstd
  dbias = channel_sum(dy)
  dscale = channel_sum(dy * xhat)
  gbias, gscale = dbias, dscale
  if axis_name is not None:  # the statistics are means over every shard
    gbias, gscale, n = jax.lax.psum((dbias, dscale, n), axis_name)
  # d mean / dx = 1/n; d var / dx = 2 (x - mean) / n (the clip at 0 aside).
  dx = (scale * rstd) * (dy - gbias / n - xhat * (gscale / n))
  dx = dx + dmean / n + dvar * (2.0 / n) * (x - mean)
  return dx, dscale, dbias


normalize_batch.defvjp(_normalize_fwd, _normalize_bwd)


class BatchNorm(nn.BatchNorm):
  """flax.linen.BatchNorm over the last axis, normalising with `normalize_batch`."""

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    if (self.axis not in (-1, x.ndim - 1) or self.axis_index_groups is not None
        or not self.use_fast_variance or mask is not None):
      raise ValueError("deepl's CPU BatchNorm normalises the last axis over the whole batch "
                       "only: use kernels='xla' (flax's BatchNorm) for this one")
    use_running_average = nn.merge_param('use_running_average', self.use_running_average,
                                         use_running_average)
    c = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (c,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (c,), jnp.float32)
    scale = (self.param('scale', self.scale_init, (c,), self.param_dtype) if self.use_scale
             else jnp.ones((c,), jnp.float32))
    bias = (self.param('bias', self.bias_init, (c,), self.param_dtype) if self.use_bias
            else jnp.zeros((c,), jnp.float32))
    # flax's output dtype: the given one, else x's and the parameters' promoted.
    dtype = self.dtype or jnp.result_type(x, scale, bias)
    x32, scale, bias = (a.astype(jnp.float32) for a in (x, scale, bias))
    if use_running_average:
      mul = jax.lax.rsqrt(ra_var.value + self.epsilon) * scale
      return ((x32 - ra_mean.value) * mul + bias).astype(dtype)
    # At init the statistics are not stored and the axis need not exist (as flax).
    initializing = self.is_initializing()
    y, mean, var = normalize_batch(x32, scale, bias, self.epsilon,
                                   None if initializing else self.axis_name)
    if not initializing:
      ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y.astype(dtype)
