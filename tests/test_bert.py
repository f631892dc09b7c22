"""Tests for deepl.models.bert and deepl.tasks.masked_lm.

BERT's masking statistics, padding invariance, fine-tuning from a masked-LM
checkpoint (the encoder copied, the heads fresh), a masked-LM loss that falls,
shape errors, and the SST-2 experiment's two variants. Networks are tiny
(width 8-16, 1-2 layers) so the file runs in seconds on two CPU cores.
"""

import functools
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deepl import checkpoint
from deepl import config as config_lib
from deepl import data as data_lib
from deepl.errors import UserError
from deepl import models
from deepl.models import bert
from deepl.state import TrainState
from deepl.tasks import masked_lm
from tests import helpers
from tests.test_checkpoint import _Source

pytestmark = pytest.mark.usefixtures('fast_compile')  # conftest: small programs, compiled once


VOCAB = 13
TINY = dict(vocab_size=VOCAB, num_layers=2, num_heads=2, width=8, max_len=12)


def _init(model, seed, tokens, lengths):
  # Jitted: eager init dispatches (and compiles) every small op one by one,
  # several times slower on a busy CPU.
  init = lambda t, l: model.init(jax.random.PRNGKey(seed), t, l, train=False)
  return jax.jit(init)(tokens, lengths)


def _flat(tree) -> dict:
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_leaves_with_path(tree)}


# ------------------------------------------------------------------ masking


@pytest.mark.parametrize('rate', [0.15, 0.4])
def test_masking_statistics(rate):
  b, length, vocab = 2000, 40, 1000
  rng = np.random.default_rng(0)
  lengths = rng.integers(10, length + 1, size=b)
  lengths[:3] = [0, 1, 2]                     # nothing, and the minimum of one
  pos = np.arange(length)[None, :]
  tokens = np.where(pos < lengths[:, None],
                    rng.integers(1, vocab, size=(b, length)), 0)
  inputs, masked, chosen = jax.jit(
      masked_lm.choose_and_corrupt, static_argnums=(3, 4))(
          jax.random.PRNGKey(1), jnp.asarray(tokens, jnp.int32),
          jnp.asarray(lengths, jnp.int32), vocab, rate)
  inputs, masked, chosen = map(np.asarray, (inputs, masked, chosen))

  valid = pos < lengths[:, None]
  assert not (chosen & ~valid).any()          # never a pad
  assert chosen.sum(1)[0] == 0 and chosen.sum(1)[1] == 1
  assert (chosen.sum(1)[1:] >= 1).all()       # at least one per sentence
  assert abs(chosen.sum() / valid.sum() - rate) < 0.005
  assert not (masked & ~chosen).any()
  np.testing.assert_array_equal(inputs[~chosen], tokens[~chosen])
  # Of the chosen: ~80% [MASK], ~10% a random id (a draw of the same id,
  # p = 1/999, counts as kept), ~10% kept.
  n = chosen.sum()
  replaced = chosen & ~masked & (inputs != tokens)
  kept = chosen & ~masked & (inputs == tokens)
  assert abs(masked.sum() / n - 0.8) < 0.02
  assert abs(replaced.sum() / n - 0.1) < 0.02
  assert abs(kept.sum() / n - 0.1) < 0.02
  assert inputs[replaced].min() >= 1 and inputs[replaced].max() < vocab
  # The task's logits are computed at K gathered positions: all chosen fit.
  positions, weight = map(np.asarray, masked_lm.gather_chosen(chosen, rate))
  assert positions.shape == (b, masked_lm.max_chosen(length, rate))
  np.testing.assert_array_equal(weight.sum(1), chosen.sum(1))
  assert np.take_along_axis(chosen, positions, 1)[weight].all()


# ------------------------------------------------------------------ models


