"""Tests for the seq2seq stack: dates data, EncoderDecoder, decoding, task.

The builder is generated offline (tiny split sizes when TFDS writes it); every
network is tiny (width 16, 2 layers), and beam search is checked against brute
force on a toy model whose scores can be enumerated. The whole file runs in
well under a minute on two CPU cores.
"""

import functools
import itertools
import math
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl import metrics
from deepl import models
from deepl import tasks
from deepl.data import pipeline
from deepl.data import seq2seq_text
from deepl.data import tokenizers
from deepl.data.builders import BUILDERS
from deepl.data.builders import dates
from deepl.errors import UserError
from deepl.inference import decoding
from deepl.models import seq2seq
from deepl.tasks.seq2seq import corpus_bleu
from deepl.tasks.seq2seq import generation_sums
from deepl.tasks.seq2seq import Seq2SeqTask

pytestmark = pytest.mark.usefixtures('fast_compile')  # conftest: small programs, compiled once


SMALL = {'train': 40, 'validation': 8, 'test': 8}
VOCAB = 13
TINY = dict(vocab_size=VOCAB, num_layers=2, num_heads=2, width=16, max_len=8)


# --- Data ---------------------------------------------------------------------


def test_generation_is_deterministic_and_held_out_by_date():
  data = dates.generate()
  assert {s: len(r) for s, r in data.items()} == dates.SPLIT_SIZES
  assert dates.generate() == data
  # The target names the date, so disjoint targets = disjoint dates, and no
  # held-out date appears in train in any of its nine formats.
  train_targets = {r['target'] for r in data['train']}
  train_sources = {r['source'] for r in data['train']}
  for split in ('validation', 'test'):
    assert not train_targets & {r['target'] for r in data[split]}
    assert not train_sources & {r['source'] for r in data[split]}
  assert not ({r['target'] for r in data['validation']}
              & {r['target'] for r in data['test']})
  assert {r['format'] for r in data['train']} == set(range(len(dates.FORMATS)))
  # Every format renders the same date to the same target.
  assert [f(2023, 7, 4) for f in dates.FORMATS] == [
      '2023-07-04', '7/4/2023', '07/04/2023', '04.07.2023', '20230704',
      '4 Jul 2023', '4 July 2023', 'Jul 4, 2023', 'July 4th, 2023']
  assert [dates._ordinal(d) for d in (1, 2, 3, 11, 12, 13, 21, 22, 31)] == [
      '1st', '2nd', '3rd', '11th', '12th', '13th', '21st', '22nd', '31st']


def _prepared(tmp_path, monkeypatch, name):
  monkeypatch.setattr(dates, 'SPLIT_SIZES', SMALL)
  builder = BUILDERS['dates'](data_dir=str(tmp_path / name),
                              file_format='array_record')
  builder.download_and_prepare()
  return {s: seq2seq_text.load_pair_split(builder, s) for s in SMALL}


def test_builder_writes_the_generated_pairs_deterministically(
    tmp_path, monkeypatch):
  first = _prepared(tmp_path, monkeypatch, 'a')
  assert _prepared(tmp_path, monkeypatch, 'b') == first
  expected = dates.generate(SMALL)
  for split, rows in expected.items():
    assert first[split].sources == [r['source'] for r in rows]
    assert first[split].targets == [r['target'] for r in rows]


def _pairs():
  return {'train': seq2seq_text.PairSplit(['ab', 'c', ''], ['xy', 'z', 'yz']),
          'test': seq2seq_text.PairSplit(['ba'], ['zyx'])}


