"""Every model family used as plain flax: forward-mode AD, Hessian-vector products,
per-example gradients, batch norm over a named axis, export for other platforms,
and the CPU kernels giving the stock layers' numbers.

The oracles are JAX's own: a jvp must equal the gradient's inner product with
the tangent, a Hessian-vector product the reverse-over-reverse one, mean
per-example gradients the batch gradient, a batch norm synced over a named
axis the batch norm of the whole batch. All models are tiny, so each family
compiles in seconds.
"""

import functools

import jax
from jax import export
import jax.numpy as jnp
import numpy as np
import pytest

from deepl import models
from deepl.models import bert

pytestmark = pytest.mark.usefixtures('fast_compile')  # conftest: small programs, compiled once


# (registered name, fields, make inputs(batch, seed) -> positional args, call kwargs)
_IMAGES = lambda shape: lambda n, seed: (jax.random.uniform(jax.random.key(seed), (n, *shape)),)


def _tokens(vocab, length, with_lengths=True):
  def make(n, seed):
    tokens = jax.random.randint(jax.random.key(seed), (n, length), 1, vocab)
    lengths = jnp.full((n,), length, jnp.int32).at[0].set(length - 2)
    return (tokens, lengths) if with_lengths else (tokens,)
  return make


def _seq2seq(vocab, length):
  def make(n, seed):
    tokens, lengths = _tokens(vocab, length)(n, seed)
    return tokens, lengths, jnp.roll(tokens, 1, axis=1)
  return make


FAMILIES = {
    'cnn': ('cnn', {}, _IMAGES((8, 8, 1))),
    'resnet': ('resnet20', dict(widths=(4, 8), stage_sizes=(1, 1)), _IMAGES((8, 8, 3))),
    'rnn_classifier': ('rnn_classifier', dict(vocab_size=13, embed_dim=4, hidden_dim=5,
                                              bidirectional=True), _tokens(13, 6)),
    'rnn_lm': ('rnn_lm', dict(vocab_size=13, embed_dim=4, hidden_dim=5, cell='gru'),
               _tokens(13, 6, with_lengths=False)),
    'gpt': ('gpt', dict(vocab_size=13, num_layers=1, num_heads=2, width=8, max_len=8),
            _tokens(13, 6, with_lengths=False)),
    'bert': ('bert_classifier', dict(vocab_size=13, num_layers=1, num_heads=2, width=8,
                                     max_len=8), _tokens(13, 6)),
    # The original BERT's post-LN blocks, token types, [CLS]/[MASK] ids and MLM head.
    'bert_original': ('bert_mlm', dict(vocab_size=13, num_layers=1, num_heads=2, width=8,
                                       max_len=8, mask_token_id=3, gelu_approximate=True,
                                       **bert.ORIGINAL), _tokens(13, 6)),
    'seq2seq': ('seq2seq', dict(vocab_size=13, num_layers=1, num_heads=2, width=8, max_len=8),
                _seq2seq(13, 6)),
    'vit': ('vit', dict(patch_size=4, width=8, num_layers=1, num_heads=2), _IMAGES((8, 8, 3))),
}


@functools.cache
def _setup(family, kernels='xla'):
  name, fields, make = FAMILIES[family]
  model = models.build(name, kernels=kernels, **fields)
  inputs = make(4, 0)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), *inputs)
  return model, variables, inputs


def _loss(model, variables, params, *inputs):
  """A scalar of every output, in eval mode (running batch statistics)."""
  out = model.apply({**variables, 'params': params}, *inputs, train=False)
  return jnp.sum(jnp.sin(out.astype(jnp.float32)))


def _tangent(params, seed=1):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [jax.random.normal(k, x.shape, x.dtype)
                                   for k, x in zip(keys, leaves)])


def _dot(a, b):
  return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _close(a, b, rtol=2e-4):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * (1 + float(jnp.abs(y).max())))


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_jvp_hessian_vector_products_and_per_example_gradients(family):
  model, variables, inputs = _setup(family)
  f = lambda p, *x: _loss(model, variables, p, *x)
  grad = jax.grad(f)
  params, t = variables['params'], _tangent(variables['params'])

  @jax.jit
  def check(params, t):
    # The primal outputs of the two outer jvps are the forward-mode derivative and the batch
    # gradient: one program computes each once.
    along = lambda p: jax.jvp(lambda q: f(q, *inputs), (p,), (t,))[1]  # forward mode
    batch, hvp = jax.jvp(lambda p: grad(p, *inputs), (params,), (t,))  # forward over reverse
    forward, curvature = jax.jvp(along, (params,), (t,))               # forward over forward
    one = lambda p, *example: f(p, *(x[None] for x in example))
    per_example = jax.vmap(jax.grad(one), in_axes=(None,) + (0,) * len(inputs))(params, *inputs)
    return (forward, _dot(batch, t), _dot(hvp, t), curvature, batch,
            jax.tree.map(lambda g: g.sum(0), per_example))

  forward, inner, t_hvp, curvature, batch, per_example_sum = check(params, t)
  _close(forward, inner)
  _close(t_hvp, curvature, rtol=1e-3)  # t^T (H t) both ways
  _close(per_example_sum, batch)


