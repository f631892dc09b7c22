"""Recurrent networks: Elman RNN, LSTM and GRU layers, a sequence classifier
and a language model that decodes step by step.

Cells (`cell=`), with the gate order of PyTorch's nn.RNN / nn.LSTM / nn.GRU so
that weights can be ported by transposing them:

  'rnn'   h' = tanh(W_x x + b + W_h h)
  'lstm'  i, f, g, o = split(W_x x + b + W_h h, 4)
          c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
          h' = sigmoid(o) * tanh(c')
  'gru'   r, z, n blocks of W_x x + b_x and of W_h h + b_h:
          r = sigmoid(x_r + h_r)       z = sigmoid(x_z + h_z)
          n = tanh(x_n + r * h_n)      h' = (1 - z) * n + z * h

Parameters of one direction of one layer: `input_kernel` W_x (F, G*H),
`input_bias` b (G*H,), `hidden_kernel` W_h (H, G*H) and, for the GRU only,
`hidden_bias` b_h (G*H,), which cannot be folded into b because r multiplies
h_n. PyTorch's LSTM and Elman RNN carry two biases that only ever appear
summed; here they are one. Inits: W_x lecun-normal, W_h orthogonal per gate
block (keeps the recurrent Jacobian near norm 1 early in training), biases
zero except the LSTM forget gate at 1.0 (Jozefowicz et al. 2015), so the cell
remembers by default.

Speed: x_t only enters through W_x x_t + b, so that projection is done for all
time steps in one matmul before the time loop, and the scanned step does only
h @ W_h and the elementwise gate math. The time loop is `scan_recurrence`, a
plain `lax.scan` that autodiff (forward or reverse) and every transformation
handle; `kernels='cpu'` swaps in deepl/kernels/cpu/rnn.py's hand-written
backward pass, and lets a language model's first layer project its embedding
table once instead of every token's embedding (`TokenInputs`).

Variable length: `lengths` (b,) gives each sequence's valid prefix. Past it
the carry is frozen and outputs are zero, so padding never changes a result:
the same sequence padded to any T gives the same outputs. A backward
direction reads each sequence's valid part reversed (padding stays where it
is), so its final state is the one at position 0 of the real sequence.

  model = RNNClassifier(vocab_size=20000, cell='gru', bidirectional=True)
  variables = model.init(rng, tokens, lengths, train=False)  # tokens (b, T)
  logits = model.apply(variables, tokens, lengths, train=True,
                       rngs={'dropout': dropout_rng})         # (b, classes)

  lm = RNNLM(vocab_size=65)
  logits = lm.apply(variables, tokens, train=False)           # (b, T, V)
  cache = lm.apply(variables, batch_size, method='init_cache')
  logits, cache = lm.apply(variables, prompt, cache, method='decode')
  logits, cache = lm.apply(variables, next_token[:, None], cache,
                           method='decode')                   # one step
"""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from deepl.models import checks
from deepl.models import embed
from deepl.models import layers

# Number of H-wide gate blocks in each cell's projections.
GATES = {'rnn': 1, 'lstm': 4, 'gru': 3}
POOLS = ('last', 'mean')

# A carry is a tuple of (b, H) float32 arrays: (c, h) for the LSTM, (h,) for
# the others. Its last entry is always the hidden state h.
Carry = tuple[jax.Array, ...]


def _check_cell(cell: str):
  if cell not in GATES:
    raise ValueError(f'RNN cell must be one of {sorted(GATES)}, got {cell!r}')


def initial_carry(cell: str, batch_size: int, hidden_dim: int) -> Carry:
  """The all-zeros state a sequence starts from."""
  _check_cell(cell)
  zeros = jnp.zeros((batch_size, hidden_dim), jnp.float32)
  return (zeros, zeros) if cell == 'lstm' else (zeros,)


# ------------------------------------------------------------------ cells
# One time step each, elementwise only: `xw` is the precomputed W_x x_t + b
# and `hw` the recurrent half h @ W_h (+ b_h for the GRU), both (b, G*H)
# float32. They return the new carry and the output h'.


