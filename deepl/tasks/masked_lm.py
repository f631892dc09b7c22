"""Masked language modelling (BERT pre-training): predict hidden tokens.

Batch spec: the classification text batches, {'tokens': int (b, L),
'length': int (b,), ...}; labels, if any, are ignored, and eval batches padded
to a fixed size add a 'mask' (b,). The model is called as
model(inputs, lengths, train=..., masked=masked, positions=positions) ->
logits (b, K, vocab) at the K positions given, and must have a `vocab_size`
field (models.bert.BertMLM).

Each step chooses about 15% (`task_options.mask_rate`) of every sequence's
real tokens (at least one) and corrupts them as BERT does: 80% become [MASK]
(the `masked` input; the model has a learned [MASK] vector, so no [MASK] token
id is needed), 10% a random token id, 10% stay as they are. The loss is the cross-entropy of the original
tokens at the chosen positions only, in nats per chosen token. The model
computes logits only at K = floor(mask_rate * L) + 2 gathered positions per
sequence, enough for every chosen one (`gather_chosen`): the vocab-sized
output layer at all L positions took about half of a training step of the
small SST-2 BERT (experiments/sst2_bert.py).

Train steps draw the choice from the step rng, so each epoch sees new masks.
Eval draws it from the fixed key PRNGKey(0) for every batch, so the same eval
set in the same batches is always masked the same way and eval numbers compare
across steps and runs.
"""

import math

import jax
import jax.numpy as jnp

from deepl import data as data_lib
from deepl.errors import UserError
from deepl.tasks import common
from deepl.tasks.base import Task
from deepl.tasks.classification import text_batch_spec

PAD_ID = common.PAD_ID
MASK_RATE = 0.15
# A chosen position draws u ~ U[0, 1): u < 0.8 is [MASK]ed, 0.8 <= u < 0.9
# gets a random token, the rest keeps its token (BERT's 80/10/10).
MASKED_UPTO = 0.8
RANDOM_UPTO = 0.9


def choose_and_corrupt(rng, tokens, lengths, vocab_size: int,
                       rate: float = MASK_RATE):
  """Picks the positions to predict and corrupts the inputs there.

  A sequence with n real tokens (position < length and not pad) gets
  floor(rate * n + u), u ~ U[0, 1) chosen positions, at least one and at most
  n: an unbiased rate * n whenever that is at least 1, rather than the fixed
  rounding that would skew short sentences. The positions are uniform among
  the real ones; pads are never chosen.

  Args:
    rng: a PRNG key.
    tokens: int (b, L), pad id 0.
    lengths: int (b,), real tokens per sequence.
    vocab_size: random replacements are drawn from [1, vocab_size), never
      the pad id.
    rate: share of the real tokens to choose.

  Returns:
    (inputs, masked, chosen): inputs int (b, L), the tokens with the random
    replacements; masked bool (b, L), the positions to give the [MASK]
    vector; chosen bool (b, L), every position to predict (masked, replaced
    and kept ones).
  """
  batch, length = tokens.shape
  count_rng, order_rng, kind_rng, token_rng = jax.random.split(rng, 4)
  valid = (jnp.arange(length)[None, :] < lengths[:, None]) & (tokens != PAD_ID)
  num_valid = valid.sum(axis=-1)
  num = jnp.floor(rate * num_valid + jax.random.uniform(count_rng, (batch,)))
  num = jnp.minimum(jnp.maximum(num, 1), num_valid)
  # A uniform random order of the real positions, pads last: the first `num`
  # in that order are chosen.
  scores = jnp.where(valid, jax.random.uniform(order_rng, (batch, length)), 2.0)
  rank = jnp.argsort(jnp.argsort(scores, axis=-1), axis=-1)
  chosen = valid & (rank < num[:, None])

  kind = jax.random.uniform(kind_rng, (batch, length))
  masked = chosen & (kind < MASKED_UPTO)
  replaced = chosen & (kind >= MASKED_UPTO) & (kind < RANDOM_UPTO)
  random_ids = jax.random.randint(token_rng, (batch, length), 1, vocab_size,
                                  dtype=tokens.dtype)
  inputs = jnp.where(replaced, random_ids, tokens)
  return inputs, masked, chosen


