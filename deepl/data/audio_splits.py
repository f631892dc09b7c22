"""Speech splits in memory: waveforms with their labels or transcripts, batched padded.

  split = load_audio_split(builder, 'train')   # an AudioSplit
  split.gather(indices, length)                # {'audio': int16 (b, length), 'length': int32 (b,),
                                               #  'label': int32 (b,)}   (labelled sets)
  TranscribedAudio(split, tokenizer, max_target).gather(...)   # adds 'targets', 'target_length'

Like the image and text sources (`len`, `gather`), so the pipeline batches
them unchanged. Waveforms differ in length: a source has `lengths` (samples)
and `max_length` (its longest), and the pipeline cuts each batch to a bucket
of its longest clip (deepl.data.pipeline.bucket_length), zero-padded. The
features are computed from the waveforms inside the step
(deepl.data.audio_features), which ignore the padding.
"""

import numpy as np

from deepl.data import audio_io
from deepl.errors import UserError


class AudioSplit:
  """A split's int16 waveforms, concatenated, plus labels (int32) or transcripts."""

  def __init__(self, waves: list[np.ndarray], *, labels=None, texts: list[str] | None = None):
    self.lengths = np.fromiter(map(len, waves), np.int64, len(waves))
    self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
    self.samples = np.concatenate(waves).astype(np.int16) if waves else np.zeros(0, np.int16)
    self.labels = None if labels is None else np.asarray(labels, np.int32)
    self.texts = texts
    self.max_length = int(self.lengths.max()) if len(waves) else 1

  def __len__(self) -> int:
    return len(self.lengths)

  def wave(self, index: int) -> np.ndarray:
    return self.samples[self.offsets[index]:self.offsets[index + 1]]

  def gather(self, indices, length: int | None = None) -> dict[str, np.ndarray]:
    """Waveforms zero-padded to `length` samples (default the longest), and their labels."""
    indices = np.asarray(indices, np.int64)
    length = self.max_length if length is None else int(length)
    audio = np.zeros((len(indices), length), np.int16)
    for row, index in enumerate(indices):
      wave = self.wave(index)[:length]
      audio[row, :len(wave)] = wave
    batch = {'audio': audio,
             'length': np.minimum(self.lengths[indices], length).astype(np.int32)}
    if self.labels is not None:
      batch['label'] = self.labels[indices]
    return batch

  def __repr__(self) -> str:
    minutes = self.lengths.sum() / audio_io.SAMPLE_RATE / 60
    return f'AudioSplit({len(self)} clips, {minutes:.1f} min)'


def load_audio_split(builder, split: str) -> AudioSplit:
  """A prepared speech split: `audio` with `label` (classes) or `text` (transcripts)."""
  source = builder.as_data_source(split)
  records = source.__getitems__(range(len(source)))
  features = builder.info.features
  waves = [np.asarray(r['audio'], np.int16)[:int(r['length'])] for r in records]
  labels = [r['label'] for r in records] if 'label' in features else None
  # Text features come back as utf-8 bytes without TensorFlow.
  texts = [r['text'].decode('utf-8') for r in records] if 'text' in features else None
  return AudioSplit(waves, labels=labels, texts=texts)


class TranscribedAudio:
  """An AudioSplit whose transcripts are token ids, for CTC.

  gather -> {'audio', 'length', 'targets': int32 (b, max_target) padded with
  0, 'target_length': int32 (b,)}. A transcript longer than max_target is an
  error: cutting it would train the model on audio that says more than its target.
  """

  def __init__(self, split: AudioSplit, tokenizer, max_target: int):
    if split.texts is None:
      raise ValueError('the split has no transcripts')
    try:
      ids = tokenizer.encode_batch(split.texts)
    except ValueError as err:  # a character the run's tokenizer has never seen
      raise UserError(f'a transcript does not encode: {err}') from None
    longest = max(map(len, ids), default=0)
    if longest > max_target:
      raise UserError(f'transcripts of up to {longest} tokens; this run takes '
                      f'{max_target} (data.max_target): raise data.max_target')
    self.split = split
    self.lengths, self.max_length = split.lengths, split.max_length
    self.targets = np.zeros((len(ids), max_target), np.int32)
    for row, seq in enumerate(ids):
      self.targets[row, :len(seq)] = seq
    self.target_lengths = np.fromiter(map(len, ids), np.int32, len(ids))
    self.texts = split.texts

  def __len__(self) -> int:
    return len(self.split)

  def gather(self, indices, length: int | None = None) -> dict[str, np.ndarray]:
    indices = np.asarray(indices, np.int64)
    batch = self.split.gather(indices, length)
    batch.pop('label', None)
    batch['targets'] = self.targets[indices]
    batch['target_length'] = self.target_lengths[indices]
    return batch
