"""A recurrent layer's time loop with a hand-written backward pass, for XLA:CPU.

`recurrence(cell, w_h, b_h, carry, xw, mask)` is `deepl.models.rnn.scan_recurrence`
(the same contract and numbers: one `lax.scan` of the cell over time), with a
custom VJP that makes it faster to train on a CPU:

- Autodiff of a scan accumulates dW_h += h_t^T dhw_t inside the backward
  loop: T skinny (H, b) @ (b, G*H) matmuls, each reading and writing the
  whole (H, G*H) gradient. Here the backward loop only carries dh back
  through time and emits each step's dhw_t; dW_h is one (H, T*b) @
  (T*b, G*H) matmul after the loop.
- The LSTM's and GRU's steps are differentiated by hand: the LSTM keeps 5
  arrays of (b, H) per step for its backward pass where the step's own vjp
  keeps 11, and emits its (identical) xw and hw gradients once.

No forward-mode AD (`jax.jvp`) through the custom VJP: use the stock loop
(kernels='xla') for that. Tested against autodiff of the plain scan.
"""

import functools

import jax
import jax.numpy as jnp

from deepl.models import rnn


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def recurrence(cell: str, w_h, b_h, carry, xw, mask):
  """rnn.scan_recurrence(cell, w_h, b_h, carry, xw, mask), differentiated as above."""
  return rnn.scan_recurrence(cell, w_h, b_h, carry, xw, mask)


def _step_with_residuals(cell, carry, xw_t, hw, mask_t):
  """One step, and what `_step_backward` needs to differentiate it."""
  if cell == 'lstm':
    # Written out for the LSTM, the cell that trains longest: its residuals
    # are the gate activations and c_{t-1} (5 arrays of (b, H)), where the
    # step's own vjp below saves 11 and the backward loop would emit its
    # (identical) xw and hw gradients as two arrays.
    gates = rnn.lstm_gates(xw_t + hw)
    c_new, _, h_new = rnn.lstm_cell(carry[0], gates)
    return rnn.mask_step(carry, (c_new, h_new), h_new, mask_t), (gates, carry[0])
  if cell == 'gru':  # likewise: r, z, n, h_n and h_{t-1} (its xw and hw gradients differ)
    r, z, n, h_n = rnn.gru_gates(xw_t, hw)
    h_new = (1.0 - z) * n + z * carry[0]
    return rnn.mask_step(carry, (h_new,), h_new, mask_t), (r, z, n, h_n, carry[0])
  # Otherwise the step's own backward function, residuals and all, is a
  # pytree of arrays: stacked over time it is all the backward loop needs
  # besides h_{t-1}, and nothing elementwise is recomputed there.
  return jax.vjp(lambda c, x, hw: rnn.masked_step(cell, c, x, hw, mask_t), carry, xw_t, hw)


def _step_backward(cell, residuals, d_carry, dy_t, mask_t):
  """(d carry_{t-1} except through hw, d xw_t, d hw_t or None if the same)."""
  if cell == 'lstm':
    return _lstm_step_backward(residuals, d_carry, dy_t, mask_t)
  if cell == 'gru':
    return _gru_step_backward(residuals, d_carry, dy_t, mask_t)
  return residuals((d_carry, dy_t))


def _lstm_step_backward(residuals, d_carry, dy_t, mask_t):
  gates, c = residuals
  dc, dh = d_carry
  i, f, g, o = jnp.split(gates, 4, axis=-1)
  _, tanh_c, _ = rnn.lstm_cell(c, gates)
  dh_new, dc_new = dh + dy_t, dc
  if mask_t is not None:  # past a sequence's end the carry passes through
    dh_new, dc_new = jnp.where(mask_t, dh_new, 0.0), jnp.where(mask_t, dc, 0.0)
  dc_new = dc_new + dh_new * o * (1.0 - tanh_c * tanh_c)
  dz = jnp.concatenate([dc_new * g * i * (1.0 - i), dc_new * c * f * (1.0 - f),
                        dc_new * i * (1.0 - g * g), dh_new * tanh_c * o * (1.0 - o)], axis=-1)
  dc_prev, dh_prev = dc_new * f, jnp.zeros_like(dh)  # h_{t-1} only enters through hw
  if mask_t is not None:
    dc_prev, dh_prev = jnp.where(mask_t, dc_prev, dc), jnp.where(mask_t, 0.0, dh)
  return (dc_prev, dh_prev), dz, None


def _gru_step_backward(residuals, d_carry, dy_t, mask_t):
  r, z, n, h_n, h = residuals
  (dh,) = d_carry
  dh_new = dh + dy_t
  if mask_t is not None:
    dh_new = jnp.where(mask_t, dh_new, 0.0)
  da_n = dh_new * (1.0 - z) * (1.0 - n * n)  # a_n = x_n + r * h_n
  da_r = da_n * h_n * r * (1.0 - r)
  da_z = dh_new * (h - n) * z * (1.0 - z)
  dxw = jnp.concatenate([da_r, da_z, da_n], axis=-1)
  dhw = jnp.concatenate([da_r, da_z, da_n * r], axis=-1)  # h_n enters a_n times r
  dh_prev = dh_new * z
  if mask_t is not None:
    dh_prev = jnp.where(mask_t, dh_prev, dh)
  return (dh_prev,), dxw, dhw


def _recurrence_fwd(cell, w_h, b_h, carry, xw, mask):
  def body(carry, inputs):
    xw_t, mask_t = inputs
    hw = rnn.recurrent_half(carry[-1], w_h, b_h)
    (new, y), step_residuals = _step_with_residuals(cell, carry, xw_t, hw, mask_t)
    return new, (y, carry[-1], step_residuals)

  final, (ys, hs, step_residuals) = jax.lax.scan(body, carry, (xw, mask))
  return (final, ys), (w_h, b_h, hs, step_residuals, mask)


def _recurrence_bwd(cell, residuals, cotangents):
  w_h, b_h, hs, step_residuals, mask = residuals
  d_final, d_ys = cotangents

  # W_h^T laid out row-major once, before the loop: XLA:CPU's matmul with the
  # transposed operand ran at ~130 GFLOP/s here, with the copy at ~170.
  w_h_t = jnp.array(w_h.T, copy=True)

  def body(d_carry, inputs):
    step_residual, dy_t, mask_t = inputs
    d_prev, dxw_t, dhw_t = _step_backward(cell, step_residual, d_carry, dy_t, mask_t)
    # h_{t-1} also fed this step through hw_t = h_{t-1} @ W_h.
    dh = d_prev[-1] + rnn.recurrent_matmul(dxw_t if dhw_t is None else dhw_t, w_h_t)
    return d_prev[:-1] + (dh,), (dxw_t, dhw_t)

  d_carry, (dxw, dhw) = jax.lax.scan(body, d_final, (step_residuals, d_ys, mask),
                                     reverse=True)
  dhw = dxw if dhw is None else dhw
  # As one 2-D (H, T*b) @ (T*b, G*H) product: XLA:CPU runs the 3-D einsum
  # contracting two axes ~1.5x slower.
  hs, dhw_2d = hs.reshape(-1, hs.shape[-1]), dhw.reshape(-1, dhw.shape[-1])
  d_w_h = jnp.matmul(hs.astype(w_h.dtype).T, dhw_2d.astype(w_h.dtype),
                     preferred_element_type=jnp.float32).astype(w_h.dtype)
  d_b_h = None if b_h is None else dhw.sum(axis=(0, 1)).astype(b_h.dtype)
  return d_w_h, d_b_h, d_carry, dxw, None


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)
