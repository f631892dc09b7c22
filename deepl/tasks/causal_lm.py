"""Causal language modelling: predict token t+1 from tokens <= t.

Batch spec: {'tokens': int (b, T + 1)}: inputs are tokens[:, :-1], targets
tokens[:, 1:]; targets equal to the pad id (0) carry no loss, and eval batches
padded to a fixed size add a 'mask' (b,). The model is called as
model(inputs, train=...) -> logits (b, T, vocab). Losses are in nats per token;
perplexity and bits per token (= bits per character for a character
tokenizer) are derived from the mean loss.
"""

import math

import jax
import jax.numpy as jnp
import optax

PAD_ID = 0


class CausalLMTask:

  def __init__(self, model, *, tokens_are_chars: bool = False, **unused):
    del unused  # options other tasks take
    self.model = model
    self.bits_name = 'bits_per_char' if tokens_are_chars else 'bits_per_token'

  def init(self, rng, batch) -> dict:
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({'params': params_rng, 'dropout': dropout_rng},
                           batch['tokens'][:, :-1], train=False)

  def _per_token(self, logits, batch, mask=None):
    targets = batch['tokens'][:, 1:]
    per_token = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), targets)
    weight = (targets != PAD_ID).astype(jnp.float32)
    if mask is not None:
      weight = weight * mask.astype(jnp.float32)[:, None]
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    sums = {'loss': jnp.sum(per_token * weight), 'accuracy': jnp.sum(correct * weight),
            'count': jnp.sum(weight)}
    return sums

  def loss(self, params, model_state, batch, rng):
    logits, new_model_state = self.model.apply(
        {'params': params, **model_state}, batch['tokens'][:, :-1], train=True,
        mutable=list(model_state), rngs={'dropout': rng})
    sums = self._per_token(logits, batch)
    return sums['loss'] / jnp.maximum(sums['count'], 1.0), (sums, new_model_state)

  def eval_sums(self, params, model_state, batch) -> dict:
    logits = self.model.apply({'params': params, **model_state}, batch['tokens'][:, :-1],
                              train=False)
    return self._per_token(logits, batch, batch.get('mask'))

  @staticmethod
  def tokens_per_example(example) -> int:
    return example['tokens'].shape[1] - 1  # predicted positions per window

  def summarize(self, means: dict) -> dict:
    out = dict(means)
    out['perplexity'] = math.exp(min(means['loss'], 50.0))
    out[self.bits_name] = means['loss'] / math.log(2)
    return out
