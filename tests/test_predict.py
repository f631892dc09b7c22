"""`deepl predict` end to end on short dates and digits runs (offline: no shared data).

The text classifier's side runs on test_text_train.py's SST-2 run.
"""

import json
import pathlib
import re
import shutil

import jax
import numpy as np
from PIL import Image
import pytest

from deepl import config as config_lib
from deepl.cli import predict
from deepl.data import datasets
from deepl.errors import UserError
from deepl.inference import trained_run
from tests import helpers
from tests.test_cli_errors import _assert_user_error


@pytest.fixture(scope='module')
def dates_run(tfds_data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('dates') / 'run'
  result = helpers.deepl_here(
      f'--config={helpers.EXPERIMENTS}/dates_seq2seq.py', f'--workdir={workdir}',
      f'--config.data.data_dir={tfds_data_dir}', '--config.train.num_steps=200',
      '--config.train.log_every_steps=100', '--config.eval.every_steps=200',
      '--config.checkpoint.every_steps=100')
  assert result.returncode == 0, result.stderr
  return workdir


@pytest.fixture(scope='module')
def validation(dates_run, tfds_data_dir):
  del dates_run  # it prepared the data
  return datasets.get_dataset('dates', data_dir=str(tfds_data_dir)).splits['validation']


def _predict(workdir, *args, **kwargs):
  return helpers.deepl_here(f'--workdir={workdir}', *args, command="predict", **kwargs)


def test_predictions_score_what_training_evaluated(dates_run, validation):
  # Each source made into a batch row as the pipeline makes it: the exact match
  # of predict's answers is the one the run's eval logged for the same step
  # (up to one near-tie that rounds apart in another batch shape).
  result = _predict(dates_run, '--input=-', input=''.join(f'{s}\n' for s in validation.sources))
  assert result.returncode == 0, result.stderr
  answers = result.stdout.splitlines()
  assert len(answers) == len(validation)
  exact = np.mean([a == t for a, t in zip(answers, validation.targets)])
  metrics = (pathlib.Path(dates_run) / 'metrics.jsonl').read_text().splitlines()
  rows = [json.loads(l) for l in metrics]
  logged = [r for r in rows if r['split'] == 'validation' and r['step'] == 200][-1]['exact_match']
  assert logged > 0.5  # it learned enough for the comparison to mean something
  assert abs(exact - logged) <= 1 / len(validation) + 1e-9, (exact, logged)


def test_one_input_and_beam_search(dates_run, validation):
  sources = validation.sources[:5]
  lines = ''.join(f'{s}\n' for s in sources)
  greedy = _predict(dates_run, '--input=-', input=lines)
  beam_one = _predict(dates_run, '--input=-', '--beam_size=1', input=lines)
  beam = _predict(dates_run, '--input=-', '--beam_size=3', input=lines)
  single = _predict(dates_run, f'--input={sources[0]}')
  for result in (greedy, beam_one, beam, single):
    assert result.returncode == 0, result.stderr
  assert greedy.stdout == beam_one.stdout
  assert len(beam.stdout.splitlines()) == 5
  assert single.stdout == greedy.stdout.splitlines(keepends=True)[0]


def test_a_run_written_by_an_earlier_deepl(dates_run, validation, tmp_path):
  # Its config.json had eval.beam_size and the source length in data.max_length.
  old = tmp_path / 'old'
  shutil.copytree(dates_run, old)
  config = json.loads((old / 'config.json').read_text())
  config['eval'].update(beam_size=1, length_penalty=0.6)
  config['data']['max_length'] = config['data'].pop('max_source')
  del config['task_options']
  (old / 'config.json').write_text(json.dumps(config))
  lines = ''.join(f'{s}\n' for s in validation.sources[:20])
  then, now = (_predict(run, '--input=-', input=lines) for run in (old, dates_run))
  assert then.returncode == 0, then.stderr
  assert then.stdout == now.stdout


def test_step_picks_the_checkpoint(dates_run, validation):
  lines = ''.join(f'{s}\n' for s in validation.sources[:50])
  newest, last, early = (_predict(dates_run, '--input=-', *step, input=lines)
                         for step in ((), ('--step=200',), ('--step=100',)))
  for result in (newest, last, early):
    assert result.returncode == 0, result.stderr
  assert newest.stdout == last.stdout != early.stdout
  _assert_user_error(_predict(dates_run, '--input=x', '--step=7'), 'no checkpoint of step 7',
                     'it has: 100, 200')


@pytest.mark.parametrize('inputs,beam_size,needle', [
    ([], None, 'no input'),
    (['12/12/2023 12/12/2023'], None,
     '--input has 21 tokens; this run was trained on sources of at most 20'),
    (['07/04/2023€'], None, "--input: 1 character(s) not in the char vocabulary: '€'"),
    (['July 4, 2023', '07/04/2023€'], None, 'input line 2'),
    (['07/04/2023'], 0, '--beam_size=0'),
])
def test_bad_input(dates_run, inputs, beam_size, needle):
  with pytest.raises(UserError, match=re.escape(needle)):
    predict.predict(config_lib.load_run_config(str(dates_run)), str(dates_run), inputs,
                    beam_size=beam_size)


def test_bad_input_from_the_command_line(dates_run):
  _assert_user_error(_predict(dates_run), 'needs --input')
  _assert_user_error(_predict(dates_run, '--input=-', input='July 4, 2023\n07/04/2023€\n'),
                     'input line 2')


@pytest.fixture(scope='module')
def digits_run(tfds_data_dir, tmp_path_factory):
  return helpers.train_digits(tmp_path_factory.mktemp('digits') / 'run', tfds_data_dir, steps=100)


def test_image_files_classify_as_the_pipeline_batches(digits_run, tfds_data_dir, tmp_path):
  # PNG files of test images (8x8 grey), and one of them as a 24x24 RGB JPEG
  # that predict must convert and resize: the labels and probabilities are the
  # model's on the pipeline's own uint8 batch.
  images = datasets.get_dataset('digits', data_dir=str(tfds_data_dir)).splits['test'].images[:12]
  paths = []
  for i, image in enumerate(images):
    paths.append(tmp_path / f'{i}.png')
    Image.fromarray(image[..., 0]).save(paths[-1])
  Image.fromarray(images[0][..., 0]).convert('RGB').resize((24, 24)).save(tmp_path / 'big.jpg')
  result = _predict(digits_run, '--input=-', input=''.join(f'{p}\n' for p in paths))
  big = _predict(digits_run, f'--input={tmp_path / "big.jpg"}')
  assert result.returncode == 0 and big.returncode == 0, result.stderr + big.stderr
  run = trained_run.load(str(digits_run))
  logits = run.task.model.apply(run.variables, *run.task.model_inputs({'image': images}),
                                train=False)
  expected = np.asarray(jax.nn.softmax(logits, axis=-1))
  lines = [l.split('\t') for l in result.stdout.splitlines()]
  assert [int(label) for label, _ in lines] == list(expected.argmax(-1))
  np.testing.assert_allclose([float(p) for _, p in lines], expected.max(-1), atol=1e-4)
  assert big.stdout.split('\t')[0] == lines[0][0]
  _assert_user_error(_predict(digits_run, f'--input={tmp_path / "none.png"}'),
                     'cannot read an image', 'none.png')


def test_runs_it_cannot_predict(tmp_path):
  _assert_user_error(_predict(tmp_path / 'nothing', '--input=x'), 'no config.json')
  _assert_user_error(helpers.deepl_here('--input=x', command='predict'), 'needs --workdir')
  masked_lm = config_lib.default_config()
  masked_lm.task = 'masked_lm'
  (tmp_path / 'mlm').mkdir()
  (tmp_path / 'mlm' / 'config.json').write_text(config_lib.to_json(masked_lm))
  _assert_user_error(_predict(tmp_path / 'mlm', '--input=x'), "a 'masked_lm' run", 'init_from')
