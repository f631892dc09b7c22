"""Tests for deepl.optim against hand-computed numpy references."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from deepl import optim
from deepl.errors import UserError


def make_cfg(**overrides):
  # Mirrors the optim defaults in deepl/config.py, so these tests do not
  # depend on that file.
  cfg = ml_collections.ConfigDict(dict(
      name='sgd', lr=0.1, momentum=0.9, nesterov=False,
      b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
      schedule='constant', warmup_steps=0, step_boundaries=(0.5, 0.75),
      step_factor=0.1, end_lr_ratio=0.0, clip_norm=0.0, accum_steps=1))
  cfg.update(overrides)
  return cfg


def lrs(cfg, num_steps, steps):
  schedule = optim.make_schedule(cfg, num_steps)
  return np.array([float(schedule(s)) for s in steps])


def run(tx, params, grads_seq):
  """Applies tx to each gradient in turn; returns the list of new params."""
  state = tx.init(params)
  out = []
  for grads in grads_seq:
    updates, state = tx.update(grads, state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
    out.append(params)
  return out


def tree(seed=0):
  rng = np.random.default_rng(seed)
  return {'dense': {'kernel': rng.normal(size=(3, 2)).astype(np.float32),
                    'bias': rng.normal(size=(2,)).astype(np.float32)}}


# Schedules.


def test_constant_schedule():
  np.testing.assert_allclose(lrs(make_cfg(lr=0.3), 100, [0, 50, 99, 150]),
                             0.3, rtol=1e-6)


def test_constant_schedule_with_warmup():
  got = lrs(make_cfg(lr=0.4, warmup_steps=10), 100, [0, 5, 10, 99])
  np.testing.assert_allclose(got, [0.0, 0.2, 0.4, 0.4], rtol=1e-6)


def test_step_schedule_changes_at_the_boundaries():
  cfg = make_cfg(lr=1.0, schedule='step', step_factor=0.1)
  got = lrs(cfg, 100, [0, 49, 50, 74, 75, 99])
  np.testing.assert_allclose(got, [1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)


def test_warmup_cosine_schedule():
  cfg = make_cfg(lr=2.0, schedule='warmup_cosine', warmup_steps=10,
                 end_lr_ratio=0.1)
  steps = [0, 5, 10, 35, 60, 85, 110, 500]
  end = 0.2
  cos = lambda t: end + (2.0 - end) * 0.5 * (1 + np.cos(np.pi * t))
  want = [0.0, 1.0, 2.0, cos(0.25), cos(0.5), cos(0.75), end, end]
  np.testing.assert_allclose(lrs(cfg, 110, steps), want, rtol=1e-5)


def test_schedule_counts_applied_updates_under_accumulation():
  # 400 micro-steps with accum 4 = 100 updates: boundaries at updates 50, 75;
  # warmup of 40 micro-steps = 10 updates.
  cfg = make_cfg(lr=1.0, schedule='step', accum_steps=4, warmup_steps=40)
  got = lrs(cfg, 400, [5, 10, 49, 50, 75])
  np.testing.assert_allclose(got, [0.5, 1, 1, 0.1, 0.01], rtol=1e-6)


def test_schedule_works_under_jit():
  schedule = optim.make_schedule(make_cfg(schedule='warmup_cosine',
                                          warmup_steps=5), 20)
  np.testing.assert_allclose(jax.jit(schedule)(jnp.int32(3)), 0.1 * 3 / 5,
                             rtol=1e-6)


# Update rules.


@pytest.mark.parametrize('nesterov', [False, True])
def test_sgd_momentum_matches_numpy(nesterov):
  lr, mu = 0.1, 0.9
  tx = optim.make_optimizer(make_cfg(lr=lr, momentum=mu, nesterov=nesterov),
                            10)
  p = tree()
  grads = [tree(seed) for seed in (1, 2, 3)]
  got = run(tx, p, grads)

  w, v = p['dense']['kernel'].copy(), np.zeros((3, 2), np.float32)
  for g, new in zip(grads, got):
    g = g['dense']['kernel']
    v = mu * v + g
    w = w - lr * (g + mu * v if nesterov else v)
    np.testing.assert_allclose(new['dense']['kernel'], w, rtol=1e-5)


def test_plain_sgd():
  tx = optim.make_optimizer(make_cfg(lr=0.5, momentum=0.0), 10)
  p, g = tree(), tree(1)
  got = run(tx, p, [g, g])[-1]
  jax.tree.map(lambda a, b, c: np.testing.assert_allclose(a, b - c, rtol=1e-5),
               got, p, g)


def test_adamw_one_step_matches_numpy():
  lr, b1, b2, eps, wd = 0.01, 0.8, 0.99, 1e-3, 0.5
  cfg = make_cfg(name='adamw', lr=lr, b1=b1, b2=b2, eps=eps, weight_decay=wd)
  p, g = tree(), tree(1)
  got = run(optim.make_optimizer(cfg, 10), p, [g])[0]

  for name, decayed in (('kernel', True), ('bias', False)):
    w, gw = p['dense'][name], g['dense'][name]
    m_hat = (1 - b1) * gw / (1 - b1)
    v_hat = (1 - b2) * gw**2 / (1 - b2)
    update = m_hat / (np.sqrt(v_hat) + eps) + (wd * w if decayed else 0)
    np.testing.assert_allclose(got['dense'][name], w - lr * update, rtol=1e-5)


# Weight-decay mask.


def norm_params():
  ones = lambda *s: jnp.ones(s, jnp.float32)
  return {'dense': {'kernel': ones(3, 4), 'bias': ones(4)},
          'conv': {'kernel': ones(3, 3, 2, 4)},
          'embed': {'embedding': ones(10, 4)},
          'layer_norm': {'scale': ones(4), 'bias': ones(4)},
          'batch_norm': {'scale': ones(4), 'bias': ones(4)}}


DECAYED = {'dense': {'kernel': True, 'bias': False},
           'conv': {'kernel': True},
           'embed': {'embedding': True},
           'layer_norm': {'scale': False, 'bias': False},
           'batch_norm': {'scale': False, 'bias': False}}


def test_decay_mask():
  assert optim.decay_mask(norm_params()) == DECAYED


@pytest.mark.parametrize('name', ['sgd', 'adamw'])
def test_weight_decay_skips_biases_and_norm_scales(name):
  lr, wd = 0.1, 0.01
  params = norm_params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  tx = optim.make_optimizer(make_cfg(name=name, lr=lr, weight_decay=wd), 10)
  updates, _ = tx.update(zeros, tx.init(params), params)
  for u, p, decayed in zip(jax.tree.leaves(updates), jax.tree.leaves(params),
                           jax.tree.leaves(DECAYED)):
    np.testing.assert_allclose(u, -lr * wd * p if decayed else 0, rtol=1e-6)


# Clipping.


@pytest.mark.parametrize('scale, want_norm', [(10.0, 1.0), (0.1, 0.1)])
def test_clipping_caps_the_global_norm(scale, want_norm):
  cfg = make_cfg(lr=1.0, momentum=0.0, clip_norm=1.0)
  tx = optim.make_optimizer(cfg, 10)
  params = tree()
  g = tree(1)
  g_norm = float(optax_global_norm(g))
  grads = jax.tree.map(lambda x: x * scale / g_norm, g)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(optax_global_norm(updates), want_norm, rtol=1e-5)
  # Clipping rescales; it never changes the direction.
  jax.tree.map(lambda u, x: np.testing.assert_allclose(
      u, -x * want_norm / scale, rtol=1e-5), updates, grads)


def optax_global_norm(t):
  return np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(t)))


# Gradient accumulation.


@pytest.mark.parametrize('name', ['sgd', 'adamw'])
def test_accumulation_equals_one_step_on_the_mean(name):
  # Step schedule with one boundary halfway: the second applied update must
  # use the decayed lr in both runs, so this also checks the horizon.
  k, updates = 3, 2
  common = dict(name=name, weight_decay=0.1, clip_norm=5.0, schedule='step',
                step_boundaries=(0.5,), step_factor=0.1)
  accum = optim.make_optimizer(make_cfg(accum_steps=k, **common), k * updates)
  plain = optim.make_optimizer(make_cfg(**common), updates)

  params = tree()
  micro = [tree(seed) for seed in range(1, 1 + k * updates)]
  got = run(accum, params, micro)
  means = [jax.tree.map(lambda *g: np.mean(g, axis=0), *micro[i:i + k])
           for i in range(0, k * updates, k)]
  want = run(plain, params, means)

  for i, new in enumerate(got):
    if (i + 1) % k:  # Between applied updates the params do not move.
      jax.tree.map(np.testing.assert_array_equal, new,
                   got[i - 1] if i else params)
    else:
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                           atol=1e-6),
                   new, want[i // k])


# Bad values.


@pytest.mark.parametrize('overrides, needle', [
    (dict(name='adamm'),
     "optim.name='adamm' is unknown — did you mean 'adamw'? "
     'choose one of: sgd, adamw'),
    (dict(name='Sgd'), "did you mean 'sgd'?"),
    (dict(schedule='cosin'), "did you mean 'warmup_cosine'?"),
    (dict(schedule='xyz'), 'choose one of: constant, step, warmup_cosine'),
    (dict(lr=0.0), 'optim.lr=0.0'),
    (dict(lr=-0.1), 'optim.lr=-0.1'),
    (dict(lr=float('nan')), 'optim.lr=nan'),
    (dict(weight_decay=-1e-4), 'optim.weight_decay=-0.0001'),
    (dict(accum_steps=0), 'optim.accum_steps=0'),
    (dict(momentum=1.0), 'optim.momentum=1.0'),
    (dict(clip_norm=-1.0), 'optim.clip_norm=-1.0'),
    (dict(eps=0.0), 'optim.eps=0.0'),
    (dict(b2=1.0), 'optim.b2=1.0'),
    (dict(warmup_steps=-1), 'optim.warmup_steps=-1'),
    (dict(step_boundaries=(0.75, 0.5)), 'optim.step_boundaries=(0.75, 0.5)'),
    (dict(step_boundaries=(0.5, 2.0)), 'optim.step_boundaries=(0.5, 2.0)'),
    (dict(step_factor=0.0), 'optim.step_factor=0.0'),
    (dict(end_lr_ratio=-0.5), 'optim.end_lr_ratio=-0.5'),
    (dict(accum_steps=20), 'num_steps=10'),
])
def test_bad_values_raise_user_error(overrides, needle):
  with pytest.raises(UserError) as e:
    optim.validate(make_cfg(**overrides), 10)
  msg = str(e.value)
  assert needle in msg
  assert '\n' not in msg
