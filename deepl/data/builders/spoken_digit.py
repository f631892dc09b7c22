"""The Free Spoken Digit Dataset (TFDS `spoken_digit`), recorded speech, at 16 kHz.

The same archive, URL and sha256 as TFDS's builder (v1.0.9 from GitHub), read
without TensorFlow: the 8 kHz recordings '{digit}_{speaker}_{index}.wav' are
resampled to 16 kHz (scipy's polyphase filter) so that every speech set here
has one rate. TFDS has only a 'train' split; this follows the data set's own
README instead: recordings 0-4 of each speaker and digit are the test split,
5-49 the train split. Its speakers are in both (a split by speaker would leave
too few for either side); for held-out voices, use `spoken_digits`.

Offline: put the archive (v1.0.9.tar.gz, or as GitHub names it,
free-spoken-digit-dataset-1.0.9.tar.gz) in data.manual_dir.
"""

import posixpath

import numpy as np
import tensorflow_datasets as tfds

from deepl.data.builders import _audio

URL = 'https://github.com/Jakobovski/free-spoken-digit-dataset/archive/v1.0.9.tar.gz'
NUM_TEST_PER_SPEAKER_DIGIT = 5  # recordings 0..4: the README's test split


def parse_name(path: str) -> tuple[int, str, int] | None:
  """(digit, speaker, index) from '.../recordings/7_jackson_32.wav'; None for other files."""
  folder, name = posixpath.split(path)
  if posixpath.basename(folder) != 'recordings' or not name.endswith('.wav'):
    return None
  digit, speaker, index = name[:-len('.wav')].split('_')
  return int(digit), speaker, int(index)


class SpokenDigit(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Recorded spoken digits, 50 per digit per speaker; label 0..9."""

  name = 'spoken_digit'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'FSDD v1.0.9 at 16 kHz; test = recordings 0-4.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Download {URL} and put it in manual_dir (as v1.0.9.tar.gz or '
      f'free-spoken-digit-dataset-1.0.9.tar.gz).')

  def _info(self):
    return _audio.audio_info(self, {
        'label': tfds.features.Tensor(shape=(), dtype=np.int64),
        'speaker': tfds.features.Text(),
    }, supervised_keys=('audio', 'label'),
        homepage='https://github.com/Jakobovski/free-spoken-digit-dataset')

  def _split_generators(self, dl_manager):
    archive = _audio.manual_archive(
        dl_manager, self, URL,
        fix=f'download {URL} and point data.manual_dir at the folder holding it')
    return {split: self._generate_examples(archive, split) for split in ('train', 'test')}

  def _generate_examples(self, archive, split):
    recordings = []
    for path, data in _audio.tar_files(archive):
      parsed = parse_name(path)
      if parsed is None:
        continue
      digit, speaker, index = parsed
      if (index < NUM_TEST_PER_SPEAKER_DIGIT) == (split == 'test'):
        recordings.append((parsed, path, data))
    # Sorted by (digit, speaker, index): the same order whatever the archive's.
    for (digit, speaker, index), path, data in sorted(recordings):
      wave = _audio.wav_to_int16(data, path)
      yield f'{digit}_{speaker}_{index}', {
          'audio': wave, 'length': np.int32(len(wave)), 'label': np.int64(digit),
          'speaker': speaker}
