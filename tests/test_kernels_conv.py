"""deepl.kernels.cpu.conv and .buffers against flax.linen.Conv: variables, values, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl.kernels.cpu import buffers
from deepl.kernels.cpu import conv

# Kernel tests run on the CPU whatever the host's default device: the kernels are for it.
pytestmark = pytest.mark.usefixtures('cpu_device', 'fast_compile')


@pytest.mark.parametrize('shape', [(4, 6, 6, 8), (128, 4, 4, 16), (3, 5, 7)])
def test_channel_sum(shape):
  # (128, 4, 4, 16) takes the two-stage path, the others the plain one.
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  np.testing.assert_allclose(jax.jit(buffers.channel_sum)(x), np.asarray(x, np.float64).reshape(
      -1, shape[-1]).sum(0), rtol=1e-5, atol=1e-4)


# (input shape, features, kernel, strides, padding): the first two take the
# CPU's shifted multiply-add path (<= 27 taps, stride 1), the next two its
# column pairs (<= 16 channels, 3x3 'SAME', even width), the others XLA's.
CASES = [
    ((4, 12, 12, 1), 8, (3, 3), 1, 'SAME'),
    ((2, 3, 9, 9, 3), 4, (3, 3), 1, 'VALID'),   # two batch dimensions
    ((4, 10, 12, 16), 16, (3, 3), 1, 'SAME'),
    ((3, 7, 8, 5), 12, (3, 3), 1, 1),
    ((4, 12, 11, 16), 16, (3, 3), 1, 'SAME'),   # odd width
    ((9, 9, 2), 4, (5, 5), 1, ((1, 2), (0, 1))),  # no batch dimension, 50 taps
    ((4, 12, 12, 5), 8, (3, 3), 2, 1),
    ((2, 8, 10, 4), 6, (1, 1), 2, 0),
    ((2, 10, 8, 3), 5, (4, 5), 2, ((1, 2), (2, 1))),
    ((2, 8, 8, 3), 5, (3, 3), 2, 'SAME'),
]


@pytest.mark.parametrize('shape,features,kernel,strides,padding', CASES)
def test_matches_flax_conv(shape, features, kernel, strides, padding):
  rng = np.random.default_rng(0)  # numpy draws: jax.random would compile once per shape
  x = rng.standard_normal(shape).astype(np.float32)
  ours = conv.Conv(features, kernel, strides, padding=padding)
  theirs = nn.Conv(features, kernel, strides, padding=padding)
  shapes = jax.eval_shape(theirs.init, jax.random.PRNGKey(1), x)
  assert jax.eval_shape(ours.init, jax.random.PRNGKey(1), x) == shapes
  kernel_shape = shapes['params']['kernel'].shape
  params = {'kernel': (rng.standard_normal(kernel_shape) / np.sqrt(np.prod(kernel_shape[:-1])))
                      .astype(np.float32),
            'bias': jnp.linspace(-1, 1, features)}

  @jax.jit  # one program for both layers' outputs and gradients: one compile a case
  def outputs_and_grads(params, x):
    def run(module):
      loss = lambda p, x: jnp.sum(jnp.sin(module.apply({'params': p}, x)) * 1.7)
      return module.apply({'params': params}, x), jax.grad(loss, argnums=(0, 1))(params, x)
    return run(ours), run(theirs)

  (out, grads), (stock_out, stock_grads) = outputs_and_grads(params, x)
  np.testing.assert_allclose(out, stock_out, rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(stock_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(b).max()))


@pytest.mark.parametrize('c_in,width,c_out,path', [
    (1, 8, 4, 'shift'), (5, 8, 4, 'pairs'), (16, 8, 16, 'pairs'), (16, 7, 16, 'xla'),
    (16, 8, 32, 'xla'), (32, 8, 16, 'xla')])
def test_cpu_path(c_in, width, c_out, path):
  # Shifted multiply-adds have no convolution op; column pairs stride 2 along W.
  x, kernel = jnp.ones((2, 8, width, c_in)), jnp.ones((3, 3, c_in, c_out))
  hlo = jax.jit(lambda x, k: conv.conv2d(x, k)).lower(x, kernel).as_text()
  taken = ('shift' if 'convolution' not in hlo else
           'pairs' if 'stride = [1, 2]' in hlo else 'xla')
  assert taken == path


def test_bfloat16_compute():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
  module = conv.Conv(4, (3, 3), dtype=jnp.bfloat16)
  variables = jax.jit(module.init)(jax.random.PRNGKey(1), x)
  y, stock = jax.jit(lambda v, x: (module.apply(v, x), nn.Conv(4, (3, 3)).apply(v, x)))(
      variables, x)
  assert y.dtype == jnp.bfloat16 and variables['params']['kernel'].dtype == jnp.float32
  np.testing.assert_allclose(y.astype(jnp.float32), stock, rtol=0.05, atol=0.05)
