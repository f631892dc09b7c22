"""Speech recognition with CTC: transcripts from waveforms, CER and WER in evaluation.

Batch spec (deepl.data.audio_splits.TranscribedAudio): {'audio': int16 (b, n),
'length': int (b,) samples, 'targets': int (b, L) character ids padded with 0,
'target_length': int (b,)}; eval batches padded to a fixed size add a 'mask'
(b,). The model is called as model(log-mel features, frames, train=...) ->
(per-frame logits (b, T', V), output frames (b,)), V the char tokenizer's
vocabulary, whose pad id 0 is the CTC blank (deepl/models/speech.py).

Training: `optax.ctc_loss`, the negative log-likelihood of each transcript
summed over its alignments; the loss shown and differentiated is per target
character ('chars'). Evaluation also decodes every utterance in the jitted eval
step (greedy, or prefix beam search with task_options.beam_size > 1, deepl/ctc.py)
and counts edit distances against the transcript (deepl/speech_metrics.py):

  cer  character errors / reference characters (spaces count)
  wer  word errors / reference words

as integer sums over the split, so they do not depend on batching or devices.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from deepl import ctc
from deepl import speech_metrics
from deepl.data import audio_splits
from deepl.errors import UserError
from deepl.tasks import common
from deepl.tasks import speech_inputs
from deepl.tasks.base import Task


class CTCTask(Task):
  """CTC training and decoded evaluation; see the module doc.

  Args:
    model: returns (logits (b, T', V), frames (b,)) from (features, frames).
    space_id: the tokenizer's id of ' ', which separates words for the WER.
    augment: data.augment ('spec_augment' masks the features in training).
    beam_size: 1 decodes greedily in eval, more runs prefix beam search.
  """

  OPTIONS = {'beam_size': 1}
  LOSS_PER = 'chars'

  def __init__(self, model, *, space_id: int, augment: str = 'none', beam_size: int = 1):
    super().__init__(model)
    self.space_id, self.augment, self.beam_size = int(space_id), augment, int(beam_size)

  @classmethod
  def check(cls, config) -> None:
    if config.task_options.beam_size < 1:
      raise UserError(f'task_options.beam_size={config.task_options.beam_size}: use 1 '
                      '(greedy decoding) or more beams')
    if config.data.tokenizer != 'char':
      raise UserError(f"task 'ctc' predicts characters: set data.tokenizer='char' "
                      f"(not {config.data.tokenizer!r})")

  @classmethod
  def from_config(cls, model, config, tokenizer):
    space = tokenizer.encode(' ') if ' ' in getattr(tokenizer, 'chars', ' ') else [-1]
    return cls(model, space_id=space[0], augment=config.data.augment, **cls.options(config))

  @classmethod
  def make_sources(cls, config, dataset, tokenizer) -> dict:
    if not (dataset.is_audio and dataset.has_texts):
      raise UserError(f"task 'ctc' needs speech with transcripts; {dataset.name} has none: "
                      "try data.name='spoken_numbers'")
    speech_inputs.check(config, dataset)
    return {name: audio_splits.TranscribedAudio(split, tokenizer, config.data.max_target)
            for name, split in dataset.splits.items()}

  @classmethod
  def model_defaults(cls, config, *, num_classes, tokenizer) -> dict:
    return {'vocab_size': tokenizer.vocab_size}

  @classmethod
  def batch_spec(cls, config, *, image_shape, num_classes, vocab_size) -> dict:
    samples, target = speech_inputs.max_samples(config), config.data.max_target
    return {'audio': ((samples,), np.int16, -32768, 32768),
            'length': ((), np.int32, samples, samples + 1),
            'targets': ((target,), 'token', 1, vocab_size),
            'target_length': ((), np.int32, target, target + 1)}

  def model_inputs(self, batch, augment_rng=None) -> tuple:
    return speech_inputs.features(batch, augment=self.augment, augment_rng=augment_rng)

  def _sums(self, logits, frames, batch, weight) -> dict:
    targets = batch['targets']
    per_utterance = optax.ctc_loss(
        logits, ctc.paddings_from_lengths(frames, logits.shape[1]), targets,
        ctc.paddings_from_lengths(batch['target_length'], targets.shape[1]), blank_id=0)
    # where, not a product: an eval batch's zero-length filler rows must not bring a NaN.
    return {'loss': jnp.sum(jnp.where(weight > 0, per_utterance * weight, 0.0)),
            'chars': jnp.sum(batch['target_length'] * weight),
            'count': jnp.sum(weight)}

  def train_sums(self, params, model_state, batch, rng):
    augment_rng, dropout_rng = jax.random.split(rng)
    (logits, frames), new_model_state = common.apply_train(
        self.model, params, model_state, *self.model_inputs(batch, augment_rng),
        dropout_rng=dropout_rng)
    weight = jnp.ones(batch['targets'].shape[:1], jnp.float32)
    return self._sums(logits, frames, batch, weight), new_model_state

  def decode(self, logits, frames):
    """(label ids (b, T'), lengths (b,)): the best path, or the best beam."""
    if self.beam_size == 1:
      return ctc.greedy_decode(logits, frames)
    ids, lengths, _ = ctc.beam_search(logits, frames, beam_size=self.beam_size)
    return ids[:, 0], lengths[:, 0]

  def transcribe(self, variables, batch):
    """A batch's decoded label ids and lengths (deepl predict)."""
    logits, frames = self.model.apply(variables, *self.model_inputs(batch), train=False)
    return self.decode(logits, frames)

  def eval_sums(self, params, model_state, batch) -> dict:
    weight = common.example_weight(batch, batch['targets'].shape[0])
    logits, frames = common.apply_eval(self.model, params, model_state,
                                       *self.model_inputs(batch))
    sums = self._sums(logits, frames, batch, weight)
    hyp, hyp_len = self.decode(logits, frames)
    counts = speech_metrics.error_counts(hyp, hyp_len, batch['targets'],
                                         batch['target_length'], space_id=self.space_id)
    sums.update({key: jnp.sum(value * weight) for key, value in counts.items()})
    return sums

  def summarize(self, means: dict) -> dict:
    """Per-example means -> loss per character, and CER and WER where evaluated."""
    out = {'loss': means['loss'] / max(means['chars'], 1e-9)}
    if 'char_errors' in means:
      out['cer'] = means['char_errors'] / max(means['ref_chars'], 1e-9)
      out['wer'] = means['word_errors'] / max(means['ref_words'], 1e-9)
    return out
