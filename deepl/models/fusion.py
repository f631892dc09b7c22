"""Hints to XLA's operator fusion that models may place; they never change values.

XLA fuses cheap elementwise producers into every consumer, recomputing them
rather than reading a buffer. Usually that saves memory traffic. It backfires
when the consumer reads in another order: XLA:CPU computes a convolution's
weight gradient from a transposed copy of the convolution's input, and
fuses the whole chain that made that input (a ResNet's batch norms, residual
adds and ReLUs, back through every block of a stage) into the transpose, so
each copy recomputes it with strided reads. In CIFAR ResNet-20 those copies
were ~45% of the train step.
"""

import jax


def materialize(x):
  """x, kept as a buffer: consumers read it instead of recomputing it.

  On CPU an optimization barrier: the same values, gradient through
  unchanged. XLA:CPU deletes barriers before fusion unless its
  `cse_barrier_expander` pass is disabled, which `deepl.xla_cpu` does;
  without that it does nothing. Elsewhere x itself: GPU and TPU fusion was
  not measured to need it, and a barrier there could stop a good fusion.
  """
  if jax.default_backend() != 'cpu':
    return x
  return jax.lax.optimization_barrier(x)
