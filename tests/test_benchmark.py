"""tools/benchmark.py end to end: a real train step on synthetic batches, in seconds."""

import json
import subprocess
import sys

import pytest

from tests import helpers

TOOL = helpers.ROOT / 'tools' / 'benchmark.py'


def benchmark(*args, timeout=240):
  return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                        timeout=timeout, cwd=helpers.ROOT, env=helpers.env_for())


def test_cnn_figures_and_json(tmp_path):
  out = tmp_path / 'cnn.json'
  result = benchmark(f'--config={helpers.EXPERIMENTS}/benchmarks.py:cnn', '--steps=2',
                     '--windows=2', '--warmup=1', f'--json={out}')
  assert result.returncode == 0, result.stderr
  assert 'MFU' in result.stdout
  r = json.loads(out.read_text())
  for key in ('steps_per_sec', 'examples_per_sec', 'flops_per_step', 'flops_per_sec', 'mfu',
              'compile_seconds', 'peak_flops', 'host_max_rss_bytes', 'temp_bytes'):
    assert r[key] > 0, key
  assert len(r['steps_per_sec_windows']) == 2
  assert r['examples_per_sec'] == r['steps_per_sec'] * 128
  assert r['num_params'] == 824_458  # the flax-examples CNN on 28x28x1, 10 classes
  # Three times the forward's ~9.3 MFLOP per image (less: no input gradient).
  assert 2.5e9 < r['flops_per_step'] < 3.6e9
  assert 0 < r['mfu'] <= 1


def test_bad_input_is_one_line_and_exit_2():
  # A config's errors come from deepl's own parse (test_cli_errors); --bogus=1 goes through it.
  for args, words in [((f'--config={helpers.EXPERIMENTS}/benchmarks.py:cnn', '--bogus=1'),
                       'bogus'),
                      ((f'--config={helpers.EXPERIMENTS}/benchmarks.py:cnn', '--steps=0'),
                       '--steps')]:
    result = benchmark(*args, timeout=60)
    assert result.returncode == 2, (args, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('deepl: error:') and words in lines[0], lines


def test_synthetic_tokens_repeat_as_text_does():
  """Zipf-distributed ids: the harness must see the repeated ids that real text
  has (a uniform draw hid a 4x GPU slowdown in the embedding's gradient)."""
  code = '''
import numpy as np, benchmark
ids = benchmark.zipf_tokens(np.random.default_rng(0), 1, 65, (64, 257))
again = benchmark.zipf_tokens(np.random.default_rng(0), 1, 65, (64, 257))
counts = np.bincount(ids.ravel(), minlength=65)
print(ids.dtype, ids.min(), ids.max(), counts[1] / ids.size, counts[64] / ids.size,
      bool((ids == again).all()))
'''
  result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120, cwd=helpers.ROOT / 'tools', env=helpers.env_for())
  assert result.returncode == 0, result.stderr
  dtype, low, high, first, last, same = result.stdout.split()
  assert (dtype, low, high, same) == ('int32', '1', '64', 'True')
  # P(id 1) = 1 / H_64 = 0.21 and P(id 64) = 0.0033: 16,448 draws land within 0.01.
  assert abs(float(first) - 0.211) < 0.01 and float(last) < 0.01


def compare_meshes(*args, timeout=240):
  return subprocess.run([sys.executable, str(TOOL.parent / 'compare_meshes.py'), *args],
                        capture_output=True, text=True, timeout=timeout, cwd=helpers.ROOT,
                        env=helpers.env_for(devices=2))


def test_compare_meshes_side_by_side(tmp_path):
  out = tmp_path / 'meshes.json'
  result = compare_meshes(f'--config={helpers.EXPERIMENTS}/benchmarks.py:cnn', '--mesh=data=2',
                          '--mesh=fsdp=2', '--steps=1', '--rounds=2', '--warmup=0',
                          '--config.train.batch_size=16', f'--json={out}')
  assert result.returncode == 0, result.stderr
  rows = {row['mesh']: row for row in json.loads(out.read_text())['rows']}
  assert rows['data=2']['ratio_to_first'] == [1.0, 1.0]
  assert len(rows['fsdp=2']['steps_per_sec']) == 2 and min(rows['fsdp=2']['steps_per_sec']) > 0
  # fsdp halves the state each device holds; data replicates it.
  assert rows['fsdp=2']['state_bytes_per_device'] < 0.6 * rows['data=2']['state_bytes_per_device']


def test_compare_meshes_bad_input_is_one_line_and_exit_2():
  config = f'--config={helpers.EXPERIMENTS}/benchmarks.py:cnn'
  # A mesh the devices cannot make fails in the harness, past the flags' own checks.
  for args, words in [((config, '--mesh=data=2', '--mesh=data=3'), 'data=3')]:
    result = compare_meshes(*args, timeout=120)
    assert result.returncode == 2, (args, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines


def _torch_benchmark(*args):
  pytest.importorskip('torch')
  return subprocess.run([sys.executable, str(TOOL.parent / 'torch_benchmark.py'), '--models=cnn',
                         '--kernels=xla', '--steps=1', '--windows=1', '--warmup=0',
                         '--window_warmup=0', *args], capture_output=True, text=True, timeout=240,
                        cwd=helpers.ROOT, env=helpers.env_for(fast_compile=True))


@pytest.mark.slow  # three processes' imports and compiles, and PyTorch's: ~30 s
def test_torch_side_by_side_with_a_baseline_checkout(tmp_path):
  # The baseline is this checkout itself: the row and the ratios to it must be there.
  out = tmp_path / 'torch.json'
  result = _torch_benchmark(f'--baseline={helpers.ROOT}', f'--json={out}')
  assert result.returncode == 0, result.stderr
  rows = {row['kernels']: row for row in json.loads(out.read_text())}
  assert set(rows) == {'xla', 'baseline'}
  assert rows['baseline']['num_params'] == rows['xla']['num_params'] == 824_458
  assert len(rows['xla']['baseline_ratios']) == 1 and 'kernels=xla / baseline' in result.stdout


def test_torch_benchmark_baseline_must_be_a_checkout(tmp_path):
  result = _torch_benchmark(f'--baseline={tmp_path}')
  assert result.returncode == 2 and 'not a checkout of deepl' in result.stderr, result.stderr
