"""Spoken digits synthesized offline with libespeak-ng: the voices, the plan, the audio.

A voice is an English accent plus a voice variant, espeak's "accent+variant"
(e.g. 'en-GB-scotland+f3'). Splits are made by variant: the variants of the
test (and validation) split are never used in train, with any accent, so a
test voice is a timbre the model has never heard. All eight accents occur in
every split.

Each utterance draws, from its own seeded generator, espeak's speaking rate,
pitch, pitch range and gap between words, then silence before and after,
a gain and white noise at a signal-to-noise ratio. The plan (what to say, how)
is a pure function of the seed; the audio comes from `espeak_worker.py` run
in a fresh process per variant (see there why), resampled from 22,050 Hz to
16 kHz with scipy's polyphase filter. So the same code gives the same bytes.
"""

import concurrent.futures
import dataclasses
import json
import os
import pathlib
import struct
import subprocess
import sys
import zlib

import numpy as np

from deepl.data import audio_io
from deepl.data.builders import espeak_worker
from deepl.errors import UserError

SEED = 0
DIGIT_WORDS = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine')

# espeak-ng 1.52's English accents, as the wheel ships them (en-Shaw, the
# Shavian alphabet, is a spelling, not an accent).
ACCENTS = ('en', 'en-us', 'en-029', 'en-GB-scotland', 'en-GB-x-gbclan', 'en-GB-x-gbcwmd',
           'en-GB-x-rp', 'en-US-nyc')
# espeak's voice variants (espeak-ng-data/voices/!v), each in one split. Each
# split mixes male, female and Klatt-synthesizer variants; robotic, echoing,
# whispering and unvoiced ones are left out. The first of each list come first
# in the small configs, so keep a male and a female variant at the front.
VARIANTS = {
    'train': ('m1', 'f1', 'klatt', 'm3', 'f3', 'klatt3', 'm5', 'f5', 'klatt6', 'm7', 'm8',
              'Andy', 'Annie', 'adam', 'aunty', 'benjamin', 'boris', 'david', 'ed', 'grandpa',
              'linda', 'max', 'paul', 'steph'),
    'validation': ('m2', 'f2', 'klatt2', 'Alex', 'Andrea', 'edward'),
    'test': ('m4', 'f4', 'klatt4', 'm6', 'belinda', 'robert'),
}

# Ranges each utterance draws from (uniform, ends included).
RATE_WPM = (130, 230)      # espeak's default is 175 words per minute
PITCH = (30, 70)           # 0..100 around the variant's own pitch (50)
PITCH_RANGE = (30, 80)     # intonation: 0 is monotone
WORD_GAP = (0, 4)          # extra pause between words, in 10 ms units
SILENCE_S = (0.0, 0.25)    # before and after the speech
PEAK_DBFS = (-20.0, -1.0)  # gain: the clean speech's peak level
SNR_DB = (15.0, 40.0)      # white noise, against the speech's RMS


@dataclasses.dataclass(frozen=True)
class Utterance:
  """What to say and how: everything that makes one example."""

  text: str
  label: int          # the digit (single words); -1 for sequences
  voice: str          # 'accent+variant'
  rate: int
  pitch: int
  range: int
  word_gap: int
  seed: int           # for the noise and espeak's own (Klatt) noise
  silence: tuple[float, float]
  peak_dbfs: float
  snr_db: float

  def job(self) -> dict:
    return {'text': self.text, 'voice': self.voice, 'rate': self.rate, 'pitch': self.pitch,
            'range': self.range, 'word_gap': self.word_gap, 'seed': self.seed}


def split_voices(split: str, num_variants: int | None = None,
                 accents: tuple[str, ...] = ACCENTS) -> list[str]:
  """The split's voices, 'accent+variant', variant-major (the first `num_variants`)."""
  variants = VARIANTS[split][:num_variants]
  return [f'{accent}+{variant}' for variant in variants for accent in accents]


