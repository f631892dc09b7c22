"""The train loop end to end, through the real command line: runs on real
data, resume after kill -9 / SIGTERM / a damaged checkpoint, jit vs pmap vs one
device, and two processes against one."""

import json
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import helpers

TIMING_KEYS = ('steps_per_sec', 'examples_per_sec', 'tokens_per_sec', 'flops_per_sec', 'mfu',
               'input_ms', 'dispatch_ms', 'wait_ms')


def rows(workdir, split=None):
  out = []
  for line in (pathlib.Path(workdir) / 'metrics.jsonl').read_text().splitlines():
    row = json.loads(line)
    if split is None or row['split'] == split:
      out.append({k: v for k, v in row.items() if k not in TIMING_KEYS})
  return out


def final_state(workdir):
  ckpt = pathlib.Path(workdir) / 'checkpoints'
  step = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  state = ocp.StandardCheckpointer().restore(ckpt / str(step) / 'state')
  return step, {jax.tree_util.keystr(path): np.asarray(leaf)
                for path, leaf in jax.tree_util.tree_leaves_with_path(state)}


def assert_same_state(a, b):
  assert a[0] == b[0]
  assert a[1].keys() == b[1].keys()
  for k in a[1]:
    np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)


# A digits run long enough to be interrupted: 160 steps, a checkpoint every 20.
RESUME_ARGS = ('--config.train.num_steps=160', '--config.train.log_every_steps=5',
               '--config.eval.every_steps=40', '--config.checkpoint.every_steps=20',
               '--config.checkpoint.keep=2')


@pytest.fixture(scope='module')
def reference_run(tmp_path_factory, tfds_data_dir):
  workdir = tmp_path_factory.mktemp('ref') / 'run'
  result = helpers.deepl(f'--workdir={workdir}', f'--config.data.data_dir={tfds_data_dir}',
                         *RESUME_ARGS)
  assert result.returncode == 0, result.stderr
  return workdir


