"""The speech models: padding never changes an output, the CTC frame count, axis names, errors,
export for other platforms."""

import functools

import flax.linen as nn
import jax
from jax import export
import jax.numpy as jnp
import numpy as np
import pytest

from deepl import models
from deepl import sharding
from deepl.data import audio_features

pytestmark = pytest.mark.usefixtures('fast_compile')  # conftest: small programs, compiled once

MODELS = {
    'speech_cnn': dict(num_classes=5, widths=(4, 8), hidden_dim=8),
    'speech_ctc': dict(vocab_size=7, channels=4, embed_dim=8, hidden_dim=6, num_layers=2),
}
LENGTHS = (4_000, 6_330, 9_100)  # samples: 23, 38 and 55 frames


def _waves(lengths, width, seed=0):
  """A batch of noisy chirps, with garbage (not zeros, drawn from `seed`) past each length."""
  t = np.arange(12_000) / 16_000
  noise = np.random.default_rng(0).standard_normal((len(lengths), 12_000))
  waves = (0.3 * np.sin(2 * np.pi * (300 + 2_000 * t) * t)[None] + 0.05 * noise)[:, :width]
  garbage = np.random.default_rng(seed).uniform(-1, 1, waves.shape)
  waves = np.where(np.arange(width)[None] < np.array(lengths)[:, None], waves, garbage)
  return jnp.asarray(waves, jnp.float32), jnp.asarray(lengths, jnp.int32)


@functools.cache
def _model(name):
  model = models.build(name, **MODELS[name])
  features, frames = audio_features.log_mel(*_waves(LENGTHS, 10_000))
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), features,
                                                                   frames)
  return model, variables


@pytest.mark.parametrize('name', sorted(MODELS))
def test_padding_never_changes_the_output(name):
  # The longest clip fills the narrow batch exactly; every row of the wide one is padded
  # with garbage. (The CPU layer set computes what the stock one does: test_models_as_flax.)
  model, variables = _model(name)
  apply = jax.jit(lambda waves, lengths: model.apply(
      variables, *audio_features.log_mel(waves, lengths), train=False))
  narrow = apply(*_waves(LENGTHS, max(LENGTHS), seed=1))
  wide = apply(*_waves(LENGTHS, 12_000, seed=2))
  if name == 'speech_cnn':
    np.testing.assert_allclose(narrow, wide, rtol=1e-5, atol=1e-5)
    return
  (narrow, narrow_frames), (wide, wide_frames) = narrow, wide
  frames = [-(-(1 + (n - 400) // 160) // 3) for n in LENGTHS]  # ceil(frames / 3)
  assert list(narrow_frames) == list(wide_frames) == frames
  assert narrow.shape[1] == max(frames)
  np.testing.assert_allclose(narrow, wide[:, :max(frames)], rtol=1e-5, atol=1e-5)
  for row, n in enumerate(frames):
    assert not np.asarray(wide[row, n:]).any()  # nothing past each end


@pytest.mark.parametrize('name', sorted(MODELS))
def test_every_parameter_carries_logical_axis_names(name):
  model = models.build(name, **MODELS[name])
  features, frames = jnp.zeros((2, 30, 80)), jnp.array([30, 20])
  with sharding.axis_rules(sharding.logical_rules()):
    abstract = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                              features, frames)
  leaves = jax.tree.leaves(abstract['params'],
                           is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) and
                        len(x.names) == x.value.ndim for x in leaves)


def test_wrong_input_is_one_value_error_naming_the_shape():
  model, variables = _model('speech_ctc')
  with pytest.raises(ValueError, match=r'SpeechCTC takes float features \(batch, frames, mels\); '
                                       r'got float32 of shape \(30, 80\)'):
    model.apply(variables, jnp.zeros((30, 80)), jnp.array([30]), train=False)


@pytest.mark.parametrize('name', sorted(MODELS))
def test_gradients_export_for_tpu_and_cuda_from_this_host(name):
  # No platform check in the models: the stock program exports as it is.
  model, variables = _model(name)
  features, frames = jnp.zeros((2, 30, 80)), jnp.array([30, 20])

  def loss(params):
    out = model.apply({'params': params}, features, frames, train=False)
    return jnp.sum(jnp.sin(out[0] if isinstance(out, tuple) else out))

  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), variables['params'])
  exported = export.export(jax.jit(jax.grad(loss)), platforms=('tpu', 'cuda'))(shapes)
  assert exported.platforms == ('tpu', 'cuda')
