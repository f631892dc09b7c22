"""The transformer pieces every transformer model here is built from.

  MultiHeadAttention  q/k/v/out projections around dot_product_attention;
                      self- or cross-attention, masks, causal, rotary, KV cache.
  dot_product_attention  the model's attention: jax.nn.dot_product_attention
                      (XLA, or cuDNN's fused kernel where asked), or the
                      `kernels` set's own.
  gelu                exact (erf) GELU.
  Block               pre-LayerNorm residual block: self-attention, optional
                      cross-attention (decoder blocks), MLP.
  Embedder            token embedding, optional learned absolute positions, and
                      the output projection, optionally tied to the embedding.
  apply_rotary        rotary position embedding (RoFormer, Su et al. 2021).
  init_kv_cache       an empty key/value cache for one attention layer.
  check_heads         the width / num_heads check every model runs first.

Shapes: b batch, T query length, S key/value length, h heads, d head_dim,
W width. Activations are (b, T, W); inside attention (b, T, h, d), the layout
jax.nn.dot_product_attention takes. Masks are boolean, True = may attend, and
broadcast to (b, h, T, S): (b, 1, T, S) or (b, 1, 1, S) for padding.

  block = Block(num_heads=4, mlp_dim=1024, causal=True)
  y = block.apply(variables, x, train=False)                  # (b, T, W)
  cache = init_kv_cache(b, max_len, num_heads=4, head_dim=W // 4)
  y, cache = block.apply(variables, x_chunk, train=False, cache=cache,
                         cache_index=0)                       # incremental

Attention goes through jax.nn.dot_product_attention. `implementation='cudnn'`
asks for cuDNN's fused flash kernel (bf16/fp16 on a GPU) for every attention
without a mask (full or causal); masked attention (padding, a KV cache) stays
on XLA's path. It is a field, never a guess from the host: deepl's command
line sets it where the run's platform and dtype can take it (GPT-2 small's
bf16 train step ran 2.0x as fast on an H100 with it). `kernels='cpu'` takes
deepl/kernels/cpu/attention.py instead (1.8x as fast on a 2-core CPU).

Dropout: there is no dropout on the attention probabilities. The fused kernels
never materialise the probabilities, so dropping them would force the slow
explicit path on every backend; dropout sits on the residual branches instead
(after the attention output and after the MLP), where GPT-2/nanoGPT and ViT
also put it.

KV cache, functional: a layer's cache is a dict {'key', 'value'} of
(b, max_len, h, d) arrays, passed in and returned, never a flax collection.
Decoding writes the new keys/values at `cache_index` (the position of the
first new token) and lets query i see the cached slots 0 .. cache_index + i,
so every shape is fixed and the step jit-compiles once. Keys are stored
already rotated, so a rotary layer never re-rotates its past.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from deepl.models import embed
from deepl.models import layers

Initializer = Callable[..., jax.Array]

_HALF = (jnp.bfloat16, jnp.float16)

# GPT-2's init for every matmul and embedding; residual projections are
# usually scaled down further (see Block.residual_init).
DEFAULT_INIT = nn.initializers.normal(stddev=0.02)

Cache = dict[str, jax.Array]

def gelu(x):
  """Exact GELU, x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)) (PyTorch's nn.GELU()).

  Equal to jax.nn.gelu(x, approximate=False) to float32 rounding, which goes
  through erfc: XLA:CPU evaluates erf's single polynomial about 2.5x faster.
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * np.sqrt(0.5).astype(x.dtype)))


IMPLEMENTATIONS = ('xla', 'cudnn')


