"""Speech through the one loop: the tiny synthesized sets trained a few steps, evaluated,
and WAV files predicted as the pipeline batches them.

The full experiments (>= 95% accuracy, CER <= 10%) are minutes-long and marked slow:
`python -m pytest -q --runslow tests/test_speech_train.py`.
"""

import json
import re

import jax
from ml_collections import config_dict
import numpy as np
import pytest
from scipy.io import wavfile

from deepl import config as config_lib
from deepl import ctc
from deepl import experiment
from deepl import train
from deepl.cli import evaluate
from deepl.cli import predict
from deepl.data import audio_io
from deepl.data import datasets
from deepl.errors import UserError
from deepl.inference import trained_run
from deepl.tasks import ctc as ctc_task
from tests import helpers
from tests.test_cli_errors import _assert_user_error


def _config(name, data_dir, arg='tiny'):
  config = config_lib.sibling_config(str(helpers.EXPERIMENTS / 'x.py'), name, arg)
  config.data.data_dir = str(data_dir)
  return config


def _train(name, data_dir, workdir):
  """A few steps, compiled fast: the tests compare what the run gives among themselves."""
  config = _config(name, data_dir)
  config_lib.validate(config)
  with helpers.fast_compile():
    final = train.train_and_evaluate(config, str(workdir))
  return workdir, final


@pytest.fixture(scope='module')
def digits_run(tfds_data_dir, tmp_path_factory):
  return _train('spoken_digits_cnn', tfds_data_dir, tmp_path_factory.mktemp('digits') / 'run')


@pytest.fixture(scope='module')
def numbers_run(tfds_data_dir, tmp_path_factory):
  return _train('spoken_numbers_ctc', tfds_data_dir, tmp_path_factory.mktemp('numbers') / 'run')


def _split(name, data_dir, split='test'):
  return datasets.get_dataset(name, data_dir=str(data_dir)).splits[split]


def _write_waves(split, count, folder) -> list[str]:
  """The first `count` clips of a split as 16-bit 16 kHz WAV files."""
  paths = []
  for index in range(count):
    paths.append(str(folder / f'{index}.wav'))
    wavfile.write(paths[-1], audio_io.SAMPLE_RATE, split.wave(index))
  return paths


def _model_outputs(run, batch):
  """The run's model on a batch the pipeline made: what predict's answers must agree with."""
  apply = lambda batch: run.task.model.apply(run.variables, *run.task.model_inputs(batch),
                                             train=False)
  return jax.jit(apply)(batch)


def _rows(workdir):
  return [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]


def test_speech_sets_load_as_waveforms(digits_run, numbers_run, tfds_data_dir):
  del digits_run, numbers_run  # they prepared the sets
  digits = datasets.get_dataset('spoken_digits/tiny', data_dir=str(tfds_data_dir))
  numbers = datasets.get_dataset('spoken_numbers/tiny', data_dir=str(tfds_data_dir))
  assert digits.is_audio and not digits.is_text and not digits.has_texts
  assert numbers.has_texts and numbers.num_classes is None
  assert (digits.num_classes, digits.eval_split) == (10, 'validation')
  train_split = digits.splits['train']
  batch = train_split.gather(np.array([3, 0]), 12_000)
  assert batch['audio'].shape == (2, 12_000) and batch['audio'].dtype == np.int16
  for row, index in enumerate((3, 0)):
    n = batch['length'][row]
    assert n == min(len(train_split.wave(index)), 12_000)
    np.testing.assert_array_equal(batch['audio'][row, :n], train_split.wave(index)[:n])
    assert not batch['audio'][row, n:].any()
  assert sorted(set(train_split.labels.tolist())) == list(range(10))
  assert all(set(t.split()) <= {'zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven',
                                'eight', 'nine'} for t in numbers.texts('train'))


def test_digit_classifier_predicts_wav_files_as_the_pipeline_batches(digits_run, tfds_data_dir,
                                                                     tmp_path):
  workdir, final = digits_run
  assert set(final) == {'loss', 'accuracy'}
  assert [r['step'] for r in _rows(workdir) if r['split'] == 'validation'] == [6]
  test = _split('spoken_digits/tiny', tfds_data_dir)
  paths = _write_waves(test, 5, tmp_path)
  # The same clip at 44.1 kHz in stereo: resampled and averaged, it reads as a clip.
  stereo = np.stack([test.wave(0)] * 2, axis=1)
  wavfile.write(tmp_path / 'stereo.wav', 44_100, audio_io.to_int16(audio_io.resample(
      audio_io.to_float(stereo), 16_000, 44_100)))
  config = config_lib.load_run_config(str(workdir))
  lines = [l.split('\t') for l in predict.predict(config, str(workdir),
                                                  paths + [str(tmp_path / 'stereo.wav')])]
  run = trained_run.load(str(workdir))
  logits = _model_outputs(run, test.gather(np.arange(5)))
  expected = np.asarray(jax.nn.softmax(logits, axis=-1))
  assert [int(label) for label, _ in lines[:5]] == list(expected.argmax(-1))
  np.testing.assert_allclose([float(p) for _, p in lines[:5]], expected.max(-1), atol=1e-4)
  assert int(lines[5][0]) in range(10) and 0 < float(lines[5][1]) <= 1


