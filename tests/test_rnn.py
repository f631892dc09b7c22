"""Tests for deepl.models.rnn: cells against numpy, padding, decoding.

Every network here is tiny (hidden size 5) so the whole file compiles and runs
in well under a minute on two CPU cores; the code paths are those of the big
models.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl import models
from deepl.models import rnn

pytestmark = pytest.mark.usefixtures('fast_compile')  # conftest: small programs, compiled once


CELLS = ('rnn', 'lstm', 'gru')
TINY = dict(embed_dim=4, hidden_dim=5)
VOCAB = 11


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def numpy_step(cell, params, carry, x):
  """One step of `cell` written from the equations in rnn's docstring."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  carry = [np.asarray(c, np.float64) for c in carry]
  xw = x @ p['input_kernel'] + p['input_bias']
  if cell == 'rnn':
    (h,) = carry
    h = np.tanh(xw + h @ p['hidden_kernel'])
    return (h,)
  if cell == 'lstm':
    c, h = carry
    i, f, g, o = np.split(xw + h @ p['hidden_kernel'], 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return c, _sigmoid(o) * np.tanh(c)
  (h,) = carry
  x_r, x_z, x_n = np.split(xw, 3, axis=-1)
  h_r, h_z, h_n = np.split(h @ p['hidden_kernel'] + p['hidden_bias'], 3, -1)
  r, z = _sigmoid(x_r + h_r), _sigmoid(x_z + h_z)
  n = np.tanh(x_n + r * h_n)
  return ((1 - z) * n + z * h,)


def numpy_recurrence(cell, params, x, lengths):
  """The layer as a Python loop: outputs (b, T, H) and the final carry."""
  b, steps, _ = x.shape
  h_dim = params['hidden_kernel'].shape[0]
  carry = tuple(np.zeros((b, h_dim)) for _ in range(2 if cell == 'lstm' else 1))
  ys = np.zeros((b, steps, h_dim))
  for t in range(steps):
    new = numpy_step(cell, params, carry, x[:, t])
    valid = (t < lengths)[:, None]
    carry = tuple(np.where(valid, n, c) for n, c in zip(new, carry))
    ys[:, t] = np.where(valid, new[-1], 0.0)
  return ys, carry


def _random(shape, seed):
  return np.asarray(jax.random.normal(jax.random.key(seed), shape))


def _tokens(lengths, steps, seed=0):
  """Random ids 1.. on the valid prefix, padding id 0 after it."""
  lengths = np.asarray(lengths)
  tokens = np.asarray(jax.random.randint(jax.random.key(seed),
                                         (len(lengths), steps), 1, VOCAB))
  return np.where(np.arange(steps) < lengths[:, None], tokens, 0)


def _row(tree, i):
  return jax.tree.map(lambda a: a[i], tree)


def _assert_trees_close(a, b, **tol):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **tol), a, b)


def _init(model, *args):
  return _jitted_init(model)(jax.random.key(0), *args)


@functools.cache
def _jitted_init(model):
  # One compile is far cheaper than running init op by op.
  return jax.jit(functools.partial(model.init, train=False))


@functools.cache
def _layer(cell, features=3):
  layer = rnn.Recurrence(cell, hidden_dim=5)
  x = jnp.zeros((2, 4, features))
  return layer, jax.jit(layer.init)(jax.random.key(0), x)


# ------------------------------------------------------------------ cells


