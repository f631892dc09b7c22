"""Edit distance, and CER/WER as sums, in jnp: jit-able, batched, exact across batches.

  counts = error_counts(hyp, hyp_len, ref, ref_len, space_id=tok.space_id)
  # per example, int32 (b,): char_errors, ref_chars, word_errors, ref_words
  CER = sum(char_errors) / sum(ref_chars);  WER = sum(word_errors) / sum(ref_words)

Sums of integers, so the rate over a whole split is the same whatever the
batching or the number of devices (mask padded examples before summing).

  edit_distance  Levenshtein distance (insertions, deletions, substitutions,
                 each 1) between id sequences: a row-by-row DP under
                 `lax.scan` over hypothesis positions, each row in O(1) vector
                 steps (the within-row recursion is a running minimum).
  words          the word sequence of a character-id sequence, split on the
                 space id (runs of spaces and spaces at either end make no
                 empty words). Each word becomes two independent 32-bit
                 polynomial hashes of its characters, compared together: two
                 different words look equal with probability ~2^-64.
  CER            over characters after `normalize_spaces` (runs of spaces made
                 one, none at either end), spaces included; the reference
                 length is that of the normalised reference.
"""

import jax
import jax.numpy as jnp
import numpy as np

# Two odd multipliers for the two word hashes (the first is > any character
# vocabulary here, so words of up to 4 characters hash without collisions).
_HASH_BASES = (131, 1_000_003)


def compact(ids: jax.Array, keep: jax.Array, pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
  """The kept entries of each row moved to its front, in order; the rest `pad_id`.

  Args:
    ids: (b, L, ...) values.
    keep: bool (b, L).
    pad_id: what fills each row after its kept entries.

  Returns:
    (ids of the same shape and dtype, int32 (b,) counts of kept entries).
  """
  batch, length = keep.shape
  target = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, length)  # column `length`: discarded
  out = jnp.full((batch, length + 1) + ids.shape[2:], pad_id, ids.dtype)
  out = out.at[jnp.arange(batch)[:, None], target].set(ids)
  return out[:, :length], jnp.sum(keep, axis=1, dtype=jnp.int32)


def edit_distance(hyp: jax.Array, hyp_len: jax.Array, ref: jax.Array,
                  ref_len: jax.Array) -> jax.Array:
  """Levenshtein distances between hyp[i, :hyp_len[i]] and ref[i, :ref_len[i]].

  Args:
    hyp: int (b, L), or (b, L, k) where tokens are equal when all k entries are.
    hyp_len: int (b,).
    ref: int (b, L'), or (b, L', k).
    ref_len: int (b,).

  Returns:
    int32 (b,): the minimum number of insertions, deletions and substitutions
    that turn each hypothesis into its reference (ref_len if hyp is empty).
  """
  equal = hyp[:, :, None] == ref[:, None, :]
  if equal.ndim == 4:
    equal = jnp.all(equal, axis=-1)
  batch, hyp_max, ref_max = equal.shape
  columns = jnp.arange(ref_max + 1, dtype=jnp.int32)
  # row[j]: distance from the hypothesis prefix so far to ref[:j].
  first = jnp.broadcast_to(columns, (batch, ref_max + 1))

  def step(row, inputs):
    i, same = inputs  # same: bool (b, L') = hyp[:, i] == ref
    diagonal = row[:, :-1] + jnp.where(same, 0, 1)       # substitute (or match)
    from_above = row[:, 1:] + 1                          # delete hyp[i]
    partial = jnp.concatenate([jnp.full((batch, 1), i + 1, jnp.int32),
                               jnp.minimum(diagonal, from_above)], axis=1)
    # Insertions chain along the row: new[j] = min_k<=j partial[k] + (j - k).
    new = jax.lax.cummin(partial - columns, axis=1) + columns
    active = (i < hyp_len)[:, None]
    return jnp.where(active, new, row), None

  steps = (jnp.arange(hyp_max, dtype=jnp.int32), jnp.moveaxis(equal, 1, 0))
  last, _ = jax.lax.scan(step, first, steps)
  return jnp.take_along_axis(last, jnp.asarray(ref_len, jnp.int32)[:, None], axis=1)[:, 0]


