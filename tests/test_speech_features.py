"""deepl.data.audio_features: log-mels against a numpy reference written here, padding, SpecAugment."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from deepl.data import audio_features

RATE, WINDOW, HOP, N_FFT = 16000, 400, 160, 512
# Jitted once: eager, every op would compile for every new shape.
log_mel = jax.jit(audio_features.log_mel, static_argnames=('n_mels', 'normalize'))


def reference_filterbank(n_mels: int, f_max: float = RATE / 2) -> np.ndarray:
  """Triangles on the HTK mel scale, one bin and one filter at a time."""
  def mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)

  def hz(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

  points = [hz(mel(0.0) + (mel(f_max) - mel(0.0)) * i / (n_mels + 1)) for i in range(n_mels + 2)]
  out = np.zeros((N_FFT // 2 + 1, n_mels))
  for m in range(n_mels):
    left, centre, right = points[m], points[m + 1], points[m + 2]
    for k in range(N_FFT // 2 + 1):
      f = k * RATE / N_FFT
      if left < f <= centre:
        out[k, m] = (f - left) / (centre - left)
      elif centre < f < right:
        out[k, m] = (right - f) / (right - centre)
  return out


def reference_log_mel(wave: np.ndarray, n_mels: int, normalize: bool) -> np.ndarray:
  """float64 numpy: frames inside the wave, periodic Hann, |rfft|^2, mel, log, CMVN."""
  window = signal.get_window('hann', WINDOW)  # periodic
  count = max(0, 1 + (len(wave) - WINDOW) // HOP)
  frames = np.stack([wave[i * HOP:i * HOP + WINDOW] * window for i in range(count)])
  power = np.abs(np.fft.rfft(frames, n=N_FFT)) ** 2
  features = np.log(np.maximum(power @ reference_filterbank(n_mels), 1e-6))
  if normalize:
    features = (features - features.mean(0)) / np.sqrt(features.var(0) + 1e-5)
  return features


def speechlike(rng, seconds: float) -> np.ndarray:
  """Noise plus a few tones, in [-1, 1], so every mel bin is well above the floor."""
  t = np.arange(int(RATE * seconds)) / RATE
  wave = 0.05 * rng.standard_normal(len(t))
  for hz in rng.uniform(100, 6000, size=4):
    wave += 0.1 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6))
  return wave


@pytest.fixture(scope='module')
def waves():
  rng = np.random.default_rng(0)
  return [speechlike(rng, s) for s in (1.0, 0.37, 0.72, 0.02)]


def test_filterbank_matches_formula():
  for n_mels in (40, 80):
    np.testing.assert_allclose(audio_features.mel_filterbank(N_FFT, n_mels),
                               reference_filterbank(n_mels), atol=1e-6)


@pytest.mark.parametrize('normalize', [False, True])
@pytest.mark.parametrize('n_mels', [40, 80])
def test_log_mel_matches_numpy(waves, normalize, n_mels):
  wave = waves[0]
  feats, frames = log_mel(jnp.asarray(wave[None], jnp.float32), jnp.array([len(wave)]),
                          n_mels=n_mels, normalize=normalize)
  want = reference_log_mel(wave, n_mels, normalize)
  assert feats.shape == (1, 98, n_mels) and int(frames[0]) == 98 == len(want)
  # float32 FFT against float64: ~1e-5 relative in power, so ~1e-4 in the log.
  np.testing.assert_allclose(np.asarray(feats[0]), want, atol=2e-3 if normalize else 5e-4)


def test_a_tone_peaks_in_its_mel_bin():
  t = np.arange(RATE) / RATE
  feats, _ = log_mel(jnp.asarray(np.sin(2 * np.pi * 1000 * t)[None]), jnp.array([RATE]),
                     normalize=False)
  filters = audio_features.mel_filterbank(N_FFT, 80)
  assert int(jnp.argmax(feats[0, 50])) == int(np.argmax(filters[round(1000 * N_FFT / RATE)]))


def test_padding_changes_nothing(waves):
  """Each utterance alone, at its exact length, equals its row of a padded batch with garbage."""
  longest = max(len(w) for w in waves) + 1234
  rng = np.random.default_rng(1)
  batch = rng.uniform(-1, 1, size=(len(waves), longest)).astype(np.float32)  # garbage padding
  for i, wave in enumerate(waves):
    batch[i, :len(wave)] = wave
  lengths = jnp.array([len(w) for w in waves])
  feats, frames = log_mel(jnp.asarray(batch), lengths)
  assert feats.shape[1] == 1 + (longest - WINDOW) // HOP
  np.testing.assert_array_equal(frames, [98, 35, 70, 0])
  for i, wave in enumerate(waves):
    alone, alone_frames = log_mel(jnp.asarray(wave[None], jnp.float32), jnp.array([len(wave)]))
    assert int(alone_frames[0]) == int(frames[i])
    np.testing.assert_allclose(feats[i, :frames[i]], alone[0], atol=1e-5)
    assert not np.any(np.asarray(feats[i, frames[i]:]))  # padded frames are exactly 0
  assert np.all(np.isfinite(np.asarray(feats)))  # a row with no frames gives zeros, not NaN


def test_int16_input_is_scaled(waves):
  wave = np.round(waves[1] * 16000).astype(np.int16)
  as_int, _ = log_mel(jnp.asarray(wave[None]), jnp.array([len(wave)]), normalize=False)
  as_float, _ = log_mel(jnp.asarray(wave[None] / 32768.0, jnp.float32), jnp.array([len(wave)]),
                        normalize=False)
  np.testing.assert_allclose(as_int, as_float, atol=1e-5)


# --- SpecAugment ------------------------------------------------------------------------


_spec_augment = jax.jit(audio_features.spec_augment,
                        static_argnames=('num_freq_masks', 'num_time_masks'))


def augment(seed, feats, frames, **kwargs):
  return _spec_augment(jax.random.key(seed), feats, frames, **kwargs)


@pytest.fixture(scope='module')
def features():
  rng = np.random.default_rng(2)
  frames = jnp.array([300, 120, 40, 0])
  feats = rng.standard_normal((4, 320, 80)).astype(np.float32) + 5.0  # no zeros before masking
  feats = np.where(np.arange(320)[None, :, None] < np.asarray(frames)[:, None, None], feats, 0)
  return jnp.asarray(feats), frames


def test_spec_augment_seeded(features):
  feats, frames = features
  np.testing.assert_array_equal(augment(0, feats, frames), augment(0, feats, frames))
  assert not np.array_equal(augment(0, feats, frames), augment(1, feats, frames))


def test_spec_augment_masks_inside_the_utterance(features):
  feats, frames = features
  before = np.asarray(feats)
  for seed in range(20):
    after = np.asarray(augment(seed, feats, frames))
    masked = (after == 0) & (before != 0)
    assert np.array_equal(after[~masked], before[~masked])  # the rest untouched
    for i, length in enumerate(np.asarray(frames)):
      assert not masked[i, length:].any()
      if length == 0:
        continue
      # Whole mel bins and whole frames: a masked bin is masked in every valid frame.
      bins = masked[i, :length].all(axis=0)
      times = masked[i, :length].all(axis=1)
      assert np.array_equal(masked[i, :length], bins[None, :] | times[:, None])
      assert bins.sum() <= 2 * 27
      assert times.sum() <= 2 * min(100, int(0.2 * length))


def test_spec_augment_masks_something_and_can_be_off(features):
  feats, frames = features
  fractions = [float(np.mean(np.asarray(augment(s, feats, frames))[0, :300] == 0))
               for s in range(20)]
  # Expected: freq ~ 2 * 13.5 / 80 and time ~ 2 * 30 / 300 of the cells.
  assert 0.2 < np.mean(fractions) < 0.6
  off = augment(0, feats, frames, num_freq_masks=0, num_time_masks=0)
  np.testing.assert_array_equal(off, feats)
