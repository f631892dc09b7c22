"""deepl.ctc: greedy and prefix beam search against Python references and brute force."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deepl import ctc

pytestmark = pytest.mark.usefixtures('fast_compile')  # conftest: small programs, compiled once

BLANK = 0


def python_greedy(logits: np.ndarray, length: int) -> list[int]:
  out, previous = [], None
  for frame in logits[:length]:
    best = int(np.argmax(frame))
    if best != BLANK and best != previous:
      out.append(best)
    previous = best
  return out


def logaddexp(a, b):
  return np.logaddexp(a, b)


def python_beam_search(logprobs: np.ndarray, length: int, beam_size: int):
  """The textbook CTC prefix beam search with dicts; [(prefix, log p)], best first."""
  beams = {(): (0.0, -math.inf)}  # prefix -> (ends in blank, ends in a label)
  for lp in logprobs[:length]:
    following = {}

    def add(prefix, blank=-math.inf, label=-math.inf):
      old_blank, old_label = following.get(prefix, (-math.inf, -math.inf))
      following[prefix] = (logaddexp(old_blank, blank), logaddexp(old_label, label))

    for prefix, (p_blank, p_label) in beams.items():
      total = logaddexp(p_blank, p_label)
      add(prefix, blank=total + lp[BLANK])
      if prefix:
        add(prefix, label=p_label + lp[prefix[-1]])
      for c in range(len(lp)):
        if c == BLANK:
          continue
        from_ = p_blank if prefix and prefix[-1] == c else total
        add(prefix + (c,), label=from_ + lp[c])
    ranked = sorted(following.items(), key=lambda kv: -logaddexp(*kv[1]))
    beams = dict(ranked[:beam_size])
  return [(list(p), float(logaddexp(*s))) for p, s in beams.items()]


def exact_label_probs(logprobs: np.ndarray) -> dict[tuple, float]:
  """log p(labels) for every label sequence, summing all V^T alignments."""
  out = {}
  frames, vocab = logprobs.shape
  for path in itertools.product(range(vocab), repeat=frames):
    labels = tuple(c for i, c in enumerate(path) if c != BLANK and (i == 0 or path[i - 1] != c))
    score = sum(logprobs[t, c] for t, c in enumerate(path))
    out[labels] = logaddexp(out.get(labels, -math.inf), score)
  return out


def random_logits(seed, batch, frames, vocab, peaky=3.0):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((batch, frames, vocab)) * peaky).astype(np.float32)


def test_greedy_against_python():
  logits = random_logits(0, 64, 30, 5)
  lengths = np.random.default_rng(1).integers(0, 31, size=64)
  lengths[:2] = [0, 30]
  ids, out_len = jax.jit(ctc.greedy_decode)(jnp.asarray(logits), jnp.asarray(lengths))
  assert ids.shape == (64, 30)
  for i in range(64):
    want = python_greedy(logits[i], lengths[i])
    assert out_len[i] == len(want)
    assert np.asarray(ids[i, :len(want)]).tolist() == want
    assert not np.any(np.asarray(ids[i, len(want):]))  # pad_id 0 after


def test_greedy_collapses_repeats_not_across_blanks():
  path = [1, 1, 0, 1, 2, 2, 2, 0, 0, 3, 0]  # -> 1 1 2 3
  logits = jax.nn.one_hot(jnp.array([path]), 4) * 10
  ids, lengths = ctc.greedy_decode(logits, jnp.array([len(path)]), pad_id=-1)
  assert lengths.tolist() == [4] and ids[0, :5].tolist() == [1, 1, 2, 3, -1]


@pytest.fixture(scope='module')
def beam_search():
  return jax.jit(ctc.beam_search, static_argnames=('beam_size',))


# One shape and beam size for both beam tests: one compile.
BATCH, FRAMES, VOCAB, BEAM = 16, 12, 4, 32


def test_beam_search_against_python(beam_search):
  logits = random_logits(2, BATCH, FRAMES, VOCAB, peaky=1.0)  # flat: many prefixes compete
  lengths = np.array([12, 7, 0, 1] + [12] * 12)
  ids, out_len, scores = beam_search(jnp.asarray(logits), jnp.asarray(lengths), beam_size=BEAM)
  logprobs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1), np.float64)
  for i in range(BATCH):
    want = python_beam_search(logprobs[i], lengths[i], beam_size=BEAM)
    for k, (prefix, score) in enumerate(want):
      assert np.asarray(ids[i, k, :out_len[i, k]]).tolist() == prefix, (i, k)
      assert float(scores[i, k]) == pytest.approx(score, abs=1e-4)
    assert np.all(np.isneginf(np.asarray(scores[i, len(want):])))


def test_wide_beam_finds_the_most_probable_labels(beam_search):
  """A beam that holds every prefix there can be is exact.

  Label 3 is made impossible, so 4 frames of labels {1, 2} give at most
  1 + 2 + 4 + 8 + 16 = 31 <= BEAM prefixes: nothing is ever pruned.
  """
  logits = random_logits(3, BATCH, FRAMES, VOCAB, peaky=1.5)
  logits[..., 3] = -1e9
  ids, out_len, scores = beam_search(jnp.asarray(logits), jnp.asarray(np.full(BATCH, 4)),
                                     beam_size=BEAM)
  logprobs = np.asarray(jax.nn.log_softmax(jnp.asarray(logits), axis=-1), np.float64)
  bests = []
  for i in range(4):
    exact = exact_label_probs(logprobs[i, :4, :3])
    best = max(exact, key=exact.get)
    assert tuple(np.asarray(ids[i, 0, :out_len[i, 0]]).tolist()) == best
    assert float(scores[i, 0]) == pytest.approx(exact[best], abs=1e-4)
    bests.append((best, exact[best]))
  # And those are CTC's probabilities: optax's loss on those label sequences.
  labels = jnp.asarray([list(b) + [0] * (4 - len(b)) for b, _ in bests], jnp.int32)
  loss = optax.ctc_loss(jnp.asarray(logits[:4, :4]), jnp.zeros((4, 4)), labels,
                        ctc.paddings_from_lengths(jnp.array([len(b) for b, _ in bests]), 4))
  np.testing.assert_allclose(-np.asarray(loss), [p for _, p in bests], atol=1e-3)


def test_paddings_from_lengths():
  assert ctc.paddings_from_lengths(jnp.array([0, 2]), 3).tolist() == [[1, 1, 1], [0, 0, 1]]