def _rnn_step(carry, xw, hw):
  del carry
  h = jnp.tanh(xw + hw)
  return (h,), h


def lstm_gates(z):
  """The four gate activations (b, 4H) from their pre-activations z = xw + hw."""
  i, f, g, o = jnp.split(z, 4, axis=-1)
  return jnp.concatenate([nn.sigmoid(i), nn.sigmoid(f), jnp.tanh(g), nn.sigmoid(o)], axis=-1)


def lstm_cell(c, gates):
  """(c', tanh(c'), h') from the previous cell state and the gate activations."""
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  c = f * c + i * g
  tanh_c = jnp.tanh(c)
  return c, tanh_c, o * tanh_c


def _lstm_step(carry, xw, hw):
  c, _ = carry
  c, _, h = lstm_cell(c, lstm_gates(xw + hw))
  return (c, h), h


def gru_gates(xw, hw):
  """(r, z, n, h_n): the GRU's gates and the n block of hw, which r multiplies."""
  x_r, x_z, x_n = jnp.split(xw, 3, axis=-1)
  h_r, h_z, h_n = jnp.split(hw, 3, axis=-1)
  r = nn.sigmoid(x_r + h_r)
  return r, nn.sigmoid(x_z + h_z), jnp.tanh(x_n + r * h_n), h_n


def _gru_step(carry, xw, hw):
  (h,) = carry
  _, z, n, _ = gru_gates(xw, hw)
  h = (1.0 - z) * n + z * h
  return (h,), h


STEPS = {'rnn': _rnn_step, 'lstm': _lstm_step, 'gru': _gru_step}


def recurrent_matmul(h, w):
  # The carry stays float32 across steps (long sequences accumulate rounding
  # error otherwise); only the matmul runs in the weights' compute dtype, and
  # the gate math is done back in float32.
  return (h.astype(w.dtype) @ w).astype(jnp.float32)


def masked_step(cell: str, carry, xw, hw, mask):
  """One step; where `mask` (b, 1) is False the carry is kept, output zero."""
  return mask_step(carry, *STEPS[cell](carry, xw, hw), mask)


def mask_step(carry, new, y, mask):
  if mask is not None:
    new = tuple(jnp.where(mask, n, c) for n, c in zip(new, carry))
    y = jnp.where(mask, y, 0.0)
  return new, y


# --------------------------------------------------------- the time loop


def recurrent_half(h, w_h, b_h):
  """The recurrent half of every gate, h @ W_h (+ b_h for the GRU), float32."""
  hw = recurrent_matmul(h, w_h)
  return hw if b_h is None else hw + b_h


def scan_recurrence(cell: str, w_h, b_h, carry: Carry, xw, mask):
  """Runs `cell` over time: returns the final carry and outputs (T, b, H).

  Args:
    cell: 'rnn', 'lstm' or 'gru'.
    w_h: (H, G*H) recurrent kernel in the compute dtype.
    b_h: (G*H,) recurrent bias (GRU) or None.
    carry: the initial carry.
    xw: (T, b, G*H) float32, the input half of every gate at every step.
    mask: (T, b, 1) bool valid steps, or None for all.
  """
  def body(carry, inputs):
    xw_t, mask_t = inputs
    return masked_step(cell, carry, xw_t, recurrent_half(carry[-1], w_h, b_h), mask_t)

  return jax.lax.scan(body, carry, (xw, mask))


