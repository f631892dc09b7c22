"""Tests for deepl.models.transformer, gpt and vit.

Attention against numpy, causality through the whole GPT, KV-cache decoding
against a full recompute, rotary properties, tying, shape errors, ViT, and the
generic sampler on a GPT. Every network is tiny (width 8-16, 1-2 layers) so the
file runs in well under a minute on two CPU cores; the baby-GPT parameter count
uses jax.eval_shape and never allocates the model.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl import models
from deepl.inference import decoding
from deepl.models import gpt
from deepl.models import transformer
from deepl.models import vit

pytestmark = pytest.mark.usefixtures('fast_compile')  # conftest: small programs, compiled once


VOCAB = 11
TINY_GPT = dict(vocab_size=VOCAB, num_layers=2, num_heads=2, width=8,
                max_len=12)
TINY_VIT = dict(width=16, num_layers=1, num_heads=2)


def _count(params):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def _tokens(shape, seed=1):
  return jax.random.randint(jax.random.key(seed), shape, 0, VOCAB)


@functools.lru_cache(maxsize=None)
def _tiny_gpt(position='learned'):
  """A tiny GPT and its variables, shared by the tests that only read them."""
  model = gpt.GPT(position=position, **TINY_GPT)
  init = jax.jit(functools.partial(model.init, train=False))
  return model, init(jax.random.key(0), _tokens((1, 4)))


# -------------------------------------------------------------- attention


def numpy_attention(p, x, context, mask):
  """softmax(Q K^T / sqrt(d)) V with q/k/v/out projections, in float64."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
  proj = lambda name, z: (np.einsum('btw,whd->bthd', z, p[name]['kernel']) +
                          p[name]['bias'])
  q, k, v = proj('query', x), proj('key', context), proj('value', context)
  logits = np.einsum('bthd,bshd->bhts', q, k) / np.sqrt(q.shape[-1])
  if mask is not None:
    logits = np.where(mask, logits, -np.inf)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  y = np.einsum('bhts,bshd->bthd', probs, v)
  return np.einsum('bthd,hdw->btw', y, p['out']['kernel']) + p['out']['bias']


@pytest.mark.parametrize('cross,padding,causal', [
    (False, False, False),
    (False, True, True),
    (True, False, False),
    (True, True, False),
])
def test_attention_matches_numpy(cross, padding, causal):
  b, t, s, width = 2, 5, (7 if cross else 5), 8
  x = jax.random.normal(jax.random.key(1), (b, t, width))
  context = jax.random.normal(jax.random.key(2), (b, s, 6)) if cross else None
  attention = transformer.MultiHeadAttention(num_heads=2)
  variables = jax.jit(attention.init)(jax.random.key(0), x, context)
  # Biases start at zero; randomise them so the reference checks them too.
  variables = jax.tree.map(
      lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape),
      variables)

  mask = None
  if padding:  # the second sequence's last two keys are padding
    valid = np.ones((b, s), bool)
    valid[1, -2:] = False
    mask = transformer.key_padding_mask(jnp.asarray(valid))
  apply = jax.jit(functools.partial(attention.apply, is_causal=causal))
  out = apply(variables, x, context, mask=mask)

  ref_mask = np.ones((b, 1, t, s), bool) if mask is None else np.asarray(mask)
  if causal:
    ref_mask = ref_mask & np.tril(np.ones((t, s), bool))
  ref = numpy_attention(variables['params'], np.asarray(x),
                        np.asarray(x if context is None else context),
                        ref_mask)
  assert out.shape == (b, t, width)
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_gelu_is_the_exact_gelu():
  x = jnp.linspace(-12.0, 12.0, 10001)
  np.testing.assert_allclose(transformer.gelu(x), jax.nn.gelu(x, approximate=False),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.grad(lambda x: transformer.gelu(x).sum())(x),
                             jax.grad(lambda x: jax.nn.gelu(x, approximate=False).sum())(x),
                             rtol=1e-5, atol=1e-6)


def test_decoder_block_decodes_like_a_full_pass():
  """Causal self-attention with a cache plus cross-attention, step by step."""
  block = transformer.Block(num_heads=2, mlp_dim=16, causal=True,
                            cross_attention=True, rotary=True)
  x = jax.random.normal(jax.random.key(1), (2, 5, 8))
  context = jax.random.normal(jax.random.key(2), (2, 3, 8))
  variables = jax.jit(functools.partial(block.init, train=False))(
      jax.random.key(0), x, context=context)
  full = jax.jit(functools.partial(block.apply, train=False))(
      variables, x, context=context)

  @jax.jit
  def decode(x, cache, index):
    return block.apply(variables, x, train=False, context=context,
                       cache=cache, cache_index=index)

  cache = transformer.init_kv_cache(2, 6, num_heads=2, head_dim=4)
  first, cache = decode(x[:, :3], cache, 0)
  rest = [first]
  for i in (3, 4):
    y, cache = decode(x[:, i:i + 1], cache, i)
    rest.append(y)
  np.testing.assert_allclose(jnp.concatenate(rest, 1), full, atol=1e-5)


