"""Generation, in one place: greedy and beam search for encoder-decoder models,
sampling for causal language models.

  ids = greedy(model, params, inputs, input_length, bos=bos, eos=eos,
               max_len=T)                                 # (b, T) int32
  ids = beam_search(model, params, inputs, input_length, bos=bos, eos=eos,
                    max_len=T, beam_size=4)               # (b, T) int32

The model needs the methods of `deepl.models.seq2seq.EncoderDecoder`:
`encode(inputs, input_length) -> memory`, `init_cache(batch_size)` and
`decode(tokens (b, 1), cache, memory, input_length) -> (logits, cache)`, where
every cache leaf with a leading dimension is per row (the `index` scalar is
not). Both functions are pure and jit-able: shapes are fixed by `max_len`, and
a `lax.while_loop` stops early once every row has emitted EOS. The output
holds the generated tokens without BOS: EOS included, zeros after it; a row
that never emits EOS fills all `max_len` slots.

Beam search keeps `beam_size` hypotheses per row, folded into the batch
dimension (row r's beams are rows r*k .. r*k + k-1 of the decoder), and
reorders the KV cache by parent beam after every step. A hypothesis that has
emitted EOS stays in the beam, frozen: its only continuation is a pad with
log-probability 0. Every step ranks all continuations of all beams together
by the length-normalised score log p / lp(n), lp(n) = ((5 + n) / 6)^alpha
(GNMT, Wu et al. 2016; alpha = length_penalty, 0 for raw log p), n counting
the tokens through EOS, and the answer is the best-ranked beam once all beams
have finished or max_len is reached. With one beam the only candidates are
the current hypothesis' next tokens, all of one length, so beam search with
beam_size=1 makes exactly greedy's choices.

Sampling (`generate`) works with any causal LM that has the incremental-decoding
methods
  cache = model.apply(variables, batch_size, method='init_cache')
  logits, cache = model.apply(variables, tokens (b, t), cache, method='decode')
(recurrent models carry their states in the cache, transformers their keys and
values). It feeds the prompt once, then one token per step; every random draw
comes from fold_in(PRNGKey(seed), position), so the same seed gives the same
text. `filter_logits` applies temperature, top-k and nucleus (top-p) cuts.
"""

import functools

import jax
import jax.numpy as jnp


def _check(model, max_len: int, beam_size: int = 1):
  if max_len < 1:
    raise ValueError(f'max_len {max_len} must be >= 1')
  if beam_size < 1:
    raise ValueError(f'beam_size {beam_size} must be >= 1')
  # The decoder reads BOS and the first max_len - 1 generated tokens.
  limit = getattr(model, 'max_len', None)
  if limit is not None and max_len > limit:
    raise ValueError(f"decoding {max_len} tokens needs a model max_len >= "
                     f'{max_len}, not {limit}')


def greedy(model, params, inputs, input_length, *, bos: int, eos: int,
           max_len: int):
  """The most likely next token at every step: int32 (b, max_len)."""
  _check(model, max_len)
  variables = {'params': params}
  batch = inputs.shape[0]
  memory = model.apply(variables, inputs, input_length, method='encode')
  cache = model.apply(variables, batch, method='init_cache')

  def unfinished(state):
    step, _, _, done, _ = state
    return (step < max_len) & ~jnp.all(done)

  def advance(state):
    step, last, cache, done, out = state
    logits, cache = model.apply(variables, last[:, None], cache, memory,
                                input_length, method='decode')
    token = jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)
    token = jnp.where(done, 0, token)
    out = out.at[:, step].set(token)
    return step + 1, token, cache, done | (token == eos), out

  state = (jnp.zeros((), jnp.int32), jnp.full((batch,), bos, jnp.int32), cache,
           jnp.zeros((batch,), bool), jnp.zeros((batch, max_len), jnp.int32))
  return jax.lax.while_loop(unfinished, advance, state)[-1]


