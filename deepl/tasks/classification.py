"""Classification of images, texts or speech: softmax cross-entropy and accuracy.

Batch spec, images: {'image': uint8 (b, H, W, C), 'label': int (b,)} and the
model is called as model(images, train=...), images scaled to [0, 1] and, in
training, augmented as data.augment says. Texts: {'tokens': int (b, T),
'length': int (b,), 'label': int (b,)} and model(tokens, lengths, train=...).
Speech: {'audio': int16 (b, n), 'length': int (b,) samples, 'label'} and
model(log-mel features, frames, train=...), the features computed in the step
(deepl/tasks/speech_inputs.py). Eval batches padded to a fixed size add a 'mask' (b,).

task_options.label_smoothing (0 by default; 0.1 in
experiments/imagenet_resnet50.py) trains on targets (1 - a) one-hot + a /
classes; the train rows' loss is that smoothed loss, evaluation's the plain
cross-entropy.
"""

import jax
import jax.numpy as jnp
import numpy as np

from deepl import data as data_lib
from deepl.data import augment as augment_lib
from deepl.errors import UserError
from deepl.tasks import common
from deepl.tasks import speech_inputs
from deepl.tasks.base import Task


class ClassificationTask(Task):

  OPTIONS = {'label_smoothing': 0.0}

  def __init__(self, model, *, augment: str = 'none', label_smoothing: float = 0.0):
    super().__init__(model)
    self.augment = augment
    self.label_smoothing = label_smoothing

  @classmethod
  def check(cls, config) -> None:
    smoothing = config.task_options.label_smoothing
    if not 0.0 <= smoothing < 1.0:
      raise UserError(f'task_options.label_smoothing={smoothing!r}: use a share in [0, 1); '
                      'ImageNet recipes use 0.1')

  @classmethod
  def from_config(cls, model, config, tokenizer):
    del tokenizer
    return cls(model, augment=config.data.augment, **cls.options(config))

  @classmethod
  def make_sources(cls, config, dataset, tokenizer) -> dict:
    if dataset.is_audio:
      if dataset.num_classes is None:
        raise UserError(f"{dataset.name} holds transcripts, not classes: use task='ctc'")
      speech_inputs.check(config, dataset)
      return dataset.splits
    if not dataset.is_text:
      augment_lib.check_kind(config.data.augment, audio=False)
      return dataset.splits
    return data_lib.text_splits(dataset, tokenizer, kind='classification',
                                max_length=config.data.max_length)

  @classmethod
  def model_defaults(cls, config, *, num_classes, tokenizer) -> dict:
    defaults = super().model_defaults(config, num_classes=num_classes, tokenizer=tokenizer)
    return {**defaults, 'num_classes': num_classes} if num_classes else defaults

  @classmethod
  def batch_spec(cls, config, *, image_shape, num_classes, vocab_size) -> dict:
    label = ((), np.int32, 0, num_classes or 2)
    if image_shape is not None:
      if config.data.normalize != 'none':  # float32 from the pipeline, about N(0, 1)
        return {'image': (tuple(image_shape), np.float32, -2, 2), 'label': label}
      return {'image': (tuple(image_shape), np.uint8, 0, 256), 'label': label}
    return text_batch_spec(config, vocab_size) | {'label': label}

  def model_inputs(self, batch, augment_rng=None) -> tuple:
    """(images,), (tokens, lengths) or (log-mels, frames); augmented where a key is given.

    uint8 images are scaled to [0, 1]; float ones come normalised from the
    pipeline (data.normalize) and are used as they are.
    """
    if 'tokens' in batch:
      return batch['tokens'], batch['length']
    if 'audio' in batch:
      return speech_inputs.features(batch, augment=self.augment, augment_rng=augment_rng)
    images = batch['image']
    images = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images
    if augment_rng is not None and self.augment != 'none':
      images = augment_lib.augment_batch(augment_rng, images, self.augment)
    return (images,)

  def train_sums(self, params, model_state, batch, rng):
    augment_rng, dropout_rng = jax.random.split(rng)
    logits, new_model_state = common.apply_train(
        self.model, params, model_state, *self.model_inputs(batch, augment_rng),
        dropout_rng=dropout_rng)
    weight = jnp.ones(batch['label'].shape, jnp.float32)
    return common.cross_entropy_sums(logits, batch['label'], weight,
                                     label_smoothing=self.label_smoothing), new_model_state

  def eval_sums(self, params, model_state, batch) -> dict:
    logits = common.apply_eval(self.model, params, model_state, *self.model_inputs(batch))
    weight = common.example_weight(batch, batch['label'].shape[0])
    return common.cross_entropy_sums(logits, batch['label'], weight)

  def tokens_per_example(self, example) -> int | None:
    return example['tokens'].shape[1] if 'tokens' in example else None


def text_batch_spec(config, vocab_size: int) -> dict:
  """Texts of data.max_length tokens, every position real (the longest bucket)."""
  n = config.data.max_length
  return {'tokens': ((n,), 'token', 1, vocab_size), 'length': ((), np.int32, n, n + 1)}