# ------------------------------------------------------------------ rotary


def test_rotary_is_the_identity_at_position_zero():
  x = jax.random.normal(jax.random.key(0), (2, 3, 2, 8))
  rotate = jax.jit(transformer.apply_rotary)
  np.testing.assert_array_equal(rotate(x, jnp.zeros((3,), jnp.int32)), x)


def test_rotary_scores_depend_only_on_the_offset():
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, 16))
  k = jax.random.normal(jax.random.key(1), (1, 1, 1, 16))

  @jax.jit
  def dot(m, n):
    rq = transformer.apply_rotary(q, jnp.array([m]))
    rk = transformer.apply_rotary(k, jnp.array([n]))
    return jnp.sum(rq * rk)

  score = lambda m, n: float(dot(m, n))

  for offset in (0, 1, 5):
    scores = [score(m, m + offset) for m in (0, 3, 17, 100)]
    np.testing.assert_allclose(scores, scores[0], rtol=1e-4, atol=1e-5)
  # ...and it does depend on the offset, and rotation keeps norms.
  assert abs(score(0, 1) - score(0, 5)) > 1e-3
  np.testing.assert_allclose(
      jnp.linalg.norm(transformer.apply_rotary(q, jnp.array([7]))),
      jnp.linalg.norm(q), rtol=1e-5)


def test_rotary_needs_an_even_head_dim():
  with pytest.raises(ValueError, match='even head_dim, got 5'):
    transformer.apply_rotary(jnp.ones((1, 2, 1, 5)), jnp.arange(2))


# --------------------------------------------------------------------- GPT


def test_causal_mask_leaks_nothing_from_the_future():
  """d logits[t] / d (input embedding at s) is exactly 0 for every s > t.

  (For rotary positions the KV-cache test below proves the same: decoding
  computes position t before any later token exists, and matches the full
  pass.)
  """
  model, variables = _tiny_gpt()
  tokens = _tokens((1, 6))

  def logits_per_position(delta):
    # Adds `delta` to the embedder's output: a differentiable input.
    def add_delta(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if (isinstance(context.module, transformer.Embedder) and
          context.method_name == '__call__'):
        out = out + delta
      return out
    with nn.intercept_methods(add_delta):
      logits = model.apply(variables, tokens, train=False)
    return logits[0].sum(-1)  # (T,)

  jac = jax.jit(jax.jacrev(logits_per_position))(jnp.zeros((1, 6, 8)))
  # jac: (T, 1, T, W)
  influence = np.abs(np.asarray(jac)).sum(axis=(1, 3))         # (T, T)
  assert np.all(np.triu(influence, k=1) == 0.0)
  assert np.all(np.diag(influence) > 0)
  assert np.all(influence[-1] > 0)  # the last position sees everything


@pytest.mark.parametrize('position', ['learned', 'rotary'])
def test_kv_cache_decoding_matches_a_full_recompute(position):
  model, variables = _tiny_gpt(position)
  tokens = _tokens((2, model.max_len))  # fills the cache to the last slot
  full = jax.jit(functools.partial(model.apply, train=False))(variables,
                                                             tokens)

  decode = jax.jit(functools.partial(model.apply, method='decode'))
  cache = model.apply(variables, 2, method='init_cache')
  logits, cache = decode(variables, tokens[:, :5], cache)  # the prompt
  pieces = [logits]
  for t in range(5, model.max_len):
    logits, cache = decode(variables, tokens[:, t:t + 1], cache)
    pieces.append(logits)
  assert int(cache['index']) == model.max_len
  np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), full,
                             rtol=1e-5, atol=1e-5)


def test_decoding_past_max_len_is_loud():
  model, variables = _tiny_gpt()
  decode = jax.jit(functools.partial(model.apply, method='decode'))
  cache = model.apply(variables, 1, method='init_cache')
  for _ in range(3):
    _, cache = decode(variables, _tokens((1, 3)), cache)
  logits, _ = decode(variables, _tokens((1, 3)), cache)  # 9 + 3 fits
  assert np.all(np.isfinite(logits))
  cache = dict(cache, index=jnp.int32(10))
  with pytest.raises(ValueError, match=r"after 10 would pass the model's "
                                       r'max_len 12'):
    model.apply(variables, _tokens((1, 3)), cache, method='decode')
  # Under jit the index is traced: the overrun comes back as NaN logits.
  logits, _ = decode(variables, _tokens((1, 3)), cache)
  assert np.all(np.isnan(logits))


