"""WAV files in, 16 kHz mono float32 waveforms out: for `deepl predict` and the builders.

  wave = read_wav('clip.wav', max_seconds=10.0)   # float32 (n,) in [-1, 1], 16 kHz

Reads PCM integer WAVs of 8 (unsigned), 16, 24 and 32 bits and IEEE float
WAVs (32 or 64 bits), mono or with several channels (averaged to mono), at any
sample rate (resampled with a polyphase filter, `scipy.signal.resample_poly`,
which is deterministic). Bad input is one `UserError` line naming the file
and the fix: not a WAV, no samples, or longer than the limit.
"""

import io
import math
import os

import numpy as np
from scipy.io import wavfile

from deepl.errors import UserError

SAMPLE_RATE = 16_000

# Full scale of each stored integer type: int32 holds 24-bit files too, as
# scipy left-justifies 24-bit samples into int32.
_FULL_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2.0 ** 31}


def decode_wav(data: bytes | io.IOBase | os.PathLike | str, *,
               name: str = 'input') -> tuple[np.ndarray, int]:
  """(float32 mono waveform in [-1, 1], its sample rate) from WAV bytes, a file or a path.

  Raises:
    UserError: `data` is not a WAV file scipy can read, or it has no samples.
  """
  source = io.BytesIO(data) if isinstance(data, bytes) else data
  try:
    rate, samples = wavfile.read(source)
  except (ValueError, EOFError, OSError) as err:
    reason = (str(err).splitlines() or [type(err).__name__])[0]
    raise UserError(f'{name} is not a WAV file this reads ({reason}): give a PCM or '
                    f'float .wav file') from None
  samples = to_float(samples)
  if samples.ndim == 2:  # (n, channels): the mean keeps a centred source at full level.
    samples = samples.mean(axis=1, dtype=np.float64).astype(np.float32)
  if samples.size == 0:
    raise UserError(f'{name} has no samples: give a WAV file with some audio in it')
  return samples, int(rate)


def to_float(samples: np.ndarray) -> np.ndarray:
  """Stored samples (uint8, int16, int32 or float) -> float32 with full scale at 1."""
  if samples.dtype == np.uint8:  # 8-bit WAV is unsigned, centred on 128.
    return (samples.astype(np.float32) - 128.0) / 128.0
  if samples.dtype in _FULL_SCALE:
    return (samples.astype(np.float64) / _FULL_SCALE[samples.dtype]).astype(np.float32)
  if np.issubdtype(samples.dtype, np.floating):
    return samples.astype(np.float32)
  raise UserError(f'WAV samples of type {samples.dtype} are not supported: give 8, 16, 24 '
                  f'or 32-bit PCM or float samples')


def resample(wave: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
  """`wave` at `rate` Hz -> `target_rate` Hz, float32; the same array if the rates match.

  resample_poly filters with a Kaiser window (beta 5) at the lower of the two
  Nyquist rates, so downsampling does not alias; the output has
  ceil(len * target_rate / rate) samples.
  """
  if rate <= 0:
    raise UserError(f'sample rate {rate} Hz is not positive: the WAV header is broken')
  if rate == target_rate:
    return wave.astype(np.float32, copy=False)
  # Imported here: scipy.signal takes ~0.5 s to import, and every `deepl` start imports this file.
  from scipy import signal  # pylint: disable=g-import-not-at-top
  divisor = math.gcd(rate, target_rate)
  out = signal.resample_poly(wave.astype(np.float64), target_rate // divisor, rate // divisor)
  return out.astype(np.float32)


def to_int16(wave: np.ndarray) -> np.ndarray:
  """float waveform (full scale 1) -> int16, rounded and clipped."""
  return np.clip(np.round(wave * 32768.0), -32768, 32767).astype(np.int16)


def read_wav(path: str | os.PathLike, *, sample_rate: int = SAMPLE_RATE,
             max_seconds: float | None = None) -> np.ndarray:
  """The WAV file at `path` as a float32 mono waveform at `sample_rate` Hz.

  Args:
    path: a .wav file.
    sample_rate: the rate to resample to.
    max_seconds: if given, a longer file is an error (a model's input limit).

  Raises:
    UserError: no such file, not a WAV, no samples, or longer than max_seconds.
  """
  if not os.path.isfile(path):
    raise UserError(f'{path}: no such file: give the path of a .wav file')
  with open(path, 'rb') as f:
    wave, rate = decode_wav(f, name=str(path))
  seconds = len(wave) / rate
  if max_seconds is not None and seconds > max_seconds:
    raise UserError(f'{path} is {seconds:.2f} s long; the model takes at most '
                    f'{max_seconds:g} s: cut it shorter')
  return resample(wave, rate, sample_rate)
