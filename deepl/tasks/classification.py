"""Classification of images or texts: softmax cross-entropy and accuracy.

Batch spec, images: {'image': uint8 (b, H, W, C), 'label': int (b,)} and the
model is called as model(images, train=...). Texts: {'tokens': int (b, T),
'length': int (b,), 'label': int (b,)} and model(tokens, lengths, train=...).
Eval batches padded to a fixed size add a 'mask' (b,). Metrics come back as
sums with a 'count' so they add up exactly across steps, devices, processes.
"""

import jax
import jax.numpy as jnp
import optax

from deepl.data import augment as augment_lib


class ClassificationTask:

  def __init__(self, model, *, augment: str = 'none', **unused):
    del unused  # options other tasks take
    self.model = model
    self.augment = augment

  def init(self, rng, batch) -> dict:
    """The model's variables: {'params': ..., and e.g. 'batch_stats': ...}."""
    params_rng, dropout_rng = jax.random.split(rng)
    return self.model.init({'params': params_rng, 'dropout': dropout_rng},
                           *self.model_inputs(batch), train=False)

  def model_inputs(self, batch, augment_rng=None) -> tuple:
    """The positional arguments of the model's call: (images in [0, 1],) or (tokens, lengths)."""
    if 'tokens' in batch:
      return batch['tokens'], batch['length']
    images = batch['image'].astype(jnp.float32) / 255.0
    if augment_rng is not None and self.augment != 'none':
      images = augment_lib.augment_batch(augment_rng, images, self.augment)
    return (images,)

  def loss(self, params, model_state, batch, rng):
    """Mean loss over the batch, and (metric sums, updated model state)."""
    augment_rng, dropout_rng = jax.random.split(rng)
    logits, new_model_state = self.model.apply(
        {'params': params, **model_state}, *self.model_inputs(batch, augment_rng), train=True,
        mutable=list(model_state), rngs={'dropout': dropout_rng})
    per_example = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch['label'])
    return per_example.mean(), (self._sums(logits, batch, per_example), new_model_state)

  def eval_sums(self, params, model_state, batch) -> dict:
    logits = self.model.apply({'params': params, **model_state}, *self.model_inputs(batch),
                              train=False)
    per_example = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch['label'])
    return self._sums(logits, batch, per_example, batch.get('mask'))

  @staticmethod
  def _sums(logits, batch, per_example, mask=None):
    weight = jnp.ones_like(per_example) if mask is None else mask.astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == batch['label']).astype(jnp.float32)
    return {'loss': jnp.sum(per_example * weight),
            'accuracy': jnp.sum(correct * weight),
            'count': jnp.sum(weight)}

  @staticmethod
  def summarize(means: dict) -> dict:
    return means

  @staticmethod
  def tokens_per_example(example) -> int | None:
    """For tokens/s: the (padded) tokens one example costs; None for images."""
    return example['tokens'].shape[1] if 'tokens' in example else None
