"""deepl.kernels.cpu.attention against jax.nn.dot_product_attention."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl.kernels.cpu import attention
from deepl.models import transformer

# Kernel tests run on the CPU whatever the host's default device: the kernels are for it.
pytestmark = pytest.mark.usefixtures('cpu_device', 'fast_compile')


@pytest.mark.parametrize('length,causal,mask_kind,chunked', [
    (256, True, None, False),      # 4 causal blocks of 64
    (200, True, 'padding', False),  # 3 uneven blocks
    (130, True, 'rows', False),     # 2 blocks, a (b, 1, T, S) mask
    (9, True, None, False),         # one block
    (96, False, 'padding', False),
    (256, True, None, True),        # each batch element on its own
    (200, True, 'padding', True),
    (130, True, 'rows', True),
])
def test_equals_jaxs_xla_path(length, causal, mask_kind, chunked, monkeypatch):
  # The CPU path (blocked causal einsums, in batch chunks when the logits are
  # big) must give the values and gradients of jax.nn.dot_product_attention.
  if chunked:
    monkeypatch.setattr(attention, '_CHUNK_LOGITS_BYTES', 1)
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v = (jax.random.normal(key, (2, length, 3, 8)) for key in keys[:3])
  if mask_kind == 'padding':
    mask = transformer.key_padding_mask(jnp.arange(length)[None, :] < jnp.array([[length], [length - 7]]))
  elif mask_kind == 'rows':
    mask = jax.random.bernoulli(keys[3], 0.7, (2, 1, length, length)) | jnp.eye(length, dtype=bool)
  else:
    mask = None
  weights = jnp.arange(length, dtype=jnp.float32)[None, :, None, None]

  def loss(q, k, v, kernels):
    out = transformer.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                            kernels=kernels)
    return (out ** 2 * weights).sum(), out

  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True), static_argnums=3)
  (dq, dk, dv), out = grad(q, k, v, 'cpu')
  (rq, rk, rv), ref = grad(q, k, v, 'xla')
  np.testing.assert_allclose(out, ref, atol=2e-6)
  for ours, theirs in ((dq, rq), (dk, rk), (dv, rv)):
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-3)


def test_the_cpu_set_has_no_cudnn():
  q = jnp.ones((1, 4, 2, 8))
  with pytest.raises(ValueError, match="use implementation='xla'"):
    transformer.dot_product_attention(q, q, q, implementation='cudnn', kernels='cpu')