def dot_product_attention(q, k, v, *, mask=None, is_causal: bool = False,
                          implementation: str | None = 'xla', kernels: str = 'xla'):
  """softmax(q k^T / sqrt(d)) v, as jax.nn.dot_product_attention.

  q (b, T, h, d), k and v (b, S, h, d); mask bool, broadcastable to
  (b, h, T, S), True = may attend; is_causal: query i sees keys <= i.
  Returns (b, T, h, d). implementation: 'xla' (None: the same), or 'cudnn'
  for the fused kernel where there is no mask; kernels: the layer set whose
  attention to use (see the module docstring).
  """
  implementation = implementation or 'xla'
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'attention implementation must be one of {IMPLEMENTATIONS}, '
                     f'got {implementation!r}')
  own = layers.get(kernels).attention
  if own is not None:
    if implementation != 'xla':
      raise ValueError(f"kernels={kernels!r} has its own attention: use implementation='xla' "
                       "with it, or kernels='xla'")
    return own(q, k, v, mask=mask, is_causal=is_causal)
  if implementation == 'cudnn' and mask is None:
    return jax.nn.dot_product_attention(q, k, v, is_causal=is_causal, implementation='cudnn')
  return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)


def check_heads(width: int, num_heads: int):
  """Raises ValueError unless `width` splits evenly into `num_heads` heads."""
  if num_heads <= 0:
    raise ValueError(f'num_heads must be positive, got {num_heads}')
  if width % num_heads:
    raise ValueError(
        f'width {width} is not divisible by num_heads {num_heads}: pick a '
        f'width that is a multiple of num_heads (e.g. '
        f'{(width // num_heads + 1) * num_heads}) or another num_heads')


def init_kv_cache(batch_size: int, max_len: int, num_heads: int,
                  head_dim: int, dtype: Any = jnp.float32) -> Cache:
  """The empty cache of one attention layer: zero keys and values.

  `dtype` should be the layer's compute dtype (bf16 halves the memory).
  """
  shape = (batch_size, max_len, num_heads, head_dim)
  return {'key': jnp.zeros(shape, dtype), 'value': jnp.zeros(shape, dtype)}


def key_padding_mask(valid):
  """(b, S) bool, True on real tokens -> (b, 1, 1, S): no query sees a pad."""
  return valid[:, None, None, :]