@functools.lru_cache(maxsize=None)
def _tiny_classifier():
  """A tiny BertClassifier and its variables, for tests that only read them."""
  model = bert.BertClassifier(**TINY, num_classes=2)
  return model, _init(model, 1, np.ones((1, 6), np.int32),
                      np.array([6], np.int32))


@pytest.mark.parametrize('pool', ['cls', 'mean'])
def test_classifier_ignores_padding(pool):
  model, variables = _tiny_classifier()
  model = model.clone(pool=pool)  # the pooling adds no parameters
  sentence = np.array([5, 3, 9, 2, 7], np.int32)
  short = np.zeros((1, 6), np.int32)
  short[0, :5] = sentence
  # Garbage past the length, not just pad ids: the mask alone must hide it.
  long = np.full((1, 12), 4, np.int32)
  long[0, :5] = sentence
  lengths = np.array([5], np.int32)

  @jax.jit
  def apply(tokens):
    # Also the encoder's output, which BertMLM and BertTokenClassifier read.
    logits, state = model.apply(
        variables, tokens, lengths, train=False,
        capture_intermediates=lambda m, _: isinstance(m, bert.BertEncoder))
    return logits, state['intermediates']['encoder']['__call__'][0]

  (a, hidden_a), (c, hidden_c) = apply(short), apply(long)
  assert a.shape == (1, 2) and hidden_c.shape == (1, 13, 8)
  np.testing.assert_allclose(a, c, atol=1e-5)
  np.testing.assert_allclose(hidden_a[:, :6], hidden_c[:, :6], atol=1e-5)


def test_fine_tune_gets_the_pretrained_encoder_and_fresh_heads(tmp_path):
  pretrained = _init(bert.BertMLM(**TINY), 0, np.ones((2, 6), np.int32),
                     np.array([6, 3], np.int32))['params']
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'checkpoints'), keep=1)
  state = TrainState(step=np.array(3, np.int32), params=pretrained,
                     model_state={}, opt_state=(),
                     rng=np.zeros((2,), np.uint32))
  it = data_lib.train_iterator(_Source(), global_batch_size=2, seed=0)
  ckpt.save(3, state, it, {'window': None})
  ckpt.wait()
  ckpt.close()

  _, variables = _tiny_classifier()
  loaded, fresh = checkpoint.init_from(str(tmp_path), variables['params'])
  params = _flat(loaded)
  before, old = _flat(variables['params']), _flat(pretrained)
  encoder = [k for k in params if k.startswith("['encoder']")]
  assert len(encoder) == len([k for k in old if k.startswith("['encoder']")])
  for key in encoder:
    np.testing.assert_array_equal(params[key], old[key])
    assert not np.array_equal(params[key], before[key]) or key.endswith(
        ("['bias']", "['scale']"))  # a different init, but for constants
  heads = sorted(k for k in params if k not in encoder)
  assert heads and all(k.startswith(("['pooler']", "['classifier']"))
                       for k in heads)
  assert sorted(fresh) == heads
  for key in heads:
    np.testing.assert_array_equal(params[key], before[key])


