"""Sequence to sequence: teacher-forced training, decoded evaluation.

Batch spec (deepl.data.seq2seq_text): {'inputs': int (b, S), 'input_length':
int (b,), 'targets': int (b, T + 1) = [BOS] target [EOS] 0 ...}; eval batches
padded to a fixed size add a 'mask' (b,). The model is called as
model(inputs, input_length, targets[:, :-1], train=...) -> logits (b, T, V)
and decoded with deepl.inference.decoding (see deepl.models.seq2seq.EncoderDecoder).
Sources are cut to data.max_source tokens, targets to data.max_target.

Training: cross-entropy on every target position up to and including EOS;
pads carry no loss. Evaluation adds what only generation shows: the whole
batch is decoded (greedy, or beam search with task_options.beam_size > 1) inside the
jitted eval step, and each hypothesis, cut at its first EOS, is compared with
its reference:

  exact_match  the fraction of examples decoded exactly right.
  bleu         corpus BLEU-4 (Papineni et al. 2002) over token ids: clipped
               n-gram precisions p_1..p_4 and the brevity penalty
               BP = min(1, exp(1 - ref_len / hyp_len)), BLEU = BP *
               exp(mean_n log p_n); 0 if some p_n is 0 (no smoothing). With
               the char tokenizer it is a character BLEU, not comparable to
               sacreBLEU's word-level scores.

Metric sums, with 'count' = examples: the loop divides every sum by 'count'
and `summarize` turns those means into per-token loss and accuracy and into
BLEU. Every piece of BLEU is a sum over examples, so the metric is the
corpus BLEU of the whole split, whatever the batching or device count.
"""

import math

import jax.numpy as jnp
import numpy as np

from deepl.data import seq2seq_text
from deepl.errors import UserError
from deepl.inference import decoding
from deepl.tasks import common
from deepl.tasks.base import Task

MAX_ORDER = 4


def ngram_match_sums(hyp, ref, hyp_len, ref_len, max_order: int = MAX_ORDER):
  """Per-example clipped n-gram matches and hypothesis n-gram totals.

  Args:
    hyp, ref: int (b, L) and (b, L'): tokens, real ones at [0, *_len).
    hyp_len, ref_len: int (b,).
    max_order: largest n.

  Returns:
    (matches, totals), float32 (b, max_order): for n = 1..max_order, the sum
    over distinct n-grams g of min(count_hyp(g), count_ref(g)), and the
    number of hypothesis n-grams max(hyp_len - n + 1, 0).
  """
  hyp_positions = jnp.arange(hyp.shape[1])
  ref_positions = jnp.arange(ref.shape[1])
  same_ref = hyp[:, :, None] == ref[:, None, :]   # (b, L, L') token equality
  same_hyp = hyp[:, :, None] == hyp[:, None, :]   # (b, L, L)

  def shifted(equal, s):
    # equal[i + s, j + s] at [i, j]: do the tokens s further on match too?
    cut = equal[:, s:, s:]
    return jnp.pad(cut, ((0, 0), (0, s), (0, s)))

  matches, totals = [], []
  ngram_ref, ngram_hyp = same_ref, same_hyp
  for n in range(1, max_order + 1):
    if n > 1:
      ngram_ref = ngram_ref & shifted(same_ref, n - 1)
      ngram_hyp = ngram_hyp & shifted(same_hyp, n - 1)
    hyp_valid = hyp_positions[None, :] + n <= hyp_len[:, None]   # (b, L)
    ref_valid = ref_positions[None, :] + n <= ref_len[:, None]   # (b, L')
    # For the n-gram starting at hypothesis position i: how often it occurs
    # in the hypothesis and in the reference.
    in_ref = jnp.sum(ngram_ref & ref_valid[:, None, :], axis=-1)
    in_hyp = jnp.sum(ngram_hyp & hyp_valid[:, None, :], axis=-1)
    # An n-gram occurring c times in the hypothesis has c starting positions;
    # each contributes 1/c of its clipped count min(c, in_ref).
    share = jnp.minimum(in_hyp, in_ref) / jnp.maximum(in_hyp, 1)
    clipped = jnp.sum(jnp.where(hyp_valid, share, 0.0), axis=-1)
    matches.append(jnp.round(clipped))  # exact integers despite the 1/c
    totals.append(jnp.maximum(hyp_len - n + 1, 0).astype(jnp.float32))
  return jnp.stack(matches, -1), jnp.stack(totals, -1)


