"""deepl.kernels.cpu.rnn and the table projection against the stock recurrence."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl.kernels.cpu import rnn as cpu_rnn
from deepl.models import rnn
from tests import helpers
from tests.test_rnn import _assert_trees_close
from tests.test_rnn import _init
from tests.test_rnn import _random
from tests.test_rnn import _tokens
from tests.test_rnn import CELLS
from tests.test_rnn import TINY
from tests.test_rnn import VOCAB

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


@pytest.mark.parametrize('cell', CELLS)
def test_token_inputs_give_the_values_and_gradients_of_their_embeddings(cell):
  # Both directions and ragged lengths: the backward one reverses the ids.
  stack = rnn.RNNStack(cell, hidden_dim=5, bidirectional=True)
  lengths = np.array([7, 4, 2])
  ids = _tokens(lengths, 7)
  table = _random((VOCAB, 3), seed=5)
  variables = _init(stack, table[ids], lengths)

  @functools.partial(jax.jit, static_argnums=2)
  def loss_and_grads(variables, table, tokens):
    def loss(variables, table):
      x = rnn.TokenInputs(table, ids) if tokens else jnp.take(table, ids, axis=0)
      ys, carries = stack.apply(variables, x, lengths, train=False)
      return jnp.sum(ys ** 2) + sum(jnp.sum(c[-1] ** 2) for c in carries[0])
    return jax.value_and_grad(loss, argnums=(0, 1))(variables, table)

  _assert_trees_close(loss_and_grads(variables, table, True),
                      loss_and_grads(variables, table, False), rtol=1e-5, atol=1e-6)


def _projects_table(lm, variables, tokens, **kwargs):
  """Whether the LM's forward multiplies the (vocab, embed) table by a kernel."""
  dots = helpers.dot_operands(lambda v: lm.apply(v, tokens, **kwargs), variables)
  return (VOCAB, TINY['embed_dim']) in {lhs.shape for lhs, _ in dots}


def test_lm_projects_the_table_only_where_no_dropout_comes_between():
  rngs = {'rngs': {'dropout': jax.random.key(1)}}
  many = _tokens([6] * 3, 6)      # 18 tokens, more than the 11 ids
  few = _tokens([5, 5], 5)        # 10 tokens
  plain = rnn.RNNLM(vocab_size=VOCAB, kernels='cpu', **TINY)
  dropped = rnn.RNNLM(vocab_size=VOCAB, dropout=0.5, kernels='cpu', **TINY)
  variables = _init(plain, many)
  assert _projects_table(plain, variables, many, train=True, **rngs)
  assert _projects_table(dropped, variables, many, train=False)
  assert not _projects_table(dropped, variables, many, train=True, **rngs)
  assert not _projects_table(plain, variables, few, train=False)
  assert not _projects_table(plain.clone(kernels='xla'), variables, many, train=False)