def test_batch_norm_over_a_named_axis_with_the_gradient_outside():
  model, variables, (x,) = _setup('resnet')
  synced = model.clone(bn_axis_name='b')

  def train_logits(m, params, images):
    logits, _ = m.apply({**variables, 'params': params}, images, train=True,
                        mutable=['batch_stats'])
    return logits

  def sharded(params):  # 2 "devices" of 2 examples, statistics over both
    per_device = jax.vmap(lambda s: train_logits(synced, params, s), axis_name='b')(
        x.reshape(2, 2, *x.shape[1:]))
    return jnp.sum(jnp.sin(per_device))

  whole = lambda params: jnp.sum(jnp.sin(train_logits(model, params, x)))
  params = variables['params']
  np.testing.assert_allclose(jax.jit(sharded)(params), jax.jit(whole)(params), rtol=1e-5)
  _close(jax.jit(jax.grad(sharded))(params), jax.jit(jax.grad(whole))(params), rtol=1e-3)


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_gradients_export_for_tpu_and_cuda_from_this_host(family):
  model, variables, inputs = _setup(family)
  grad = jax.jit(jax.grad(functools.partial(_loss, model, variables)))
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        (variables['params'], *inputs))
  exported = export.export(grad, platforms=('tpu', 'cuda'))(*shapes)
  assert exported.platforms == ('tpu', 'cuda')
  # Stock layers carry no CPU tuning into another platform's program.
  assert 'optimization_barrier' not in exported.mlir_module()


@pytest.mark.parametrize('family', sorted(FAMILIES))
def test_cpu_kernels_give_the_stock_losses_and_gradients(family, cpu_device):
  model, variables, inputs = _setup(family)
  cpu_model = model.clone(kernels='cpu')
  train = {'rngs': {'dropout': jax.random.key(2)}, 'mutable': ['batch_stats']}

  def loss(m, params):
    out, _ = m.apply({**variables, 'params': params}, *inputs, train=True, **train)
    return jnp.sum(jnp.sin(out))

  value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=1), static_argnums=0)
  (ours, our_grads), (stock, stock_grads) = (value_and_grad(m, variables['params'])
                                             for m in (cpu_model, model))
  np.testing.assert_allclose(ours, stock, rtol=1e-5, atol=1e-5)
  _close(our_grads, stock_grads, rtol=1e-3)


@pytest.mark.parametrize('name,make,expected', [
    ('gpt', lambda: jnp.ones((6,), jnp.int32), r'GPT takes int tokens \(batch, length\); got '
     r'int32 of shape \(6,\)'),
    ('bert_classifier', lambda: jnp.ones((2, 3, 6), jnp.int32),
     r'BERT takes int tokens \(batch, length\); got int32 of shape \(2, 3, 6\)'),
    ('gpt', lambda: jnp.ones((2, 6)), 'GPT takes int tokens'),
    ('cnn', lambda: jnp.ones((8, 8)), r'CNN takes float images \[\.\.\., height, width, '
     r'channels\]; got float32 of shape \(8, 8\)'),
])
def test_wrong_rank_or_dtype_is_one_value_error_naming_the_shape(name, make, expected):
  family = next(f for f, (n, _, _) in FAMILIES.items() if n == name)
  model, variables, inputs = _setup(family)
  bad = (make(),) + inputs[1:]
  with pytest.raises(ValueError, match=expected):
    model.apply(variables, *bad, train=False)


@pytest.mark.parametrize('family', ['cnn', 'gpt', 'rnn_lm'])
def test_param_dtype_sets_the_parameters_dtype(family):
  name, fields, make = FAMILIES[family]
  model = models.build(name, param_dtype='bfloat16', **fields)
  variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                             *make(2, 0))
  assert {x.dtype for x in jax.tree.leaves(variables['params'])} == {jnp.dtype('bfloat16')}
