"""Speech data: the synthesized sets (tiny config) and the real sets' builders on fake archives.

Offline throughout: synthesized sets need only the espeakng-loader wheel, and
the real builders get a manual_dir (fake archives whose checksums the test
registers, or wrong files that must fail the real checksums).
"""

import io
import pathlib
import tarfile

import numpy as np
import pytest
from scipy.io import wavfile
import tensorflow_datasets as tfds

from deepl.data.builders import _audio
from deepl.data.builders import _manual
from deepl.data.builders import _speech_synth
from deepl.data.builders import BUILDERS
from deepl.data.builders import espeak_worker
from deepl.data.builders import speech_commands
from deepl.data.builders import spoken
from deepl.data.builders import spoken_digit
from deepl.errors import UserError


# An accidental TFDS download fails at once (tests/conftest.py).
pytestmark = pytest.mark.usefixtures('no_network')


def prepare(name: str, data_dir, manual_dir=None):
  builder = BUILDERS[name](data_dir=str(data_dir), file_format='array_record')
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=None if manual_dir is None else str(manual_dir), try_download_gcs=False))
  return builder


def read_all(builder) -> dict[str, list[dict]]:
  out = {}
  for split in builder.info.splits:
    source = builder.as_data_source(split)
    out[split] = source.__getitems__(range(len(source)))
  return out


def one_line(err) -> str:
  message = str(err.value)
  assert '\n' not in message, message
  return message


# --- Synthesized ----------------------------------------------------------------------


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  """Both tiny sets, each prepared twice into separate data dirs: name -> (first, second)."""
  out = {}
  for name in ('spoken_digits/tiny', 'spoken_numbers/tiny'):
    out[name] = tuple(read_all(prepare(name, tmp_path_factory.mktemp('tfds')))
                      for _ in range(2))
  return out


@pytest.mark.parametrize('name', ['spoken_digits/tiny', 'spoken_numbers/tiny'])
def test_preparing_twice_gives_identical_examples(tiny, name):
  first, second = tiny[name]
  assert first.keys() == second.keys() == {'train', 'validation', 'test'}
  for split in first:
    assert len(first[split]) == len(second[split]) > 0
    for a, b in zip(first[split], second[split]):
      assert a.keys() == b.keys()
      for key in a:
        assert np.asarray(a[key]).tobytes() == np.asarray(b[key]).tobytes(), (split, key)


def test_digits_features(tiny):
  examples = tiny['spoken_digits/tiny'][0]
  assert [len(examples[s]) for s in ('train', 'validation', 'test')] == [40, 20, 20]
  for split, rows in examples.items():
    labels = [int(r['label']) for r in rows]
    assert sorted(set(labels)) == list(range(10)), split
    for row in rows:
      audio = row['audio']
      assert audio.dtype == np.int16 and audio.ndim == 1 and len(audio) == row['length']
      assert 0.2 < len(audio) / 16000 < 2.0
      peak_dbfs = 20 * np.log10(np.abs(audio).max() / 32768)
      assert _speech_synth.PEAK_DBFS[0] - 3 < peak_dbfs < 0.5


def test_numbers_features(tiny):
  examples = tiny['spoken_numbers/tiny'][0]
  assert [len(examples[s]) for s in ('train', 'validation', 'test')] == [16, 8, 8]
  for rows in examples.values():
    for row in rows:
      words = row['text'].decode().split(' ')
      assert 2 <= len(words) <= 6 and set(words) <= set(_speech_synth.DIGIT_WORDS)
      assert row['audio'].dtype == np.int16 and len(row['audio']) == row['length']
      # Longer sequences take longer to say.
      assert len(row['audio']) / 16000 > 0.15 * len(words)


@pytest.mark.parametrize('name', ['spoken_digits/tiny', 'spoken_numbers/tiny'])
def test_split_by_voice(tiny, name):
  examples = tiny[name][0]
  voices = {split: {r['voice'].decode() for r in rows} for split, rows in examples.items()}
  assert voices['train'] == {'en-us+m1', 'en+m1', 'en-us+f1', 'en+f1'}
  assert voices['test'].isdisjoint(voices['train'])
  assert voices['validation'].isdisjoint(voices['train'] | voices['test'])


