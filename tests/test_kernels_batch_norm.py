"""deepl.kernels.cpu.batch_norm against flax.linen.BatchNorm: values, gradients, statistics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl.kernels.cpu import batch_norm

# Kernel tests run on the CPU whatever the host's default device: the kernels are for it.
pytestmark = pytest.mark.usefixtures('cpu_device', 'fast_compile')

KW = dict(momentum=0.9, epsilon=1e-5)


def _pair(**kw):
  return batch_norm.BatchNorm(**KW, **kw), nn.BatchNorm(**KW, **kw)


def _inputs(shape=(4, 6, 6, 8), seed=0):
  x = jax.random.normal(jax.random.PRNGKey(seed), shape) * 3.0 + 1.5
  params = {'scale': jnp.linspace(0.5, 1.5, shape[-1]), 'bias': jnp.linspace(-1, 1, shape[-1])}
  stats = {'mean': jnp.linspace(-0.1, 0.1, shape[-1]), 'var': jnp.linspace(0.9, 1.1, shape[-1])}
  return x, params, stats


def test_same_variables_as_flax():
  ours, theirs = _pair(use_running_average=False)
  x = jnp.ones((2, 3, 3, 5))
  shapes = lambda m: jax.tree.map(jnp.shape, m.init(jax.random.PRNGKey(0), x))
  assert shapes(ours) == shapes(theirs)


@pytest.mark.parametrize('shape', [(4, 6, 6, 8), (128, 4, 4, 16)])
def test_training_values_gradients_and_statistics_match_flax(shape):
  x, params, stats = _inputs(shape)
  ours, theirs = _pair(use_running_average=False)

  def loss(module, params, x):
    y, updates = module.apply({'params': params, 'batch_stats': stats}, x,
                              mutable=['batch_stats'])
    # A loss that weights every element differently, so every gradient term counts.
    return jnp.sum(jnp.sin(y) * x), (y, updates['batch_stats'])

  grad = lambda m: jax.jit(jax.grad(loss, argnums=(1, 2), has_aux=True),
                           static_argnums=0)(m, params, x)
  (g_ours, (y_ours, s_ours)), (g_theirs, (y_theirs, s_theirs)) = grad(ours), grad(theirs)
  np.testing.assert_allclose(y_ours, y_theirs, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves((g_ours, s_ours)), jax.tree.leaves((g_theirs, s_theirs))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_gradient_through_the_statistics():
  # The running averages are outputs too: their cotangents reach x.
  x, params, stats = _inputs()

  def stat_loss(module, x):
    _, updates = module.apply({'params': params, 'batch_stats': stats}, x,
                              mutable=['batch_stats'])
    return jnp.sum(updates['batch_stats']['mean'] * 3.0 + updates['batch_stats']['var'] ** 2)

  ours, theirs = _pair(use_running_average=False)
  grad = jax.jit(jax.grad(stat_loss, 1), static_argnums=0)
  np.testing.assert_allclose(grad(ours, x), grad(theirs, x), rtol=1e-4, atol=1e-6)


def test_running_average_mode_matches_flax():
  x, params, stats = _inputs()
  ours, theirs = _pair(use_running_average=True)
  variables = {'params': params, 'batch_stats': stats}
  np.testing.assert_allclose(ours.apply(variables, x), theirs.apply(variables, x), rtol=1e-6)


def test_bfloat16_output_float32_statistics():
  x, params, stats = _inputs()
  ours = batch_norm.BatchNorm(**KW, use_running_average=False, dtype=jnp.bfloat16)
  y, updates = ours.apply({'params': params, 'batch_stats': stats}, x.astype(jnp.bfloat16),
                          mutable=['batch_stats'])
  assert y.dtype == jnp.bfloat16
  assert updates['batch_stats']['mean'].dtype == jnp.float32


def test_axis_name_averages_over_shards_like_flax():
  # A named vmap stands in for pmap: 2 shards, statistics over both.
  x, params, stats = _inputs((8, 3, 3, 4))
  shards = x.reshape(2, 4, 3, 3, 4)

  def per_shard(module):
    def loss(params, xs):
      y, updates = module.apply({'params': params, 'batch_stats': stats}, xs,
                                mutable=['batch_stats'])
      return jnp.sum(jnp.sin(y) * xs), updates['batch_stats']
    return jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1), has_aux=True), in_axes=(None, 0),
                            axis_name='batch'))(params, shards)

  ours, theirs = _pair(use_running_average=False, axis_name='batch')
  for a, b in zip(jax.tree.leaves(per_shard(ours)), jax.tree.leaves(per_shard(theirs))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))
