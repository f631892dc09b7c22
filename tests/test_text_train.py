"""Sequence models end to end through the CLI on the real SST-2 and Tiny
Shakespeare files: training, the saved tokenizer, `deepl sample`, bad input."""

import json
import os
import pathlib

import jax
import numpy as np
import pytest

from deepl import config as config_lib
from deepl import experiment
from deepl.inference import trained_run
from tests import helpers
from tests.test_cli_errors import _assert_user_error

SMALL_RNN = ('--config.model.embed_dim=16', '--config.model.hidden_dim=32',
             '--config.optim.warmup_steps=5')


def _rows(workdir, split):
  lines = (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()
  return [r for r in map(json.loads, lines) if r['split'] == split]


@pytest.fixture(scope='module')
def shakespeare_run(shared_data, tfds_data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('lm') / 'run'
  with helpers.fast_compile():  # a short run that the tests read among themselves
    result = helpers.deepl_here(
        f'--config={helpers.EXPERIMENTS}/shakespeare_lstm.py', f'--workdir={workdir}',
        f'--config.data.data_dir={tfds_data_dir}',
        f'--config.data.manual_dir={shared_data}/tiny_shakespeare', *SMALL_RNN,
        '--config.model.num_layers=1', '--config.data.context=32', '--config.train.num_steps=30',
        '--config.train.log_every_steps=10', '--config.eval.every_steps=30',
        '--config.checkpoint.every_steps=30')
  assert result.returncode == 0, result.stderr
  return workdir


@pytest.fixture(scope='module')
def sst2_run(shared_data, tfds_data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('sst2') / 'run'
  with helpers.fast_compile():  # a short run that the tests read among themselves
    result = helpers.deepl_here(
        f'--config={helpers.EXPERIMENTS}/sst2_lstm.py', f'--workdir={workdir}',
        f'--config.data.data_dir={tfds_data_dir}', f'--config.data.manual_dir={shared_data}/sst2',
        *SMALL_RNN, '--config.data.max_length=32', '--config.train.num_steps=20',
        '--config.train.log_every_steps=10', '--config.eval.every_steps=20',
        '--config.checkpoint.every_steps=20')
  assert result.returncode == 0, result.stderr
  assert 'validation accuracy' in result.stdout
  return workdir


def test_sst2_trains_and_keeps_its_tokenizer(sst2_run):
  row = _rows(sst2_run, 'validation')[-1]
  assert row['step'] == 20 and 0.0 <= row['accuracy'] <= 1.0
  tokenizer = json.loads((sst2_run / 'tokenizer' / 'tokenizer.json').read_text())
  assert tokenizer['kind'] == 'word'


def test_evaluate_refuses_a_split_without_labels(sst2_run):
  # GLUE's SST-2 test labels are hidden (-1): 'accuracy 0.0000' was printed.
  _assert_user_error(helpers.deepl_here(f'--workdir={sst2_run}', '--split=test', command='evaluate'),
                     'has no labels', 'evaluate on validation')


def test_shakespeare_logs_lm_metrics(shakespeare_run):
  train = _rows(shakespeare_run, 'train')
  assert train[-1]['loss'] < train[0]['loss']
  assert train[-1]['tokens_per_sec'] == pytest.approx(train[-1]['examples_per_sec'] * 32)
  row = _rows(shakespeare_run, 'validation')[-1]
  assert row['bits_per_char'] == pytest.approx(row['loss'] / 0.6931471805599453)
  assert row['perplexity'] > 1.0


def _sample(workdir, *args):
  return helpers.deepl_here(f'--workdir={workdir}', *args, command='sample')


def test_sample_is_deterministic_per_seed(shakespeare_run):
  args = ('--prompt=ROMEO:', '--length=80', '--temperature=0.8', '--top_k=10', '--top_p=0.95')
  first = _sample(shakespeare_run, *args, '--seed=3')
  again = _sample(shakespeare_run, *args, '--seed=3')
  other = _sample(shakespeare_run, *args, '--seed=4')
  at_step = _sample(shakespeare_run, *args, '--seed=3', '--step=30')  # the only checkpoint
  assert first.returncode == 0, first.stderr
  assert first.stdout == again.stdout == at_step.stdout != other.stdout
  _assert_user_error(_sample(shakespeare_run, *args, '--step=7'), 'no checkpoint of step 7')
  text = first.stdout[:-1]  # print's newline
  assert text.startswith('ROMEO:') and len(text) == len('ROMEO:') + 80


def test_sample_and_evaluate_take_a_relative_workdir(shakespeare_run):
  # As the README writes them (--workdir=runs/...): Orbax reads absolute paths
  # only, and `deepl sample` had said "no readable checkpoint".
  relative = os.path.relpath(shakespeare_run, helpers.ROOT)
  sampled = _sample(relative, '--prompt=ROMEO:', '--length=5')
  assert sampled.returncode == 0, sampled.stderr
  assert sampled.stdout.startswith('ROMEO:') and 'WARNING' not in sampled.stderr
  evaluated = helpers.deepl_here(f'--workdir={relative}', command='evaluate')
  assert evaluated.returncode == 0, evaluated.stderr
  assert evaluated.stdout.startswith('validation at step 30 |') and 'WARNING' not in evaluated.stderr


def test_sample_from_a_run_written_on_four_devices(shared_data, tfds_data_dir, tmp_path):
  # The checkpoint's arrays are sharded over 4 devices; sampling runs on one.
  workdir = tmp_path / 'run'
  trained = helpers.deepl(
      f'--config={helpers.EXPERIMENTS}/shakespeare_lstm.py', f'--workdir={workdir}',
      f'--config.data.data_dir={tfds_data_dir}',
      f'--config.data.manual_dir={shared_data}/tiny_shakespeare', *SMALL_RNN,
      '--config.model.num_layers=1', '--config.data.context=32', '--config.train.num_steps=4',
      '--config.eval.every_steps=4', '--config.checkpoint.every_steps=4', devices=4,
      fast_compile=True)
  assert trained.returncode == 0, trained.stderr
  sampled = _sample(workdir, '--prompt=ROMEO:', '--length=5')
  assert sampled.returncode == 0, sampled.stderr
  assert sampled.stdout.startswith('ROMEO:')


@pytest.mark.parametrize('args,needle', [
    (('--prompt=ROMEO€',), '€'),
    (('--prompt=',), '--prompt is empty'),
    (('--prompt=A', '--length=0'), '--length=0'),
    (('--prompt=A', '--temperature=0'), '--temperature=0'),
])
def test_sample_bad_input(shakespeare_run, args, needle):
  _assert_user_error(_sample(shakespeare_run, *args), needle)


def test_sample_from_a_workdir_without_a_language_model(sst2_run, tmp_path):
  _assert_user_error(_sample(sst2_run, '--prompt=A'), 'not a language model')
  _assert_user_error(_sample(tmp_path / 'nothing', '--prompt=A'), 'no config.json')


def test_predict_classifies_as_the_pipeline_batches(sst2_run):
  # deepl predict tokenizes and cuts each text itself: its labels and
  # probabilities must be the model's on the pipeline's own batch of them.
  config = config_lib.load_run_config(str(sst2_run))
  exp = experiment.build(config, str(sst2_run))
  source, texts = exp.splits['validation'], exp.dataset.splits['validation'].texts
  batch = source.gather(np.arange(len(source)))
  run = trained_run.load(str(sst2_run))
  logits = run.task.model.apply(run.variables, batch['tokens'], batch['length'], train=False)
  expected = np.asarray(jax.nn.softmax(logits, axis=-1))
  result = helpers.deepl_here(f'--workdir={sst2_run}', '--input=-', command='predict',
                         input=''.join(f'{t}\n' for t in texts))
  assert result.returncode == 0, result.stderr
  lines = [l.split('\t') for l in result.stdout.splitlines()]
  assert len(lines) == len(texts)
  names = ('negative', 'positive')
  got = np.array([float(p) if names.index(n) else 1 - float(p) for n, p in lines])
  np.testing.assert_allclose(got, expected[:, 1], atol=1e-4)
  assert expected[:, 1].min() < 0.5 < expected[:, 1].max()  # both labels come out


def test_predict_refuses_a_language_model_and_beams_for_a_classifier(shakespeare_run, sst2_run):
  _assert_user_error(helpers.deepl_here(f'--workdir={shakespeare_run}', '--input=x', command='predict'),
                     "a 'causal_lm' run", 'deepl sample')
  _assert_user_error(helpers.deepl_here(f'--workdir={sst2_run}', '--input=x', '--beam_size=2',
                                   command='predict'), '--beam_size is for seq2seq')


def test_malformed_tsv_row(shared_data, tmp_path):
  manual = tmp_path / 'sst2'
  manual.mkdir()
  for name in ('train.tsv', 'dev.tsv', 'test.tsv'):
    (manual / name).write_bytes((shared_data / 'sst2' / name).read_bytes())
  lines = (manual / 'dev.tsv').read_text().splitlines(keepends=True)
  lines[5] = 'a sentence without a label\n'
  (manual / 'dev.tsv').write_text(''.join(lines))
  result = helpers.deepl_here(f'--config={helpers.EXPERIMENTS}/sst2_lstm.py',
                         f'--workdir={tmp_path}/w', f'--config.data.data_dir={tmp_path}/tfds',
                         f'--config.data.manual_dir={manual}')
  _assert_user_error(result, 'dev.tsv')