def test_full_plan_split_by_variant():
  """The full config's plan (no audio): counts as documented, variants disjoint."""
  config = {c.name: c for c in spoken.SpokenNumbers.BUILDER_CONFIGS}['full']
  counts, variants = {}, {}
  for split in ('train', 'validation', 'test'):
    for kind, per_voice in (('digits', {'train': 2, 'validation': 1, 'test': 1}[split]),
                            ('numbers', config.per_voice[split])):
      utterances = _speech_synth.plan(kind, split, per_voice=per_voice)
      counts[kind, split] = len(utterances)
      variants[split] = {u.voice.split('+')[1] for u in utterances}
  assert counts == {('digits', 'train'): 3840, ('digits', 'validation'): 480,
                    ('digits', 'test'): 480, ('numbers', 'train'): 3072,
                    ('numbers', 'validation'): 384, ('numbers', 'test'): 384}
  assert not variants['train'] & variants['test']
  assert not variants['validation'] & (variants['train'] | variants['test'])


def test_plan_is_a_pure_function():
  a = _speech_synth.plan('numbers', 'test', per_voice=3, num_variants=1)
  b = _speech_synth.plan('numbers', 'test', per_voice=3, num_variants=1)
  assert a == b
  # A voice's plan does not depend on which other voices the config has.
  few = _speech_synth.plan('digits', 'train', per_voice=1, num_variants=1, accents=('en',))
  assert few == [u for u in _speech_synth.plan('digits', 'train', per_voice=1, num_variants=1)
                 if u.voice == 'en+m1']


def test_missing_espeak_is_one_line(monkeypatch, tmp_path):
  def no_wheel():
    raise ImportError("No module named 'espeakng_loader'")
  monkeypatch.setattr(espeak_worker, 'load', no_wheel)
  with pytest.raises(UserError, match='pip install espeakng-loader') as err:
    prepare('spoken_digits/tiny', tmp_path)
  one_line(err)


def test_unknown_voice_fails_in_worker():
  with pytest.raises(RuntimeError, match="no voice 'en\\+nobody'"):
    _speech_synth._run_worker([{'text': 'one', 'voice': 'en+nobody', 'rate': 175,
                                'pitch': 50, 'range': 50, 'word_gap': 0, 'seed': 1}])


# --- Real sets, offline -----------------------------------------------------------------


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
  buffer = io.BytesIO()
  wavfile.write(buffer, rate, samples)
  return buffer.getvalue()


def write_tar(path: pathlib.Path, files: dict[str, bytes]) -> pathlib.Path:
  with tarfile.open(path, 'w:gz') as archive:
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      archive.addfile(info, io.BytesIO(data))
  return path


def register_fake_checksums(monkeypatch, builder_cls, paths: dict[str, pathlib.Path]):
  """Makes `builder_cls` expect the fake archives' sha256 for these URLs."""
  infos = dict(builder_cls.url_infos)
  for url, path in paths.items():
    infos[url] = tfds.core.download.checksums.UrlInfo(
        size=path.stat().st_size, checksum=_manual.sha256(path), filename=path.name)
  monkeypatch.setattr(builder_cls, 'url_infos', infos)


def test_checksums_are_tfds_own():
  import tensorflow_datasets.datasets.speech_commands as sc  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets.datasets.spoken_digit as sd  # pylint: disable=g-import-not-at-top
  for module, urls in ((sd, [spoken_digit.URL]),
                       (sc, [speech_commands.URL, speech_commands.TEST_URL])):
    theirs = tfds.core.download.checksums.load_url_infos(
        pathlib.Path(module.__file__).parent / 'checksums.tsv')
    for url in urls:
      assert spoken_digit.SpokenDigit.url_infos[url] == theirs[url]


