"""What the speech tasks (audio classification, CTC) share: checks of the data, features in the step.

Batches carry waveforms ({'audio': int16 or float (b, n), 'length': int (b,)});
the model reads log-mel features computed here, inside the jitted step, and
in training SpecAugment's masks where data.augment='spec_augment'.
"""

from deepl.data import audio_features
from deepl.data import augment as augment_lib
from deepl.errors import UserError


def check(config, dataset) -> None:
  """UserError for an image augmentation, or clips longer than data.max_seconds."""
  augment_lib.check_kind(config.data.augment, audio=True)
  limit = config.data.max_seconds
  for name, split in dataset.splits.items():
    longest = split.max_length / dataset.sample_rate
    if longest > limit:
      raise UserError(f'the {name} split of {dataset.name} has clips of up to {longest:.2f} s; '
                      f'data.max_seconds={limit:g}: raise it')


def max_samples(config) -> int:
  """The longest clip a run takes, in samples (data.max_seconds at 16 kHz)."""
  return int(round(config.data.max_seconds * audio_features.SAMPLE_RATE))


def features(batch, *, augment: str = 'none', augment_rng=None):
  """(log-mel features (b, F, 80), valid frames (b,)); masked where a key is given."""
  feats, frames = audio_features.log_mel(batch['audio'], batch['length'])
  if augment_rng is not None and augment == 'spec_augment':
    feats = audio_features.spec_augment(augment_rng, feats, frames)
  return feats, frames
