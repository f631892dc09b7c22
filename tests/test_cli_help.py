"""`deepl --help` and the tools' --help: the usage and every flag, on stdout, exit 0."""

import pytest

from tests import helpers
from tests.test_benchmark import benchmark


@pytest.mark.parametrize('args', [('--help',), ('-h',), ('help',), ('train', '--help'),
                                  ('sample', '-h'), ('train', '--config.train.num_steps=3', '-h')])
def test_deepl_help(args, tmp_path):
  # args[0] goes where helpers.deepl_here puts the command.
  workdir = tmp_path / 'run'
  result = helpers.deepl_here(*args[1:], f'--workdir={workdir}', command=args[0])
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith('usage:\n  deepl train --config='), result.stdout[:200]
  for flag in ('--config:', '--workdir:', '--prompt:', '--compilation_cache:'):
    assert f'\n  {flag}' in result.stdout, flag
  assert 'error' not in result.stderr
  assert not workdir.exists()  # nothing ran


def test_benchmark_help():
  result = benchmark('--help')
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith('usage:\n  python tools/benchmark.py --config='), result.stdout
  for flag in ('--steps:', '--windows:', '--json:'):
    assert f'\n  {flag}' in result.stdout, flag
  assert '--prompt' not in result.stdout  # deepl's own flags are not the tool's
