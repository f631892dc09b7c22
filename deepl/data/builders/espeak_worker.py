"""libespeak-ng through ctypes, run as its own process: text in, 16-bit samples out.

  python espeak_worker.py < jobs.json > samples.bin

Each job is {"text", "voice", "rate", "pitch", "range", "word_gap", "seed"};
the output is, per job in order, its sample count as a little-endian uint32
followed by that many little-endian int16 samples at `SAMPLE_RATE` (espeak's
native 22,050 Hz).

Why a process of its own: libespeak-ng keeps state from one utterance to the
next (the same text and voice, synthesized twice in a row, come out a few
samples apart), and `espeak_Terminate` + `espeak_Initialize` do not reset it;
a fresh process does. So a fixed list of jobs run in a fresh process gives
the same bytes every time, which is what makes the data sets deterministic.
This file imports nothing of deepl (and not numpy), so it starts in ~30 ms.
"""

import array
import ctypes
import json
import os
import struct
import sys

SAMPLE_RATE = 22_050

# speak_lib.h
_SYNCHRONOUS = 2            # espeak_AUDIO_OUTPUT: samples go to the callback, Synth returns when done
_DONT_EXIT = 0x8000         # espeakINITIALIZE_DONT_EXIT: report errors instead of exit()
_UTF8 = 1                   # espeakCHARS_UTF8
_RATE, _PITCH, _RANGE, _WORDGAP = 1, 3, 4, 7  # espeak_PARAMETER
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)


class EspeakError(RuntimeError):
  pass


def load():
  """(the loaded library, its data folder), from the espeakng-loader wheel.

  Raises ImportError (no wheel) or OSError (the library would not load).
  """
  import espeakng_loader  # pylint: disable=g-import-not-at-top  (optional at import time)
  return ctypes.CDLL(espeakng_loader.get_library_path()), espeakng_loader.get_data_path()


class Synthesizer:
  """One initialised libespeak-ng: `synth(...)` returns the int16 samples as bytes."""

  def __init__(self):
    self._lib, data_path = load()
    # espeak falls back to the plain voice on an unknown variant, silently.
    self._variants = set(os.listdir(os.path.join(data_path, 'voices', '!v')))
    lib = self._lib
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                 ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    rate = lib.espeak_Initialize(_SYNCHRONOUS, 0, data_path.encode(), _DONT_EXIT)
    if rate != SAMPLE_RATE:
      raise EspeakError(f'espeak_Initialize returned {rate}, expected {SAMPLE_RATE} Hz')
    self._chunks = []
    self._callback = _CALLBACK(self._collect)  # Held: ctypes must keep it alive.
    lib.espeak_SetSynthCallback(self._callback)

  def _collect(self, wav, num_samples, events):
    del events
    if num_samples > 0:
      self._chunks.append(ctypes.string_at(wav, 2 * num_samples))
    return 0  # 0: go on synthesizing.

  def synth(self, text: str, voice: str, *, rate: int = 175, pitch: int = 50,
            range: int = 50, word_gap: int = 0, seed: int = 0) -> bytes:  # pylint: disable=redefined-builtin
    """int16 samples (native byte order) of `text` spoken by `voice`, e.g. 'en-us+f3'.

    rate: words per minute (80..450); pitch, range: 0..100 around the voice's
    own (50 = as defined); word_gap: extra pause between words in 10 ms units;
    seed: for the Klatt voices' noise source.
    """
    lib = self._lib
    _, _, variant = voice.partition('+')
    if (variant and variant not in self._variants) or lib.espeak_SetVoiceByName(
        voice.encode()) != 0:
      raise EspeakError(f'espeak has no voice {voice!r}')
    for parameter, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, range),
                             (_WORDGAP, word_gap)):
      lib.espeak_SetParameter(parameter, int(value), 0)
    lib.espeak_ng_SetRandSeed(int(seed))
    self._chunks.clear()
    encoded = text.encode()
    status = lib.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, _UTF8, None, None)
    if status != 0 or lib.espeak_Synchronize() != 0:
      raise EspeakError(f'espeak_Synth failed ({status}) on {text!r} with voice {voice!r}')
    return b''.join(self._chunks)


def main() -> int:
  jobs = json.load(sys.stdin)
  synthesizer = Synthesizer()
  out = sys.stdout.buffer
  for job in jobs:
    samples = synthesizer.synth(job['text'], job['voice'], rate=job['rate'],
                                pitch=job['pitch'], range=job['range'],
                                word_gap=job['word_gap'], seed=job['seed'])
    if sys.byteorder != 'little':
      swapped = array.array('h', samples)
      swapped.byteswap()
      samples = swapped.tobytes()
    out.write(struct.pack('<I', len(samples) // 2))
    out.write(samples)
  out.flush()
  return 0


if __name__ == '__main__':
  sys.exit(main())
