"""Model FLOPs of a step, with loops counted right, and the device's peak.

  flops = flops_per_step(train_step, state, batch)     # FLOPs of one call
  mfu = flops * steps_per_sec / system_peak_flops('float32')

XLA's cost analysis counts the body of a while loop once, whatever its trip
count: a `lax.scan` of 10 matmuls reports the FLOPs of one. `flops_per_step`
starts from XLA's number for the whole function and, for every scan in its
jaxpr (nested ones and those inside jit/remat/custom_vjp calls too), swaps
what XLA counted for that scan for length x the (corrected) count of its
body. Only `while_loop`s with a traced trip count stay counted once (XLA
cannot know, nor can we); `fori_loop`s with static bounds are scans.

The counts are of the unoptimized program (`jit(fn).lower(...)`), so they
are model FLOPs: what the math needs, before XLA fuses or rematerialises
anything. Elementwise ops count too, as XLA counts them. A custom call (a
fused kernel) counts 0: count a model with its XLA path instead (deepl's
train loop counts transformers with attention_implementation='xla', whose
matmuls are those of the fused kernel).

Peaks: on CPU a jitted matmul measured once per process and dtype (~0.15 s),
so MFU there is "share of what this machine's matmul reaches"; on GPU/TPU the
published dense peak of the chip, or None for a chip not in the table.
"""

import functools
import time

import jax
from jax.extend import core as jex_core
import jax.numpy as jnp
import numpy as np

from deepl import jaxprs


def _abstract(tree):
  """ShapeDtypeStructs without shardings: counting never needs placement."""
  def leaf(x):
    if not hasattr(x, 'shape') or not hasattr(x, 'dtype'):  # Python scalars
      x = jnp.asarray(x)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)
  return jax.tree.map(leaf, tree)


def _xla_flops(fn, *args, lowered=None) -> float:
  """XLA's count of `fn(*args)`; `lowered`: the same already lowered, saving a trace."""
  cost = (lowered or jax.jit(fn).lower(*args)).cost_analysis()
  if cost is None:
    # PJRT plugin backends (the CUDA GPU in current JAX) analyse only compiled
    # programs, whose counts follow fusion and rematerialisation. The same
    # function lowered for the host's CPU is the same model math.
    cost = jax.jit(fn).lower(*_on_host(args)).cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per device
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))


def _on_host(args):
  """ShapeDtypeStructs placed on this host's CPU, so jit lowers for it."""
  host = jax.sharding.SingleDeviceSharding(jax.devices('cpu')[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=host), args)


class _Counter:
  """XLA's count of a jaxpr plus the loop corrections, with a cache per jaxpr."""

  def __init__(self):
    self._xla = {}

  def xla(self, closed) -> float:
    """XLA's own count of a ClosedJaxpr lowered on its own."""
    key = id(closed)
    if key not in self._xla:
      args = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in closed.in_avals]
      self._xla[key] = (_xla_flops(jex_core.jaxpr_as_fun(closed), *args), closed)
    return self._xla[key][0]

  def total(self, closed) -> float:
    return self.xla(closed) + self.correction(closed.jaxpr)

  def correction(self, jaxpr) -> float:
    """What XLA's count of `jaxpr` misses: the loop trips it counted once."""
    extra = 0.0
    for eqn in jaxpr.eqns:
      name = eqn.primitive.name
      if name == 'scan':
        body = eqn.params['jaxpr']
        extra += eqn.params['length'] * self.total(body) - self._eqn_xla(eqn)
      elif name == 'cond':  # one branch runs; XLA is as blind to which as we are
        extra += max(self.correction(b.jaxpr) for b in eqn.params['branches'])
      else:  # jit, remat, custom_jvp/vjp calls, while loops (counted once)
        extra += sum(self.correction(sub) for sub in jaxprs.subjaxprs(eqn))
    return extra

  def _eqn_xla(self, eqn) -> float:
    """XLA's count of one equation alone: its loop as XLA builds it (unroll too)."""
    params = eqn.primitive.get_bind_params(eqn.params)
    literals = {i: v.val for i, v in enumerate(eqn.invars) if isinstance(v, jex_core.Literal)}
    args = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype)
            for i, v in enumerate(eqn.invars) if i not in literals]

    def fn(*given):
      given = iter(given)
      full = [literals[i] if i in literals else next(given) for i in range(len(eqn.invars))]
      return eqn.primitive.bind(*full, **params)

    return _xla_flops(fn, *args)


