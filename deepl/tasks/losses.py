"""The softmax cross-entropy every task trains on, and its accuracy.

  per_position, correct = cross_entropy(logits, labels)

Same values as `optax.softmax_cross_entropy_with_integer_labels` on float32
logits, written for XLA:GPU. optax picks the label's logit with a gather,
whose gradient is a scatter-add into a float32 copy of the logits; that
scatter sits between the softmax and the cast back to the logits' dtype, so
XLA writes the whole float32 gradient and converts it in a second pass (GPT-2
small, vocabulary 50,304, batch 16 x 1024, on an H200: 1.3 + 1.2 ms of a
33.5 ms step, in the profile). Here the label's logit is a one-hot select and
sum, so the gradient, (softmax - one-hot) * g, and its cast can be one
elementwise pass.
"""

import jax
import jax.numpy as jnp


def cross_entropy(logits, labels):
  """Per-position loss in nats (float32) and argmax == label (bool).

  Args:
    logits: (..., V), any float dtype; the loss is computed in float32.
    labels: int (...), in [0, V).
  """
  x = logits.astype(jnp.float32)
  is_label = labels[..., None] == jnp.arange(x.shape[-1])
  label_logit = jnp.sum(jnp.where(is_label, x, 0.0), axis=-1)
  loss = jax.nn.logsumexp(x, axis=-1) - label_logit
  return loss, jnp.argmax(logits, axis=-1) == labels