def test_tied_output_projection_is_the_embedding_transposed():
  model, variables = _tiny_gpt()
  params = variables['params']
  assert set(params['embed']) == {'token_embed', 'position_embed'}
  apply = jax.jit(functools.partial(
      model.apply, train=False, mutable=['intermediates'],
      capture_intermediates=lambda mdl, _: isinstance(mdl, nn.LayerNorm)))
  logits, state = apply(variables, _tokens((2, 5)))
  hidden = state['intermediates']['ln_f']['__call__'][0]
  embedding = params['embed']['token_embed']['embedding']
  np.testing.assert_allclose(logits, hidden @ embedding.T, rtol=1e-5,
                             atol=1e-6)

  untied = gpt.GPT(tie_embeddings=False, **TINY_GPT)
  untied_params = jax.eval_shape(
      lambda: untied.init(jax.random.key(0), _tokens((1, 4)), train=False)
  )['params']
  assert untied_params['embed']['head']['kernel'].shape == (8, VOCAB)
  assert _count(untied_params) - _count(params) == 8 * VOCAB


def test_width_not_divisible_by_heads_is_an_error():
  model = gpt.GPT(vocab_size=VOCAB, width=100, num_heads=6, num_layers=1)
  with pytest.raises(ValueError,
                     match='width 100 is not divisible by num_heads 6'):
    jax.eval_shape(lambda: model.init(jax.random.key(0), _tokens((1, 4)),
                                      train=False))
  with pytest.raises(ValueError,
                     match='width 100 is not divisible by num_heads 6'):
    transformer.MultiHeadAttention(num_heads=6).init(
        jax.random.key(0), jnp.ones((1, 2, 100)))
  with pytest.raises(ValueError, match='width 10 is not divisible by '
                                       'num_heads 3'):
    vit.ViT(width=10, num_heads=3).init(jax.random.key(0),
                                        jnp.ones((1, 8, 8, 1)), train=False)


def test_context_longer_than_max_len_is_an_error():
  model = gpt.GPT(vocab_size=VOCAB, num_layers=1, num_heads=2, width=8)
  with pytest.raises(ValueError, match="context 300 is longer than the "
                                       "model's max_len 256"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), _tokens((1, 300)),
                                      train=False))


def test_baby_gpt_has_nanogpts_parameter_count():
  def count(**kwargs):
    model = models.build('gpt', vocab_size=65, **kwargs)
    tokens = jax.ShapeDtypeStruct((1, 256), jnp.int32)
    params = jax.eval_shape(
        lambda t: model.init(jax.random.key(0), t, train=False), tokens)
    return _count(params['params'])

  positions = 256 * 384
  # nanoGPT's shakespeare_char (bias=False) prints 10.65M, positions excluded.
  assert count(use_bias=False) - positions == 10_646_784
  assert count(use_bias=False) == 10_745_088              # 10.7M in all
  assert count() == 10_770_816                            # with biases


def test_dropout_only_in_training():
  model = gpt.GPT(dropout=0.5, **TINY_GPT)
  _, variables = _tiny_gpt()  # the same parameters: dropout has none
  tokens = _tokens((2, 6))
  apply = jax.jit(model.apply, static_argnames='train')
  eval_logits = apply(variables, tokens, train=False)
  np.testing.assert_array_equal(eval_logits,
                                apply(variables, tokens, train=False))
  train = lambda seed: apply(variables, tokens, train=True,
                             rngs={'dropout': jax.random.key(seed)})
  assert not np.allclose(train(0), eval_logits)
  assert not np.allclose(train(0), train(1))
  np.testing.assert_array_equal(train(0), train(0))


def test_bfloat16_keeps_float32_params_and_logits():
  model = gpt.GPT(dtype=jnp.bfloat16, **TINY_GPT)
  tokens = jax.ShapeDtypeStruct((2, 6), jnp.int32)
  variables = jax.eval_shape(
      lambda t: model.init(jax.random.key(0), t, train=False), tokens)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  logits = jax.eval_shape(functools.partial(model.apply, train=False),
                          variables, tokens)
  assert logits.dtype == jnp.float32
  cache = jax.eval_shape(lambda: model.init_cache(2))
  assert cache['layers'][0]['key'].dtype == jnp.bfloat16