def _powers(base: int, length: int) -> np.ndarray:
  out, value = [], 1
  for _ in range(length):
    out.append(value)
    value = value * base % 2 ** 32
  return np.array(out, np.uint32)


def words(ids: jax.Array, lengths: jax.Array, space_id: int) -> tuple[jax.Array, jax.Array]:
  """Character ids -> word tokens, split on `space_id`.

  Args:
    ids: int (b, L) character ids; lengths: int (b,).
    space_id: the id of the space character.

  Returns:
    (int32 (b, L, 2): word w's two hashes at [:, w], zeros after the last
    word; int32 (b,) word counts). Feed both to `edit_distance`.
  """
  batch, length = ids.shape
  position = jnp.arange(length)
  in_text = position[None, :] < jnp.asarray(lengths)[:, None]
  is_char = in_text & (ids != space_id)
  starts = is_char & ~jnp.pad(is_char, ((0, 0), (1, 0)))[:, :-1]
  word_index = jnp.cumsum(starts, axis=1) - 1
  offset = position - jax.lax.cummax(jnp.where(starts, position, 0), axis=1)
  value = ids.astype(jnp.uint32) + 1  # +1: id 0 still changes the hash
  hashes = jnp.stack([value * jnp.asarray(_powers(base, length))[offset]
                      for base in _HASH_BASES], axis=-1)
  target = jnp.where(is_char, word_index, length)  # column `length`: discarded
  summed = jnp.zeros((batch, length + 1, 2), jnp.uint32)
  summed = summed.at[jnp.arange(batch)[:, None], target].add(hashes)[:, :length]
  count = jnp.sum(starts, axis=1, dtype=jnp.int32)
  summed = jnp.where((position[None, :] < count[:, None])[..., None], summed, 0)
  return jax.lax.bitcast_convert_type(summed, jnp.int32), count


def normalize_spaces(ids: jax.Array, lengths: jax.Array, space_id: int,
                     pad_id: int = 0) -> tuple[jax.Array, jax.Array]:
  """Runs of spaces made one space, and none at either end: 'a  b ' -> 'a b'."""
  position = jnp.arange(ids.shape[1])
  in_text = position[None, :] < jnp.asarray(lengths)[:, None]
  is_char = in_text & (ids != space_id)
  char_before = jnp.pad(is_char, ((0, 0), (1, 0)))[:, :-1]
  char_after = jax.lax.cummax(is_char[:, ::-1].astype(jnp.int32), axis=1)[:, ::-1] > 0
  keep = is_char | (in_text & char_before & char_after)
  return compact(ids, keep, pad_id)


def error_counts(hyp: jax.Array, hyp_len: jax.Array, ref: jax.Array, ref_len: jax.Array, *,
                 space_id: int) -> dict[str, jax.Array]:
  """Per-example character and word errors and reference lengths, int32 (b,) each.

  hyp: int (b, L) character ids, e.g. from `deepl.ctc.greedy_decode`;
  ref: int (b, L'); *_len: int (b,). Sum each over examples (masking padded
  ones) and divide: CER = char_errors / ref_chars, WER = word_errors / ref_words.
  """
  hyp, hyp_len = normalize_spaces(hyp, hyp_len, space_id)
  ref, ref_len = normalize_spaces(ref, ref_len, space_id)
  hyp_words, hyp_count = words(hyp, hyp_len, space_id)
  ref_words, ref_count = words(ref, ref_len, space_id)
  return {
      'char_errors': edit_distance(hyp, hyp_len, ref, ref_len),
      'ref_chars': ref_len,
      'word_errors': edit_distance(hyp_words, hyp_count, ref_words, ref_count),
      'ref_words': ref_count,
  }
