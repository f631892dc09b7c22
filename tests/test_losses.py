"""The tasks' shared cross-entropy: optax's values, and a gradient without a scatter."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deepl.tasks import losses


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_cross_entropy_matches_optax_values_and_gradients(dtype):
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  logits = (3 * jax.random.normal(k1, (4, 7, 33))).astype(dtype)
  labels = jax.random.randint(k2, (4, 7), 0, 33)

  def ours(x):
    loss, _ = losses.cross_entropy(x, labels)
    return jnp.sum(loss * jnp.arange(7.0)), loss  # uneven weights: a wrong row shows

  def reference(x):
    loss = optax.softmax_cross_entropy_with_integer_labels(x.astype(jnp.float32), labels)
    return jnp.sum(loss * jnp.arange(7.0)), loss

  (_, loss), grad = jax.value_and_grad(ours, has_aux=True)(logits)
  (_, want), want_grad = jax.value_and_grad(reference, has_aux=True)(logits)
  assert loss.dtype == jnp.float32 and grad.dtype == dtype
  np.testing.assert_allclose(loss, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(grad.astype(jnp.float32), want_grad.astype(jnp.float32),
                             rtol=1e-6, atol=1e-6)
  _, correct = losses.cross_entropy(logits, labels)
  np.testing.assert_array_equal(correct, jnp.argmax(logits, -1) == labels)


def test_cross_entropy_gradient_has_no_scatter():
  """The label's logit is a one-hot sum: its transpose is elementwise, so XLA can
  fuse softmax - one-hot with the cast back to bfloat16 (a scatter stops that)."""
  labels = jnp.zeros((2, 5), jnp.int32)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(losses.cross_entropy(x, labels)[0])))
  hlo = grad.lower(jnp.zeros((2, 5, 11), jnp.bfloat16)).as_text()
  assert 'scatter' not in hlo and 'gather' not in hlo
