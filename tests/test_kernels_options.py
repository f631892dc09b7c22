"""The XLA options a layer set asks for follow what the model computes, never its name."""

import jax
import jax.numpy as jnp
import pytest

from deepl import kernels
from deepl.kernels import cpu
from deepl.models import cnn
from deepl.models import gpt
from deepl.models import rnn

pytestmark = pytest.mark.usefixtures('cpu_device', 'fast_compile')

BARRIERS = {'xla_disable_hlo_passes': 'cse_barrier_expander'}
YNN = 'xla_cpu_experimental_ynn_fusion_type'
IMAGES = jnp.zeros((2, 8, 8, 1))
TOKENS = jnp.zeros((2, 6), jnp.int32)


def _options(layer_set, model, x):
  if kernels.platform() != 'cpu':
    pytest.skip("the cpu set's options are for runs on a CPU")
  return kernels.compiler_options(layer_set, lambda x: model.init(jax.random.key(0), x,
                                                                  train=False), x)


def test_steps_that_convolve_get_ynnpack_matmuls():
  options = _options('cpu', cnn.CNN(kernels='cpu'), IMAGES)
  assert options == cpu.compiler_options(convolutional=True)
  assert (YNN in options) == (cpu._jaxlib_version() >= cpu._YNN_OPTION_SINCE)  # pylint: disable=protected-access


@pytest.mark.parametrize('model', [
    gpt.GPT(vocab_size=11, num_layers=1, num_heads=2, width=8, max_len=6, kernels='cpu'),
    rnn.RNNLM(vocab_size=11, embed_dim=4, hidden_dim=5, num_layers=1, kernels='cpu'),
])
def test_other_steps_keep_only_their_barriers(model):
  assert _options('cpu', model, TOKENS) == BARRIERS


def test_stock_layers_ask_for_nothing():
  assert _options('xla', cnn.CNN(), IMAGES) == {}


def test_a_convolution_is_found_inside_scans_and_custom_vjps():
  kernel = jnp.ones((3, 3, 1, 2))
  conv = lambda x: jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=(
      'NHWC', 'HWIO', 'NHWC'))
  wrapped = jax.custom_vjp(conv)
  wrapped.defvjp(lambda x: (conv(x), None), lambda _, g: (g[..., :1],))
  in_scan = lambda x: jax.lax.scan(lambda c, _: (wrapped(c)[..., :1], None), x, None, length=2)[0]
  jaxpr = lambda fn: jax.make_jaxpr(fn)(IMAGES).jaxpr
  assert kernels._convolves(jaxpr(in_scan))  # pylint: disable=protected-access
  assert not kernels._convolves(jaxpr(lambda x: jnp.sum(x * 2)))  # pylint: disable=protected-access