def test_bad_audio_is_one_line(digits_run, tmp_path):
  workdir, _ = digits_run
  config = config_lib.load_run_config(str(workdir))
  (tmp_path / 'text.wav').write_text('not audio')
  wavfile.write(tmp_path / 'empty.wav', 16_000, np.zeros(0, np.int16))
  wavfile.write(tmp_path / 'long.wav', 8_000, np.ones(8_000 * 3, np.int16))  # 3 s > 2 s
  for name, needle in (('text.wav', 'is not a WAV file'), ('empty.wav', 'has no samples'),
                       ('long.wav', 'is 3.00 s long; the model takes at most 2 s'),
                       ('none.wav', 'no such file')):
    with pytest.raises(UserError, match=re.escape(needle)):
      predict.predict(config, str(workdir), [str(tmp_path / name)])
  _assert_user_error(helpers.deepl_here(f'--workdir={workdir}', f'--input={tmp_path / "text.wav"}',
                                   command='predict'), 'text.wav is not a WAV file')


def test_ctc_run_reports_cer_and_wer(numbers_run):
  workdir, final = numbers_run
  assert set(final) == {'loss', 'cer', 'wer'} and np.isfinite(final['loss'])
  row = [r for r in _rows(workdir) if r['split'] == 'validation'][-1]
  assert row['step'] == 4 and row['cer'] == final['cer'] and row['wer'] >= 0
  split, step, metrics = evaluate.evaluate_run(config_lib.load_run_config(str(workdir)),
                                               str(workdir), split='test')
  assert (split, step) == ('test', 4) and set(metrics) == {'loss', 'cer', 'wer'}
  shown = evaluate.format_result(split, step, metrics)
  assert re.fullmatch(r'test at step 4 \| loss \S+ \| CER \d+\.\d\d% \| WER \d+\.\d\d%', shown)


def test_ctc_predict_transcribes_as_eval_decodes(numbers_run, tfds_data_dir, tmp_path):
  workdir, _ = numbers_run
  test = _split('spoken_numbers/tiny', tfds_data_dir)
  paths = _write_waves(test, 4, tmp_path)
  config = config_lib.load_run_config(str(workdir))
  transcripts = predict.predict(config, str(workdir), paths)
  run = trained_run.load(str(workdir))
  logits, frames = _model_outputs(run, test.gather(np.arange(4)))
  ids, lengths = map(np.asarray, ctc.greedy_decode(logits, frames))
  expected = [run.tokenizer.decode(row[:n]) for row, n in zip(ids, lengths)]
  # After 4 steps the model still emits characters (not only blanks): a real comparison.
  assert transcripts == expected and any(expected)


@pytest.mark.parametrize('name,overrides,needle', [
    ('spoken_digits_cnn', {'task': 'ctc'}, "task 'ctc' needs speech with transcripts"),
    ('spoken_numbers_ctc', {'task': 'classification', 'model': {'name': 'speech_cnn'}},
     "holds transcripts, not classes: use task='ctc'"),
    ('spoken_digits_cnn', {'data.augment': 'crop'}, "data.augment='crop' is for images"),
    ('spoken_digits_cnn', {'data.max_seconds': 0.25}, 'data.max_seconds=0.25: raise it'),
    ('spoken_numbers_ctc', {'data.max_target': 10}, 'transcripts of up to'),
    ('spoken_numbers_ctc', {'data.tokenizer': 'word'}, "set data.tokenizer='char'"),
])
def test_speech_config_errors_are_one_line(name, overrides, needle, digits_run, numbers_run,
                                           tfds_data_dir, tmp_path):
  del digits_run, numbers_run  # they prepared the sets
  config = _config(name, tfds_data_dir)
  for key, value in overrides.items():
    section, _, field = key.rpartition('.')
    value = config_dict.ConfigDict(value) if isinstance(value, dict) else value
    (config[section] if section else config)[field] = value
  with pytest.raises(UserError, match=re.escape(needle)):
    config_lib.validate(config)
    experiment.build(config, str(tmp_path))


def test_spec_augment_masks_training_features_only():
  task = ctc_task.CTCTask(None, space_id=1, augment='spec_augment')
  rng = np.random.default_rng(0)
  batch = {'audio': rng.integers(-3000, 3000, (2, 8_000)).astype(np.int16),
           'length': np.array([8_000, 5_000], np.int32)}
  features = jax.jit(lambda key: (task.model_inputs(batch)[0], task.model_inputs(batch, key)[0]))
  plain, masked = features(jax.random.key(1))
  _, again = features(jax.random.key(1))
  np.testing.assert_array_equal(masked, again)  # the key decides the masks
  changed = np.asarray(masked != plain)
  assert changed.any() and not np.asarray(masked)[changed].any()  # masked values are 0


@pytest.mark.slow
@pytest.mark.parametrize('name,metric,bar', [
    ('spoken_digits_cnn', 'accuracy', 0.95),
    ('spoken_numbers_ctc', 'cer', 0.10),
])
def test_speech_experiment_reaches_its_bar(name, metric, bar, tfds_data_dir, tmp_path):
  config = config_lib.sibling_config(str(helpers.EXPERIMENTS / 'x.py'), name)
  config.data.data_dir = str(tfds_data_dir)
  train.train_and_evaluate(config, str(tmp_path))
  _, _, metrics = evaluate.evaluate_run(config_lib.load_run_config(str(tmp_path)),
                                        str(tmp_path), split='test')
  assert metrics[metric] >= bar if metric == 'accuracy' else metrics[metric] <= bar
