"""What the speech builders share: the feature spec, and reading the real sets' archives.

Waveforms are stored as int16 `Tensor` features of shape (None,) at 16 kHz
(TFDS's `Audio` feature needs TensorFlow to encode), with their sample count
alongside, so reading them needs neither TensorFlow nor a decoder.
"""

from collections.abc import Iterator
import posixpath
import tarfile

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from deepl.data import audio_io
from deepl.data.builders import _manual

SAMPLE_RATE = audio_io.SAMPLE_RATE


def audio_info(builder, features: dict, *, supervised_keys, homepage: str | None = None,
               citation: str | None = None):
  """int16 `audio` (n,) at 16 kHz and int32 `length` (n), plus `features`."""
  return builder.dataset_info_from_configs(
      features=tfds.features.FeaturesDict({
          # BYTES: the raw int16 buffer (the default stores each sample as an int64).
          'audio': tfds.features.Tensor(shape=(None,), dtype=np.int16,
                                        encoding=tfds.features.Encoding.BYTES),
          'length': tfds.features.Tensor(shape=(), dtype=np.int32),
          **features,
      }),
      supervised_keys=supervised_keys,
      # Record i is example i as generated: the order is part of the data set.
      disable_shuffling=True,
      homepage=homepage,
      citation=citation,
      metadata=tfds.core.MetadataDict(sample_rate=SAMPLE_RATE),
  )


def wav_to_int16(data: bytes, name: str) -> np.ndarray:
  """A WAV file's bytes -> int16 mono at 16 kHz; 16 kHz int16 mono files pass unchanged."""
  wave, rate = audio_io.decode_wav(data, name=name)
  return audio_io.to_int16(audio_io.resample(wave, rate, SAMPLE_RATE))


def tar_files(path) -> Iterator[tuple[str, bytes]]:
  """(path inside, contents) of each regular file of a tar archive, in archive order.

  Paths are normalised as TFDS's own extractor does ('./a/b.wav' -> 'a/b.wav'),
  and hidden files ('.x', '._x.wav' from macOS) are skipped, as TFDS skips them.
  Streams the archive: a 2.4 GB tar.gz is read once, never extracted to disk.
  """
  with tarfile.open(path, 'r|*') as archive:
    for member in archive:
      if not member.isfile():
        continue
      name = posixpath.normpath(member.name)
      if name.startswith(('.', '/')) or posixpath.basename(name).startswith('.'):
        continue
      yield name, archive.extractfile(member).read()


def manual_archive(dl_manager, builder, url: str, *, fix: str):
  """The archive at `url`: from manual_dir (checked) if the user gave one, else downloaded.

  In manual_dir it may carry the URL's last part or the name TFDS registered
  for it (GitHub serves 'v1.0.9.tar.gz' as 'free-spoken-digit-dataset-1.0.9.tar.gz').
  """
  manual_dir = _manual.given_manual_dir(dl_manager)
  if manual_dir is None:
    return dl_manager.download(url)
  info = builder.url_infos[url]
  names = [url.rsplit('/', 1)[-1]]
  if info.filename and info.filename not in names:
    names.append(info.filename)
  name = next((n for n in names if (epath.Path(manual_dir) / n).exists()), names[0])
  return _manual.check_files(manual_dir, {name: info.checksum}, fix=fix)[name]