def test_masked_lm_loss_falls():
  model = bert.BertMLM(**dict(TINY, num_layers=1, width=16))
  task = masked_lm.MaskedLMTask(model)
  # Counting sequences from different starts: a hidden token follows from its
  # neighbours, which a tiny model learns within 30 steps.
  lengths = jnp.asarray([10, 10, 9, 8, 7, 6, 5, 10], jnp.int32)
  counting = (jnp.arange(8)[:, None] * 3 + jnp.arange(10)) % (VOCAB - 1) + 1
  batch = {'tokens': jnp.where(jnp.arange(10) < lengths[:, None], counting, 0),
           'length': lengths, 'label': jnp.zeros((8,), jnp.int32)}
  params = jax.jit(task.init)(jax.random.PRNGKey(0), batch)['params']
  tx = optax.adamw(1e-2)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, step_rng):
    grads, (sums, _) = jax.grad(task.loss, has_aux=True)(
        params, {}, batch, step_rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, sums

  # Always with a 'mask', as padded eval batches have: one compile.
  eval_sums = jax.jit(task.eval_sums)
  full = dict(batch, mask=jnp.ones((8,), bool))
  first = eval_sums(params, {}, full)
  np.testing.assert_array_equal(first['loss'],
                                eval_sums(params, {}, full)['loss'])
  losses = []
  for i in range(30):
    params, opt_state, sums = step(params, opt_state,
                                   jax.random.fold_in(jax.random.PRNGKey(1), i))
    assert sums['count'] >= 8  # at least one chosen per sentence
    losses.append(float(sums['loss'] / sums['count']))
  last = eval_sums(params, {}, full)
  assert np.mean(losses[-5:]) < 0.75 * np.mean(losses[:5])
  assert last['loss'] / last['count'] < 0.75 * first['loss'] / first['count']
  # Eval gathers the chosen positions; the same numbers as all logits.
  inputs, masked, chosen = jax.jit(masked_lm.choose_and_corrupt, static_argnums=3)(
      jax.random.PRNGKey(0), batch['tokens'], lengths, VOCAB)
  logits = jax.jit(lambda p: model.apply({'params': p}, inputs, lengths,
                                         train=False, masked=masked))(params)
  assert logits.shape == (8, 10, VOCAB)
  per_token = optax.softmax_cross_entropy_with_integer_labels(
      logits, batch['tokens'])
  assert last['count'] == chosen.sum()
  np.testing.assert_allclose(last['loss'], jnp.sum(per_token * chosen),
                             rtol=1e-5)
  # Padded eval rows (mask 0) count for nothing.
  half = eval_sums(params, {}, dict(batch, mask=jnp.arange(8) < 4))
  assert 0 < half['count'] < last['count']
  summary = task.summarize({'loss': 1.0, 'accuracy': 0.5, 'count': 3.0})
  assert summary['perplexity'] == pytest.approx(np.e)
  assert task.tokens_per_example({'tokens': np.zeros((1, 10))}) == 10


def test_shape_errors_name_the_numbers():
  tokens, lengths = jnp.ones((1, 4), jnp.int32), jnp.array([4])
  with pytest.raises(ValueError, match='width 10 is not divisible by '
                     'num_heads 4'):
    bert.BertMLM(VOCAB, width=10, num_heads=4).init(
        jax.random.PRNGKey(0), tokens, lengths, train=False)
  with pytest.raises(ValueError, match='length 4 is longer than the '
                     "model's max_len 3"):
    bert.BertClassifier(**dict(TINY, max_len=3)).init(
        jax.random.PRNGKey(0), tokens, lengths, train=False)
  with pytest.raises(ValueError, match="pool must be one of \\('cls', 'mean'\\)"):
    bert.BertClassifier(**TINY, pool='max').init(
        jax.random.PRNGKey(0), tokens, lengths, train=False)
  config = _experiment('pretrain')
  config.task_options.mask_rate = 1.5
  with pytest.raises(UserError,
                     match=r'task_options.mask_rate=1.5: use a share of the tokens in \(0, 1\]'):
    config_lib.validate(config)


# ------------------------------------------------------------------ the original BERT's fields

# The original BERT, as deepl.interop.huggingface loads it; parity with
# transformers is in tests/test_huggingface_bert.py.
ORIGINAL = dict(bert.ORIGINAL, mask_token_id=3)


def _param_names(model, tokens, lengths):
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens, lengths, train=False))
  return set(_flat_shapes(shapes['params']))


