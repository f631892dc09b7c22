"""deepl's Dense layers: flax's parameters, values and gradients, as 2-D matmuls on a CPU."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl.kernels.cpu import dense
from tests import helpers

# Kernel tests run on the CPU whatever the host's default device: the kernels are for it.
pytestmark = pytest.mark.usefixtures('cpu_device', 'fast_compile')

# (ours, flax's, their arguments): a Dense on a sequence, attention's q/k/v
# projection (W -> heads x head_dim) and its output projection (contracting both).
LAYERS = [
    (dense.Dense, nn.Dense, dict(features=6)),
    (dense.DenseGeneral, nn.DenseGeneral, dict(features=(3, 2))),
    (dense.DenseGeneral, nn.DenseGeneral, dict(features=6, axis=(-2, -1))),
]


@pytest.mark.parametrize('ours, theirs, kwargs', LAYERS)
def test_same_parameters_values_and_gradients_as_flax(ours, theirs, kwargs):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4, 8))
  params = theirs(**kwargs).init(jax.random.PRNGKey(1), x)
  ours_params = ours(**kwargs).init(jax.random.PRNGKey(1), x)
  jax.tree.map(np.testing.assert_array_equal, ours_params, params)  # names, shapes, init

  def loss(module, p, x):
    return jnp.sum(jnp.sin(module.apply(p, x)))

  np.testing.assert_allclose(ours(**kwargs).apply(params, x), theirs(**kwargs).apply(params, x),
                             rtol=1e-6, atol=1e-6)
  grads = jax.grad(loss, argnums=(1, 2))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grads(ours(**kwargs), params, x), grads(theirs(**kwargs), params, x))


def _dot_operand_ranks(fn, *args):
  return [tuple(a.ndim for a in operands) for operands in helpers.dot_operands(fn, *args)]


def test_on_cpu_a_dense_contraction_is_one_2d_matmul():
  x = jnp.ones((2, 5, 4, 8))
  module = dense.DenseGeneral(6, axis=(-2, -1))
  params = module.init(jax.random.PRNGKey(0), x)
  assert _dot_operand_ranks(module.apply, params, x) == [(2, 2)]
  flax_module = nn.DenseGeneral(6, axis=(-2, -1))
  assert _dot_operand_ranks(flax_module.apply, params, x) == [(4, 3)]


def test_other_contractions_are_lax_dot_general():
  a = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 5))
  b = jax.random.normal(jax.random.PRNGKey(1), (3, 5, 2))
  batched = (((2,), (1,)), ((0,), (0,)))
  np.testing.assert_array_equal(dense.dot_general(a, b, batched),
                                jax.lax.dot_general(a, b, batched))
  assert _dot_operand_ranks(lambda a, b: dense.dot_general(a, b, batched), a, b) == [(3, 3)]
