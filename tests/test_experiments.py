"""The experiments reach what their docstrings and the README claim.

The default experiment runs in the default suite (seconds); the others are
minutes-long training runs, marked slow: `python -m pytest -q --runslow -k experiments`.
"""

import json
import pathlib

import pytest

from tests import helpers


def final_test_row(workdir):
  rows = [json.loads(l) for l in (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines()]
  return [r for r in rows if r['split'] == 'test'][-1]


def test_default_experiment_reaches_97_percent(tfds_data_dir, tmp_path):
  result = helpers.deepl_here(f'--workdir={tmp_path}/run', f'--config.data.data_dir={tfds_data_dir}')
  assert result.returncode == 0, result.stderr
  row = final_test_row(tmp_path / 'run')
  assert row['step'] == 1500 and row['accuracy'] >= 0.97


@pytest.mark.slow
@pytest.mark.parametrize('experiment,raw,bar', [
    ('mnist_cnn', 'mnist', 0.992),
    ('fashion_mnist_cnn', 'fashion_mnist', 0.91),
    # The 4,000-image subset: 66.3% on its 1,000 test images, 66.7-67.9% over earlier runs
    # that rounded differently (docs/experiments.md); a broken step stays far below 63%.
    ('cifar10_resnet20', 'cifar10_subset', 0.63),
])
def test_experiment_reaches_its_bar(experiment, raw, bar, shared_data, tfds_data_dir, tmp_path):
  result = helpers.deepl(f'--config={helpers.EXPERIMENTS}/{experiment}.py',
                         f'--workdir={tmp_path}/run', f'--config.data.data_dir={tfds_data_dir}',
                         f'--config.data.manual_dir={shared_data}/{raw}', timeout=3600)
  assert result.returncode == 0, result.stderr
  assert final_test_row(tmp_path / 'run')['accuracy'] >= bar
