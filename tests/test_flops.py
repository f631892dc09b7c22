"""deepl.flops: XLA's FLOP count with every scan iteration counted, and peaks."""

import functools

import jax
import jax.numpy as jnp
import pytest

from deepl import flops

B, D = 32, 64
MATMUL = 2 * B * D * D  # one (B, D) @ (D, D)
X = jax.ShapeDtypeStruct((B, D), jnp.float32)
W = jax.ShapeDtypeStruct((D, D), jnp.float32)


def scanned(x, w, n=10, unroll=1):
  y, _ = jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=n, unroll=unroll)
  return y.sum()


def test_xla_alone_counts_a_scan_body_once():
  # The reason deepl.flops exists; if XLA ever counts trips, the fix goes.
  _, xla = flops.flop_counts(scanned, X, W)
  assert xla == pytest.approx(MATMUL, rel=0.01)


@pytest.mark.parametrize('unroll', [1, 3, 10])
def test_a_scan_of_n_matmuls_counts_n(unroll):
  count = flops.flops_per_step(functools.partial(scanned, unroll=unroll), X, W)
  assert count == pytest.approx(10 * MATMUL, rel=0.01)


def test_nested_scans_multiply():
  def nested(x, w):
    def outer(c, _):
      return scanned_carry(c, w, 5), None
    return jax.lax.scan(outer, x, None, length=3)[0].sum()

  def scanned_carry(x, w, n):
    return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=n)[0]

  assert flops.flops_per_step(nested, X, W) == pytest.approx(15 * MATMUL, rel=0.01)


def test_grad_of_a_scan_counts_forward_and_backward():
  # Forward c @ w, backward the cotangents of c and of w: three matmuls a step.
  grad = jax.grad(lambda x, w: scanned(jnp.tanh(x), w), argnums=1)
  assert flops.flops_per_step(grad, X, W) == pytest.approx(30 * MATMUL, rel=0.01)


def test_scans_inside_jit_and_remat_are_found():
  @jax.jit
  def inner(x, w):
    body = jax.checkpoint(lambda c, _: (jnp.tanh(c @ w), None))
    return jax.lax.scan(body, x, None, length=4)[0].sum()

  def outer(x, w):
    return inner(x, w) * 2

  assert flops.flops_per_step(outer, X, W) == pytest.approx(4 * MATMUL, rel=0.02)
  # Backward: the forward again (remat), then two matmuls for the cotangents.
  grad = jax.grad(outer, argnums=1)
  assert flops.flops_per_step(grad, X, W) == pytest.approx(16 * MATMUL, rel=0.02)


def test_without_loops_it_is_xla_own_number():
  def mlp(x, w):
    return jnp.sum(jax.nn.relu(x @ w) @ w)
  arrays = (jnp.ones((B, D)), jnp.ones((D, D)))
  expected = jax.jit(mlp).lower(*arrays).cost_analysis()['flops']
  count, xla = flops.flop_counts(mlp, *arrays)
  assert count == xla == expected
  assert count == pytest.approx(2 * MATMUL, rel=0.05)


def test_host_lowering_stands_in_for_backends_without_an_analysis():
  # The GPU plugin answers None for a lowered program; the same function
  # lowered for the host's CPU is what deepl counts there.
  fn = lambda x, w: jnp.tanh(x @ w).sum()
  lowered = jax.jit(fn).lower(*flops._on_host((X, W)))  # pylint: disable=protected-access
  assert lowered.cost_analysis()['flops'] == jax.jit(fn).lower(X, W).cost_analysis()['flops']
  assert lowered.cost_analysis()['flops'] == pytest.approx(MATMUL, rel=0.05)


def test_published_peaks_by_device_kind():
  assert flops.published_peak('NVIDIA H100 80GB HBM3', 'bfloat16') == 989e12
  assert flops.published_peak('NVIDIA H100 PCIe', jnp.bfloat16) == 756e12
  assert flops.published_peak('NVIDIA A100-SXM4-40GB', 'float32') == 156e12
  assert flops.published_peak('TPU v5 lite', 'bfloat16') == 197e12
  assert flops.published_peak('TPU v4', 'bfloat16') == 275e12
  assert flops.published_peak('Some Future Chip', 'bfloat16') is None
  assert flops.published_peak('NVIDIA H200', 'int8') is None


def test_cpu_peak_is_measured_once_and_fast():
  if jax.devices()[0].platform != 'cpu':
    pytest.skip('CPU only')
  first = flops.peak_flops('float32')
  assert 1e8 < first < 1e14  # any CPU from a phone core to a big server
  assert flops.peak_flops(jnp.float32) == first  # cached: the same measurement
  assert flops.system_peak_flops('float32') == first * jax.process_count()
  again = flops.peak_flops('float32', again=True)  # timed anew, the cached one kept
  assert 1e8 < again < 1e14
  assert flops.peak_flops('float32') == first
