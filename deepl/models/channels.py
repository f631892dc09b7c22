"""Per-channel sums, and the bias add whose gradient is one, as XLA:CPU runs them fast.

A convolution's bias gradient and a batch norm's statistics sum an [N, H, W, C]
array over everything but its few minor-most channels. XLA:CPU rewrites such
a reduction into a tree of reduce-windows that ran ~4x slower (ResNet-20's
shapes, C = 16-64) than summing rows of a few hundred contiguous floats and
then folding those, which is what `channel_sum` asks for.
"""

import jax
import jax.numpy as jnp

from deepl.models.fusion import materialize

# Reduction rows of about this many floats: fastest on XLA:CPU for channel
# counts 16-64 (256-1024 measured alike; 8192 was 2-3x slower).
_ROW = 512


def channel_sum(x: jax.Array) -> jax.Array:
  """x summed over every axis but the last: [..., C] -> [C]."""
  c = x.shape[-1]
  row = (_ROW // c) * c
  if row == 0 or x.size % row:
    return x.reshape(-1, c).sum(0)
  return x.reshape(-1, row).sum(0).reshape(-1, c).sum(0)


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """y + bias over the last axis; the bias gradient is a `channel_sum`."""
  return y + bias


def _add_bias_fwd(y, bias):
  return y + bias, None


def _add_bias_bwd(_, g):
  # One buffer for this sum and the layer below's gradients: XLA:CPU otherwise
  # fuses g's producer (e.g. a ReLU's backward) into both and computes it twice.
  g = materialize(g)
  # In float32: a bfloat16 sum of ~10^5 terms would keep few of their bits.
  # (bias has g's dtype: callers cast it to the compute dtype first.)
  return g, channel_sum(g.astype(jnp.float32)).astype(g.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)
