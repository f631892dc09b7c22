"""Tests for deepl.models: the registry, the CNN and the ResNets.

Big networks are only traced (jax.eval_shape) so the file stays fast on two CPU
cores; numerics are checked on the CNN, ResNet-20 and a tiny generic ResNet
that shares all code paths of the big ones.
"""

import ast
import functools
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl import models
from deepl.errors import UserError
from deepl.models import resnet

pytestmark = pytest.mark.usefixtures('fast_compile')  # conftest: small programs, compiled once


# Input shape (batch 2) each registered model is exercised with.
INPUT_SHAPES = {
    'cnn': (2, 28, 28, 1),
    'resnet18': (2, 64, 64, 3),
    'resnet34': (2, 64, 64, 3),
    'resnet50': (2, 64, 64, 3),
    'resnet20': (2, 32, 32, 3),
    'resnet56': (2, 32, 32, 3),
}

# Exact trainable parameter counts; the ImageNet ones equal torchvision's.
PARAM_COUNTS = {
    'cnn': 824_458,          # flax/examples MNIST CNN, 10 classes, 28x28x1
    'resnet18': 11_689_512,  # ~11.7M, 1000 classes
    'resnet34': 21_797_672,  # ~21.8M, 1000 classes
    'resnet50': 25_557_032,  # ~25.6M, 1000 classes
    'resnet20': 272_474,     # ~0.27M, 10 classes, projection shortcuts
    'resnet56': 855_770,     # ~0.86M, 10 classes, projection shortcuts
}

# A two-stage ResNet that compiles in about a second.
TINY = dict(stage_sizes=(1, 1), widths=(4, 8), num_classes=3)


def _images(shape, seed=0):
  return jax.random.normal(jax.random.key(seed), shape)


def _init(model, x, seed=0):
  return _jitted_init(model)(jax.random.key(seed), x)


@functools.cache
def _jitted_init(model):
  # One compile is far cheaper than running init op by op, and the cache lets
  # tests share it.
  return jax.jit(functools.partial(model.init, train=False))


def _init_shapes(model, x):
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)


def _count(params):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def _apply_capturing(model):
  """Jitted eval apply that also returns every submodule's output."""
  return jax.jit(functools.partial(model.apply, train=False,
                                   capture_intermediates=True))


def _assert_trees_close(a, b, **tol):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **tol), a, b)


@pytest.fixture(scope='module')
def cnn():
  model = models.build('cnn')
  x = _images((3, 28, 28, 1))
  return model, _init(model, x), x


@pytest.fixture(scope='module')
def tiny():
  """A two-stage bottleneck ResNet with the ImageNet stem, compiled fast."""
  model = resnet.ResNet(block='bottleneck', stem='imagenet', **TINY)
  x = _images((4, 32, 32, 3))
  return model, _init(model, x), x


# ---------------------------------------------------------------- registry


def test_every_expected_model_is_registered():
  # Image models are checked here; the sequence families in their own files.
  assert set(INPUT_SHAPES) <= set(models.names())
  for name in models.names():
    assert issubclass(models.get(name), nn.Module)


def test_unknown_model_names_a_close_match():
  with pytest.raises(UserError, match="'resnet2' — did you mean 'resnet20'"):
    models.get('resnet2')
  with pytest.raises(UserError, match='known: .*cnn, .*resnet18'):
    models.build('vgg16')


def test_unknown_field_names_a_close_match():
  with pytest.raises(UserError,
                     match="'num_clases' for model 'cnn' — did you mean "
                           "'num_classes'"):
    models.build('cnn', num_clases=5)


def test_required_field_without_value_is_a_user_error(monkeypatch):
  monkeypatch.setitem(models.MODELS, 'resnet', resnet.ResNet)
  with pytest.raises(UserError, match='needs a value for: stage_sizes'):
    models.build('resnet')
  assert models.build('resnet', stage_sizes=(1,)).stage_sizes == (1,)