def corpus_bleu(means: dict, max_order: int = MAX_ORDER) -> float:
  """BLEU from the (summed or averaged) pieces `bleu_sums` produced."""
  log_precisions = []
  for n in range(1, max_order + 1):
    matches, total = means[f'bleu_matches_{n}'], means[f'bleu_totals_{n}']
    if matches <= 0 or total <= 0:
      return 0.0
    log_precisions.append(math.log(matches / total))
  hyp_len, ref_len = means['bleu_hyp_len'], means['bleu_ref_len']
  if hyp_len <= 0:
    return 0.0
  brevity = 1.0 if hyp_len > ref_len else math.exp(1.0 - ref_len / hyp_len)
  return brevity * math.exp(sum(log_precisions) / max_order)


def cut_at_eos(ids, eos: int):
  """(b, L) ids -> (ids zeroed from the first EOS on, lengths before it)."""
  positions = jnp.arange(ids.shape[1])
  is_eos = ids == eos
  length = jnp.where(is_eos.any(axis=1), jnp.argmax(is_eos, axis=1),
                     ids.shape[1])
  return jnp.where(positions < length[:, None], ids, 0), length


def generation_sums(hyp, ref, *, eos: int, weight=None) -> dict:
  """Exact match and BLEU pieces of hypotheses vs references, summed.

  Both are token ids (b, L) without BOS; everything from a row's first EOS
  on is ignored. `weight` (b,) scales each example (0 for eval padding).
  """
  hyp, hyp_len = cut_at_eos(hyp, eos)
  ref, ref_len = cut_at_eos(ref, eos)
  if weight is None:
    weight = jnp.ones(hyp.shape[:1], jnp.float32)
  width = max(hyp.shape[1], ref.shape[1])
  pad = lambda x: jnp.pad(x, ((0, 0), (0, width - x.shape[1])))
  exact = (hyp_len == ref_len) & jnp.all(pad(hyp) == pad(ref), axis=1)
  matches, totals = ngram_match_sums(hyp, ref, hyp_len, ref_len)
  sums = {'exact_match': jnp.sum(exact * weight),
          'bleu_hyp_len': jnp.sum(hyp_len * weight),
          'bleu_ref_len': jnp.sum(ref_len * weight)}
  for n in range(1, MAX_ORDER + 1):
    sums[f'bleu_matches_{n}'] = jnp.sum(matches[:, n - 1] * weight)
    sums[f'bleu_totals_{n}'] = jnp.sum(totals[:, n - 1] * weight)
  return sums


