"""Two ways of steering XLA:CPU's fusion and reductions, shared by the CPU kernels.

They never change a value; each exists because a profile of a train step on
a 2-core CPU showed XLA:CPU doing more work than the math needs.
"""

import jax

# Reduction rows of about this many floats: fastest on XLA:CPU for channel
# counts 16-64 (256-1024 measured alike; 8192 was 2-3x slower).
_ROW = 512


def materialize(x):
  """x, kept as a buffer: its consumers read it instead of recomputing it.

  XLA fuses cheap elementwise producers into every consumer. That backfires
  where the consumer reads in another order: XLA:CPU computes a
  convolution's kernel gradient from a transposed copy of its input and fused
  the whole chain that made the input (a ResNet's batch norms, residual adds
  and ReLUs) into that transpose, recomputing it with strided reads; in CIFAR
  ResNet-20 those copies were ~45% of the step. An optimization barrier keeps
  the buffer. XLA:CPU deletes barriers before fusion unless its
  `cse_barrier_expander` pass is off, which the CPU kernels' compiler options
  do (deepl.kernels.compiler_options).
  """
  return jax.lax.optimization_barrier(x)


def channel_sum(x: jax.Array) -> jax.Array:
  """x summed over every axis but the last: [..., C] -> [C].

  As rows of ~512 contiguous floats, then the rows folded: XLA:CPU ran the
  plain reduction of an [N, H, W, C] array to its few minor-most channels as
  a tree of reduce-windows, ~4x slower at ResNet-20's shapes.
  """
  c = x.shape[-1]
  row = (_ROW // c) * c
  if row == 0 or x.size % row:
    return x.reshape(-1, c).sum(0)
  return x.reshape(-1, row).sum(0).reshape(-1, c).sum(0)