def test_field_names_exclude_flax_internals():
  assert models.field_names('cnn') == ['num_classes', 'dtype', 'param_dtype', 'kernels']
  fields = models.field_names('resnet50')
  assert {'num_classes', 'dtype', 'bn_axis_name', 'stage_sizes'} <= set(fields)
  assert 'parent' not in fields and 'name' not in fields


def test_build_sets_fields():
  model = models.build('resnet18', num_classes=7, bn_axis_name='batch')
  assert isinstance(model, resnet.ResNet18)
  assert (model.num_classes, model.bn_axis_name) == (7, 'batch')
  assert model.stage_sizes == (2, 2, 2, 2)


def test_model_files_import_only_jax_flax_numpy():
  allowed = {'jax', 'flax', 'numpy'} | set(sys.stdlib_module_names)
  model_dir = pathlib.Path(models.__file__).parent
  for path in model_dir.glob('*.py'):
    if path.name == '__init__.py':  # the registry may know deepl.errors
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        roots = [a.name.split('.')[0] for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        if (node.module or '') == 'deepl.models' or (node.module or '').startswith('deepl.models.'):
          continue  # shared blocks from a sibling model file
        roots = [(node.module or '').split('.')[0]]
      else:
        continue
      assert set(roots) <= allowed, f'{path.name} imports {roots}'


# ---------------------------------------------------------- shapes, counts


@pytest.mark.parametrize('name', sorted(INPUT_SHAPES))
def test_output_shape_and_param_count(name):
  model = models.build(name)
  x = jax.ShapeDtypeStruct(INPUT_SHAPES[name], jnp.float32)
  variables = _init_shapes(model, x)
  logits = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False), variables, x)
  assert logits.shape == (2, model.num_classes)
  assert logits.dtype == jnp.float32
  assert _count(variables['params']) == PARAM_COUNTS[name]
  assert ('batch_stats' in variables) == name.startswith('resnet')


def test_resnet20_runs():
  # The CIFAR stem and basic blocks, executed once at full size. Compiling
  # init for its 65 parameter arrays takes seconds; fill the shapes from numpy.
  model = models.build('resnet20')
  x = _images((2, 32, 32, 3))
  shapes = _init_shapes(model, x)
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
      lambda s: rng.normal(0, 0.1, s.shape).astype(s.dtype), shapes)
  variables['batch_stats'] = jax.tree.map(np.abs, variables['batch_stats'])
  logits = jax.jit(functools.partial(model.apply, train=False))(variables, x)
  assert logits.shape == (2, 10) and np.isfinite(logits).all()


@pytest.mark.parametrize('block', ['basic', 'bottleneck'])
def test_stage_shapes(block):
  model = resnet.ResNet(block=block, stem='imagenet', **TINY)
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  variables = _init_shapes(model, x)
  _, state = jax.eval_shape(_apply_capturing(model), variables, x)
  features = lambda b: state['intermediates'][b]['__call__'][0].shape
  expansion = 4 if block == 'bottleneck' else 1
  # The stem divides the resolution by 4, each later stage by 2.
  assert features('stage1_block1') == (2, 16, 16, 4 * expansion)
  assert features('stage2_block1') == (2, 8, 8, 8 * expansion)


def test_bad_block_or_stem_is_a_value_error():
  x = _images((1, 8, 8, 3))
  with pytest.raises(ValueError, match='block'):
    _init(resnet.ResNet(block='botleneck', **TINY), x)
  with pytest.raises(ValueError, match='stem'):
    _init(resnet.ResNet(stem='tiny', **TINY), x)
  with pytest.raises(ValueError, match='one width per stage'):
    _init(resnet.ResNet(stage_sizes=(1, 1, 1), widths=(4, 8)), x)


# ---------------------------------------------------- purity and transforms


@pytest.mark.parametrize('fixture', ['cnn', 'tiny'])
def test_apply_is_pure(fixture, request):
  model, variables, x = request.getfixturevalue(fixture)
  # Two separate traces: Python-side state would show up as a difference in the
  # programs (and so in their outputs); one of them is compiled and run.
  a, b = (jax.jit(functools.partial(model.apply, train=False)).lower(variables, x)
          for _ in range(2))
  assert a.as_text() == b.as_text()
  assert np.isfinite(a.compile()(variables, x)).all()


