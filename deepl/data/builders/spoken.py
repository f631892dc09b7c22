"""Spoken digits and digit sequences, synthesized with libespeak-ng at prepare time.

  spoken_digits    one digit word ("seven"); `label` 0..9
  spoken_numbers   2 to 6 digit words ("four one seven nine"); `text`

Both: int16 `audio` at 16 kHz with its `length`, and the `voice` that spoke
it ('accent+variant'). Voices are 8 English accents x espeak voice variants;
the split is by variant, so no validation or test voice (nor its timbre, with
any accent) is ever in train. The full config:

             variants  voices  spoken_digits         spoken_numbers
  train         24       192   3,840 (2 per digit)   3,072 (16 per voice)
  validation     6        48     480 (1 per digit)     384 (8 per voice)
  test           6        48     480 (1 per digit)     384 (8 per voice)

Each utterance has its own seeded rate, pitch, pitch range, word gap, silence,
gain and white noise (see `_speech_synth`). Preparing needs the
`espeakng-loader` wheel (libespeak-ng and its voices) and nothing else; the
same version writes the same bytes. The 'tiny' config (2 accents, 2/1/1
variants) is for tests. See docs/speech.md.
"""

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from deepl.data.builders import _audio
from deepl.data.builders import _speech_synth

SPLITS = ('train', 'validation', 'test')


@dataclasses.dataclass(eq=False)
class SynthConfig(tfds.core.BuilderConfig):
  """How much to synthesize: which voices, how many utterances each."""

  accents: tuple[str, ...] = _speech_synth.ACCENTS
  num_variants: dict[str, int | None] = dataclasses.field(
      default_factory=lambda: dict.fromkeys(SPLITS))  # None: all of the split's variants
  per_voice: dict[str, int] = dataclasses.field(default_factory=dict)


class _Synthesized(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared by the two: plan a split, synthesize it, write it in plan order."""

  KIND = ''  # 'digits' or 'numbers', see _speech_synth.plan
  TARGET = ''  # the feature a model predicts: 'label' or 'text'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'espeak-ng 1.52 voices; split by voice variant; seed 0.'}

  def _info(self):
    return _audio.audio_info(self, {self.TARGET: self._target_feature(),
                                    'voice': tfds.features.Text()},
                             supervised_keys=('audio', self.TARGET))

  def _split_generators(self, dl_manager):
    del dl_manager  # Synthesized: nothing to download.
    _speech_synth.check_espeak()  # One line if the library is missing, before any work.
    config = self.builder_config
    return {split: self._generate_examples(split) for split in SPLITS
            if config.per_voice.get(split)}

  def _generate_examples(self, split):
    config = self.builder_config
    utterances = _speech_synth.plan(self.KIND, split, per_voice=config.per_voice[split],
                                    num_variants=config.num_variants[split],
                                    accents=config.accents)
    waves = _speech_synth.synthesize(utterances)
    for i, (utterance, wave) in enumerate(zip(utterances, waves)):
      yield i, {'audio': wave, 'length': np.int32(len(wave)), 'voice': utterance.voice,
                self.TARGET: self._target(utterance)}

  def _target_feature(self) -> tfds.features.FeatureConnector:
    raise NotImplementedError

  def _target(self, utterance):
    raise NotImplementedError


def _configs(full: dict[str, int], tiny: dict[str, int]) -> list[SynthConfig]:
  return [
      SynthConfig(name='full', description='8 accents x 24/6/6 variants', per_voice=full),
      SynthConfig(name='tiny', description='2 accents x 2/1/1 variants, for tests',
                  accents=('en-us', 'en'),
                  num_variants={'train': 2, 'validation': 1, 'test': 1}, per_voice=tiny),
  ]


class SpokenDigits(_Synthesized, skip_registration=True):
  """One spoken digit per example, label 0..9; train/validation/test by voice."""

  name = 'spoken_digits'
  KIND = 'digits'
  TARGET = 'label'
  BUILDER_CONFIGS = _configs(full={'train': 2, 'validation': 1, 'test': 1},
                             tiny={'train': 1, 'validation': 1, 'test': 1})

  def _target_feature(self):
    return tfds.features.Tensor(shape=(), dtype=np.int64)

  def _target(self, utterance):
    return np.int64(utterance.label)


class SpokenNumbers(_Synthesized, skip_registration=True):
  """2 to 6 spoken digit words per example, `text` their transcript."""

  name = 'spoken_numbers'
  KIND = 'numbers'
  TARGET = 'text'
  BUILDER_CONFIGS = _configs(full={'train': 16, 'validation': 8, 'test': 8},
                             tiny={'train': 4, 'validation': 4, 'test': 4})

  def _target_feature(self):
    return tfds.features.Text()  # Encoder-less: utf-8 bytes, written and read without TF.

  def _target(self, utterance):
    return utterance.text
