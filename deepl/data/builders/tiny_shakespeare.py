"""Tiny Shakespeare (Karpathy's char-rnn corpus) as array_record files.

Same URL, sha256 and splits as TFDS's tiny_shakespeare: 90/5/5 of the
1,115,394 characters, in order (train 1,003,854; validation and test 55,770
each), one example per split with the whole split as `text`. Offline,
manual_dir holds input.txt.
"""

import tensorflow_datasets as tfds

from deepl.data.builders import _manual

URL = ('https://raw.githubusercontent.com/karpathy/char-rnn/master/data/'
       'tinyshakespeare/input.txt')


def split_text(text: str) -> dict[str, str]:
  """TFDS's split: the first 90% by character, then the rest halved."""
  i = int(len(text) * 0.9)
  train, rest = text[:i], text[i:]
  j = int(len(rest) * 0.5)
  return {'train': train, 'validation': rest[:j], 'test': rest[j:]}


class TinyShakespeare(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """40,000 lines of Shakespeare, one text per split."""

  name = 'tiny_shakespeare'
  # TFDS's own is 1.0.0 (Text feature, tfrecord): a different version keeps a
  # copy TFDS prepared in the same data_dir from being taken for this one.
  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {'1.1.0': 'array_record; TFDS 1.0.0 splits and feature.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f'Put input.txt (from {URL}) in manual_dir.'

  def _info(self):
    return self.dataset_info_from_configs(
        # A Text feature without an encoder needs no TensorFlow.
        features=tfds.features.FeaturesDict({'text': tfds.features.Text()}),
        supervised_keys=None,
        homepage='https://github.com/karpathy/char-rnn',
    )

  def _split_generators(self, dl_manager):
    manual_dir = _manual.given_manual_dir(dl_manager)
    if manual_dir is None:
      path = dl_manager.download(URL)
    else:
      fix = f'point data.manual_dir at a folder with input.txt from {URL}'
      expected = _manual.expected_from_url_infos(self.url_infos, [URL])
      path = _manual.check_files(manual_dir, expected, fix=fix)['input.txt']
    # Bytes, then decode: no newline translation, so lengths are TFDS's.
    text = path.read_bytes().decode('utf-8')
    return {split: self._generate_examples(split, part)
            for split, part in split_text(text).items()}

  def _generate_examples(self, split, text):
    yield split, {'text': text}