def flop_counts(fn, *args) -> tuple[float, float]:
  """(FLOPs of one call of `fn(*args)` with loops counted, XLA's own count).

  Args:
    fn: a function of arrays (jitted or not); args may be arrays or
      ShapeDtypeStructs, and only their shapes and dtypes matter.
    *args: its positional arguments (pytrees).
  """
  args = _abstract(args)
  traced = jax.jit(fn).trace(*args)  # one trace for both counts: a train step's takes ~0.5 s
  xla = _xla_flops(fn, *args, lowered=traced.lower())
  return xla + _Counter().correction(traced.jaxpr.jaxpr), xla


def flops_per_step(fn, *args) -> float:
  """FLOPs of one call of `fn(*args)`, every scan iteration counted."""
  return flop_counts(fn, *args)[0]


# --------------------------------------------------------------------- peaks

# Published dense (no sparsity) peaks per chip, FLOP/s. 'float32' is what a
# float32 matmul gets at JAX's default precision: TF32 tensor cores on
# A100/H100/H200, one bf16 pass on TPUs. Matched on jax's device_kind,
# lowercased, first substring that appears wins (so 'h100 pcie' before 'h100').
_T = 1e12
PEAKS = (
    ('h100 pcie', {'bfloat16': 756 * _T, 'float32': 378 * _T}),
    ('h100 nvl', {'bfloat16': 835 * _T, 'float32': 418 * _T}),
    ('h200 nvl', {'bfloat16': 835 * _T, 'float32': 418 * _T}),
    ('h100', {'bfloat16': 989 * _T, 'float32': 495 * _T}),   # SXM
    ('h200', {'bfloat16': 989 * _T, 'float32': 495 * _T}),   # SXM
    ('a100', {'bfloat16': 312 * _T, 'float32': 156 * _T}),
    ('tpu v4', {'bfloat16': 275 * _T, 'float32': 275 * _T}),
    ('tpu v5 lite', {'bfloat16': 197 * _T, 'float32': 197 * _T}),
    ('tpu v5e', {'bfloat16': 197 * _T, 'float32': 197 * _T}),
    ('tpu v5p', {'bfloat16': 459 * _T, 'float32': 459 * _T}),
    ('tpu v5', {'bfloat16': 459 * _T, 'float32': 459 * _T}),   # v5p reports 'TPU v5'
    ('tpu v6 lite', {'bfloat16': 918 * _T, 'float32': 918 * _T}),
    ('tpu v6e', {'bfloat16': 918 * _T, 'float32': 918 * _T}),
)


def _dtype_name(dtype) -> str:
  return jnp.dtype(dtype).name


def published_peak(device_kind: str, dtype='float32') -> float | None:
  """The table's dense peak of one chip, or None for an unknown chip or dtype."""
  kind = device_kind.lower()
  for pattern, peaks in PEAKS:
    if pattern in kind:
      return peaks.get(_dtype_name(dtype))
  return None


@functools.lru_cache(maxsize=None)
def measured_cpu_peak(dtype='float32', n: int = 1024, reps: int = 5) -> float:
  """FLOP/s of a jitted n x n matmul on this host's CPU, best of `reps`.

  Once per process and dtype (cached): ~0.15 s for float32 on two cores. The
  best rep, because a busy machine only ever makes a rep slower.
  """
  device = jax.devices('cpu')[0]
  # numpy inputs: random ops in JAX would cost a compile each.
  rng = np.random.default_rng(0)
  a, b = (jax.device_put(rng.standard_normal((n, n), np.float32).astype(jnp.dtype(dtype)),
                         device) for _ in range(2))
  matmul = jax.jit(jnp.matmul)
  matmul(a, b).block_until_ready()  # compile and warm up
  best = float('inf')
  for _ in range(reps):
    start = time.perf_counter()
    matmul(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * n ** 3 / best


def peak_flops(dtype='float32', device=None, *, again: bool = False) -> float | None:
  """Dense matmul peak FLOP/s of one device (default: the first), or None.

  CPU: measured here (one CPU "device" is the whole host); `again` times it
  anew instead of returning the first measurement. GPU/TPU: the published
  peak of `device.device_kind`, None if the table lacks it.
  """
  device = device or jax.devices()[0]
  if device.platform == 'cpu':
    measure = measured_cpu_peak.__wrapped__ if again else measured_cpu_peak
    return measure(_dtype_name(dtype))
  return published_peak(device.device_kind, dtype)


def system_peak_flops(dtype='float32', *, again: bool = False) -> float | None:
  """The peak of every device a global step runs on, or None if unknown.

  Forced host devices share one CPU, so CPU counts each process's host once.
  """
  device = jax.devices()[0]
  peak = peak_flops(dtype, device, again=again)
  if peak is None:
    return None
  return peak * (jax.process_count() if device.platform == 'cpu' else jax.device_count())