def length_penalty_of(length, alpha: float):
  """GNMT's lp(n) = ((5 + n) / 6)^alpha; 1 for alpha = 0."""
  return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def beam_search(model, params, inputs, input_length, *, bos: int, eos: int,
                max_len: int, beam_size: int, length_penalty: float = 0.6,
                return_scores: bool = False):
  """The best of `beam_size` beams per row: int32 (b, max_len).

  Args:
    model, params: the model and its 'params' collection.
    inputs: int source tokens (b, S).
    input_length: int (b,).
    bos, eos: the start token fed first, and the token that ends a hypothesis.
    max_len: most tokens to generate, EOS included.
    beam_size: k, hypotheses kept per row.
    length_penalty: alpha of lp(n) = ((5 + n) / 6)^alpha; 0 ranks by log p.
    return_scores: also return the chosen hypotheses' log-probabilities (b,).
  """
  _check(model, max_len, beam_size)
  k = beam_size
  variables = {'params': params}
  batch = inputs.shape[0]
  memory = model.apply(variables, inputs, input_length, method='encode')
  memory = jnp.repeat(memory, k, axis=0)            # row r*k + j: beam j of r
  lengths_in = jnp.repeat(input_length, k, axis=0)
  cache = model.apply(variables, batch * k, method='init_cache')
  rows = jnp.arange(batch)[:, None]

  def unfinished(state):
    step, _, _, _, scores, _, finished = state
    live = finished | (scores == -jnp.inf)   # dead beams never finish
    return (step < max_len) & ~jnp.all(live)

  def advance(state):
    step, last, cache, seqs, scores, lengths, finished = state
    logits, cache = model.apply(variables, last.reshape(-1, 1), cache, memory,
                                lengths_in, method='decode')
    vocab = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits[:, -1].astype(jnp.float32))
    log_probs = log_probs.reshape(batch, k, vocab)
    # A finished beam continues only with a pad, for free.
    frozen = jnp.where(jnp.arange(vocab) == 0, 0.0, -jnp.inf)
    step_scores = jnp.where(finished[..., None], frozen, log_probs)
    candidates = (scores[..., None] + step_scores).reshape(batch, k * vocab)
    new_lengths = jnp.where(finished, lengths, step + 1)          # (b, k)
    lengths_flat = jnp.repeat(new_lengths, vocab, axis=1)         # (b, k*V)
    rank = candidates / length_penalty_of(lengths_flat, length_penalty)
    _, best = jax.lax.top_k(rank, k)                              # (b, k)
    parent, token = best // vocab, (best % vocab).astype(jnp.int32)
    take = lambda x: jnp.take_along_axis(x, best, axis=1)
    scores, lengths = take(candidates), take(lengths_flat)
    finished = jnp.take_along_axis(finished, parent, axis=1) | (token == eos)
    seqs = jnp.take_along_axis(seqs, parent[..., None], axis=1)
    seqs = seqs.at[:, :, step].set(token)
    # The cache follows its beam: new beam j continues old beam parent[j].
    flat_parent = (rows * k + parent).reshape(-1)
    cache = jax.tree.map(lambda x: x[flat_parent] if x.ndim else x, cache)
    return step + 1, token, cache, seqs, scores, lengths, finished

  # Beams 1..k-1 start dead, so step 0 does not expand k copies of BOS.
  scores = jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf)
  state = (jnp.zeros((), jnp.int32), jnp.full((batch, k), bos, jnp.int32),
           cache, jnp.zeros((batch, k, max_len), jnp.int32),
           jnp.broadcast_to(scores, (batch, k)),
           jnp.zeros((batch, k), jnp.int32), jnp.zeros((batch, k), bool))
  _, _, _, seqs, scores, lengths, _ = jax.lax.while_loop(
      unfinished, advance, state)
  # A beam cut off by max_len is ranked at its length, max_len.
  rank = scores / length_penalty_of(lengths, length_penalty)
  choice = jnp.argmax(rank, axis=1)
  ids = seqs[jnp.arange(batch), choice]
  if return_scores:
    return ids, scores[jnp.arange(batch), choice]
  return ids


def filter_logits(logits, *, temperature: float, top_k: int = 0, top_p: float = 1.0):
  """Logits (..., V) scaled by 1/temperature, outside top-k / nucleus set to -inf."""
  logits = logits.astype(jnp.float32) / temperature
  if top_k:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token if the mass of the tokens strictly ahead of it is < top_p:
    # the smallest set reaching top_p, never empty.
    ahead = jnp.cumsum(probs, axis=-1) - probs
    cutoff = jnp.min(jnp.where(ahead < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def generate(model, params, prompt_ids, length: int, *, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> list[int]:
  """`length` new token ids sampled after `prompt_ids` (a non-empty list of ints)."""
  variables = {'params': params}
  cache = model.apply(variables, 1, method='init_cache')
  prompt = jnp.asarray(prompt_ids, jnp.int32)[None]
  logits, cache = jax.jit(functools.partial(model.apply, method='decode'))(
      variables, prompt, cache)
  filt = functools.partial(filter_logits, temperature=temperature, top_k=top_k, top_p=top_p)

  @jax.jit
  def draw(logits, position):
    key = jax.random.fold_in(jax.random.PRNGKey(seed), position)
    return jax.random.categorical(key, filt(logits[:, -1]))

  @jax.jit
  def step(cache, token):
    return model.apply(variables, token[:, None], cache, method='decode')

  out = []
  for i in range(length):
    token = draw(logits, i)
    out.append(int(token[0]))
    if i + 1 < length:
      logits, cache = step(cache, token)
  return out