def test_sampler_generates_deterministically():
  model, variables = _tiny_gpt()
  first = decoding.generate(model, variables['params'], [1, 2, 3], 9, seed=0)
  assert len(first) == 9 and all(0 <= t < VOCAB for t in first)
  assert decoding.generate(model, variables['params'], [1, 2, 3], 9,
                           seed=0) == first


def test_registry_builds_gpt_and_vit():
  model = models.build('gpt', vocab_size=65, position='rotary')
  assert isinstance(model, gpt.GPT)
  assert (model.num_layers, model.num_heads, model.width, model.max_len) == (
      6, 6, 384, 256)
  assert isinstance(models.build('vit', pool='mean'), vit.ViT)
  with pytest.raises(ValueError, match="position must be one of"):
    gpt.GPT(vocab_size=5, position='sinusoidal').init(
        jax.random.key(0), _tokens((1, 2)), train=False)


# --------------------------------------------------------------------- ViT


@pytest.mark.parametrize('shape,patch_size,pool', [
    ((3, 28, 28, 1), 4, 'cls'),
    ((3, 28, 28, 1), 7, 'mean'),
    ((3, 32, 32, 3), 4, 'cls'),
    ((3, 32, 32, 3), 8, 'mean'),
])
def test_vit_shapes(shape, patch_size, pool):
  model = vit.ViT(num_classes=10, patch_size=patch_size, pool=pool,
                  **TINY_VIT)
  images = jax.ShapeDtypeStruct(shape, jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), images)
  patches = (shape[1] // patch_size) * (shape[2] // patch_size)
  assert variables['params']['pos_embedding'].shape == (
      1, patches + (pool == 'cls'), 16)
  logits = jax.eval_shape(functools.partial(model.apply, train=False),
                          variables, images)
  assert logits.shape == (shape[0], 10) and logits.dtype == jnp.float32


def test_vit_jit_and_grad():
  model = vit.ViT(num_classes=10, patch_size=7, dropout=0.1, **TINY_VIT)
  images = jax.random.normal(jax.random.key(1), (3, 28, 28, 1))
  labels = jnp.arange(3)
  params = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), images)['params']

  @jax.jit
  def loss_and_grad(params):
    def loss(params):
      logits = model.apply({'params': params}, images, train=True,
                           rngs={'dropout': jax.random.key(2)})
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), labels])
    return jax.value_and_grad(loss)(params)

  loss, grads = loss_and_grad(params)
  np.testing.assert_allclose(loss, np.log(10), rtol=1e-5)  # zero-init head
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert np.any(grads['head']['kernel'] != 0)


def test_vit_runs_on_one_unbatched_image_and_checks_patches():
  model = vit.ViT(**TINY_VIT)
  image = jnp.ones((28, 28, 1))
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), image)
  logits = jax.eval_shape(functools.partial(model.apply, train=False),
                          variables, image)
  assert logits.shape == (10,)
  with pytest.raises(ValueError, match='image 28x28 does not split into 5x5'):
    vit.ViT(patch_size=5, **TINY_VIT).init(jax.random.key(0), image,
                                           train=False)


# --- Rematerialisation ---------------------------------------------------------------


def _remat_cases():
  tokens, lengths = _tokens((2, 6)), jnp.array([6, 3])
  images = jax.random.uniform(jax.random.key(5), (2, 8, 8, 1))
  from deepl.models import bert, seq2seq  # pylint: disable=g-import-not-at-top
  small = dict(num_layers=1, num_heads=2, width=8)  # remat wraps each block alike: one shows it
  return {
      'gpt': (functools.partial(gpt.GPT, vocab_size=VOCAB, max_len=8, dropout=0.1, **small),
              (tokens,)),
      'bert': (functools.partial(bert.BertClassifier, vocab_size=VOCAB, max_len=8,
                                 dropout=0.1, **small), (tokens, lengths)),
      'vit': (functools.partial(vit.ViT, patch_size=4, dropout=0.1, **small), (images,)),
      'seq2seq': (functools.partial(seq2seq.EncoderDecoder, vocab_size=VOCAB, max_len=8,
                                    dropout=0.1, **small), (tokens, lengths, tokens)),
  }


@pytest.mark.parametrize('name', ['gpt', 'bert', 'vit', 'seq2seq'])
def test_remat_gives_the_same_gradients(name):
  make, args = _remat_cases()[name]
  params = jax.jit(functools.partial(make().init, train=False))(
      jax.random.key(0), *args)
  def grads(model):
    loss = lambda p: model.apply(p, *args, train=True, rngs={'dropout': jax.random.key(3)}).sum()
    return jax.jit(jax.grad(loss))(params)
  plain, remat = grads(make()), grads(make(remat=True))
  assert jax.tree.structure(plain) == jax.tree.structure(remat)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
