"""GPT: a decoder-only transformer language model (GPT-2 / nanoGPT).

Token embedding (+ learned positions, or rotary positions inside attention),
dropout, `num_layers` causal pre-LayerNorm blocks, a final LayerNorm and the
output projection, tied to the token embedding by default. Init as nanoGPT:
every kernel and embedding normal(0.02), biases zero, and the two projections
that write into the residual stream (attention output, second MLP layer)
normal(0.02 / sqrt(2 * num_layers)).

The default shape is nanoGPT's "baby GPT" for Shakespeare characters: 6 layers,
6 heads, width 384, context 256. With vocab_size=65 and use_bias=False it has
10,646,784 parameters without the position table, the 10.65M nanoGPT prints
(it leaves the position embeddings out of its count).

  model = GPT(vocab_size=65)
  variables = model.init(rng, tokens, train=False)      # tokens (b, T)
  logits = model.apply(variables, tokens, train=True,
                       rngs={'dropout': dropout_rng})    # (b, T, V) float32
  cache = model.apply(variables, batch_size, method='init_cache')
  logits, cache = model.apply(variables, prompt, cache, method='decode')
  logits, cache = model.apply(variables, next_token[:, None], cache,
                              method='decode')           # one step

Decoding keeps every layer's keys and values for `max_len` positions, so a
sequence can never grow past max_len tokens. The chunk length is static and
checked at trace time; the cache index is a traced number under jit, so an
overrun there cannot raise: its logits come back NaN instead, and a sampler
should stop at `model.max_len` (called eagerly, decode raises ValueError).
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from deepl.models import checks
from deepl.models import layers
from deepl.models import transformer

POSITIONS = ('learned', 'rotary')


class GPT(nn.Module):
  """Decoder-only transformer LM: tokens (b, T) -> next-token logits.

  Attributes:
    vocab_size: number of token ids.
    num_layers: transformer blocks.
    num_heads: attention heads; must divide width.
    width: model (embedding) width.
    mlp_dim: hidden width of each MLP; 0 means 4 * width.
    max_len: the longest context, in tokens (learned position table and KV
      cache size).
    dropout: rate after the embedding and on every residual branch; active
      only with train=True. No attention-probability dropout (see
      transformer.py: it would rule out fused attention kernels).
    position: 'learned' absolute positions or 'rotary' (in every attention).
    tie_embeddings: output projection = token embedding transposed.
    use_bias: biases in the Dense layers and LayerNorms (GPT-2 has them;
      nanoGPT's Shakespeare config turns them off).
    dtype: compute dtype; logits are float32.
    param_dtype: dtype of the parameters.
    attention_implementation: 'xla', or 'cudnn' for the fused kernel on a GPU
      (see transformer.dot_product_attention).
    remat: recompute each block's activations in the backward pass (less
      memory for about a third more compute).
    kernels: the layer set (deepl.models.layers): 'xla', stock; 'cpu', deepl's
      CPU speed paths.
  """
  vocab_size: int
  num_layers: int = 6
  num_heads: int = 6
  width: int = 384
  mlp_dim: int = 0
  max_len: int = 256
  dropout: float = 0.0
  position: str = 'learned'
  tie_embeddings: bool = True
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention_implementation: str | None = 'xla'
  remat: bool = False
  kernels: str = 'xla'

  def setup(self):
    # setup() rather than compact: __call__ and decode share these.
    transformer.check_heads(self.width, self.num_heads)
    if self.position not in POSITIONS:
      raise ValueError(f'GPT position must be one of {POSITIONS}, '
                       f'got {self.position!r}')
    rotary = self.position == 'rotary'
    self.embed = transformer.Embedder(
        self.vocab_size, self.width, max_len=0 if rotary else self.max_len,
        tie=self.tie_embeddings, dtype=self.dtype, param_dtype=self.param_dtype,
        kernels=self.kernels)
    self.drop = nn.Dropout(self.dropout)
    residual_init = nn.initializers.normal(
        0.02 / math.sqrt(2 * self.num_layers))
    self.blocks = [
        transformer.Block(
            self.num_heads, self.mlp_dim or 4 * self.width,
            dropout=self.dropout, causal=True, rotary=rotary,
            use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype,
            residual_init=residual_init, implementation=self.attention_implementation,
            kernels=self.kernels)
        for _ in range(self.num_layers)]
    self.ln_f = layers.layer_norm(epsilon=1e-5, use_bias=self.use_bias,
                                  dtype=self.dtype, param_dtype=self.param_dtype)

  def __call__(self, tokens, *, train: bool):
    """Maps int tokens (b, T) to float32 logits (b, T, vocab_size).

    Position t's logits predict token t + 1 and see tokens 0..t only.
    """
    self._check_length(tokens)
    x = self.drop(self.embed(tokens), deterministic=not train)
    for block in self.blocks:
      x = transformer.run_block(block, x, remat=self.remat, train=train)
    return self.embed.logits(self.ln_f(x))

  def init_cache(self, batch_size: int):
    """The decoding state before any token: empty keys/values, index 0."""
    head_dim = self.width // self.num_heads
    layer = lambda: transformer.init_kv_cache(
        batch_size, self.max_len, self.num_heads, head_dim, self.dtype)
    return {'index': jnp.zeros((), jnp.int32),
            'layers': tuple(layer() for _ in range(self.num_layers))}

  def decode(self, tokens, cache):
    """Feeds tokens (b, t) after `cache`; returns logits (b, t, V), new cache.

    t may be a whole prompt or one step; the tokens take positions
    cache['index'] .. cache['index'] + t - 1. Always deterministic.
    """
    self._check_length(tokens)
    length = tokens.shape[-1]
    index = cache['index']
    try:  # only an eager call can check the index; see the module docstring
      if int(index) + length > self.max_len:
        raise ValueError(
            f'decoding {length} more tokens after {int(index)} would pass '
            f"the model's max_len {self.max_len}")
    except (jax.errors.ConcretizationTypeError,
            jax.errors.TracerIntegerConversionError):
      pass
    positions = index + jnp.arange(length)
    x = self.embed(tokens, positions)
    layers = []
    for block, layer_cache in zip(self.blocks, cache['layers']):
      x, layer_cache = block(x, train=False, positions=positions,
                             cache=layer_cache, cache_index=index)
      layers.append(layer_cache)
    logits = self.embed.logits(self.ln_f(x))
    # Past max_len the cache write would be clamped and silently overwrite the
    # last slot: make the overrun loud instead.
    logits = jnp.where(index + length <= self.max_len, logits, jnp.nan)
    return logits, {'index': index + length, 'layers': tuple(layers)}

  def _check_length(self, tokens):
    checks.expect(tokens, 'GPT', 'tokens (batch, length)', ndim=2, kind='integer')
    length = tokens.shape[-1]
    if length > self.max_len:
      raise ValueError(f"context {length} is longer than the model's max_len "
                       f'{self.max_len}: use at most {self.max_len} tokens or '
                       f'a model with a larger max_len')
