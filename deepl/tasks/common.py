"""What every task shares: the token cross-entropy sums, and calling a model.

Metric sums, not means, come out of every step, each with the weight it was
summed over ('count'): they add up exactly across steps, devices and processes,
and `deepl.metrics.summarize` divides once at the end.
"""

import jax
import jax.numpy as jnp
import optax

PAD_ID = 0  # the tokenizers keep id 0 for padding


def cross_entropy_sums(logits, labels, weight, label_smoothing: float = 0.0) -> dict:
  """{'loss', 'accuracy', 'count'}: weighted sums over every position of `labels`.

  Args:
    logits: float (..., V); the loss is computed in float32 whatever their dtype.
    labels: int (...), the right classes or tokens.
    weight: (...) how much each position counts (0 for padding); bool or float.
    label_smoothing: a > 0 takes the loss against (1 - a) one-hot + a / V.
  """
  if label_smoothing:
    targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
    per_position = optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)
  else:
    per_position = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), labels)
  weight = weight.astype(jnp.float32)
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return {'loss': jnp.sum(per_position * weight),
          'accuracy': jnp.sum(correct * weight),
          'count': jnp.sum(weight)}


def example_weight(batch, batch_size: int):
  """(b,) float32: eval batches padded to a fixed size carry a 'mask'; others count in full."""
  mask = batch.get('mask')
  return jnp.ones((batch_size,), jnp.float32) if mask is None else mask.astype(jnp.float32)


def init_variables(model, rng, *inputs, **kwargs) -> dict:
  """The model's variables ({'params': ..., and e.g. 'batch_stats': ...}) for these inputs."""
  params_rng, dropout_rng = jax.random.split(rng)
  return model.init({'params': params_rng, 'dropout': dropout_rng}, *inputs, train=False,
                    **kwargs)


def apply_train(model, params, model_state, *inputs, dropout_rng, **kwargs):
  """(outputs, updated model state) of a training call: dropout on, batch statistics updated."""
  return model.apply({'params': params, **model_state}, *inputs, train=True,
                     mutable=list(model_state), rngs={'dropout': dropout_rng}, **kwargs)


def apply_eval(model, params, model_state, *inputs, **kwargs):
  """The outputs of an evaluation call: no dropout, batch statistics read, not updated."""
  return model.apply({'params': params, **model_state}, *inputs, train=False, **kwargs)