def test_source_shapes_and_bos_eos_placement():
  splits = _pairs()
  tok = tokenizers.build('char', splits['train'].texts)
  bos, eos = seq2seq_text.special_ids(tok)
  assert (bos, eos) == (tok.vocab_size, tok.vocab_size + 1)
  assert seq2seq_text.model_vocab_size(tok) == eos + 1
  dataset = types.SimpleNamespace(name='toy', splits=splits)
  sources = seq2seq_text.seq2seq_splits(dataset, tok, max_source=3,
                                        max_target=4)
  batch = sources['train'].gather(np.arange(3))
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
      'inputs': ((3, 3), np.int32), 'input_length': ((3,), np.int32),
      'targets': ((3, 6), np.int32)}
  enc = tok.encode
  np.testing.assert_array_equal(batch['inputs'],
                                [enc('ab') + [0], enc('c') + [0, 0], [0] * 3])
  np.testing.assert_array_equal(batch['input_length'], [2, 1, 1])
  np.testing.assert_array_equal(batch['targets'], [
      [bos, *enc('xy'), eos, 0, 0], [bos, *enc('z'), eos, 0, 0, 0],
      [bos, *enc('yz'), eos, 0, 0]])
  assert seq2seq_text.decode_target(tok, batch['targets'][0]) == 'xy'
  assert seq2seq_text.decode_target(tok, [*enc('zy'), eos, *enc('x')]) == 'zy'
  # The eval pipeline pads with zero rows and a mask, shapes unchanged.
  padded = next(iter(pipeline.eval_batches(sources['test'],
                                           global_batch_size=2)))
  assert padded['targets'].shape == (2, 6)
  np.testing.assert_array_equal(padded['mask'], [1, 0])
  with pytest.raises(UserError, match='max_target'):
    seq2seq_text.seq2seq_splits(dataset, tok, max_source=3, max_target=2)


# --- Model --------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _tiny():
  """A tiny EncoderDecoder, its init perturbed so that it decodes varied text
  (a fresh init repeats one token); shared by every test that only reads it."""
  model = seq2seq.EncoderDecoder(**TINY)

  params = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros((1, 6), jnp.int32), jnp.ones(1, jnp.int32),
      jnp.zeros((1, 7), jnp.int32))['params']
  # numpy noise: jax.random per leaf would cost a compile each.
  rng = np.random.default_rng(0)
  return model, jax.tree.map(
      lambda p: p + 0.3 * rng.standard_normal(p.shape, np.float32), params)


def _sources(seed=3):
  inputs = jax.random.randint(jax.random.key(seed), (3, 6), 1, VOCAB)
  return inputs, jnp.array([6, 3, 1], jnp.int32)


def test_registered_and_padding_is_invisible():
  assert models.get('seq2seq') is seq2seq.EncoderDecoder
  assert tasks.get('seq2seq') is Seq2SeqTask
  model, params = _tiny()
  inputs, length = _sources()
  targets = jax.random.randint(jax.random.key(4), (3, 7), 1, VOCAB)
  apply = jax.jit(functools.partial(model.apply, {'params': params},
                                    train=False))
  logits = apply(inputs, length, targets)
  assert logits.shape == (3, 7, VOCAB) and logits.dtype == jnp.float32
  # Whatever sits past input_length changes nothing.
  junk = jnp.where(jnp.arange(6) < length[:, None], inputs, 5)
  np.testing.assert_allclose(apply(junk, length, targets), logits, atol=1e-6)
  with pytest.raises(ValueError, match='max_len'):
    model.apply({'params': params}, jnp.zeros((1, 9), jnp.int32),
                jnp.ones(1, jnp.int32), targets, train=False)


def test_teacher_forcing_equals_incremental_decoding():
  model, params = _tiny()
  variables = {'params': params}
  inputs, length = _sources()
  targets = jax.random.randint(jax.random.key(5), (3, 7), 1, VOCAB)
  full = jax.jit(functools.partial(model.apply, variables, train=False))(
      inputs, length, targets)
  memory = jax.jit(functools.partial(model.apply, variables,
                                     method='encode'))(inputs, length)
  cache = model.apply(variables, 3, method='init_cache')
  step = jax.jit(functools.partial(model.apply, variables, method='decode'))
  for t in range(7):
    logits, cache = step(targets[:, t:t + 1], cache, memory, length)
    np.testing.assert_allclose(logits[:, 0], full[:, t], atol=1e-5,
                               err_msg=f'position {t}')
  assert int(cache['index']) == 7


# --- Decoding -----------------------------------------------------------------


