"""deepl.speech_metrics against plain Python: Levenshtein, word splitting, CER/WER sums."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl import speech_metrics

SPACE = 1  # id 1 is the space in these tests; 0 pads


def levenshtein(a, b) -> int:
  previous = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    current = [i]
    for j, y in enumerate(b, 1):
      current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
    previous = current
  return previous[-1]


def pad(rows, width=None, value=0):
  width = max([len(r) for r in rows] + [0]) if width is None else width
  out = np.full((len(rows), width), value, np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return jnp.asarray(out), jnp.array([len(r) for r in rows], jnp.int32)


edit_distance = jax.jit(speech_metrics.edit_distance)


def test_edit_distance_random_against_python():
  rng = np.random.default_rng(0)
  hyps = [rng.integers(0, 4, size=rng.integers(0, 12)).tolist() for _ in range(300)]
  refs = [rng.integers(0, 4, size=rng.integers(0, 12)).tolist() for _ in range(300)]
  # Empty hypotheses and references, and both, for sure.
  hyps[:3], refs[:3] = [[], [1, 2], []], [[3, 3], [], []]
  # Garbage padding (not 0) must not matter, and the widths differ.
  hyp, hyp_len = pad(hyps, 14, value=2)
  ref, ref_len = pad(refs, 12, value=3)
  got = np.asarray(edit_distance(hyp, hyp_len, ref, ref_len))
  assert got.tolist() == [levenshtein(h, r) for h, r in zip(hyps, refs)]
  assert got[:3].tolist() == [2, 2, 0]


def test_edit_distance_textbook():
  hyp, hyp_len = pad([list(b'sitting'), list(b'saturday')])
  ref, ref_len = pad([list(b'kitten'), list(b'sunday')])
  assert edit_distance(hyp, hyp_len, ref, ref_len).tolist() == [3, 3]


def test_zero_length_arrays():
  hyp, hyp_len = jnp.zeros((2, 0), jnp.int32), jnp.zeros((2,), jnp.int32)
  ref, ref_len = pad([[5, 6], []])
  assert speech_metrics.edit_distance(hyp, hyp_len, ref, ref_len).tolist() == [2, 0]
  assert speech_metrics.edit_distance(ref, ref_len, hyp, hyp_len).tolist() == [2, 0]


def encode(text: str) -> list[int]:
  """Characters to ids: space 1, letters 2.."""
  return [SPACE if c == ' ' else ord(c) - ord('a') + 2 for c in text]


def test_words_split_like_python():
  texts = ['four one  seven', ' nine ', '', '   ', 'a', 'one one one', 'ab ba']
  ids, lengths = pad([encode(t) for t in texts], 20, value=SPACE + 3)
  hashes, counts = jax.jit(speech_metrics.words, static_argnums=2)(ids, lengths, SPACE)
  assert counts.tolist() == [len(t.split()) for t in texts]
  # Same word, same hashes; different words, different hashes; zeros after the last.
  vocabulary = {}
  for row, text in enumerate(texts):
    for w, word in enumerate(text.split()):
      token = tuple(np.asarray(hashes[row, w]).tolist())
      assert vocabulary.setdefault(word, token) == token
    assert not np.any(np.asarray(hashes[row, len(text.split()):]))
  assert len(set(vocabulary.values())) == len(vocabulary)


def test_normalize_spaces():
  ids, lengths = pad([encode('  a  bc '), encode('abc'), encode('   ')])
  out, out_len = jax.jit(speech_metrics.normalize_spaces, static_argnums=2)(ids, lengths, SPACE)
  decoded = [''.join(' ' if i == SPACE else chr(i - 2 + ord('a')) for i in row[:n])
             for row, n in zip(np.asarray(out).tolist(), out_len.tolist())]
  assert decoded == ['a bc', 'abc', '']
  assert not np.any(np.asarray(out)[0, 4:])


DIGITS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')


def test_cer_wer_sums_against_python():
  rng = np.random.default_rng(1)
  refs, hyps = [], []
  for _ in range(64):
    ref = list(rng.choice(DIGITS, size=rng.integers(1, 6)))
    hyp = [w for w in ref if rng.random() > 0.2]  # deletions
    hyp = [(w if rng.random() > 0.2 else str(rng.choice(DIGITS))) for w in hyp]
    if rng.random() < 0.3:
      hyp.insert(int(rng.integers(0, len(hyp) + 1)), str(rng.choice(DIGITS)))
    refs.append(' '.join(ref))
    hyps.append((' ' if rng.random() < 0.2 else '') + '  '.join(hyp))  # stray spaces
  hyps[0], refs[1] = '', refs[1]  # an empty hypothesis
  counts_fn = jax.jit(lambda *a: speech_metrics.error_counts(*a, space_id=SPACE))

  def python_sums(hs, rs):
    norm = [' '.join(h.split()) for h in hs]
    return (sum(levenshtein(h, r) for h, r in zip(norm, rs)), sum(len(r) for r in rs),
            sum(levenshtein(h.split(), r.split()) for h, r in zip(hs, rs)),
            sum(len(r.split()) for r in rs))

  def jax_sums(hs, rs):
    counts = counts_fn(*pad([encode(h) for h in hs], 40), *pad([encode(r) for r in rs], 36))
    return tuple(int(jnp.sum(counts[k])) for k in
                 ('char_errors', 'ref_chars', 'word_errors', 'ref_words'))

  # Batches of 16 (one shape, one compile) add up to the corpus totals exactly.
  parts = [jax_sums(hyps[i:i + 16], refs[i:i + 16]) for i in range(0, 64, 16)]
  whole = tuple(map(sum, zip(*parts)))
  assert whole == python_sums(hyps, refs)
  assert whole[2] > 0 and whole[0] > 0


def test_compact():
  ids = jnp.array([[5, 6, 7, 8], [1, 2, 3, 4]])
  keep = jnp.array([[False, True, False, True], [False, False, False, False]])
  out, lengths = jax.jit(speech_metrics.compact, static_argnums=2)(ids, keep, -1)
  assert out.tolist() == [[6, 8, -1, -1], [-1, -1, -1, -1]] and lengths.tolist() == [2, 0]


@pytest.mark.parametrize('length', [0, 1])
def test_edit_distance_tiny_shapes(length):
  a, a_len = pad([[3] * length])
  assert speech_metrics.edit_distance(a, a_len, a, a_len).tolist() == [0]