class Seq2SeqTask(Task):
  """Encoder-decoder training and decoded evaluation; see the module doc.

  Args:
    model: an EncoderDecoder-like module (call, encode, init_cache, decode).
    bos, eos: the ids the data puts around each target
      (`seq2seq_text.special_ids`).
    beam_size: 1 decodes greedily in eval, more runs beam search.
    length_penalty: beam search's alpha (see deepl.inference.decoding).
  """

  OPTIONS = {'beam_size': 1, 'length_penalty': 0.6}
  LOSS_PER = 'tokens'

  def __init__(self, model, *, bos: int, eos: int, beam_size: int = 1,
               length_penalty: float = 0.6):
    super().__init__(model)
    self.bos, self.eos = int(bos), int(eos)
    self.beam_size = int(beam_size)
    self.length_penalty = float(length_penalty)

  @classmethod
  def check(cls, config) -> None:
    if config.task_options.beam_size < 1:
      raise UserError(f'task_options.beam_size={config.task_options.beam_size}: use 1 '
                      '(greedy decoding) or more beams')

  @classmethod
  def from_config(cls, model, config, tokenizer):
    bos, eos = seq2seq_text.special_ids(tokenizer)
    return cls(model, bos=bos, eos=eos, **cls.options(config))

  @classmethod
  def make_sources(cls, config, dataset, tokenizer) -> dict:
    cls.require_text(config, dataset)
    return seq2seq_text.seq2seq_splits(dataset, tokenizer, max_source=config.data.max_source,
                                       max_target=config.data.max_target)

  @classmethod
  def model_defaults(cls, config, *, num_classes, tokenizer) -> dict:
    # BOS and EOS come on top of the tokenizer's ids; the encoder reads
    # max_source tokens, the decoder BOS + max_target.
    return {'vocab_size': seq2seq_text.model_vocab_size(tokenizer),
            'max_len': max(config.data.max_source, config.data.max_target + 1)}

  @classmethod
  def batch_spec(cls, config, *, image_shape, num_classes, vocab_size) -> dict:
    source = config.data.max_source
    return {'inputs': ((source,), 'token', 1, vocab_size),
            'input_length': ((), np.int32, source, source + 1),
            'targets': ((config.data.max_target + 2,), 'token', 1, vocab_size)}

  def model_inputs(self, batch) -> tuple:
    return batch['inputs'], batch['input_length'], batch['targets'][:, :-1]

  @staticmethod
  def _sums(logits, batch, weight) -> dict:
    """Cross-entropy over target tokens (pads carry none): 'tokens' of them, 'count' examples."""
    labels = batch['targets'][:, 1:]
    sums = common.cross_entropy_sums(logits, labels, (labels != common.PAD_ID) * weight[:, None])
    sums['tokens'] = sums.pop('count')
    sums['count'] = jnp.sum(weight)
    return sums

  def train_sums(self, params, model_state, batch, rng):
    logits, new_model_state = common.apply_train(self.model, params, model_state,
                                                 *self.model_inputs(batch), dropout_rng=rng)
    weight = jnp.ones(batch['inputs'].shape[:1], jnp.float32)
    return self._sums(logits, batch, weight), new_model_state

  def decode(self, params, inputs, input_length, max_len: int):
    """Generated ids (b, max_len) without BOS, zeros after EOS."""
    kwargs = dict(bos=self.bos, eos=self.eos, max_len=max_len)
    if self.beam_size == 1:
      return decoding.greedy(self.model, params, inputs, input_length, **kwargs)
    return decoding.beam_search(self.model, params, inputs, input_length,
                                beam_size=self.beam_size,
                                length_penalty=self.length_penalty, **kwargs)

  def eval_sums(self, params, model_state, batch) -> dict:
    weight = common.example_weight(batch, batch['inputs'].shape[0])
    logits = common.apply_eval(self.model, params, model_state, *self.model_inputs(batch))
    sums = self._sums(logits, batch, weight)
    labels = batch['targets'][:, 1:]
    hyp = self.decode(params, batch['inputs'], batch['input_length'], labels.shape[1])
    sums.update(generation_sums(hyp, labels, eos=self.eos, weight=weight))
    return sums

  def tokens_per_example(self, example) -> int:
    """Padded source tokens + decoder positions."""
    return example['inputs'].shape[1] + example['targets'].shape[1] - 1

  def summarize(self, means: dict) -> dict:
    """Per-example means -> per-token loss/accuracy, exact match, BLEU."""
    tokens = max(means['tokens'], 1e-9)
    out = {'loss': means['loss'] / tokens,
           'accuracy': means['accuracy'] / tokens}
    if 'exact_match' in means:
      out['exact_match'] = means['exact_match']
      out['bleu'] = corpus_bleu(means)
    return out
