"""An encoder-decoder transformer (Vaswani et al. 2017) with pre-LayerNorm.

Encoder: token embedding + learned source positions, dropout, `num_layers`
bidirectional blocks that never attend to source padding, a final LayerNorm:
the `memory` (b, S, W). Decoder: the same token embedding + learned target
positions, dropout, `num_layers` blocks of causal self-attention,
cross-attention to the memory (padding hidden) and an MLP, a final LayerNorm,
and the output projection, tied to the token embedding by default. Source and
target share one vocabulary and one embedding table (Press & Wolf 2017);
their position tables are separate, since position 3 of a date string and
position 3 of its translation have nothing in common. Init as GPT: normal(0.02)
everywhere, the residual projections normal(0.02 / sqrt(2 * num_layers)).

  model = EncoderDecoder(vocab_size=V)
  variables = model.init(rng, inputs, input_length, decoder_inputs, train=False)
  logits = model.apply(variables, inputs, input_length, decoder_inputs,
                       train=True, rngs={'dropout': rng})   # (b, T, V)
  # Generation (see deepl/decoding.py):
  memory = model.apply(variables, inputs, input_length, method='encode')
  cache = model.apply(variables, batch_size, method='init_cache')
  logits, cache = model.apply(variables, tokens, cache, memory, input_length,
                              method='decode')             # tokens (b, t)

`input_length` (b,) counts each row's real source tokens; positions past it
are padding. The decoder's KV cache holds `max_len` target positions, like
GPT's (see gpt.py on overruns); cross-attention recomputes its keys and
values from `memory` at every step, which for short sources costs less than
caching them would complicate the beam bookkeeping.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from deepl.models import checks
from deepl.models import embed
from deepl.models import layers
from deepl.models import transformer


class EncoderDecoder(nn.Module):
  """Seq2seq transformer: (source, target prefix) -> next-target-token logits.

  Attributes:
    vocab_size: number of token ids, shared by source and target (including
      any BOS/EOS ids the task adds).
    num_layers: blocks in the encoder, and again in the decoder.
    num_heads: attention heads; must divide width.
    width: model width.
    mlp_dim: hidden width of each MLP; 0 means 4 * width.
    max_len: the longest source and the longest target (decoder input), in
      tokens: both position tables and the decoder's KV cache.
    dropout: rate after the embeddings and on every residual branch; active
      only with train=True.
    tie_embeddings: output projection = token embedding transposed.
    use_bias: biases in the Dense layers and LayerNorms.
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
  num_layers: int = 3
  num_heads: int = 4
  width: int = 256
  mlp_dim: int = 0
  max_len: int = 64
  dropout: float = 0.0
  tie_embeddings: bool = True
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention_implementation: str | None = 'xla'
  remat: bool = False
  kernels: str = 'xla'

  def setup(self):
    transformer.check_heads(self.width, self.num_heads)
    # Positions are added here, per side; the Embedder owns only the tokens
    # and the (tied) output projection.
    self.embed = transformer.Embedder(self.vocab_size, self.width, max_len=0,
                                      tie=self.tie_embeddings, dtype=self.dtype,
                                      param_dtype=self.param_dtype, kernels=self.kernels)
    position = lambda: embed.Embed(
        self.max_len, self.width, dtype=self.dtype, param_dtype=self.param_dtype,
        embedding_init=layers.axes(transformer.DEFAULT_INIT, 'position', 'embed'))
    self.source_positions = position()
    self.target_positions = position()
    self.drop = nn.Dropout(self.dropout)
    residual_init = nn.initializers.normal(
        0.02 / math.sqrt(2 * self.num_layers))
    block = lambda causal: transformer.Block(
        self.num_heads, self.mlp_dim or 4 * self.width, dropout=self.dropout,
        causal=causal, cross_attention=causal, use_bias=self.use_bias,
        dtype=self.dtype, param_dtype=self.param_dtype, residual_init=residual_init,
        implementation=self.attention_implementation, kernels=self.kernels)
    self.encoder_blocks = [block(False) for _ in range(self.num_layers)]
    self.decoder_blocks = [block(True) for _ in range(self.num_layers)]
    layer_norm = lambda: layers.layer_norm(epsilon=1e-5, use_bias=self.use_bias,
                                           dtype=self.dtype, param_dtype=self.param_dtype)
    self.encoder_norm = layer_norm()
    self.decoder_norm = layer_norm()

  def __call__(self, inputs, input_length, decoder_inputs, *, train: bool):
    """Teacher forcing: float32 logits (b, T, vocab_size).

    Args:
      inputs: int source tokens (b, S).
      input_length: int (b,), real tokens per source row.
      decoder_inputs: int (b, T), the target shifted right (BOS first);
        position t's logits predict target token t + 1 and see decoder inputs
        0..t and the whole (unpadded) source.
      train: enables dropout (needs a 'dropout' rng).
    """
    checks.expect(decoder_inputs, 'EncoderDecoder', 'decoder_inputs (batch, length)', ndim=2,
                  kind='integer')
    memory = self.encode(inputs, input_length, train=train)
    length = decoder_inputs.shape[-1]
    self._check_length(length, 'target')
    x = self.embed(decoder_inputs) + self.target_positions(jnp.arange(length))
    x = self.drop(x, deterministic=not train)
    context_mask = self._source_mask(input_length, inputs.shape[-1])
    for block in self.decoder_blocks:
      x = transformer.run_block(block, x, remat=self.remat, train=train, context=memory,
                                context_mask=context_mask)
    return self.embed.logits(self.decoder_norm(x))

  def encode(self, inputs, input_length, *, train: bool = False):
    """Source tokens (b, S) -> memory (b, S, W); padding rows are garbage that
    the decoder's cross-attention mask never reads."""
    checks.expect(inputs, 'EncoderDecoder', 'inputs (batch, length)', ndim=2, kind='integer')
    checks.expect(input_length, 'EncoderDecoder', 'input_length (batch,)', ndim=1,
                  kind='integer')
    length = inputs.shape[-1]
    self._check_length(length, 'source')
    x = self.embed(inputs) + self.source_positions(jnp.arange(length))
    x = self.drop(x, deterministic=not train)
    mask = self._source_mask(input_length, length)
    for block in self.encoder_blocks:
      x = transformer.run_block(block, x, remat=self.remat, train=train, mask=mask)
    return self.encoder_norm(x)

  def init_cache(self, batch_size: int):
    """The decoding state before any target token: empty cache, index 0."""
    head_dim = self.width // self.num_heads
    layer = lambda: transformer.init_kv_cache(
        batch_size, self.max_len, self.num_heads, head_dim, self.dtype)
    return {'index': jnp.zeros((), jnp.int32),
            'layers': tuple(layer() for _ in range(self.num_layers))}

  def decode(self, tokens, cache, memory, input_length):
    """Feeds target tokens (b, t) after `cache` -> (logits (b, t, V), cache).

    The tokens take positions cache['index'] .. + t - 1; feeding a whole
    target at once gives the teacher-forced logits. Always deterministic.
    Past max_len the logits are NaN (the cache cannot hold the tokens).
    """
    length = tokens.shape[-1]
    self._check_length(length, 'target')
    index = cache['index']
    try:  # only an eager call can check a concrete index
      if int(index) + length > self.max_len:
        raise ValueError(
            f'decoding {length} more tokens after {int(index)} would pass '
            f"the model's max_len {self.max_len}")
    except (jax.errors.ConcretizationTypeError,
            jax.errors.TracerIntegerConversionError):
      pass
    positions = index + jnp.arange(length)
    x = self.embed(tokens) + self.target_positions(positions)
    context_mask = self._source_mask(input_length, memory.shape[-2])
    layers = []
    for block, layer_cache in zip(self.decoder_blocks, cache['layers']):
      x, layer_cache = block(x, train=False, positions=positions,
                             context=memory, context_mask=context_mask,
                             cache=layer_cache, cache_index=index)
      layers.append(layer_cache)
    logits = self.embed.logits(self.decoder_norm(x))
    logits = jnp.where(index + length <= self.max_len, logits, jnp.nan)
    return logits, {'index': index + length, 'layers': tuple(layers)}

  @staticmethod
  def _source_mask(input_length, source_len: int):
    # A row of length 0 (a zero row padding an eval batch) still sees its
    # first key: a query with nothing to attend to is ill-defined.
    valid = jnp.arange(source_len) < jnp.maximum(input_length, 1)[:, None]
    return transformer.key_padding_mask(valid)

  def _check_length(self, length: int, side: str):
    if length > self.max_len:
      raise ValueError(f"{side} length {length} is longer than the model's "
                       f'max_len {self.max_len}: use a model with max_len >= '
                       f'{length}')