def test_init_depends_only_on_the_key(tiny):
  model, variables, x = tiny
  _assert_trees_close(_init(model, x, seed=0), variables, rtol=0, atol=0)
  other = _init(model, x, seed=1)['params']['head']['kernel']
  assert not np.allclose(other, variables['params']['head']['kernel'])


def test_jit_vmap_and_grad_cnn(cnn):
  model, variables, x = cnn
  apply = lambda v, x: model.apply(v, x, train=False)
  batched = apply(variables, x)
  np.testing.assert_allclose(jax.jit(apply)(variables, x), batched,
                             rtol=1e-5, atol=1e-5)
  # Per-example: each call sees one unbatched [H, W, C] image.
  per_example = jax.jit(jax.vmap(apply, in_axes=(None, 0)))(variables, x)
  np.testing.assert_allclose(per_example, batched, rtol=1e-5, atol=1e-5)

  def loss(params, x):
    return jnp.mean(apply({'params': params}, x) ** 2)
  grads = jax.jit(jax.grad(loss))(variables['params'], x)
  assert jax.tree.structure(grads) == jax.tree.structure(variables['params'])
  assert all(np.isfinite(g).all() and np.abs(g).sum() > 0
             for g in jax.tree.leaves(grads))
  # Per-example gradients average to the batch gradient of a mean loss.
  per_example_grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0)))(
      variables['params'], x)
  assert per_example_grads['Dense_1']['kernel'].shape == (3, 256, 10)
  _assert_trees_close(jax.tree.map(lambda g: g.mean(0), per_example_grads),
                      grads, rtol=1e-4, atol=1e-6)


def test_jit_vmap_and_grad_resnet(tiny):
  model, variables, x = tiny
  apply = lambda v, x: model.apply(v, x, train=False)
  batched, per_example = jax.jit(lambda v, x: (apply(v, x), jax.vmap(apply, in_axes=(None, 0))(
      v, x)))(variables, x)
  np.testing.assert_allclose(per_example, batched, rtol=1e-4, atol=1e-4)

  @jax.jit
  def loss_and_grads(variables, x):
    def loss(params):
      logits, updates = model.apply(
          {**variables, 'params': params}, x, train=True,
          mutable=['batch_stats'], rngs={'dropout': jax.random.key(1)})
      return jnp.mean(logits ** 2), updates
    return jax.value_and_grad(loss, has_aux=True)(variables['params'])
  (value, updates), grads = loss_and_grads(variables, x)
  assert np.isfinite(value)
  assert set(updates) == {'batch_stats'}
  leaves = jax.tree.leaves(grads)
  assert all(np.isfinite(g).all() for g in leaves)
  assert sum(np.abs(g).sum() > 0 for g in leaves) == len(leaves)