def plan(kind: str, split: str, *, per_voice: int, num_variants: int | None = None,
         accents: tuple[str, ...] = ACCENTS, sequence_lengths: tuple[int, int] = (2, 6),
         seed: int = SEED) -> list[Utterance]:
  """The utterances of one split, in order: a pure function of the arguments.

  Args:
    kind: 'digits' (one digit word; each voice says each digit `per_voice`
      times) or 'numbers' (`per_voice` digit sequences per voice, each of a
      uniform length in `sequence_lengths`, with digits uniform and
      independent).
    split: 'train', 'validation' or 'test': picks the variants.
    per_voice: see `kind`.
    num_variants: use the split's first so many variants (None: all).
    accents: the accents, crossed with the variants.
    sequence_lengths: (shortest, longest) digit sequence, for 'numbers'.
    seed: the data set's seed. Each utterance's generator is seeded with
      (seed, kind, split, crc32 of the voice, utterance index), so a voice's
      plan is the same in every config that has the voice. (Its audio also
      depends on what its worker process spoke before: see espeak_worker.)
  """
  kind_id = {'digits': 0, 'numbers': 1}[kind]
  split_id = {'train': 0, 'validation': 1, 'test': 2}[split]
  out = []
  for voice in split_voices(split, num_variants, accents):
    voice_id = zlib.crc32(voice.encode())
    if kind == 'digits':
      digits = [[d] for _ in range(per_voice) for d in range(10)]
    else:
      count_rng = np.random.default_rng([seed, kind_id, split_id, voice_id])
      digits = [count_rng.integers(0, 10, size=count_rng.integers(
          sequence_lengths[0], sequence_lengths[1] + 1)).tolist() for _ in range(per_voice)]
    for index, sequence in enumerate(digits):
      rng = np.random.default_rng([seed, kind_id, split_id, voice_id, index])
      out.append(Utterance(
          text=' '.join(DIGIT_WORDS[d] for d in sequence),
          label=sequence[0] if kind == 'digits' else -1,
          voice=voice,
          rate=int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
          pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
          range=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
          word_gap=int(rng.integers(WORD_GAP[0], WORD_GAP[1] + 1)),
          seed=int(rng.integers(1, 2 ** 31)),
          silence=(float(rng.uniform(*SILENCE_S)), float(rng.uniform(*SILENCE_S))),
          peak_dbfs=float(rng.uniform(*PEAK_DBFS)),
          snr_db=float(rng.uniform(*SNR_DB)),
      ))
  return out


def check_espeak() -> None:
  """Raises a one-line UserError if libespeak-ng cannot be loaded here."""
  try:
    espeak_worker.load()
  except (ImportError, OSError) as err:
    reason = (str(err).splitlines() or [type(err).__name__])[0]
    raise UserError(f'libespeak-ng is needed to synthesize the spoken data sets and did not '
                    f'load ({reason}): pip install espeakng-loader') from None


def _run_worker(jobs: list[dict]) -> list[np.ndarray]:
  """int16 samples at espeak's 22,050 Hz for each job, from one fresh worker process."""
  result = subprocess.run([sys.executable, pathlib.Path(espeak_worker.__file__)],
                          input=json.dumps(jobs).encode(), capture_output=True, check=False)
  if result.returncode != 0:
    lines = result.stderr.decode(errors='replace').strip().splitlines() or ['no message']
    raise RuntimeError(f'espeak worker failed (exit {result.returncode}): {lines[-1]}')
  data, offset, out = result.stdout, 0, []
  for _ in jobs:
    (count,) = struct.unpack_from('<I', data, offset)
    out.append(np.frombuffer(data, '<i2', count, offset + 4).astype(np.int16))
    offset += 4 + 2 * count
  return out


def synthesize(utterances: list[Utterance], *, processes: int | None = None) -> list[np.ndarray]:
  """The int16 16 kHz waveform of each utterance, in order (see `render`).

  Utterances are grouped by voice variant, one fresh worker process per group;
  the groups run `processes` at a time (default: the CPU count).
  """
  check_espeak()
  groups: dict[str, list[int]] = {}
  for i, utterance in enumerate(utterances):
    groups.setdefault(utterance.voice.split('+')[1], []).append(i)
  processes = processes or min(8, os.cpu_count() or 1)
  out: list[np.ndarray | None] = [None] * len(utterances)

  def run_group(indices):
    raw = _run_worker([utterances[i].job() for i in indices])
    for i, samples in zip(indices, raw):
      out[i] = render(samples, utterances[i])

  # Threads suffice: the work is in the worker processes and in numpy/scipy.
  with concurrent.futures.ThreadPoolExecutor(processes) as pool:
    for future in [pool.submit(run_group, indices) for indices in groups.values()]:
      future.result()
  return out


def render(samples: np.ndarray, utterance: Utterance) -> np.ndarray:
  """espeak's int16 at 22,050 Hz -> the stored int16 at 16 kHz: silence, gain, noise.

  The speech is scaled so its peak is at `peak_dbfs`, padded with the
  utterance's silences, and white Gaussian noise is added at `snr_db` below
  the RMS of the speech (its non-silent part, so the padding does not change
  the ratio). Rounded and clipped to int16.
  """
  speech = audio_io.resample(samples.astype(np.float64) / 32768.0, espeak_worker.SAMPLE_RATE,
                             audio_io.SAMPLE_RATE).astype(np.float64)
  peak = np.max(np.abs(speech))
  if peak == 0:
    raise RuntimeError(f'espeak produced silence for {utterance.text!r} ({utterance.voice})')
  speech *= 10 ** (utterance.peak_dbfs / 20) / peak
  active = np.abs(speech) > 10 ** (-40 / 20) * np.max(np.abs(speech))
  rms = np.sqrt(np.mean(speech[active] ** 2))
  before, after = (int(round(s * audio_io.SAMPLE_RATE)) for s in utterance.silence)
  wave = np.pad(speech, (before, after))
  rng = np.random.default_rng(utterance.seed)
  wave += rng.standard_normal(len(wave)) * rms * 10 ** (-utterance.snr_db / 20)
  return audio_io.to_int16(wave)
