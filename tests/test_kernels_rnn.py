"""deepl.kernels.cpu.rnn against the stock recurrence."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl.kernels.cpu import rnn as cpu_rnn
from deepl.models import rnn

# Kernel tests run on the CPU whatever the host's default device: the kernels are for it.
pytestmark = pytest.mark.usefixtures('cpu_device', 'fast_compile')


@pytest.mark.parametrize('cell', ['rnn', 'lstm', 'gru'])
@pytest.mark.parametrize('ragged', [False, True])
def test_gradients_equal_autodiff_of_the_plain_scan(cell, ragged):
  # The kernel's own backward pass computes dW_h after the loop; every
  # gradient must be the one JAX derives for the stock loop.
  steps, b, h = 7, 3, 5
  g = rnn.GATES[cell]
  keys = jax.random.split(jax.random.PRNGKey(0), 6)
  w_h = 0.5 * jax.random.normal(keys[0], (h, g * h))
  b_h = jax.random.normal(keys[1], (g * h,)) if cell == 'gru' else None
  carry = tuple(jax.random.normal(k, (b, h))
                for k in keys[2:4][:len(rnn.initial_carry(cell, 1, 1))])
  xw = jax.random.normal(keys[4], (steps, b, g * h))
  mask = (rnn.valid_mask(jnp.array([7, 3, 0]), steps).T[..., None]
          if ragged else None)
  weights = jnp.arange(1, steps + 1, dtype=jnp.float32)[:, None, None]

  def loss(scan, w_h, b_h, carry, xw):
    final, ys = scan(cell, w_h, b_h, carry, xw, mask)
    return (ys ** 2 * weights).sum() + sum((1.3 * c).sum() for c in final)

  grad = lambda scan: jax.grad(functools.partial(loss, scan), argnums=(0, 1, 2, 3))(
      w_h, b_h, carry, xw)
  ours, reference = grad(cpu_rnn.recurrence), grad(rnn.scan_recurrence)
  assert len(jax.tree.leaves(ours)) == len(jax.tree.leaves(reference))
  for a, r in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
    np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(cpu_rnn.recurrence(cell, w_h, b_h, carry, xw, mask)[1],
                             rnn.scan_recurrence(cell, w_h, b_h, carry, xw, mask)[1], atol=1e-6)
