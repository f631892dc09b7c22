"""BERT: a bidirectional transformer encoder (Devlin et al. 2019), pre-LN.

One encoder, three heads:

  BertEncoder          token embedding + learned positions, a learned [CLS]
                       vector prepended to every sequence, an optional learned
                       [MASK] vector, `num_layers` non-causal pre-LayerNorm
                       blocks with a key-padding mask, a final LayerNorm.
  BertMLM              masked-LM head: Dense + GELU + LayerNorm, then logits
                       tied to the token embedding, plus a bias.
  BertClassifier       sequence classes from the [CLS] output (or the mean
                       of the token outputs): pooler (Dense + tanh),
                       dropout, a linear head. Called like
                       rnn.RNNClassifier, so the 'classification' task trains
                       it.
  BertTokenClassifier  one set of class logits per token.

Every model holds its encoder as the submodule `encoder`, so the encoder's
parameter paths are the same in all three and a classifier fine-tuned with
`init_from` a BertMLM run gets the whole pre-trained encoder; only its head
(and pooler) start fresh. The heads have distinct names ('mlm_*', 'pooler',
'classifier', 'token_classifier') so no head is ever copied into another.

[CLS] and [MASK] are vectors, not token ids: any tokenizer works unchanged
(ids 0 = pad, everything else real). The [CLS] vector takes no position
embedding; the L tokens take positions 0..L-1, so L may be up to `max_len`.
A [MASK]ed position gets the [MASK] vector instead of its token's embedding,
plus its position embedding as usual.

Padding: `lengths` (b,) gives each sequence's valid prefix; nobody attends to
the positions past it, and positions are absolute from the first token, so the
outputs at valid positions do not depend on how much padding follows. Outputs
at padded positions are meaningless and must be ignored by the loss.

Differences from the original BERT: pre-LayerNorm blocks with a final
LayerNorm (as GPT-2; steadier than post-LN), no token-type (segment)
embeddings (one-sentence inputs), no embedding LayerNorm, and no dropout on the
attention probabilities (see transformer.py). Init as GPT-2: normal(0.02)
everywhere, residual projections normal(0.02 / sqrt(2 * num_layers)).

  model = BertMLM(vocab_size=8000)
  variables = model.init(rng, tokens, lengths, train=False)  # tokens (b, L)
  logits = model.apply(variables, tokens, lengths, train=True, masked=masked,
                       rngs={'dropout': dropout_rng})         # (b, L, V)
  logits = model.apply(variables, tokens, lengths, train=False,
                       positions=positions)                   # (b, K, V)
  classifier = BertClassifier(vocab_size=8000, num_classes=2)
  logits = classifier.apply(variables, tokens, lengths,
                            train=False)                      # (b, 2)
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from deepl.models import checks
from deepl.models import layers
from deepl.models import transformer

_INIT = transformer.DEFAULT_INIT
POOLS = ('cls', 'mean')


class EncoderFields(nn.Module):
  """The encoder's settings, shared by the encoder and every model holding one.

  Attributes:
    vocab_size: number of token ids.
    num_layers: encoder blocks.
    num_heads: attention heads; must divide width.
    width: model width W.
    mlp_dim: hidden width of each MLP; 0 means 4 * width.
    max_len: the most tokens per sequence (learned position table); the
      [CLS] vector is extra.
    dropout: rate after the embedding and on every residual branch; active
      only with train=True.
    dtype: compute dtype.
    param_dtype: dtype of the parameters.
    attention_implementation: 'xla', or 'cudnn' for the fused kernel on a GPU
      (see transformer.dot_product_attention; BERT's padding mask keeps
      masked attention on XLA's path).
    remat: recompute each block's activations in the backward pass (less
      memory for about a third more compute).
    kernels: the layer set (deepl.models.layers): 'xla', stock; 'cpu', deepl's
      CPU speed paths.
  """
  vocab_size: int
  num_layers: int = 4
  num_heads: int = 4
  width: int = 256
  mlp_dim: int = 0
  max_len: int = 128
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  attention_implementation: str | None = 'xla'
  remat: bool = False
  kernels: str = 'xla'


class BertEncoder(EncoderFields):
  """Tokens (b, L) -> hidden states (b, 1 + L, W); index 0 is [CLS].

  Attributes: see EncoderFields.
  """

  def setup(self):
    # setup() so that the MLM head can reach the tied embedding via logits().
    transformer.check_heads(self.width, self.num_heads)
    self.embed = transformer.Embedder(self.vocab_size, self.width, max_len=0,
                                      tie=True, dtype=self.dtype,
                                      param_dtype=self.param_dtype)
    # Own position table rather than Embedder's: a [MASK]ed position keeps its
    # position but loses its token, so the two are summed here.
    self.position_embed = self.param('position_embed', layers.axes(_INIT, 'position', 'embed'),
                                     (self.max_len, self.width), self.param_dtype)
    self.cls = self.param('cls', layers.axes(_INIT, 'embed'), (self.width,), self.param_dtype)
    self.mask = self.param('mask', layers.axes(_INIT, 'embed'), (self.width,), self.param_dtype)
    self.drop = nn.Dropout(self.dropout)
    residual_init = nn.initializers.normal(
        0.02 / math.sqrt(2 * self.num_layers))
    self.blocks = [
        transformer.Block(
            self.num_heads, self.mlp_dim or 4 * self.width,
            dropout=self.dropout, causal=False, dtype=self.dtype,
            param_dtype=self.param_dtype, residual_init=residual_init,
            implementation=self.attention_implementation, kernels=self.kernels)
        for _ in range(self.num_layers)]
    self.ln_f = layers.layer_norm(epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype)

  def __call__(self, tokens, lengths=None, *, train: bool, masked=None):
    """Encodes int tokens (b, L) with valid prefixes `lengths` (b,).

    Args:
      tokens: int (b, L); ids past a sequence's length are ignored.
      lengths: int (b,), tokens per sequence; None means all L are valid.
      train: enables dropout (needs a 'dropout' rng).
      masked: optional bool (b, L): True replaces the token's embedding by
        the learned [MASK] vector.

    Returns:
      (b, 1 + L, W) in the compute dtype; [:, 0] is the [CLS] output and
      [:, 1:] the tokens'.
    """
    checks.expect(tokens, 'BERT', 'tokens (batch, length)', ndim=2, kind='integer')
    if lengths is not None:
      checks.expect(lengths, 'BERT', 'lengths (batch,)', ndim=1, kind='integer')
    batch, length = tokens.shape
    if length > self.max_len:
      raise ValueError(f'sequence length {length} is longer than the '
                       f"model's max_len {self.max_len}: use at most "
                       f'{self.max_len} tokens or a model with a larger '
                       'max_len')
    x = self.embed(tokens)                                 # (b, L, W)
    if masked is not None:
      x = jnp.where(masked[..., None], self.mask.astype(x.dtype), x)
    x = x + self.position_embed[:length].astype(x.dtype)
    cls = jnp.broadcast_to(self.cls.astype(x.dtype), (batch, 1, self.width))
    x = jnp.concatenate([cls, x], axis=1)                  # (b, 1 + L, W)
    x = self.drop(x, deterministic=not train)

    # [CLS] is always a valid key, so no query ever has nothing to attend to,
    # even for an empty sequence.
    valid = jnp.ones((batch, length), bool) if lengths is None else (
        jnp.arange(length)[None, :] < lengths[:, None])
    valid = jnp.concatenate([jnp.ones((batch, 1), bool), valid], axis=1)
    mask = transformer.key_padding_mask(valid)
    for block in self.blocks:
      x = transformer.run_block(block, x, remat=self.remat, train=train, mask=mask)
    return self.ln_f(x)

  def logits(self, x):
    """(..., W) -> float32 logits (..., vocab_size), tied to the embedding."""
    return self.embed.logits(x)


_ENCODER_FIELDS = tuple(f.name for f in dataclasses.fields(EncoderFields)
                        if f.name not in ('parent', 'name'))


def _dense(model, features: int, name: str, out_axis: str = 'mlp') -> nn.Module:
  """A head's Dense layer from the width to `out_axis`, in the model's dtypes and layer set."""
  return layers.get(model.kernels).Dense(
      features, kernel_init=layers.axes(_INIT, 'embed', out_axis),
      bias_init=layers.axes(nn.initializers.zeros, out_axis), dtype=model.dtype,
      param_dtype=model.param_dtype, name=name)


def _encoder(model) -> BertEncoder:
  """The shared encoder, named 'encoder' in every model (see init_from)."""
  return BertEncoder(**{f: getattr(model, f) for f in _ENCODER_FIELDS}, name='encoder')


class BertMLM(EncoderFields):
  """Encoder + masked-LM head: tokens (b, L) -> logits (b, L, vocab_size).

  Attributes: those of EncoderFields.
  """

  @nn.compact
  def __call__(self, tokens, lengths=None, *, train: bool, masked=None,
               positions=None):
    """float32 logits (b, L, vocab_size) at the L token positions (not [CLS]).

    Args:
      tokens, lengths, train, masked: as for BertEncoder.__call__.
      positions: optional int (b, K) token positions (0..L-1): the logits
        only there, (b, K, vocab_size). Pre-training predicts ~15% of the
        tokens, and the vocab-sized output layer is most of a small model's
        cost, so the masked_lm task asks for the chosen positions only.
    """
    encoder = _encoder(self)
    x = encoder(tokens, lengths, train=train, masked=masked)[:, 1:]
    if positions is not None:
      x = jnp.take_along_axis(x, positions[..., None], axis=1)
    x = _dense(self, self.width, 'mlm_dense')(x)
    x = layers.layer_norm(epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype,
                          name='mlm_ln')(transformer.gelu(x))
    bias = self.param('mlm_bias', layers.axes(nn.initializers.zeros, 'vocab'),
                      (self.vocab_size,), self.param_dtype)
    return encoder.logits(x) + bias


class BertClassifier(EncoderFields):
  """Encoder + pooled head: tokens (b, L), lengths (b,) -> logits (b, classes).

  Attributes:
    vocab_size: number of token ids.
    num_classes: number of output logits.
    pool: 'cls', the [CLS] output (as BERT), or 'mean', the mean of the
      valid tokens' outputs.
    Others: those of EncoderFields; `dropout` also applies to the pooled
      vector.
  """
  num_classes: int = 2
  pool: str = 'cls'

  @nn.compact
  def __call__(self, tokens, lengths=None, *, train: bool):
    """float32 logits (b, num_classes) from the pooled output."""
    if self.pool not in POOLS:
      raise ValueError(f'BertClassifier pool must be one of {POOLS}, '
                       f'got {self.pool!r}')
    x = _encoder(self)(tokens, lengths, train=train)
    if self.pool == 'cls':
      x = x[:, 0]
    else:
      x = x[:, 1:].astype(jnp.float32)
      valid = (jnp.ones(x.shape[:2], bool) if lengths is None
               else jnp.arange(x.shape[1])[None, :] < lengths[:, None])
      count = jnp.maximum(valid.sum(axis=1, keepdims=True), 1)
      x = (jnp.where(valid[..., None], x, 0.0).sum(axis=1) / count).astype(self.dtype)
    x = jnp.tanh(_dense(self, self.width, 'pooler')(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = _dense(self, self.num_classes, 'classifier', 'classes')(x)
    # Losses and softmax are unstable in half precision; hand tasks float32.
    return x.astype(jnp.float32)


class BertTokenClassifier(EncoderFields):
  """Encoder + per-token head: tokens (b, L) -> logits (b, L, num_classes).

  Attributes:
    vocab_size: number of token ids.
    num_classes: classes per token (e.g. tags).
    Others: those of EncoderFields; `dropout` also applies before the head.
  """
  num_classes: int = dataclasses.field(kw_only=True)  # after the defaulted fields

  @nn.compact
  def __call__(self, tokens, lengths=None, *, train: bool):
    """float32 logits (b, L, num_classes); padded positions are meaningless."""
    x = _encoder(self)(tokens, lengths, train=train)[:, 1:]
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = _dense(self, self.num_classes, 'token_classifier', 'classes')(x)
    return x.astype(jnp.float32)