def test_beam_one_is_greedy():
  model, params = _tiny()
  inputs, length = _sources()
  inputs = jnp.concatenate([inputs, inputs[::-1] % 7 + 1])
  length = jnp.concatenate([length, length])
  # eos is traced, so each decoder compiles once for both calls.
  greedy = jax.jit(lambda eos: decoding.greedy(
      model, params, inputs, length, bos=1, eos=eos, max_len=8))
  beam = jax.jit(lambda eos: decoding.beam_search(
      model, params, inputs, length, bos=1, eos=eos, max_len=8, beam_size=1,
      length_penalty=0.6))
  # Take as EOS a token greedy emits mid-way, so rows stop at varied steps.
  eos = int(greedy(-1)[0, 3])
  ids = greedy(eos)
  np.testing.assert_array_equal(ids, beam(eos))
  ids = np.asarray(ids)
  stops = [list(row).index(eos) if eos in row else None for row in ids]
  assert stops[0] is not None and stops[0] <= 3
  for row, stop in zip(ids, stops):
    if stop is not None:
      assert not row[stop + 1:].any()  # zeros after EOS


class _Toy(nn.Module):
  """Logits from (step, previous token, sum of fed tokens mod 3, source):
  the history lives in the cache, so beams must carry theirs along."""
  vocab: int = 4
  max_len: int = 4

  def setup(self):
    self.table = self.param('table', nn.initializers.normal(2.0),
                            (self.max_len, self.vocab, 3, self.vocab))
    self.bias = self.param('bias', nn.initializers.normal(1.0),
                           (8, self.vocab))

  def encode(self, inputs, input_length):
    del input_length
    return self.bias[inputs[:, 0]][:, None, :]

  def init_cache(self, batch_size):
    return {'index': jnp.zeros((), jnp.int32),
            'total': jnp.zeros((batch_size,), jnp.int32)}

  def decode(self, tokens, cache, memory, input_length):
    del input_length
    prev, i = tokens[:, -1], cache['index']
    logits = self.table[i, prev, cache['total'] % 3] + memory[:, 0]
    return logits[:, None], {'index': i + 1, 'total': cache['total'] + prev}


def _brute_force(table, bias, source, *, bos, eos, max_len, alpha):
  """The best-scoring hypothesis of the toy by enumeration, zero-padded."""
  best, best_rank = None, -math.inf
  vocab = table.shape[-1]
  for n in range(1, max_len + 1):
    for seq in itertools.product(range(vocab), repeat=n):
      if eos in seq[:-1] or (n < max_len and seq[-1] != eos):
        continue
      score, prev, total = 0.0, bos, 0
      for i, token in enumerate(seq):
        logits = table[i, prev, total % 3] + bias[source]
        logits = logits - logits.max()
        score += logits[token] - math.log(np.exp(logits).sum())
        total, prev = total + prev, token
      rank = score / ((5 + n) / 6) ** alpha
      if rank > best_rank:
        best, best_rank = list(seq) + [0] * (max_len - n), rank
  return best


def test_beam_search_finds_the_brute_force_best():
  toy = _Toy()
  inputs = jnp.arange(8, dtype=jnp.int32)[:, None]
  length = jnp.ones(8, jnp.int32)
  params = toy.init(jax.random.key(7), inputs, length,
                    method='encode')['params']
  kw = dict(bos=1, eos=3, max_len=4)
  # 128 beams hold every hypothesis of 4 tokens over 4 ids: search is exact.
  beam = jax.jit(lambda alpha: decoding.beam_search(
      toy, params, inputs, length, beam_size=128, length_penalty=alpha, **kw))
  greedy = np.asarray(decoding.greedy(toy, params, inputs, length, **kw))
  table, bias = np.asarray(params['table'], np.float64), np.asarray(
      params['bias'], np.float64)
  for alpha in (0.0, 1.0):
    ids = np.asarray(beam(alpha))
    best = [_brute_force(table, bias, s, alpha=alpha, **kw) for s in range(8)]
    np.testing.assert_array_equal(ids, best, err_msg=f'alpha {alpha}')
    # Greedy misses the best somewhere, so the search did real work.
    assert (greedy != ids).any(axis=1).any()