def apply_rotary(x, positions, base: float = 10000.0):
  """Rotates x (..., T, h, d) by angles positions (..., T) * base^(-2i/d).

  The two halves of the head dimension are the two coordinates of d/2 planes
  (the GPT-NeoX / LLaMA layout, not RoFormer's interleaved pairs): plane i is
  (x[..., i], x[..., i + d/2]), turned by positions * base^(-2i/d). Rotations
  compose, so <rot(q, m), rot(k, n)> depends only on n - m: attention sees
  relative offsets, and position 0 is the identity. Computed in float32 (large
  angles lose all precision in bf16) and returned in x's dtype.
  """
  d = x.shape[-1]
  if d % 2:
    raise ValueError(f'rotary embeddings need an even head_dim, got {d}')
  freqs = base ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)      # (d/2,)
  angles = jnp.asarray(positions, jnp.float32)[..., None] * freqs
  angles = angles[..., None, :]                       # (..., T, 1, d/2)
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class MultiHeadAttention(nn.Module):
  """Multi-head dot-product attention with q/k/v/out projections.

  Self-attention when `context` is None, else cross-attention from x to
  `context`. Parameters: `query`, `key`, `value` (W_in, h, d) and `out`
  (h, d, W_out) kernels, with biases if `use_bias`.

  Attributes:
    num_heads: h.
    head_dim: d; 0 means x's width // num_heads (which must divide).
    out_features: width of the output; 0 means x's width.
    use_bias: biases on the four projections.
    rotary: rotate queries and keys by their positions (self-attention only;
      cross-attention has no shared positions to be relative to).
    dtype: compute dtype; the softmax runs in float32.
    param_dtype: dtype of the parameters.
    kernel_init: init of the q/k/v kernels.
    out_kernel_init: init of the output kernel.
    implementation: 'xla' or 'cudnn' (see dot_product_attention).
    kernels: the layer set (deepl.models.layers).
  """
  num_heads: int
  head_dim: int = 0
  out_features: int = 0
  use_bias: bool = True
  rotary: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = DEFAULT_INIT
  out_kernel_init: Initializer = DEFAULT_INIT
  implementation: str | None = 'xla'
  kernels: str = 'xla'

  @nn.compact
  def __call__(self, x, context=None, *, mask=None, is_causal: bool = False,
               positions=None, cache: Cache | None = None, cache_index=None):
    """Attends from x (b, T, W) to `context` (b, S, W_c), or to x itself.

    Args:
      x: the queries' inputs (b, T, W).
      context: the keys' and values' inputs (b, S, W_c); None for
        self-attention.
      mask: optional bool, broadcastable to (b, h, T, S); True may attend.
        With a cache, S is the cache's max_len.
      is_causal: query i sees keys 0..i only (self-attention without cache;
        with a cache causality is always applied through the positions).
      positions: int (T,) or (b, T), the positions of x's tokens for rotary;
        default 0..T-1, or cache_index + 0..T-1 when decoding.
      cache: this layer's {'key', 'value'} (b, max_len, h, d) from
        init_kv_cache, for incremental self-attention.
      cache_index: int scalar (may be traced): the position of x's first
        token, i.e. how many tokens the cache already holds.

    Returns:
      (b, T, W_out), and with a cache also the updated cache.
    """
    width = x.shape[-1]
    if not self.head_dim:
      check_heads(width, self.num_heads)
    head_dim = self.head_dim or width // self.num_heads
    if cache is not None and context is not None:
      raise ValueError('a KV cache is for self-attention; cross-attention '
                       'recomputes its keys from `context`')
    if cache is not None and cache_index is None:
      raise ValueError('decoding with a cache needs cache_index')
    self_attention = context is None
    if self.rotary and not self_attention:
      raise ValueError('rotary positions apply to self-attention only')
    context = x if self_attention else context
    dense_general = functools.partial(layers.get(self.kernels).DenseGeneral,
                                      use_bias=self.use_bias, dtype=self.dtype,
                                      param_dtype=self.param_dtype)

    def project(name, inputs):
      y = dense_general((self.num_heads, head_dim),
                        kernel_init=layers.axes(self.kernel_init, 'embed', 'heads', 'kv'),
                        bias_init=layers.axes(nn.initializers.zeros, 'heads', 'kv'),
                        name=name)(inputs)
      return layers.constrain(y, 'batch', 'length', 'act_heads', 'act_kv')

    q = project('query', x)           # (b, T, h, d)
    k = project('key', context)       # (b, S, h, d)
    v = project('value', context)

    length = x.shape[-2]
    if positions is None and (self.rotary or cache is not None):
      first = 0 if cache_index is None else cache_index
      positions = first + jnp.arange(length)
    if self.rotary:
      q, k = apply_rotary(q, positions), apply_rotary(k, positions)

    if cache is not None:
      write = lambda old, new: jax.lax.dynamic_update_slice(
          old, new.astype(old.dtype), (0, cache_index, 0, 0))
      k, v = write(cache['key'], k), write(cache['value'], v)
      cache = {'key': k, 'value': v}
      # Slot s holds the token at position s; slots past the newest token are
      # still zeros and must stay invisible, which the causal rule also gives.
      slots = jnp.arange(k.shape[1])
      visible = slots <= jnp.asarray(positions)[..., :, None]   # (.., T, S)
      visible = visible.reshape((-1, 1) + visible.shape[-2:])   # (b|1, 1, T, S)
      mask = visible if mask is None else jnp.logical_and(mask, visible)
      is_causal = False  # already in `visible`, aligned to the cache
      k, v = k.astype(q.dtype), v.astype(q.dtype)

    y = dot_product_attention(q, k, v, mask=mask, is_causal=is_causal,
                              implementation=self.implementation, kernels=self.kernels)
    out = dense_general(self.out_features or width, axis=(-2, -1),
                        kernel_init=layers.axes(self.out_kernel_init, 'heads', 'kv', 'embed'),
                        bias_init=layers.axes(nn.initializers.zeros, 'embed'), name='out')(y)
    return out if cache is None else (out, cache)