def test_original_bert_fields_add_and_drop_only_their_own_parameters():
  tokens, lengths = jnp.ones((1, 6), jnp.int32), jnp.array([6])
  ours = _param_names(bert.BertMLM(**TINY), tokens, lengths)
  original = _param_names(bert.BertMLM(**TINY, **ORIGINAL), tokens, lengths)
  assert original - ours == {"['encoder']['token_type_embed']", "['encoder']['embed_ln']['bias']",
                             "['encoder']['embed_ln']['scale']"}
  assert ours - original == {"['encoder']['cls']", "['encoder']['mask']",
                             "['encoder']['ln_f']['bias']", "['encoder']['ln_f']['scale']"}
  # Numbers only: the same parameters.
  assert _param_names(bert.BertMLM(**TINY, gelu_approximate=True, layer_norm_epsilon=1e-12),
                      tokens, lengths) == ours


def test_cls_and_mask_as_token_ids_and_token_types():
  model = bert.BertMLM(**TINY, **ORIGINAL)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(4, VOCAB, (2, 7)), jnp.int32)
  lengths = jnp.array([7, 5])
  masked = jnp.asarray(rng.random((2, 7)) < 0.4).at[:, 0].set(False)
  types = jnp.asarray(rng.integers(0, 2, (2, 7)), jnp.int32)
  variables = _init(model, 0, tokens, lengths)

  @jax.jit
  def apply(tokens, **kwargs):
    return model.apply(variables, tokens, lengths, train=False, **kwargs)

  logits = apply(tokens)
  assert logits.shape == (2, 7, VOCAB)  # one per input token: [CLS] is one of them
  # A [MASK]ed position reads mask_token_id's embedding, as a tokenizer's [MASK] would.
  np.testing.assert_array_equal(apply(tokens, masked=masked),
                                apply(jnp.where(masked, ORIGINAL['mask_token_id'], tokens)))
  np.testing.assert_array_equal(apply(tokens), apply(tokens, token_types=jnp.zeros_like(types)))
  assert not np.allclose(apply(tokens), apply(tokens, token_types=types))

  classifier = bert.BertClassifier(**TINY, **ORIGINAL)
  params = _init(classifier, 0, tokens, lengths)
  pooled = jax.jit(lambda t: classifier.apply(params, t, lengths, train=False))
  assert pooled(tokens).shape == (2, 2)
  # The first input token's output is pooled, and it sees the whole sentence.
  assert not np.allclose(pooled(tokens), pooled(tokens.at[:, 2].set(1)))
  with pytest.raises(ValueError, match='set type_vocab_size'):
    bert.BertClassifier(**TINY).init(jax.random.PRNGKey(0), tokens, lengths, train=False,
                                     token_types=types)


# ------------------------------------------------------------------ experiment


def _experiment(arg):
  path = helpers.EXPERIMENTS / 'sst2_bert.py'
  spec = importlib.util.spec_from_file_location('sst2_bert', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_experiment_variants_share_the_encoder():
  pre, fine = _experiment('pretrain'), _experiment(None)
  assert _experiment('finetune').to_dict() == fine.to_dict()
  for cfg in (pre, fine):
    config_lib.validate(cfg)
  assert (pre.model.name, pre.task) == ('bert_mlm', 'masked_lm')
  assert (fine.model.name, fine.task) == ('bert_classifier', 'classification')
  assert fine.init_from == 'runs/sst2_bert_pretrain'
  shapes = []
  for cfg in (pre, fine):
    model = models.build(cfg.model.name, vocab_size=50,
                         **config_lib.model_kwargs(cfg))
    tokens = jnp.ones((1, cfg.data.max_length), jnp.int32)
    variables = jax.eval_shape(
        lambda m=model: m.init(jax.random.PRNGKey(0), tokens,
                               jnp.array([3]), train=False))
    shapes.append({k: v.shape for k, v in _flat_shapes(variables).items()
                   if k.startswith("['params']['encoder']")})
  assert shapes[0] == shapes[1] and shapes[0]


def _flat_shapes(tree) -> dict:
  return {jax.tree_util.keystr(p): x
          for p, x in jax.tree_util.tree_leaves_with_path(tree)}