def max_chosen(length: int, rate: float = MASK_RATE) -> int:
  """A bound on the positions choose_and_corrupt picks in one sequence.

  floor(rate * n + u) <= floor(rate * L) + 1; one more for float32 rounding.
  """
  return min(length, math.floor(rate * length) + 2)


def gather_chosen(chosen, rate: float = MASK_RATE):
  """(positions int (b, K), weight bool (b, K)): the chosen positions first.

  K = max_chosen(L); the slots after a sequence's chosen positions hold
  unchosen ones with weight False.
  """
  k = max_chosen(chosen.shape[-1], rate)
  # A stable sort on "not chosen" puts the chosen positions first, in order.
  positions = jnp.argsort(~chosen, axis=-1, stable=True)[:, :k]
  return positions, jnp.take_along_axis(chosen, positions, axis=-1)


class MaskedLMTask(Task):

  OPTIONS = {'mask_rate': MASK_RATE}

  def __init__(self, model, *, mask_rate: float = MASK_RATE):
    super().__init__(model)
    self.mask_rate = mask_rate

  @classmethod
  def check(cls, config) -> None:
    rate = config.task_options.mask_rate
    if not 0.0 < rate <= 1.0:
      raise UserError(f'task_options.mask_rate={rate!r}: use a share of the tokens in (0, 1]; '
                      'BERT uses 0.15')

  @classmethod
  def make_sources(cls, config, dataset, tokenizer) -> dict:
    cls.require_text(config, dataset)
    return data_lib.text_splits(dataset, tokenizer, kind='classification',
                                max_length=config.data.max_length)

  @classmethod
  def batch_spec(cls, config, *, image_shape, num_classes, vocab_size) -> dict:
    return text_batch_spec(config, vocab_size)

  def model_inputs(self, batch) -> tuple:
    return batch['tokens'], batch['length']

  def _choose(self, batch, rng):
    """(model inputs, model keyword arguments, targets (b, K), weight (b, K)), masks drawn from rng."""
    inputs, masked, chosen = choose_and_corrupt(
        rng, batch['tokens'], batch['length'], self.model.vocab_size, self.mask_rate)
    positions, weight = gather_chosen(chosen, self.mask_rate)
    targets = jnp.take_along_axis(batch['tokens'], positions, axis=-1)
    weight = weight * common.example_weight(batch, weight.shape[0])[:, None]
    return (inputs, batch['length']), dict(masked=masked, positions=positions), targets, weight

  def train_sums(self, params, model_state, batch, rng):
    """Loss per chosen token; the choice is drawn from the step's rng."""
    mask_rng, dropout_rng = jax.random.split(rng)
    inputs, kwargs, targets, weight = self._choose(batch, mask_rng)
    logits, new_model_state = common.apply_train(self.model, params, model_state, *inputs,
                                                 dropout_rng=dropout_rng, **kwargs)
    return common.cross_entropy_sums(logits, targets, weight), new_model_state

  def eval_sums(self, params, model_state, batch) -> dict:
    # A fixed key: every eval masks the same positions, so evals compare.
    inputs, kwargs, targets, weight = self._choose(batch, jax.random.PRNGKey(0))
    logits = common.apply_eval(self.model, params, model_state, *inputs, **kwargs)
    return common.cross_entropy_sums(logits, targets, weight)

  def summarize(self, means: dict) -> dict:
    return {**means, 'perplexity': math.exp(min(means['loss'], 50.0))}

  def tokens_per_example(self, example) -> int:
    return example['tokens'].shape[1]
