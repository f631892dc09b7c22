"""Embedding lookup that keeps the gradient in the parameters' dtype.

`nn.Embed` with dtype=bfloat16 casts the whole table to bfloat16 and then
gathers, so its gradient is a bfloat16 scatter-add, rounded at each of the
batch's additions into a row. On a GPU the updates to one row also contend:
in a real `deepl train` run of nanoGPT's character GPT on an H200 (batch
64 x 256, 65 ids, Tiny Shakespeare, bf16) that one scatter took 21-39 ms of
each 26-45 ms step, and the loop ran at 22-39 steps/s against the 134 of the
same step timed on uniformly random tokens. This `Embed` gathers the float32
rows and casts only them, so the scatter-add is float32 (exact to float32
rounding; on a GPU, float32 atomic adds). Parameters, init and outputs
are those of `nn.Embed`, under the same names, so checkpoints load either
way.
"""

import flax.linen as nn
import jax.numpy as jnp


class Embed(nn.Embed):
  """`nn.Embed`, whose lookup gathers in the parameter dtype and casts after."""

  def __call__(self, inputs):
    if not jnp.issubdtype(inputs.dtype, jnp.integer):
      raise ValueError('Input type must be an integer or unsigned integer.')
    rows = jnp.take(self.embedding, inputs, axis=0)  # out of range: NaN, as nn.Embed
    return rows if self.dtype is None else rows.astype(self.dtype)