def run_block(block, x, *, remat: bool = False, **kwargs):
  """block(x, **kwargs); with remat, its activations are recomputed in the backward pass.

  Rematerialisation trades about a third more compute for not keeping every
  block's activations alive until the backward pass. Python values among
  kwargs (train) stay static; arrays (masks, context) are passed through.
  """
  if not remat:
    return block(x, **kwargs)
  static = {k: v for k, v in kwargs.items() if v is None or isinstance(v, (bool, int, float))}
  names = [k for k in kwargs if k not in static]

  def forward(module, y, *arrays):
    return module(y, **static, **dict(zip(names, arrays)))

  return nn.remat(forward)(block, x, *(kwargs[k] for k in names))


class Block(nn.Module):
  """Pre-LayerNorm transformer block.

    x = x + drop(self_attn(LN(x)))
    x = x + drop(cross_attn(LN(x), context))    if cross_attention
    x = x + drop(Dense(W)(gelu(Dense(mlp_dim)(LN(x)))))

  `causal=False, cross_attention=False` is an encoder block (BERT, ViT);
  `causal=True` a decoder-only block (GPT); both True the decoder block of an
  encoder-decoder. The width W is that of the input.

  Attributes:
    num_heads: attention heads.
    mlp_dim: hidden width of the MLP (GPT and ViT use 4 * W).
    dropout: rate on the residual branches; active only with train=True.
    causal: position i attends to positions <= i only.
    cross_attention: add cross-attention to a `context` (the encoder output).
    rotary: rotary positions in the self-attention.
    head_dim: 0 means W // num_heads.
    use_bias: biases in the projections and the LayerNorms.
    layer_norm_epsilon: 1e-5 is PyTorch's default (GPT-2); ViT uses 1e-6.
    dtype: compute dtype.
    param_dtype: dtype of the parameters.
    kernel_init: init of every kernel that does not write to the residual.
    residual_init: init of the attention output and second MLP kernels, the
      ones that add to the residual stream; GPT-2 scales them by
      1/sqrt(2 * num_layers) so the stream's variance does not grow with
      depth.
    implementation: attention implementation, see dot_product_attention.
    kernels: the layer set (deepl.models.layers).
  """
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  causal: bool = False
  cross_attention: bool = False
  rotary: bool = False
  head_dim: int = 0
  use_bias: bool = True
  layer_norm_epsilon: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Initializer = DEFAULT_INIT
  residual_init: Initializer = DEFAULT_INIT
  implementation: str | None = 'xla'
  kernels: str = 'xla'

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None, positions=None,
               context=None, context_mask=None, cache: Cache | None = None,
               cache_index=None):
    """Maps x (b, T, W) to (b, T, W); with a cache, also the new cache.

    Args:
      x: (b, T, W).
      train: enables dropout (needs a 'dropout' rng).
      mask: bool self-attention mask, broadcastable to (b, h, T, T), or to
        (b, h, T, max_len) with a cache; ANDed with the causal rule.
      positions: rotary positions of x's tokens, see MultiHeadAttention.
      context: encoder output (b, S, W_c), required iff cross_attention.
      context_mask: bool cross-attention mask, broadcastable to (b, h, T, S).
      cache: this block's self-attention cache (init_kv_cache), to decode
        incrementally; only for causal blocks.
      cache_index: how many tokens the cache already holds.
    """
    if self.cross_attention != (context is not None):
      raise ValueError('pass `context` exactly when cross_attention=True')
    if cache is not None and not self.causal:
      raise ValueError('incremental decoding needs a causal block')
    x = layers.constrain(x, 'batch', 'length', 'act_embed')
    layer_norm = lambda name: layers.layer_norm(
        epsilon=self.layer_norm_epsilon, use_bias=self.use_bias,
        dtype=self.dtype, param_dtype=self.param_dtype, name=name)
    drop = nn.Dropout(self.dropout, deterministic=not train)
    attention = lambda name, rotary: MultiHeadAttention(
        self.num_heads, self.head_dim, use_bias=self.use_bias, rotary=rotary,
        dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=self.kernel_init,
        out_kernel_init=self.residual_init, implementation=self.implementation,
        kernels=self.kernels, name=name)
    dense = functools.partial(layers.get(self.kernels).Dense, use_bias=self.use_bias,
                              dtype=self.dtype, param_dtype=self.param_dtype)

    y = attention('attn', self.rotary)(
        layer_norm('ln_attn')(x), mask=mask, is_causal=self.causal,
        positions=positions, cache=cache, cache_index=cache_index)
    if cache is not None:
      y, cache = y
    x = x + drop(y)

    if self.cross_attention:
      y = attention('cross_attn', False)(layer_norm('ln_cross')(x), context,
                                         mask=context_mask)
      x = x + drop(y)

    width = x.shape[-1]
    y = layer_norm('ln_mlp')(x)
    y = dense(self.mlp_dim, kernel_init=layers.axes(self.kernel_init, 'embed', 'mlp'),
              bias_init=layers.axes(nn.initializers.zeros, 'mlp'), name='mlp_in')(y)
    y = layers.constrain(y, 'batch', 'length', 'act_mlp')
    # Exact erf GELU, PyTorch's nn.GELU() default that nanoGPT and ViT use.
    y = gelu(y)
    y = dense(width, kernel_init=layers.axes(self.residual_init, 'mlp', 'embed'),
              bias_init=layers.axes(nn.initializers.zeros, 'embed'), name='mlp_out')(y)
    x = x + drop(y)
    return x if cache is None else (x, cache)