def _blockwise_orthogonal(blocks: int):
  """Orthogonal init for each of the `blocks` (H, H) gate blocks of W_h."""
  def init(key, shape, dtype=jnp.float32):
    rows, cols = shape
    keys = jax.random.split(key, blocks)
    block = nn.initializers.orthogonal()
    return jnp.concatenate(
        [block(k, (rows, cols // blocks), dtype) for k in keys], axis=-1)
  return init


def _input_bias_init(cell: str, hidden_dim: int):
  def init(key, shape, dtype=jnp.float32):
    del key
    bias = jnp.zeros(shape, dtype)
    if cell == 'lstm':  # forget gate, the second block
      bias = bias.at[hidden_dim:2 * hidden_dim].set(1.0)
    return bias
  return init


def reverse_valid(x, lengths):
  """Reverses the first lengths[i] steps of each x[i] (b, T, ...) in place.

  Padding stays where it is, and applying it twice gives x back.
  """
  if lengths is None:
    return x[:, ::-1]
  pos = jnp.arange(x.shape[1])[None, :]
  last = lengths[:, None] - 1
  index = jnp.where(pos <= last, last - pos, pos)
  index = index.reshape(index.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, index, axis=1)


def valid_mask(lengths, steps: int):
  """(b, T) bool: True on each sequence's valid prefix."""
  return jnp.arange(steps)[None, :] < lengths[:, None]


# ----------------------------------------------------------------- layers


class TokenInputs(NamedTuple):
  """A first layer's input as token ids and the embedding table they index.

  Recurrence projects the table and looks up each token's row, instead of
  projecting each token's embedding; pass it only where nothing (dropout)
  acts on the embeddings in between. Values are the same up to rounding.
  """
  table: jax.Array  # (V, F) float32
  ids: jax.Array    # (b, T) int


class Recurrence(nn.Module):
  """One direction of one recurrent layer, scanned over time.

  Attributes:
    cell: 'rnn', 'lstm' or 'gru'.
    hidden_dim: H, the size of the hidden state.
    reverse: read each sequence's valid part back to front; outputs are put
      back in the original order.
    dtype: compute dtype of the matmuls; the carry stays float32.
    param_dtype: dtype of the parameters.
    kernels: the layer set of the time loop (deepl.models.layers).
  """
  cell: str
  hidden_dim: int
  reverse: bool = False
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'xla'

  @nn.compact
  def __call__(self, x, lengths=None, carry: Carry | None = None):
    """Maps x (b, T, F) to outputs (b, T, H) and the final carry.

    x may be `TokenInputs` instead. `lengths` (b,) of None means every step
    is valid; `carry` of None starts from zeros.
    """
    _check_cell(self.cell)
    tokens = isinstance(x, TokenInputs)
    batch, steps = x.ids.shape if tokens else x.shape[:2]
    features = (x.table if tokens else x).shape[-1]
    h, g = self.hidden_dim, GATES[self.cell]
    param = lambda name, init, shape, *names: self.param(name, layers.axes(init, *names), shape,
                                                         self.param_dtype)
    w_x = param('input_kernel', nn.initializers.lecun_normal(), (features, g * h), 'embed', 'gates')
    b_x = param('input_bias', _input_bias_init(self.cell, h), (g * h,), 'gates')
    w_h = param('hidden_kernel', _blockwise_orthogonal(g), (h, g * h), 'hidden', 'gates')
    b_h = (param('hidden_bias', nn.initializers.zeros, (g * h,), 'gates')
           if self.cell == 'gru' else None)
    if carry is None:
      carry = initial_carry(self.cell, batch, h)

    if self.reverse:
      x = x._replace(ids=reverse_valid(x.ids, lengths)) if tokens else reverse_valid(x, lengths)
    dtype = jnp.dtype(self.dtype)
    project = lambda a: (a.astype(dtype) @ w_x.astype(dtype)).astype(jnp.float32) + b_x
    if tokens:  # every table row projected once, then one row per token, time-major
      xw = jnp.take(project(x.table), x.ids.T, axis=0)
    else:
      # The input half of every gate for every step in one big 2-D matmul,
      # time-major for the scan (x is transposed, being narrower than xw).
      x = x.transpose(1, 0, 2).reshape(steps * batch, features)
      xw = project(x).reshape(steps, batch, g * h)
    mask = None if lengths is None else valid_mask(lengths, steps).T[..., None]
    loop = layers.get(self.kernels).recurrence or scan_recurrence
    carry, ys = loop(self.cell, w_h.astype(dtype), b_h, carry, xw, mask)
    ys = ys.transpose(1, 0, 2).astype(dtype)
    if self.reverse:
      ys = reverse_valid(ys, lengths)
    return ys, carry


class RNNStack(nn.Module):
  """`num_layers` recurrent layers, optionally bidirectional.

  Layer i reads the (concatenated) outputs of layer i - 1, with dropout in
  between. Parameters live under `layer{i}_fwd` and `layer{i}_bwd`.
  """
  cell: str
  hidden_dim: int
  num_layers: int = 1
  bidirectional: bool = False
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'xla'

  @nn.compact
  def __call__(self, x, lengths=None, carries=None, *, train: bool):
    """Maps x (b, T, F) to outputs (b, T, D*H) and the final carries.

    `carries[i][d]` is the carry of layer i, direction d (0 forward, 1
    backward); None starts every layer from zeros.
    """
    directions = (False, True) if self.bidirectional else (False,)
    final = []
    for i in range(self.num_layers):
      if i > 0:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
      outputs, layer_final = [], []
      for d, reverse in enumerate(directions):
        layer = Recurrence(self.cell, self.hidden_dim, reverse, self.dtype, self.param_dtype,
                           self.kernels, name=f'layer{i}_{"bwd" if reverse else "fwd"}')
        y, carry = layer(x, lengths, None if carries is None else carries[i][d])
        outputs.append(y)
        layer_final.append(carry)
      x = jnp.concatenate(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
      final.append(tuple(layer_final))
    return x, tuple(final)


# ----------------------------------------------------------------- models


def _embedding(model, **kwargs) -> nn.Module:
  return embed.Embed(model.vocab_size, model.embed_dim, dtype=model.dtype,
                     param_dtype=model.param_dtype,
                     embedding_init=layers.axes(nn.linear.default_embed_init, 'vocab', 'embed'),
                     **kwargs)


def _head(model, features: int, out_axis: str, **kwargs) -> nn.Module:
  return layers.get(model.kernels).Dense(
      features, dtype=model.dtype, param_dtype=model.param_dtype,
      kernel_init=layers.axes(nn.initializers.lecun_normal(), 'embed', out_axis),
      bias_init=layers.axes(nn.initializers.zeros, out_axis), **kwargs)


def _check_tokens(model: str, tokens, lengths=None):
  checks.expect(tokens, model, 'tokens (batch, length)', ndim=2, kind='integer')
  if lengths is not None:
    checks.expect(lengths, model, 'lengths (batch,)', ndim=1, kind='integer')


class RNNClassifier(nn.Module):
  """Embedding, recurrent stack, pooling over time, linear head.

  Dropout (rate `dropout`, train only) sits on every non-recurrent
  connection: after the embedding, between layers and before the head.

  Attributes:
    vocab_size: number of token ids; id 0 is padding by convention, but it is
      an ordinary row of the embedding: `lengths` is what masks padding.
    num_classes: number of output logits.
    cell: 'rnn' (tanh), 'lstm' or 'gru'.
    embed_dim: size of the token embedding.
    hidden_dim: size of each direction's hidden state.
    num_layers: stacked recurrent layers.
    bidirectional: add a backward direction to every layer.
    dropout: dropout rate; active only with train=True.
    pool: 'last', the state after the last valid step (bidirectional: the
      forward state at length - 1 and the backward state at 0, concatenated),
      or 'mean', the mean of the top layer's outputs over valid steps.
    dtype: compute dtype; logits are float32.
    param_dtype: dtype of the parameters.
    kernels: the layer set (deepl.models.layers): 'xla', stock; 'cpu', deepl's
      CPU speed paths.
  """
  vocab_size: int
  num_classes: int = 2
  cell: str = 'lstm'
  embed_dim: int = 128
  hidden_dim: int = 256
  num_layers: int = 1
  bidirectional: bool = False
  dropout: float = 0.0
  pool: str = 'last'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'xla'

  @nn.compact
  def __call__(self, tokens, lengths, *, train: bool):
    """Maps int tokens (b, T) with lengths (b,) to float32 logits (b, C)."""
    _check_tokens('RNNClassifier', tokens, lengths)
    _check_cell(self.cell)
    if self.pool not in POOLS:
      raise ValueError(f'RNNClassifier pool must be one of {POOLS}, '
                       f'got {self.pool!r}')
    drop = functools.partial(nn.Dropout, self.dropout, deterministic=not train)
    x = _embedding(self, name='embed')(tokens)
    x = drop()(x)
    outputs, carries = RNNStack(
        self.cell, self.hidden_dim, self.num_layers, self.bidirectional,
        self.dropout, self.dtype, self.param_dtype, self.kernels, name='rnn')(
            x, lengths, train=train)
    if self.pool == 'last':
      # Frozen past the end, each direction's final carry already is the
      # state we want; its last entry is h.
      x = jnp.concatenate([c[-1] for c in carries[-1]], axis=-1)
    else:
      # Outputs are zero past the end, so the sum only sees valid steps.
      count = jnp.maximum(lengths, 1)[:, None].astype(jnp.float32)
      x = outputs.astype(jnp.float32).sum(axis=1) / count
    x = drop()(x)
    x = _head(self, self.num_classes, 'classes', name='head')(x)
    # Losses and softmax are unstable in half precision; hand tasks float32.
    return x.astype(jnp.float32)


class RNNLM(nn.Module):
  """A next-token language model: embedding, unidirectional stack, head.

  Dropout (rate `dropout`, train only) sits after the embedding, between
  layers and before the head, as in PyTorch's word_language_model example.

  Attributes:
    vocab_size: number of token ids.
    cell: 'rnn' (tanh), 'lstm' or 'gru'.
    embed_dim: size of the token embedding.
    hidden_dim: size of the hidden state of every layer.
    num_layers: stacked recurrent layers.
    dropout: dropout rate; active only with train=True.
    dtype: compute dtype; logits are float32.
    param_dtype: dtype of the parameters.
    kernels: the layer set (deepl.models.layers): 'xla', stock; 'cpu', deepl's
      CPU speed paths.
  """
  vocab_size: int
  cell: str = 'lstm'
  embed_dim: int = 128
  hidden_dim: int = 512
  num_layers: int = 2
  dropout: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernels: str = 'xla'

  def setup(self):
    # setup() rather than compact: __call__ and decode share these.
    _check_cell(self.cell)
    self.embed = _embedding(self)
    self.rnn = RNNStack(self.cell, self.hidden_dim, self.num_layers,
                        dropout=self.dropout, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernels=self.kernels)
    self.drop = nn.Dropout(self.dropout)
    self.head = _head(self, self.vocab_size, 'vocab')

  def __call__(self, tokens, *, train: bool, lengths=None):
    """Maps int tokens (b, T) to float32 logits (b, T, vocab_size).

    Position t's logits predict token t + 1. `lengths` (b,) only zeroes the
    hidden outputs past each end; the valid positions never depend on it.
    """
    logits, _ = self._forward(tokens, lengths, None, train=train)
    return logits

  def init_cache(self, batch_size: int):
    """The decoding state before any token: every layer's carry, zeros."""
    return tuple((initial_carry(self.cell, batch_size, self.hidden_dim),)
                 for _ in range(self.num_layers))

  def decode(self, tokens, cache, lengths=None):
    """Feeds tokens (b, t) after `cache`; returns logits (b, t, V), new cache.

    t may be a whole prompt or one step. With `lengths` (b,) each sequence's
    state stops after its own lengths[i] tokens, so ragged prompts can share
    a batch: the next-token logits of sequence i are at lengths[i] - 1.
    Always deterministic (no dropout).
    """
    return self._forward(tokens, lengths, cache, train=False)

  def _forward(self, tokens, lengths, cache, *, train: bool):
    _check_tokens('RNNLM', tokens, lengths)
    if (layers.get(self.kernels).project_embedding_table and (self.dropout == 0 or not train)
        and self.vocab_size < tokens.size):
      x = TokenInputs(self.embed.embedding, tokens)
    else:
      x = self.drop(self.embed(tokens), deterministic=not train)
    x, cache = self.rnn(x, lengths, cache, train=train)
    x = self.drop(x, deterministic=not train)
    # Losses and softmax are unstable in half precision; hand tasks float32.
    return self.head(x).astype(jnp.float32), cache
