"""Sampling filters and generation determinism."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl import models
from deepl.cli import sample
from deepl.inference import decoding
from deepl.errors import UserError

pytestmark = pytest.mark.usefixtures('fast_compile')  # conftest: small programs, compiled once


LOGITS = jnp.log(jnp.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))


def kept(logits):
  return np.isfinite(np.asarray(logits))[0].tolist()


def test_temperature_scales_logits():
  out = decoding.filter_logits(LOGITS, temperature=0.5)
  np.testing.assert_allclose(out, LOGITS / 0.5, rtol=1e-6)


def test_top_k_keeps_the_k_most_likely():
  assert kept(decoding.filter_logits(LOGITS, temperature=1.0, top_k=2)) == [
      True, True, False, False, False]


@pytest.mark.parametrize('top_p,expected', [
    (0.5, [True, False, False, False, False]),    # 0.5 alone reaches 0.5
    (0.6, [True, True, False, False, False]),     # needs 0.5 + 0.2
    (0.86, [True, True, True, True, False]),      # 0.85 < 0.86: a fourth token
    (1.0, [True] * 5),
])
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, expected):
  assert kept(decoding.filter_logits(LOGITS, temperature=1.0, top_p=top_p)) == expected


def test_top_k_and_top_p_combine():
  assert kept(decoding.filter_logits(LOGITS, temperature=1.0, top_k=3, top_p=0.99)) == [
      True, True, True, False, False]


@pytest.mark.parametrize('options,needle', [
    (dict(prompt=''), '--prompt is empty'),
    (dict(length=0), '--length=0'),
    (dict(temperature=0.0), '--temperature=0.0'),
    # Issue 25: no cap ran for hours, and an infinite temperature was taken.
    (dict(length=10_000_000), '--length=10000000: give a number of tokens to generate from 1 '
                              'to 100,000'),
    (dict(temperature=float('inf')), '--temperature=inf: use a finite temperature'),
    (dict(temperature=float('nan')), '--temperature=nan'),
    (dict(top_k=-1), '--top_k=-1'),
    (dict(top_p=0.0), '--top_p=0.0'),
])
def test_bad_options(options, needle):
  kwargs = dict(prompt='ROMEO:', length=10, temperature=1.0, top_k=0, top_p=1.0)
  kwargs.update(options)
  with pytest.raises(UserError, match=needle.replace('(', r'\(')):
    sample.check_options(**kwargs)


@pytest.mark.parametrize('name', ['rnn_lm'])
def test_generate_is_deterministic_per_seed(name):
  model = models.build(name, vocab_size=11, embed_dim=8, hidden_dim=16, num_layers=1)
  params = jax.jit(functools.partial(model.init, train=False))(
      jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))['params']
  run = lambda seed: decoding.generate(model, params, [1, 2, 3], 20, temperature=1.5, seed=seed)
  assert run(0) == run(0)
  assert run(0) != run(1)
  assert all(0 <= t < 11 for t in run(2))
  greedy = decoding.generate(model, params, [1, 2, 3], 5, temperature=1e-6)
  logits = model.apply({'params': params}, jnp.array([[1, 2, 3]]), train=False)
  assert greedy[0] == int(jnp.argmax(logits[0, -1]))