def _start(workdir, tfds_data_dir, *extra):
  return subprocess.Popen(
      [sys.executable, '-m', 'deepl.cli.main', 'train', f'--workdir={workdir}',
       f'--config.data.data_dir={tfds_data_dir}', *RESUME_ARGS, *extra],
      cwd=helpers.ROOT, env=helpers.env_for(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def _wait_for_step(workdir, step, proc, timeout=120):
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      pytest.fail(f'run ended before step {step}: {proc.stderr.read()}')
    if path.exists() and any(json.loads(l)['step'] >= step
                             for l in path.read_text().splitlines() if l.strip()):
      return
    time.sleep(0.05)
  pytest.fail(f'no step {step} within {timeout} s')


def _finish(workdir, tfds_data_dir, *extra):
  result = helpers.deepl(f'--workdir={workdir}', f'--config.data.data_dir={tfds_data_dir}',
                         *RESUME_ARGS, *extra)
  assert result.returncode == 0, result.stderr
  return result


@pytest.mark.parametrize('kill_at', [47, 103])
def test_kill_9_then_rerun_is_bitwise_identical(reference_run, tfds_data_dir, tmp_path, kill_at):
  workdir = tmp_path / 'run'
  proc = _start(workdir, tfds_data_dir)
  _wait_for_step(workdir, kill_at, proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  result = _finish(workdir, tfds_data_dir)
  assert 'resuming from step' in result.stdout
  assert rows(workdir) == rows(reference_run)
  assert_same_state(final_state(workdir), final_state(reference_run))


def test_sigterm_saves_and_exits_cleanly(reference_run, tfds_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  # No periodic checkpoint before the end: whatever step the signal lands on,
  # only the preemption save can make the resume start there.
  no_periodic = '--config.checkpoint.every_steps=1000'
  proc = _start(workdir, tfds_data_dir, no_periodic)
  _wait_for_step(workdir, 33, proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  assert 'rerun the same command to resume' in out
  stopped = int(out.split('stopped at step ')[1].split(';')[0])
  assert [p.name for p in (workdir / 'checkpoints').iterdir()] == [str(stopped)]
  result = _finish(workdir, tfds_data_dir, no_periodic)
  assert f'resuming from step {stopped}' in result.stdout
  assert 'WARNING' not in result.stderr, result.stderr  # a clean resume is quiet
  assert rows(workdir) == rows(reference_run)
  assert_same_state(final_state(workdir), final_state(reference_run))


def test_a_second_run_on_a_busy_workdir_is_refused(tfds_data_dir, tmp_path):
  # Before, both trained: each deleted the other's checkpoints (keep=2) and
  # their metrics interleaved. A later run, once the first has stopped, resumes.
  workdir = tmp_path / 'run'
  long_run = '--config.train.num_steps=1000000'
  first = _start(workdir, tfds_data_dir, long_run)
  _wait_for_step(workdir, 10, first)
  second = helpers.deepl(f'--workdir={workdir}', f'--config.data.data_dir={tfds_data_dir}',
                         *RESUME_ARGS, long_run, '--config.optim.lr=0.5')
  first.send_signal(signal.SIGTERM)
  out, err = first.communicate(timeout=120)
  assert second.returncode == 2, second.stderr
  assert f'is in use by another deepl train (pid {first.pid})' in second.stderr
  assert first.returncode == 0, err
  assert json.loads((workdir / 'config.json').read_text())['optim']['lr'] == 0.1  # untouched
  stopped = int(out.split('stopped at step ')[1].split(';')[0])
  # 160 steps, not 1000000: a change of the training, so allowed with the flag only.
  finish = _finish(workdir, tfds_data_dir, '--allow_config_change')
  assert f'resuming from step {stopped}' in finish.stdout
  assert 'train.num_steps: 1000000 -> 160' in finish.stdout


def test_damaged_latest_checkpoint_falls_back(reference_run, tfds_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(reference_run, workdir)
  latest = workdir / 'checkpoints' / '160'
  for f in (latest / 'state').rglob('*'):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(b'\0garbage' * 8)
  result = _finish(workdir, tfds_data_dir)
  # One warning, and not the dozens of Orbax tracebacks it once came with.
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert len(lines) == 1 and 'checkpoint 160 is unusable' in lines[0], result.stderr
  assert 'resuming from step 140' in result.stdout
  assert (workdir / 'corrupt_checkpoints' / '160').is_dir()
  assert rows(workdir) == rows(reference_run)
  assert_same_state(final_state(workdir), final_state(reference_run))


def test_finished_run_rerun_reports_and_keeps_everything(reference_run, tfds_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(reference_run, workdir)
  result = _finish(workdir, tfds_data_dir)
  assert 'test accuracy' in result.stdout
  assert rows(workdir) == rows(reference_run)


def test_outputs_of_a_run(reference_run):
  config = json.loads((reference_run / 'config.json').read_text())
  assert config['train']['num_steps'] == 160 and config['model']['name'] == 'cnn'
  train = rows(reference_run, 'train')
  assert [r['step'] for r in train] == list(range(5, 161, 5))
  assert train[-1]['loss'] < train[0]['loss']
  test = rows(reference_run, 'test')
  assert [r['step'] for r in test] == [40, 80, 120, 160]
  assert set(test[0]) == {'step', 'split', 'loss', 'accuracy'}
  raw = json.loads((reference_run / 'metrics.jsonl').read_text().splitlines()[1])
  assert raw['steps_per_sec'] > 0 and raw['examples_per_sec'] == pytest.approx(
      raw['steps_per_sec'] * 64)
  # flops_per_sec / steps_per_sec is the step's count: ~0.11 GFLOP for this CNN.
  assert raw['mfu'] > 0 and 5e7 < raw['flops_per_sec'] / raw['steps_per_sec'] < 5e8
  # Where the loop's time went, per step (tests/test_metering.py checks the sums).
  assert all(raw[k] >= 0 for k in ('input_ms', 'dispatch_ms', 'wait_ms'))
  assert list((reference_run / 'tensorboard').glob('events.out.tfevents.*'))
  kept = sorted(int(p.name) for p in (reference_run / 'checkpoints').iterdir()
                if p.name.isdigit())
  assert kept == [140, 160]


def test_mnist_end_to_end_on_the_real_files(tfds_data_dir, shared_data, tmp_path):
  workdir = tmp_path / 'mnist'
  result = helpers.deepl(f'--config={helpers.EXPERIMENTS}/mnist_cnn.py', f'--workdir={workdir}',
                         f'--config.data.data_dir={tfds_data_dir}',
                         f'--config.data.manual_dir={shared_data}/mnist',
                         '--config.train.num_steps=60', '--config.train.log_every_steps=20',
                         '--config.optim.warmup_steps=10',
                         '--config.eval.every_steps=60', '--config.eval.batch_size=2000')
  assert result.returncode == 0, result.stderr
  assert 'test accuracy' in result.stdout and str(workdir) in result.stdout
  test = rows(workdir, 'test')
  assert test[-1]['step'] == 60 and test[-1]['accuracy'] > 0.85


EQUIVALENCE_ARGS = ('--config.train.num_steps=12', '--config.train.log_every_steps=1',
                    '--config.eval.every_steps=12', '--config.checkpoint.every_steps=12',
                    '--config.train.batch_size=32')


def test_jit_sharded_pmap_and_one_device_agree(tfds_data_dir, tmp_path):
  losses = {}
  for name, devices, mode in [('one', None, 'jit'), ('jit4', 4, 'jit'), ('pmap4', 4, 'pmap')]:
    workdir = tmp_path / name
    result = helpers.deepl(f'--workdir={workdir}', f'--config.data.data_dir={tfds_data_dir}',
                           f'--config.parallel={mode}', *EQUIVALENCE_ARGS, devices=devices)
    assert result.returncode == 0, result.stderr
    assert f'{devices or 1} cpu device(s), parallel={mode}' in result.stdout
    losses[name] = np.array([r['loss'] for r in rows(workdir, 'train')])
  assert len(losses['one']) == 12
  np.testing.assert_allclose(losses['jit4'], losses['one'], rtol=2e-5)
  np.testing.assert_allclose(losses['pmap4'], losses['one'], rtol=2e-5)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tfds_data_dir, tmp_path):
  args = (f'--config.data.data_dir={tfds_data_dir}', '--config.train.num_steps=30',
          '--config.train.log_every_steps=1', '--config.eval.every_steps=30',
          '--config.checkpoint.every_steps=15', '--config.train.batch_size=32')
  single = tmp_path / 'single'
  result = helpers.deepl(f'--workdir={single}', *args)
  assert result.returncode == 0, result.stderr

  multi = tmp_path / 'multi'
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, '-m', 'deepl.cli.main', 'train', f'--workdir={multi}', *args,
       f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}'],
      cwd=helpers.ROOT, env=helpers.env_for(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=240) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err
  assert '2 cpu device(s)' in outs[0][0]
  one = np.array([r['loss'] for r in rows(single, 'train')])
  two = np.array([r['loss'] for r in rows(multi, 'train')])
  assert len(one) == len(two) == 30
  np.testing.assert_allclose(two, one, rtol=2e-5)
  assert rows(multi, 'test')[-1]['accuracy'] == pytest.approx(
      rows(single, 'test')[-1]['accuracy'], abs=1e-6)


def test_bfloat16_compute_follows_the_float32_loss_curve(reference_run, tfds_data_dir, tmp_path):
  workdir = tmp_path / 'bf16'
  result = helpers.deepl(f'--workdir={workdir}', f'--config.data.data_dir={tfds_data_dir}',
                         '--config.train.compute_dtype=bfloat16', *RESUME_ARGS)
  assert result.returncode == 0, result.stderr
  fp32, bf16 = (np.array([r['loss'] for r in rows(w, 'train')]) for w in (reference_run, workdir))
  assert len(fp32) == len(bf16) == 32
  assert not np.array_equal(fp32, bf16)  # bfloat16 really computed
  np.testing.assert_allclose(bf16, fp32, rtol=0.1, atol=0.02)
  # Parameters stay float32 in the checkpoint.
  assert {v.dtype.name for v in final_state(workdir)[1].values()} <= {'float32', 'int32',
                                                                       'uint32'}
  accuracy = [rows(w, 'test')[-1]['accuracy'] for w in (reference_run, workdir)]
  assert abs(accuracy[0] - accuracy[1]) < 0.02


def test_compilation_cache_is_written_and_reused(tfds_data_dir, tmp_path):
  cache = tmp_path / 'cache'
  # Cache every program, however fast it compiles (JAX's default skips those under 1 s);
  # the flag, not the session's cache from conftest, names the folder.
  env = {'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0', 'JAX_COMPILATION_CACHE_DIR': ''}
  runs = []
  for name in ('first', 'again'):
    workdir = tmp_path / name
    result = helpers.deepl(f'--workdir={workdir}', f'--config.data.data_dir={tfds_data_dir}',
                           '--config.train.num_steps=10', '--config.eval.every_steps=10',
                           f'--compilation_cache={cache}', env=env)
    assert result.returncode == 0, result.stderr
    runs.append(rows(workdir))
    if name == 'first':
      entries = sorted(p.name for p in cache.iterdir())
      assert any(e.startswith('jit_train_step') for e in entries), entries
  assert sorted(p.name for p in cache.iterdir()) == entries  # all reused, nothing new
  assert runs[0] == runs[1]
