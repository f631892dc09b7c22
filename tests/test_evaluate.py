"""`deepl evaluate`: a run's checkpoints on any split, with training's numbers."""

import json

import pytest

from tests import helpers

pytestmark = pytest.mark.usefixtures('fast_compile')  # short runs, compared among themselves


@pytest.fixture(scope='module')
def run(tmp_path_factory, tfds_data_dir):
  return helpers.train_digits(tmp_path_factory.mktemp('evaluate') / 'digits', tfds_data_dir,
                              steps=20, eval_every=10, checkpoint_every=10)


def _evaluate(run, *args):
  return helpers.deepl_here(f'--workdir={run}', *args, command='evaluate')


def _logged(run, step):
  rows = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
  return next(r for r in rows if r['step'] == step and r['split'] == 'test')


@pytest.mark.parametrize('step', [None, 10])
def test_evaluate_repeats_the_logged_eval(run, step):
  result = _evaluate(run, *([f'--step={step}'] if step else []))
  assert result.returncode == 0, result.stderr
  logged = _logged(run, step or 20)
  # The metrics training logged, rounded as the log shows them.
  assert result.stdout.strip() == (f'test at step {step or 20} | loss {logged["loss"]:.4f} | '
                                   f'accuracy {100 * logged["accuracy"]:.2f}%')


def test_evaluate_another_split(run):
  result = _evaluate(run, '--split=train')
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith('train at step 20 | loss ')


@pytest.mark.parametrize('args,needle', [
    (('--split=tset',), "no split 'tset': use one of train, test"),
    (('--step=7',), 'no checkpoint of step 7; it has: 10, 20'),
])
def test_evaluate_bad_input(run, args, needle):
  result = _evaluate(run, *args)
  assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr
  assert needle in result.stderr.strip().splitlines()[-1]


def test_evaluate_needs_a_run(tmp_path):
  result = helpers.deepl_here(f'--workdir={tmp_path}', command='evaluate')
  assert result.returncode == 2 and 'holds no run' in result.stderr, result.stderr
