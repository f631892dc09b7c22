"""Speech Commands v0.02 (TFDS `speech_commands`): 12-way keyword spotting, 16 kHz.

The same archives, URLs, sha256, labels and splits as TFDS's builder, read
without TensorFlow or pydub:

  label  0..9  down go left no off on right stop up yes
         10    _silence_  (train/validation: 1 s windows, 0.5 s apart, of the
                           _background_noise_ recordings; test: its own files)
         11    _unknown_  (every other word)

  train       the main archive less validation_list.txt and testing_list.txt
              (the lists split by speaker), plus the background noise
  validation  validation_list.txt, plus _background_noise_/running_tap.wav
  test        the separate test archive (speech_commands_test_set_v0.02)

As in TFDS, a file that does not decode as WAV is skipped. The main archive is
2.4 GB: preparing reads it three times (lists, train, validation), streaming.

Offline: put speech_commands_v0.02.tar.gz and speech_commands_test_set_v0.02.tar.gz
in data.manual_dir.
"""

import logging
import posixpath

import numpy as np
import tensorflow_datasets as tfds

from deepl.data.builders import _audio
from deepl.errors import UserError

URL = 'http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz'
TEST_URL = 'http://download.tensorflow.org/data/speech_commands_test_set_v0.02.tar.gz'

WORDS = ('down', 'go', 'left', 'no', 'off', 'on', 'right', 'stop', 'up', 'yes')
SILENCE = '_silence_'
UNKNOWN = '_unknown_'
LABELS = WORDS + (SILENCE, UNKNOWN)
BACKGROUND_NOISE = '_background_noise_'
SAMPLE_RATE = _audio.SAMPLE_RATE


def label_of(word: str) -> int:
  """The label of a recording in folder `word` (TFDS's rule)."""
  if word in WORDS:
    return LABELS.index(word)
  if word in (SILENCE, BACKGROUND_NOISE):
    return LABELS.index(SILENCE)
  return LABELS.index(UNKNOWN)


def read_split_lists(archive) -> tuple[set[str], set[str], set[str]]:
  """(train, validation, test) wav paths of the main archive, by its two lists."""
  wavs, lists = [], {}
  for path, data in _audio.tar_files(archive):
    if path.endswith('.wav'):
      wavs.append(path)
    elif posixpath.basename(path) in ('validation_list.txt', 'testing_list.txt'):
      lists[posixpath.basename(path)] = set(data.decode('ascii').split())
  if len(lists) != 2:
    raise UserError(f'{archive} lacks validation_list.txt or testing_list.txt: it is not '
                    f'speech_commands_v0.02.tar.gz')
  validation = lists['validation_list.txt'] | {f'{BACKGROUND_NOISE}/running_tap.wav'}
  train = set(wavs) - validation - lists['testing_list.txt']
  return train, validation, lists['testing_list.txt']


class SpeechCommands(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Keyword spotting: 10 words, silence and unknown; train/validation/test by speaker."""

  name = 'speech_commands'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': "TFDS 0.0.3's labels and splits, int16 Tensor features."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Download {URL} and {TEST_URL} and put both in manual_dir.')

  def _info(self):
    return _audio.audio_info(self, {
        'label': tfds.features.Tensor(shape=(), dtype=np.int64),
    }, supervised_keys=('audio', 'label'), homepage='https://arxiv.org/abs/1804.03209')

  def _split_generators(self, dl_manager):
    fix = (f'download {URL} and {TEST_URL} and point data.manual_dir at the folder '
           f'holding both')
    archive = _audio.manual_archive(dl_manager, self, URL, fix=fix)
    test_archive = _audio.manual_archive(dl_manager, self, TEST_URL, fix=fix)
    train, validation, _ = read_split_lists(archive)
    return {
        'train': self._generate_examples(archive, train),
        'validation': self._generate_examples(archive, validation),
        'test': self._generate_examples(test_archive, None),
    }

  def _generate_examples(self, archive, keep):
    for path, data in _audio.tar_files(archive):
      if not path.endswith('.wav') or (keep is not None and path not in keep):
        continue
      word, wav_name = posixpath.split(path)
      word = posixpath.basename(word)
      key = f'{word}_{wav_name}'
      try:
        wave = _audio.wav_to_int16(data, path)
      except UserError as err:  # TFDS skips what pydub cannot decode.
        logging.warning('skipping %s: %s', path, err)
        continue
      label = np.int64(label_of(word))
      if word == BACKGROUND_NOISE:
        # Long recordings: cut into 1 s windows every 0.5 s, as TFDS does.
        for start in range(0, len(wave) - SAMPLE_RATE, SAMPLE_RATE // 2):
          yield f'{key}_{start}', {'audio': wave[start:start + SAMPLE_RATE],
                                   'length': np.int32(SAMPLE_RATE), 'label': label}
      else:
        yield key, {'audio': wave, 'length': np.int32(len(wave)), 'label': label}