@pytest.mark.parametrize('name', ['cnn', 'resnet20'])
def test_bfloat16_computes_in_half_but_keeps_float32_params(name):
  # The dtype as a config would give it: a string.
  model = models.build(name, dtype='bfloat16')
  x = jax.ShapeDtypeStruct(INPUT_SHAPES[name], jnp.float32)
  variables = _init_shapes(model, x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  logits, state = jax.eval_shape(_apply_capturing(model), variables, x)
  assert logits.dtype == jnp.float32
  inner = jax.tree.leaves(state['intermediates'])
  assert any(a.dtype == jnp.bfloat16 for a in inner)


# ---------------------------------------------------------------- batch norm


def test_train_mode_updates_batch_stats(tiny):
  model, variables, x = tiny
  _, state = jax.jit(functools.partial(
      model.apply, train=True, capture_intermediates=True,
      mutable=['batch_stats', 'intermediates']))(variables, x)
  assert jax.tree.structure(state['batch_stats']) == jax.tree.structure(
      variables['batch_stats'])
  # Momentum 0.9 from the initial mean 0 and variance 1: the new running
  # statistics are 0.1 of the batch's (biased) ones plus 0.9 of the old.
  stem = state['intermediates']['stem_conv']['__call__'][0]
  after = state['batch_stats']['stem_bn']
  np.testing.assert_allclose(after['mean'], 0.1 * stem.mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(after['var'], 0.9 + 0.1 * stem.var(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)


def test_eval_mode_uses_running_averages(tiny):
  model, variables, x = tiny
  apply = jax.jit(lambda v, x, train: model.apply(v, x, train=train,
                                                  mutable=['batch_stats']),
                  static_argnums=2)
  # Nontrivial running statistics, so the check means something.
  _, updates = apply(variables, x, True)
  variables = {**variables, **updates}
  other = _images(x.shape, seed=7)
  mixed = jnp.concatenate([x[:2], other[:2]])

  eval_logits, eval_updates = apply(variables, x, False)
  mixed_logits, _ = apply(variables, mixed, False)
  # Eval output of an example does not depend on the rest of the batch...
  np.testing.assert_allclose(eval_logits[:2], mixed_logits[:2],
                             rtol=1e-5, atol=1e-5)
  # ...and eval leaves the statistics alone.
  _assert_trees_close(eval_updates['batch_stats'], variables['batch_stats'],
                      rtol=0, atol=0)
  # Train output does depend on the batch: batch statistics are in use.
  train_logits, _ = apply(variables, x, True)
  mixed_train_logits, _ = apply(variables, mixed, True)
  assert not np.allclose(train_logits[:2], mixed_train_logits[:2], atol=1e-4)


def test_zero_init_residual(tiny):
  _, variables, _ = tiny
  model = resnet.ResNet(stage_sizes=(1, 1), widths=(2, 2), stem='cifar',
                        num_classes=2, zero_init_residual=True)
  params = _init(model, _images((1, 4, 4, 3)))['params']
  assert not params['stage2_block1']['bn2']['scale'].any()
  assert params['stage2_block1']['bn1']['scale'].all()
  assert params['stage2_block1']['proj_bn']['scale'].all()
  # Off by default.
  assert variables['params']['stage1_block1']['bn3']['scale'].all()


def _train_stats(model, variables, x):
  _, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  return updates['batch_stats']


def test_bn_axis_name_averages_over_named_vmap_axis(tiny):
  model, variables, x = tiny
  synced = model.clone(bn_axis_name='batch')
  whole = jax.jit(functools.partial(_train_stats, model))(variables, x)
  # Two "devices" with two examples each: synced statistics equal those of the
  # whole batch of four, on every device.
  shards = x.reshape(2, 2, *x.shape[1:])
  per_device = jax.jit(jax.vmap(lambda s: _train_stats(synced, variables, s),
                                axis_name='batch'))(shards)
  for device in range(2):
    _assert_trees_close(jax.tree.map(lambda a: a[device], per_device), whole,
                        rtol=1e-4, atol=1e-5)
  # Without the axis name each device sees only its own two examples.
  unsynced = jax.jit(jax.vmap(lambda s: _train_stats(model, variables, s)))(
      shards)
  mean = lambda t: t['stem_bn']['mean']
  assert not np.allclose(mean(unsynced)[0], mean(whole), atol=1e-4)


def test_bn_axis_name_under_pmap(tiny):
  model, variables, x = tiny
  synced = model.clone(bn_axis_name='batch')
  n = jax.local_device_count()
  replicated = jax.tree.map(lambda a: jnp.stack([a] * n), variables)
  shards = jnp.stack([x] * n)
  stats = jax.pmap(lambda v, s: _train_stats(synced, v, s),
                   axis_name='batch')(replicated, shards)
  _assert_trees_close(jax.tree.map(lambda a: a[0], stats),
                      jax.jit(functools.partial(_train_stats, model))(variables, x),
                      rtol=1e-4, atol=1e-5)
