"""deepl.data.audio_io: WAV files the test writes, in every sample format, back as 16 kHz mono."""

import struct

import numpy as np
import pytest
from scipy.io import wavfile

from deepl.data import audio_io
from deepl.errors import UserError


def tone(rate: int, seconds: float = 0.5, hz: float = 440.0, amplitude: float = 0.5):
  t = np.arange(int(rate * seconds)) / rate
  return amplitude * np.sin(2 * np.pi * hz * t)


def write_pcm24(path, samples: np.ndarray, rate: int):
  """A 24-bit PCM WAV (scipy writes 8, 16, 32 and float, not 24)."""
  ints = np.round(samples * 2 ** 23).astype('<i4')
  data = b''.join(int(v).to_bytes(3, 'little', signed=True) for v in ints)
  header = struct.pack('<4sI4s4sIHHIIHH4sI', b'RIFF', 36 + len(data), b'WAVE', b'fmt ', 16,
                       1, 1, rate, rate * 3, 3, 24, b'data', len(data))
  path.write_bytes(header + data)


@pytest.mark.parametrize('kind', ['uint8', 'int16', 'int24', 'int32', 'float32', 'float64'])
def test_every_sample_format(tmp_path, kind):
  wave = tone(16000)
  path = tmp_path / f'{kind}.wav'
  if kind == 'int24':
    write_pcm24(path, wave, 16000)
  else:
    scale = {'uint8': 128, 'int16': 2 ** 15, 'int32': 2 ** 31}.get(kind)
    stored = (wave if scale is None else np.round(wave * scale)
              + (128 if kind == 'uint8' else 0)).astype(kind)
    wavfile.write(path, 16000, stored)
  got = audio_io.read_wav(path)
  assert got.dtype == np.float32 and got.shape == wave.shape
  tolerance = 1 / 128 if kind == 'uint8' else 1e-4
  np.testing.assert_allclose(got, wave, atol=tolerance)


def test_stereo_becomes_the_mean(tmp_path):
  left, right = tone(16000, hz=300), tone(16000, hz=500, amplitude=0.25)
  wavfile.write(tmp_path / 's.wav', 16000, np.stack([left, right], 1).astype(np.float32))
  np.testing.assert_allclose(audio_io.read_wav(tmp_path / 's.wav'), (left + right) / 2,
                             atol=1e-6)


@pytest.mark.parametrize('rate', [8000, 22050, 44100, 48000])
def test_resampled_to_16k_keeps_the_pitch(tmp_path, rate):
  wavfile.write(tmp_path / 'r.wav', rate, tone(rate, seconds=1.0, hz=1000).astype(np.float32))
  got = audio_io.read_wav(tmp_path / 'r.wav')
  assert len(got) == 16000
  spectrum = np.abs(np.fft.rfft(got))
  assert np.argmax(spectrum) == 1000  # 1 Hz bins over one second
  assert np.abs(got[2000:-2000]).max() == pytest.approx(0.5, abs=0.01)


def test_deterministic(tmp_path):
  wavfile.write(tmp_path / 'r.wav', 44100, tone(44100).astype(np.float32))
  assert audio_io.read_wav(tmp_path / 'r.wav').tobytes() == (
      audio_io.read_wav(tmp_path / 'r.wav').tobytes())


def one_line(err) -> str:
  message = str(err.value)
  assert '\n' not in message
  return message


def test_not_a_wav(tmp_path):
  (tmp_path / 'notes.wav').write_text('hello, not audio')
  with pytest.raises(UserError, match='notes.wav is not a WAV file') as err:
    audio_io.read_wav(tmp_path / 'notes.wav')
  one_line(err)


@pytest.mark.parametrize('content', ['header only', 'zero bytes'])
def test_empty(tmp_path, content):
  path = tmp_path / 'empty.wav'
  if content == 'header only':
    wavfile.write(path, 16000, np.zeros(0, np.int16))
  else:
    path.write_bytes(b'')
  with pytest.raises(UserError, match='empty.wav (has no samples|is not a WAV file)') as err:
    audio_io.read_wav(path)
  one_line(err)


def test_too_long(tmp_path):
  wavfile.write(tmp_path / 'long.wav', 8000, tone(8000, seconds=3.0).astype(np.float32))
  with pytest.raises(UserError, match=r'long.wav is 3.00 s long; the model takes at most 2 s'
                     ) as err:
    audio_io.read_wav(tmp_path / 'long.wav', max_seconds=2.0)
  one_line(err)
  assert len(audio_io.read_wav(tmp_path / 'long.wav', max_seconds=3.0)) == 48000


def test_missing_file(tmp_path):
  with pytest.raises(UserError, match='no such file'):
    audio_io.read_wav(tmp_path / 'nope.wav')


def test_int16_round_trip():
  samples = np.array([-32768, -1, 0, 1, 32767], np.int16)
  assert np.array_equal(audio_io.to_int16(audio_io.to_float(samples)), samples)