def test_spoken_digit_from_fake_archive(monkeypatch, tmp_path):
  rng = np.random.default_rng(0)
  files = {'free-spoken-digit-dataset-1.0.9/README.md': b'not audio'}
  for digit in range(10):
    for speaker in ('jackson', 'theo'):
      for index in range(7):
        wave = (rng.standard_normal(800 + 8 * index) * 3000).astype(np.int16)
        files[f'free-spoken-digit-dataset-1.0.9/recordings/{digit}_{speaker}_{index}.wav'] = (
            wav_bytes(wave, 8000))
  manual = tmp_path / 'manual'
  manual.mkdir()
  archive = write_tar(manual / 'free-spoken-digit-dataset-1.0.9.tar.gz', files)
  register_fake_checksums(monkeypatch, spoken_digit.SpokenDigit, {spoken_digit.URL: archive})
  builder = prepare('spoken_digit', tmp_path / 'tfds', manual)
  examples = read_all(builder)
  assert {s: len(r) for s, r in examples.items()} == {'train': 40, 'test': 100}
  first = examples['test'][0]
  assert (first['label'], first['speaker']) == (0, b'jackson')
  assert first['audio'].dtype == np.int16 and first['length'] == 1600  # 800 at 8 kHz -> 16 kHz
  assert builder.info.metadata['sample_rate'] == 16000


def test_spoken_digit_wrong_file_is_one_line(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'v1.0.9.tar.gz').write_bytes(b'not the archive')
  with pytest.raises(UserError, match=r'v1\.0\.9\.tar\.gz has sha256 .* expected 8bc44cde129d'
                     ) as err:
    prepare('spoken_digit', tmp_path / 'tfds', manual)
  one_line(err)


def test_speech_commands_missing_file_is_one_line(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  with pytest.raises(UserError, match='has no speech_commands_v0.02.tar.gz') as err:
    prepare('speech_commands', tmp_path / 'tfds', manual)
  one_line(err)


def test_speech_commands_from_fake_archives(monkeypatch, tmp_path):
  rng = np.random.default_rng(0)

  def clip(seconds=0.5):
    return wav_bytes((rng.standard_normal(int(16000 * seconds)) * 1000).astype(np.int16), 16000)

  main = {'./validation_list.txt': b'yes/b_nohash_0.wav\ncat/b_nohash_0.wav\n',
          './testing_list.txt': b'yes/c_nohash_0.wav\n',
          './yes/a_nohash_0.wav': clip(), './yes/b_nohash_0.wav': clip(),
          './yes/c_nohash_0.wav': clip(), './cat/a_nohash_0.wav': clip(),
          './cat/b_nohash_0.wav': clip(), './down/a_nohash_1.wav': b'RIFF broken',
          './_background_noise_/white_noise.wav': clip(2.6),
          './_background_noise_/running_tap.wav': clip(1.6),
          './._yes.wav': b'macOS resource fork'}
  test = {'yes/d_nohash_0.wav': clip(), '_silence_/e_nohash_0.wav': clip(1.0)}
  manual = tmp_path / 'manual'
  manual.mkdir()
  paths = {speech_commands.URL: write_tar(manual / 'speech_commands_v0.02.tar.gz', main),
           speech_commands.TEST_URL: write_tar(
               manual / 'speech_commands_test_set_v0.02.tar.gz', test)}
  register_fake_checksums(monkeypatch, speech_commands.SpeechCommands, paths)
  examples = read_all(prepare('speech_commands', tmp_path / 'tfds', manual))
  labels = {split: sorted(speech_commands.LABELS[r['label']] for r in rows)
            for split, rows in examples.items()}
  # white_noise: 2.6 s -> windows at 0, 0.5, 1.0, 1.5 s; running_tap: 1.6 s -> 0, 0.5 s.
  assert labels == {
      'train': ['_silence_'] * 4 + ['_unknown_', 'yes'],  # the broken wav is skipped
      'validation': ['_silence_'] * 2 + ['_unknown_', 'yes'],
      'test': ['_silence_', 'yes'],
  }
  for rows in examples.values():
    for row in rows:
      assert row['audio'].dtype == np.int16 and len(row['audio']) == row['length']
  assert {len(r['audio']) for r in examples['train']} == {8000, 16000}


def test_tar_files_normalises_and_skips_hidden(tmp_path):
  archive = write_tar(tmp_path / 'a.tar.gz', {'./a/b.wav': b'1', 'a/.hidden': b'2',
                                              './._c.wav': b'3', 'd.txt': b'4'})
  assert list(_audio.tar_files(archive)) == [('a/b.wav', b'1'), ('d.txt', b'4')]
