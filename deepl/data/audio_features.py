"""Log-mel features and SpecAugment as pure jnp functions, for inside the jitted step.

The input pipeline ships waveforms; the task turns a batch into features on
the accelerator (as `deepl.data.augment` does for images):

  feats, frames = log_mel(batch['audio'], batch['length'])      # (b, F, 80), (b,)
  feats = spec_augment(jax.random.fold_in(rng, step), feats, frames)  # training only

Definitions (16 kHz defaults):
  frames     25 ms windows (400 samples) every 10 ms (160), only windows that
             lie wholly inside the utterance (Kaldi's snip_edges): an
             utterance of n samples has max(0, 1 + (n - 400) // 160) frames,
             so padding after it can never reach a valid frame.
  window     periodic Hann, 0.5 - 0.5 cos(2 pi i / 400), zero-padded to
             n_fft = 512 (the next power of two): 257 frequency bins.
  power      |rfft|^2 of each windowed frame (no pre-emphasis, no dither, no
             DC removal: the features are a deterministic function of the
             samples).
  mel        HTK mel scale, mel(f) = 2595 log10(1 + f / 700); n_mels triangles
             with peaks 1 (not area-normalised), corners at n_mels + 2 points
             spaced evenly in mel from f_min = 0 to f_max = 8 kHz, evaluated at
             the bin frequencies k * 16000 / 512 (torchaudio's
             melscale_fbanks(norm=None, mel_scale='htk')). Built once in numpy.
  log        log(max(mel energy, 1e-6)), waveforms scaled to [-1, 1] (int16
             input is divided by 32768).
  normalise  per utterance and mel bin, over its valid frames only: subtract
             the mean, divide by sqrt(variance + 1e-5). Frames past the
             utterance's end come out 0.

SpecAugment (Park et al. 2019, policy LD without time warping, which the paper
found the least useful): 2 frequency masks of width uniform in [0, 27] and 2
time masks of width uniform in [0, min(100, 0.2 * frames)], each placed
uniformly inside the utterance's valid frames; masked values are set to 0,
the normalised mean.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16_000


@functools.lru_cache(maxsize=16)
def mel_filterbank(n_fft: int = 512, n_mels: int = 80, sample_rate: int = SAMPLE_RATE,
                   f_min: float = 0.0, f_max: float | None = None) -> np.ndarray:
  """HTK-scale triangular filters, float32 (n_fft // 2 + 1, n_mels), peaks 1."""
  f_max = sample_rate / 2 if f_max is None else f_max
  hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)
  mel_to_hz = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)
  corners = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
  bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
  lower, center, upper = corners[:-2], corners[1:-1], corners[2:]
  rising = (bins[:, None] - lower) / (center - lower)
  falling = (upper - bins[:, None]) / (upper - center)
  return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def num_frames(lengths, window: int, hop: int):
  """Frames that fit wholly inside each length: max(0, 1 + (n - window) // hop)."""
  return jnp.maximum(0, 1 + (jnp.asarray(lengths) - window) // hop)


def log_mel(waveforms: jax.Array, lengths: jax.Array, *, sample_rate: int = SAMPLE_RATE,
            window_ms: float = 25.0, hop_ms: float = 10.0, n_mels: int = 80,
            f_min: float = 0.0, f_max: float | None = None, log_floor: float = 1e-6,
            normalize: bool = True) -> tuple[jax.Array, jax.Array]:
  """Log-mel features of a padded batch of waveforms, padding-invariant.

  Args:
    waveforms: (b, n) int16 (full scale 32768) or float (full scale 1);
      samples past each length are ignored, whatever they hold.
    lengths: (b,) valid samples per row.
    sample_rate, window_ms, hop_ms, n_mels, f_min, f_max, log_floor: see the
      module docstring; all static.
    normalize: per-utterance mean/variance normalisation over valid frames.

  Returns:
    (features float32 (b, F, n_mels) with F = max(0, 1 + (n - window) // hop),
    zero at frames >= frame_lengths; frame_lengths int32 (b,)).
  """
  window = int(round(sample_rate * window_ms / 1000))
  hop = int(round(sample_rate * hop_ms / 1000))
  n_fft = 1 << (window - 1).bit_length()
  if jnp.issubdtype(waveforms.dtype, jnp.integer):
    waveforms = waveforms.astype(jnp.float32) / 32768.0
  waveforms = waveforms.astype(jnp.float32)
  frames_total = max(0, 1 + (waveforms.shape[1] - window) // hop)
  frame_lengths = num_frames(lengths, window, hop).astype(jnp.int32)

  # (F, window) sample indices: a gather, as the window is not a multiple of the hop.
  index = np.arange(frames_total)[:, None] * hop + np.arange(window)[None, :]
  hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
  frames = waveforms[:, index] * hann.astype(np.float32)
  spectrum = jnp.fft.rfft(frames, n=n_fft, axis=-1)
  power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
  filters = mel_filterbank(n_fft, n_mels, sample_rate, f_min, f_max)
  mel = jnp.matmul(power, filters, precision=jax.lax.Precision.HIGHEST)
  features = jnp.log(jnp.maximum(mel, log_floor))

  valid = (jnp.arange(frames_total)[None, :] < frame_lengths[:, None])[..., None]
  if normalize:
    count = jnp.maximum(frame_lengths, 1).astype(jnp.float32)[:, None, None]
    mean = jnp.sum(jnp.where(valid, features, 0.0), axis=1, keepdims=True) / count
    centred = jnp.where(valid, features - mean, 0.0)
    variance = jnp.sum(centred ** 2, axis=1, keepdims=True) / count
    features = centred * jax.lax.rsqrt(variance + 1e-5)
  return jnp.where(valid, features, 0.0), frame_lengths


def _masks(rng: jax.Array, size: jax.Array, max_width: jax.Array, positions: int,
           count: int) -> jax.Array:
  """(positions,) bool: `count` spans of width U[0, max_width] placed inside [0, size)."""
  width_rng, start_rng = jax.random.split(rng)
  width = jnp.floor(jax.random.uniform(width_rng, (count,)) * (max_width + 1)).astype(jnp.int32)
  width = jnp.minimum(width, size)
  start = jnp.floor(jax.random.uniform(start_rng, (count,)) *
                    (size - width + 1)).astype(jnp.int32)
  where = jnp.arange(positions)[None, :]
  return jnp.any((where >= start[:, None]) & (where < (start + width)[:, None]), axis=0)


def spec_augment(rng: jax.Array, features: jax.Array, frame_lengths: jax.Array, *,
                 num_freq_masks: int = 2, freq_mask_width: int = 27,
                 num_time_masks: int = 2, time_mask_width: int = 100,
                 time_mask_ratio: float = 0.2) -> jax.Array:
  """SpecAugment's frequency and time masks (values set to 0), one key per utterance.

  Args:
    rng: a key; the same key gives the same masks.
    features: (b, F, n_mels), e.g. from `log_mel`.
    frame_lengths: (b,) valid frames: time masks stay inside them.
    num_freq_masks, freq_mask_width: masks across mel bins, widths U[0, width].
    num_time_masks, time_mask_width, time_mask_ratio: masks across frames,
      widths U[0, min(width, ratio * frame_length)] (the paper's T and p).

  Returns:
    features with the masked entries 0; frames past each length untouched.
  """
  batch, frames, n_mels = features.shape

  def one(key, length):
    freq_key, time_key = jax.random.split(key)
    freq = _masks(freq_key, jnp.int32(n_mels), jnp.int32(freq_mask_width), n_mels,
                  num_freq_masks)
    max_time = jnp.minimum(time_mask_width, jnp.floor(time_mask_ratio * length)).astype(
        jnp.int32)
    time = _masks(time_key, length, max_time, frames, num_time_masks)
    return time[:, None] | freq[None, :]

  masked = jax.vmap(one)(jax.random.split(rng, batch), frame_lengths.astype(jnp.int32))
  return jnp.where(masked, jnp.zeros((), features.dtype), features)
