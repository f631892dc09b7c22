"""CTC decoding in jnp, with fixed shapes: greedy, and prefix beam search.

  ids, lengths = greedy_decode(logits, frame_lengths)                 # (b, T), (b,)
  ids, lengths, scores = beam_search(logits, frame_lengths, beam_size=8)  # (b, K, T), ...

Both take the model's per-frame logits (b, T, V) with class `blank_id` the
CTC blank, and the valid frames per row; frames past a row's length are
ignored. Outputs are label ids with `pad_id` after each row's length.

Training with `optax.ctc_loss` (optax 0.2.8), as the CTC task (deepl/tasks/ctc.py) calls it:

  per_seq = optax.ctc_loss(logits, logit_paddings, labels, label_paddings, blank_id=0)

  - logits (b, T, V) raw: it applies log_softmax itself. V counts the blank.
  - *_paddings are float 1.0 at PADDED positions, 0.0 at real ones (the
    opposite of a mask): `paddings_from_lengths(lengths, width)` below.
    Labels must be right-padded; padded label values are ignored, so the
    tokenizer's pad id 0 can double as the blank: give the model V = vocab
    size outputs and never emit 0 as a real label.
  - The result is the negative log-likelihood of each whole sequence, (b,),
    a sum over its frames, not a mean: divide by the label lengths (or the
    batch) yourself, and mask the eval batch's padded examples.
  - An impossible alignment (valid frames < labels + repeated neighbours,
    e.g. 'ee' needs a blank between) is not inf but ~1e5 (-log_epsilon).
    So the encoder's frame rate must leave room. spoken_numbers (full) has
    12 characters per second on average (spaces included) and up to 25:
    with log_mel's 10 ms frames subsampled 4x, one validation utterance
    cannot be aligned; 3x leaves at least 6 frames to spare, 2x at least 14.

Beam search is the standard CTC prefix beam search (Hannun et al. 2014,
without a language model): each beam holds a label prefix with two log
probabilities, ending in blank and not; a frame extends every beam by every
label, merges extensions that equal a kept prefix, and keeps the best K. It
costs O(T K^2 T) comparisons per row (prefixes are compared exactly), fine for
evaluation at the lengths here. Greedy is the special case that follows one
alignment, not one prefix: beam search with K = 1 can differ from it.
"""

import jax
import jax.numpy as jnp

from deepl.speech_metrics import compact


def paddings_from_lengths(lengths: jax.Array, width: int) -> jax.Array:
  """float32 (b, width): 1.0 at positions >= length (optax's padding convention)."""
  return (jnp.arange(width)[None, :] >= jnp.asarray(lengths)[:, None]).astype(jnp.float32)


def greedy_decode(logits: jax.Array, lengths: jax.Array, *, blank_id: int = 0,
                  pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
  """Best path: argmax per frame, repeats collapsed, blanks dropped.

  Args:
    logits: (b, T, V) (or log-probabilities: only the argmax matters).
    lengths: int (b,) valid frames.

  Returns:
    (int32 (b, T) label ids, `pad_id` after each row's length; int32 (b,) lengths).
  """
  best = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  previous = jnp.pad(best, ((0, 0), (1, 0)), constant_values=-1)[:, :-1]
  valid = jnp.arange(best.shape[1])[None, :] < jnp.asarray(lengths)[:, None]
  # A label repeated across a blank ('a _ a') is two labels; 'a a' is one.
  keep = valid & (best != blank_id) & (best != previous)
  return compact(best, keep, pad_id)


def _beam_search_one(logprobs, length, beam_size, blank_id):
  """One row: logprobs (T, V), length () -> prefixes (K, T), lengths (K,), scores (K,)."""
  frames, vocab = logprobs.shape
  k = beam_size
  position = jnp.arange(frames)
  labels = jnp.arange(vocab)
  minus_inf = jnp.float32(-jnp.inf)
  init = (jnp.zeros((k, frames), jnp.int32),                  # prefix, zeros after its length
          jnp.zeros((k,), jnp.int32),                         # prefix length
          jnp.full((k,), -1, jnp.int32),                      # last label (-1: empty)
          jnp.full((k,), minus_inf).at[0].set(0.0),           # log p(prefix, ends in blank)
          jnp.full((k,), minus_inf))                          # log p(prefix, ends in a label)

  def step(state, inputs):
    t, lp = inputs
    prefix, plen, last, p_blank, p_label = state
    total = jnp.logaddexp(p_blank, p_label)
    alive = total > minus_inf
    last_or_0 = jnp.maximum(last, 0)
    # The same prefix: through a blank, or by repeating its last label.
    same_blank = total + lp[blank_id]
    same_label = jnp.where(last >= 0, p_label + lp[last_or_0], minus_inf)
    # Extensions by label c; after the same label only from paths ending in blank.
    extend = jnp.where(labels[None, :] == last[:, None], p_blank[:, None],
                       total[:, None]) + lp[None, :]
    extend = extend.at[:, blank_id].set(minus_inf)
    # parent[j, i]: prefix j is prefix i plus one label (then last[j]); merge those.
    agrees = jnp.all((prefix[:, None, :] == prefix[None, :, :]) |
                     (position[None, None, :] >= plen[None, :, None]), axis=-1)
    parent = agrees & (plen[:, None] == plen[None, :] + 1) & alive[:, None] & alive[None, :]
    into = jnp.where(parent, extend[:, last_or_0].T, minus_inf)  # [j, i] = extend[i, last[j]]
    same_label = jnp.logaddexp(same_label, jax.nn.logsumexp(into, axis=1))
    merged = jnp.any(parent[:, :, None] & (last[:, None, None] == labels[None, None, :]), axis=0)
    extend = jnp.where(merged, minus_inf, extend)

    scores = jnp.concatenate([jnp.logaddexp(same_blank, same_label), extend.reshape(-1)])
    _, pick = jax.lax.top_k(scores, k)
    is_same = pick < k
    source = jnp.where(is_same, pick, (pick - k) // vocab)
    label = (pick - k) % vocab
    new_plen = plen[source]
    grown = prefix[source].at[jnp.arange(k), jnp.minimum(new_plen, frames - 1)].set(label)
    new = (jnp.where(is_same[:, None], prefix[source], grown),
           jnp.where(is_same, new_plen, new_plen + 1),
           jnp.where(is_same, last[source], label),
           jnp.where(is_same, same_blank[source], minus_inf),
           jnp.where(is_same, same_label[source], extend[source, label]))
    active = t < length
    return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state), None

  (prefix, plen, _, p_blank, p_label), _ = jax.lax.scan(
      step, init, (jnp.arange(frames), logprobs))
  return prefix, plen, jnp.logaddexp(p_blank, p_label)


def beam_search(logits: jax.Array, lengths: jax.Array, *, beam_size: int = 8,
                blank_id: int = 0, pad_id: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
  """CTC prefix beam search (no language model), best beam first.

  Args:
    logits: (b, T, V); log_softmax is applied here.
    lengths: int (b,) valid frames.
    beam_size: K, static.

  Returns:
    (int32 (b, K, T) label ids, `pad_id` after each length; int32 (b, K)
    lengths; float32 (b, K) log-probabilities of the label sequences, summed
    over their alignments as far as the search kept them; -inf for beams
    that were never filled).
  """
  logprobs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  prefix, plen, scores = jax.vmap(_beam_search_one, in_axes=(0, 0, None, None))(
      logprobs, jnp.asarray(lengths, jnp.int32), beam_size, blank_id)
  prefix = jnp.where(jnp.arange(prefix.shape[-1]) < plen[..., None], prefix, pad_id)
  return prefix, plen, scores