# --- Task ---------------------------------------------------------------------


EOS = 10
_generation_sums = jax.jit(generation_sums, static_argnames='eos')


def _row(ids, width=8):
  return ids + [0] * (width - len(ids))


def test_bleu_sums_give_hand_computed_corpus_bleu():
  # Junk after EOS in a hypothesis must be ignored.
  hyp = jnp.array([_row([1, 2, 3, 4, 5, 6, EOS]), _row([8, 8, 8, EOS, 5, 5])])
  ref = jnp.array([_row([1, 2, 3, 4, 5, 7, EOS]), _row([8, 8, 9, 9, EOS])])
  # Row 1: p_n = 5/6, 4/5, 3/4, 2/3. Row 2 (clipped: 8 occurs twice in the
  # reference): 2/3, 1/2, 0/1, 0/0. Corpus: 7/9, 5/7, 3/5, 2/3, product 2/9;
  # lengths 9 < 10, BP = exp(1 - 10/9).
  expected = math.exp(-1 / 9) * (2 / 9) ** 0.25
  sums = _generation_sums(hyp, ref, eos=EOS)
  means = metrics.summarize({**sums, 'count': 2.0})
  assert float(sums['bleu_matches_1']) == 7
  assert float(sums['bleu_totals_4']) == 3
  assert corpus_bleu(means) == pytest.approx(expected, rel=1e-6)
  # Summed over two batches: the same corpus BLEU, not a mean of sentences.
  halves = [_generation_sums(hyp[i:i + 1], ref[i:i + 1], eos=EOS)
            for i in range(2)]
  total = metrics.add_sums(halves[0], halves[1])
  assert corpus_bleu(metrics.summarize({**total, 'count': 2.0})) == (
      pytest.approx(expected, rel=1e-6))
  assert float(sums['exact_match']) == 0
  same = _generation_sums(ref, ref, eos=EOS, weight=jnp.array([1.0, 0.0]))
  assert float(same['exact_match']) == 1
  assert corpus_bleu(metrics.summarize({**same, 'count': 1.0})) == 1.0


def test_task_loss_and_masked_eval():
  model, params = _tiny()
  task = Seq2SeqTask(model, bos=11, eos=12, beam_size=2)
  inputs, length = _sources()
  targets = jnp.array([[11, 3, 4, 5, 12, 0, 0], [11, 6, 12, 0, 0, 0, 0],
                       [11, 7, 7, 7, 7, 12, 0]])
  batch = {'inputs': inputs, 'input_length': length, 'targets': targets}
  init = jax.eval_shape(task.init, jax.random.key(0), batch)
  assert init['params'].keys() == params.keys()
  loss, (sums, _) = jax.jit(task.loss)(params, {}, batch, jax.random.key(1))
  assert float(sums['tokens']) == 4 + 2 + 5 and float(sums['count']) == 3
  assert float(loss) == pytest.approx(float(sums['loss'] / sums['tokens']))
  # A fourth row past the mask counts for nothing, be it eval_batches' zero
  # padding or a real example.
  eval_sums = jax.jit(task.eval_sums)
  padded = {k: jnp.concatenate([v, v[:1]]) for k, v in batch.items()}
  padded['mask'] = jnp.array([1.0, 1.0, 1.0, 0.0])
  clean = eval_sums(params, {}, padded)
  zeros = {k: v.at[3].set(0) for k, v in padded.items()}
  masked = eval_sums(params, {}, zeros)
  for key in clean:
    np.testing.assert_allclose(masked[key], clean[key], rtol=1e-5, err_msg=key)
  assert float(clean['count']) == 3 and float(clean['tokens']) == 11
  np.testing.assert_allclose(clean['loss'], sums['loss'], rtol=1e-5)
  row = task.summarize(metrics.summarize(clean))
  assert set(row) == {'loss', 'accuracy', 'exact_match', 'bleu'}
  assert row['loss'] == pytest.approx(float(loss), rel=1e-5)
  assert task.tokens_per_example(batch) == 6 + 6
