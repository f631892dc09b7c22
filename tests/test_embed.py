"""deepl's Embed: nn.Embed's parameters and outputs, a float32 gradient under bfloat16."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deepl.models import embed


def test_embed_matches_nn_embed_and_accumulates_gradients_in_float32():
  tokens = jnp.concatenate([jnp.full((4096,), 3), jnp.arange(10)]).astype(jnp.int32)
  ours = embed.Embed(10, 8, dtype=jnp.bfloat16)
  flax_embed = nn.Embed(10, 8, dtype=jnp.bfloat16)
  params = ours.init(jax.random.PRNGKey(0), tokens)
  assert jax.tree.structure(params) == jax.tree.structure(
      flax_embed.init(jax.random.PRNGKey(0), tokens))
  out = ours.apply(params, tokens)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_array_equal(out, flax_embed.apply(params, tokens))

  # Row 3 is the sum of 4,097 cotangents of ~1: float32 keeps it to ~1e-6;
  # a bfloat16 accumulation (nn.Embed's, at flax 0.12) is off by more than 1e-3.
  cotangent = 1 + jax.random.uniform(jax.random.PRNGKey(1), (len(tokens), 8)) / 64
  grad = jax.grad(lambda p: jnp.sum(ours.apply(p, tokens).astype(jnp.float32) * cotangent))(
      params)['params']['embedding']
  exact = np.zeros((10, 8))
  np.add.at(exact, np.asarray(tokens), np.asarray(cotangent.astype(jnp.bfloat16), np.float64))
  np.testing.assert_allclose(grad, exact, rtol=1e-5)