@pytest.mark.parametrize('cell', CELLS)
def test_one_step_matches_numpy(cell):
  layer, variables = _layer(cell)
  x = _random((4, 1, 3), seed=1)
  carry = tuple(jnp.asarray(_random((4, 5), seed=2 + i))
                for i in range(2 if cell == 'lstm' else 1))
  ys, new = jax.jit(layer.apply)(variables, x, carry=carry)
  expected = numpy_step(cell, variables['params'], carry, x[:, 0])
  for got, want in zip(new, expected):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ys[:, 0], expected[-1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('cell', CELLS)
def test_scan_matches_numpy_loop(cell):
  layer, variables = _layer(cell)
  x = _random((4, 6, 3), seed=3)
  lengths = np.array([6, 3, 1, 0])
  ys, carry = jax.jit(layer.apply)(variables, x, lengths)
  want_ys, want_carry = numpy_recurrence(cell, variables['params'], x, lengths)
  np.testing.assert_allclose(ys, want_ys, rtol=1e-5, atol=1e-6)
  for got, want in zip(carry, want_carry):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_lstm_forget_bias_starts_at_one():
  _, variables = _layer('lstm')
  bias = np.asarray(variables['params']['input_bias'])
  np.testing.assert_array_equal(bias[5:10], 1.0)
  np.testing.assert_array_equal(np.delete(bias, np.s_[5:10]), 0.0)


def test_reverse_valid_keeps_padding_in_place():
  x = np.arange(10).reshape(2, 5)
  out = rnn.reverse_valid(jnp.asarray(x), jnp.array([3, 5]))
  np.testing.assert_array_equal(out, [[2, 1, 0, 3, 4], [9, 8, 7, 6, 5]])
  np.testing.assert_array_equal(rnn.reverse_valid(out, jnp.array([3, 5])), x)


@pytest.mark.parametrize('cell', CELLS)
def test_backward_direction_reads_the_reversed_valid_sequence(cell):
  stack = rnn.RNNStack(cell, hidden_dim=5, bidirectional=True)
  x = _random((3, 7, 3), seed=4)
  lengths = np.array([7, 4, 2])
  variables = _init(stack, x, lengths)
  ys, carries = jax.jit(functools.partial(stack.apply, train=False))(variables, x, lengths)
  bwd = variables['params']['layer0_bwd']
  fwd = variables['params']['layer0_fwd']
  for i, n in enumerate(lengths):
    # Forward half: the plain layer on the valid part.
    want, _ = numpy_recurrence(cell, fwd, x[i:i + 1, :n], np.array([n]))
    np.testing.assert_allclose(ys[i, :n, :5], want[0], rtol=1e-5, atol=1e-6)
    # Backward half: a forward pass over the reversed valid part, reversed
    # back; its final state is the one at position 0.
    want, want_carry = numpy_recurrence(cell, bwd, x[i:i + 1, :n][:, ::-1],
                                        np.array([n]))
    np.testing.assert_allclose(ys[i, :n, 5:], want[0, ::-1],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carries[0][1][-1][i], want_carry[-1][0],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ys[i, n:], 0.0)


# ------------------------------------------------------ variable length


# Every cell bidirectional (two layers, the second reading padded backward outputs), and
# one forward-only: the masking is the cells' shared Recurrence code, which
# test_scan_matches_numpy_loop checks cell by cell; the forward-only pooling
# branch is the same for every cell.
@pytest.mark.parametrize('cell,bidirectional', [(c, True) for c in CELLS] + [('lstm', False)])
def test_classifier_ignores_padding(cell, bidirectional):
  lengths = np.array([7, 3, 1, 0])
  short = _tokens(lengths, 7)
  # Longer, and with junk rather than id 0 in the padding.
  junk = _tokens([12] * 4, 12, seed=1)
  long = np.where(np.arange(12) < lengths[:, None],
                  np.pad(short, ((0, 0), (0, 5))), junk)
  # Two layers where it matters most: the second reads padded backward
  # outputs.
  kwargs = dict(vocab_size=VOCAB, num_classes=3, cell=cell,
                num_layers=2 if bidirectional else 1,
                bidirectional=bidirectional, **TINY)
  last = rnn.RNNClassifier(pool='last', **kwargs)
  mean = rnn.RNNClassifier(pool='mean', **kwargs)
  variables = _init(last, short, lengths)

  @jax.jit
  def logits(variables):
    return [m.apply(variables, t, lengths, train=False)
            for m in (last, mean) for t in (short, long)]

  for a, b in np.split(np.stack(logits(variables)), 2):
    assert a.shape == (4, 3) and a.dtype == np.float32
    assert np.isfinite(a).all()  # also for the empty sequence
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


# One cell: the LM's masking is the cells' shared Recurrence code (checked cell by cell
# against numpy in test_scan_matches_numpy_loop); the LSTM has the two-part carry.
@pytest.mark.parametrize('cell', ['lstm'])
def test_lm_valid_positions_ignore_padding(cell):
  lengths = np.array([7, 2, 5])
  short = _tokens(lengths, 7)
  long = np.pad(short, ((0, 0), (0, 5)), constant_values=4)
  lm = rnn.RNNLM(vocab_size=VOCAB, cell=cell, **TINY)
  variables = _init(lm, short)

  @jax.jit
  def logits(variables):
    return [lm.apply(variables, t, lengths=lengths, train=False)
            for t in (short, long)]

  a, b = logits(variables)
  assert b.shape == (3, 12, VOCAB) and b.dtype == np.float32
  for i, n in enumerate(lengths):
    np.testing.assert_allclose(b[i, :n], a[i, :n], rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------- gradients


@pytest.mark.parametrize('cell', CELLS)
def test_gradients_finite_and_nonzero_at_length_512(cell):
  model = rnn.RNNClassifier(vocab_size=VOCAB, cell=cell, **TINY)
  lengths = np.array([512, 300])
  tokens = _tokens(lengths, 512)
  variables = _init(model, tokens[:, :4], lengths // 128)

  @jax.jit
  def grads(params):
    def loss(params):
      logits = model.apply({'params': params}, tokens, lengths, train=False)
      return jnp.sum(logits ** 2)
    return jax.grad(loss)(params)

  leaves = jax.tree.leaves(grads(variables['params']))
  assert all(np.isfinite(g).all() for g in leaves)
  assert all(np.abs(g).sum() > 0 for g in leaves)


# ---------------------------------------------------------------- decode


@pytest.mark.parametrize('cell', CELLS)
def test_decode_prompt_then_steps_equals_full_forward(cell):
  lm = rnn.RNNLM(vocab_size=VOCAB, cell=cell, **TINY)
  tokens = _tokens([9, 9], 9)
  variables = _init(lm, tokens)
  full = jax.jit(functools.partial(lm.apply, train=False))(variables, tokens)

  decode = jax.jit(functools.partial(lm.apply, method='decode'))
  cache = lm.apply(variables, 2, method='init_cache')
  logits, cache = decode(variables, tokens[:, :5], cache)
  pieces = [logits]
  for t in range(5, 9):
    logits, cache = decode(variables, tokens[:, t:t + 1], cache)
    assert logits.shape == (2, 1, VOCAB)
    pieces.append(logits)
  np.testing.assert_allclose(np.concatenate(pieces, axis=1), full,
                             rtol=1e-5, atol=1e-6)


def test_decode_ragged_prompts_keep_each_state():
  lm = rnn.RNNLM(vocab_size=VOCAB, cell='lstm', **TINY)
  lengths = np.array([5, 2])
  prompt = _tokens(lengths, 5)
  variables = _init(lm, prompt)
  decode = jax.jit(functools.partial(lm.apply, variables, method='decode'))
  cache = lm.apply(variables, 2, method='init_cache')
  logits, cache = decode(prompt, cache, lengths)
  for i, n in enumerate(lengths):
    alone, alone_cache = decode(prompt[i:i + 1, :n],
                                lm.apply(variables, 1, method='init_cache'))
    np.testing.assert_allclose(logits[i, n - 1], alone[0, -1],
                               rtol=1e-5, atol=1e-6)
    _assert_trees_close(_row(cache, i), _row(alone_cache, 0),
                        rtol=1e-5, atol=1e-6)


# ------------------------------------------------------- dropout, purity


def test_dropout_only_in_training():
  model = rnn.RNNClassifier(vocab_size=VOCAB, num_layers=2, dropout=0.5,
                            **TINY)
  lengths = np.array([6, 4])
  tokens = _tokens(lengths, 6)
  variables = _init(model, tokens, lengths)
  train = jax.jit(lambda key: model.apply(
      variables, tokens, lengths, train=True, rngs={'dropout': key}))
  a, b = train(jax.random.key(1)), train(jax.random.key(2))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(train(jax.random.key(1)), a)
  # Eval needs no dropout rng and is the same every time.
  evaluate = jax.jit(lambda: model.apply(variables, tokens, lengths,
                                         train=False))
  np.testing.assert_array_equal(evaluate(), evaluate())
  assert not np.allclose(evaluate(), a)


def test_apply_is_pure_and_jit_matches_eager():
  model = rnn.RNNClassifier(vocab_size=VOCAB, cell='gru', **TINY)
  lengths = np.array([6, 4])
  tokens = _tokens(lengths, 6)
  init = jax.jit(functools.partial(model.init, train=False))
  variables = init(jax.random.key(0), tokens, lengths)
  jax.tree.map(np.testing.assert_array_equal, variables,
               init(jax.random.key(0), tokens, lengths))
  eager = model.apply(variables, tokens, lengths, train=False)
  np.testing.assert_array_equal(
      model.apply(variables, tokens, lengths, train=False), eager)
  jitted = jax.jit(functools.partial(model.apply, train=False))
  np.testing.assert_allclose(jitted(variables, tokens, lengths), eager,
                             rtol=1e-6, atol=1e-6)


def test_vmap_per_example_gradients_match_single_examples():
  model = rnn.RNNClassifier(vocab_size=VOCAB, cell='lstm',
                            bidirectional=True, **TINY)
  lengths = np.array([6, 2, 4])
  tokens = _tokens(lengths, 6)
  params = _init(model, tokens, lengths)['params']

  def loss(params, tokens, length):  # one unbatched example
    logits = model.apply({'params': params}, tokens[None], length[None],
                         train=False)
    return jnp.sum(logits ** 2)

  grad = jax.grad(loss)
  per_example = jax.jit(jax.vmap(grad, in_axes=(None, 0, 0)))(
      params, tokens, lengths)
  single_grad = jax.jit(grad)
  for i in range(len(lengths)):
    single = single_grad(params, tokens[i], lengths[i])
    _assert_trees_close(_row(per_example, i), single, rtol=1e-4, atol=1e-6)


# -------------------------------------------------------------- registry


def test_registry_builds_both_models():
  lm = models.build('rnn_lm', vocab_size=65)
  assert isinstance(lm, rnn.RNNLM)
  assert (lm.cell, lm.hidden_dim, lm.num_layers) == ('lstm', 512, 2)
  tokens = jax.ShapeDtypeStruct((2, 8), jnp.int32)
  variables = jax.eval_shape(
      lambda t: lm.init(jax.random.key(0), t, train=False), tokens)
  logits = jax.eval_shape(
      lambda v, t: lm.apply(v, t, train=False), variables, tokens)
  assert logits.shape == (2, 8, 65) and logits.dtype == jnp.float32

  clf = models.build('rnn_classifier', vocab_size=100, num_classes=4,
                     cell='gru', bidirectional=True, pool='mean')
  assert isinstance(clf, rnn.RNNClassifier)
  assert models.field_names('rnn_classifier') == [
      'vocab_size', 'num_classes', 'cell', 'embed_dim', 'hidden_dim',
      'num_layers', 'bidirectional', 'dropout', 'pool', 'dtype', 'param_dtype', 'kernels']


@pytest.mark.parametrize('name', ['rnn_classifier', 'rnn_lm'])
def test_bfloat16_keeps_float32_params_and_logits(name):
  model = models.build(name, vocab_size=VOCAB, dtype='bfloat16', **TINY)
  tokens = jax.ShapeDtypeStruct((2, 6), jnp.int32)
  lengths = jax.ShapeDtypeStruct((2,), jnp.int32)
  args = (tokens, lengths) if name == 'rnn_classifier' else (tokens,)
  variables = jax.eval_shape(
      lambda *a: model.init(jax.random.key(0), *a, train=False), *args)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  logits = jax.eval_shape(
      lambda v, *a: model.apply(v, *a, train=False), variables, *args)
  assert logits.dtype == jnp.float32


def test_unknown_cell_or_pool_names_the_choices():
  tokens, lengths = np.zeros((1, 3), np.int32), np.array([3])
  with pytest.raises(ValueError, match=r"\['gru', 'lstm', 'rnn'\].*'lstn'"):
    rnn.RNNClassifier(vocab_size=VOCAB, cell='lstn').init(
        jax.random.key(0), tokens, lengths, train=False)
  with pytest.raises(ValueError, match=r"\('last', 'mean'\).*'max'"):
    rnn.RNNClassifier(vocab_size=VOCAB, pool='max').init(
        jax.random.key(0), tokens, lengths, train=False)
  with pytest.raises(ValueError, match=r"\['gru', 'lstm', 'rnn'\]"):
    rnn.RNNLM(vocab_size=VOCAB, cell='elman').init(
        jax.random.key(0), tokens, train=False)