class Embedder(nn.Module):
  """Token (+ learned position) embedding and the matching output projection.

  With `tie=True` the logits are x @ embedding.T (Press & Wolf 2017): the
  output layer has no parameters of its own. Otherwise a bias-free Dense
  `head` maps W to vocab_size. Parameters: `token_embed` (V, W),
  `position_embed` (max_len, W) when max_len > 0, `head` (W, V) when untied.

  Attributes:
    vocab_size: V.
    width: W.
    max_len: number of learned absolute positions; 0 for none (rotary or
      position-free models).
    tie: share the embedding matrix with the output projection.
    dtype: compute dtype; logits are float32.
    param_dtype: dtype of the parameters.
    embedding_init: init of the embeddings and of an untied head.
    kernels: the layer set of an untied head (deepl.models.layers).
  """
  vocab_size: int
  width: int
  max_len: int = 0
  tie: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  embedding_init: Initializer = DEFAULT_INIT
  kernels: str = 'xla'

  def setup(self):
    table = functools.partial(embed.Embed, features=self.width, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    self.token_embed = table(self.vocab_size,
                             embedding_init=layers.axes(self.embedding_init, 'vocab', 'embed'))
    if self.max_len:
      self.position_embed = table(
          self.max_len, embedding_init=layers.axes(self.embedding_init, 'position', 'embed'))
    if not self.tie:
      self.head = layers.get(self.kernels).Dense(
          self.vocab_size, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
          kernel_init=layers.axes(self.embedding_init, 'embed', 'vocab'))

  def __call__(self, tokens, positions=None):
    """int tokens (b, T) -> (b, T, W); positions (T,) or (b, T), default 0..T-1.

    A position >= max_len embeds to NaN (jnp.take's out-of-bounds fill), so
    overrunning the table can never pass unnoticed.
    """
    x = self.token_embed(tokens)
    if self.max_len:
      if positions is None:
        positions = jnp.arange(tokens.shape[-1])
      x = x + self.position_embed(positions)
    return x

  def logits(self, x):
    """(b, T, W) -> float32 logits (b, T, V)."""
    logits = self.token_embed.attend(x) if self.tie else self.head(x)
    # Losses and softmax are unstable in half precision; hand tasks float32.
    return layers.constrain(logits.astype(jnp.float32), 'batch', 'length', 'act_vocab')
