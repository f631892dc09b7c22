"""Causal language modelling: predict token t+1 from tokens <= t.

Batch spec: {'tokens': int (b, T + 1)}: inputs are tokens[:, :-1], targets
tokens[:, 1:]; targets equal to the pad id (0) carry no loss, and eval batches
padded to a fixed size add a 'mask' (b,). The model is called as
model(inputs, train=...) -> logits (b, T, vocab). Losses are in nats per token;
perplexity and bits per token (= bits per character for a character
tokenizer) are derived from the mean loss.
"""

import math


from deepl import data as data_lib
from deepl.tasks import common
from deepl.tasks.base import Task


class CausalLMTask(Task):

  def __init__(self, model, *, tokens_are_chars: bool = False):
    super().__init__(model)
    self.bits_name = 'bits_per_char' if tokens_are_chars else 'bits_per_token'

  @classmethod
  def from_config(cls, model, config, tokenizer):
    return cls(model, tokens_are_chars=tokenizer is not None and config.data.tokenizer == 'char')

  @classmethod
  def make_sources(cls, config, dataset, tokenizer) -> dict:
    cls.require_text(config, dataset)
    return data_lib.text_splits(dataset, tokenizer, kind='lm', context=config.data.context)

  @classmethod
  def batch_spec(cls, config, *, image_shape, num_classes, vocab_size) -> dict:
    return {'tokens': ((config.data.context + 1,), 'token', 1, vocab_size)}

  def model_inputs(self, batch) -> tuple:
    return (batch['tokens'][:, :-1],)

  def _sums(self, logits, batch) -> dict:
    targets = batch['tokens'][:, 1:]
    weight = (targets != common.PAD_ID) * common.example_weight(batch, targets.shape[0])[:, None]
    return common.cross_entropy_sums(logits, targets, weight)

  def train_sums(self, params, model_state, batch, rng):
    logits, new_model_state = common.apply_train(self.model, params, model_state,
                                                 *self.model_inputs(batch), dropout_rng=rng)
    return self._sums(logits, batch), new_model_state

  def eval_sums(self, params, model_state, batch) -> dict:
    return self._sums(common.apply_eval(self.model, params, model_state,
                                        *self.model_inputs(batch)), batch)

  def summarize(self, means: dict) -> dict:
    return {**means, 'perplexity': math.exp(min(means['loss'], 50.0)),
            self.bits_name: means['loss'] / math.log(2)}

  def tokens_per_example(self, example) -> int:
    return example['tokens'].shape[1] - 1  # predicted positions per window
