"""deepl.kernels.cpu.conv and .buffers against flax.linen.Conv: variables, values, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl.kernels.cpu import buffers
from deepl.kernels.cpu import conv

# Kernel tests run on the CPU whatever the host's default device: the kernels are for it.
pytestmark = pytest.mark.usefixtures('cpu_device')


@pytest.mark.parametrize('shape', [(4, 6, 6, 8), (128, 4, 4, 16), (3, 5, 7)])
def test_channel_sum(shape):
  # (128, 4, 4, 16) takes the two-stage path, the others the plain one.
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  np.testing.assert_allclose(buffers.channel_sum(x), np.asarray(x, np.float64).reshape(
      -1, shape[-1]).sum(0), rtol=1e-5, atol=1e-4)


# (input shape, features, kernel, strides, padding): the first two take the
# CPU's shifted multiply-add path (<= 27 taps, stride 1), the next two its
# column pairs (<= 16 channels, 3x3 'SAME', even width), the others XLA's
# (stride 2 with the phased input gradient where height and width are even).
CASES = [
    ((4, 12, 12, 1), 8, (3, 3), 1, 'SAME'),
    ((2, 3, 9, 9, 3), 4, (3, 3), 1, 'VALID'),   # two batch dimensions
    ((4, 10, 12, 16), 16, (3, 3), 1, 'SAME'),
    ((3, 7, 8, 5), 12, (3, 3), 1, 1),
    ((4, 12, 11, 16), 16, (3, 3), 1, 'SAME'),   # odd width
    ((9, 9, 2), 4, (5, 5), 1, ((1, 2), (0, 1))),  # no batch dimension, 50 taps
    ((4, 12, 12, 5), 8, (3, 3), 2, 1),           # stride 2: phased input gradient
    ((2, 8, 10, 4), 6, (1, 1), 2, 0),
    ((2, 10, 8, 3), 5, (4, 5), 2, ((1, 2), (2, 1))),
    ((2, 8, 8, 3), 5, (3, 3), 2, 'SAME'),
    ((2, 9, 8, 3), 5, (3, 3), 2, 1),              # odd height: XLA's
]


@pytest.mark.parametrize('shape,features,kernel,strides,padding', CASES)
def test_matches_flax_conv(shape, features, kernel, strides, padding):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  ours = conv.Conv(features, kernel, strides, padding=padding)
  theirs = nn.Conv(features, kernel, strides, padding=padding)
  variables = theirs.init(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(
      jnp.shape, variables)
  params = {'kernel': variables['params']['kernel'], 'bias': jnp.linspace(-1, 1, features)}

  def grads(module):
    loss = lambda p, x: jnp.sum(jnp.sin(module.apply({'params': p}, x)) * 1.7)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)

  np.testing.assert_allclose(ours.apply({'params': params}, x),
                             theirs.apply({'params': params}, x), rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(theirs))):
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
  variables = module.init(jax.random.PRNGKey(1), x)
  y = module.apply(variables, x)
  assert y.dtype == jnp.bfloat16 and variables['params']['kernel'].dtype == jnp.float32
  np.testing.assert_allclose(y.astype(jnp.float32), nn.Conv(4, (3, 3)).apply(variables, x),
                             rtol=0.05, atol=0.05)


@pytest.mark.parametrize('height,dilated', [(8, False), (9, True)])
def test_stride2_input_gradient_skips_the_zeros(height, dilated):
  # Autodiff's form convolves a zero-dilated output gradient; the phased one does not.
  x, kernel = jnp.ones((2, height, 8, 16)), jnp.ones((3, 3, 16, 32))
  loss = lambda x: jnp.sum(conv.conv2d(x, kernel, (2, 2), ((1, 1), (1, 1))) ** 2)
  assert ('lhs_dilate = [2, 2]' in jax.jit(jax.grad(loss)).lower(x).as_text()) == dilated
