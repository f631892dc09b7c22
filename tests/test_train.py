"""The train loop end to end, through the real command line: runs on real
data, resume after kill -9 / SIGTERM / a damaged checkpoint, jit vs pmap vs one
device, and two processes against one."""

import json
import pathlib
import shutil
import signal
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


def _scalar_steps(events: pathlib.Path, tag: str) -> list[int]:
  """The steps of `tag`'s scalars in a TensorBoard event file (TFRecords of Event protos)."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  data, steps, at = events.read_bytes(), [], 0
  while at < len(data):
    length = int.from_bytes(data[at:at + 8], 'little')
    event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
    at += 12 + length + 4  # length, its CRC, the record, its CRC
    steps += [event.step for value in event.summary.value if value.tag == tag]
  return steps


def assert_same_state(a, b):
  assert a[0] == b[0]
  assert a[1].keys() == b[1].keys()
  for k in a[1]:
    np.testing.assert_array_equal(a[1][k], b[1][k], err_msg=k)


# A digits run long enough to be interrupted: 160 steps, a checkpoint every 20.
RESUME_ARGS = ('--config.train.num_steps=160', '--config.train.log_every_steps=5',
               '--config.eval.every_steps=40', '--config.checkpoint.every_steps=20',
               '--config.checkpoint.keep=2')
# Cache every program, however fast it compiles (JAX's default skips those under 1 s); the
# flag, not the session's cache from conftest, names the folder.
OWN_CACHE_ENV = {'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
                 'JAX_COMPILATION_CACHE_DIR': ''}


@pytest.fixture(scope='module')
def reference_run(tmp_path_factory, tfds_data_dir):
  """The uninterrupted run the others must equal. It is also the first of the two runs of
  test_compilation_cache_is_written_and_reused: it fills a cache of its own, cache/ next to
  the workdir."""
  root = tmp_path_factory.mktemp('ref')
  result = helpers.deepl(f'--workdir={root / "run"}', f'--config.data.data_dir={tfds_data_dir}',
                         *RESUME_ARGS, f'--compilation_cache={root / "cache"}', env=OWN_CACHE_ENV)
  assert result.returncode == 0, result.stderr
  return root / 'run'


def _start(workdir, tfds_data_dir, *extra):
  return subprocess.Popen(
      [sys.executable, '-m', 'deepl.cli.main', 'train', f'--workdir={workdir}',
       f'--config.data.data_dir={tfds_data_dir}', *RESUME_ARGS, *extra],
      cwd=helpers.ROOT, env=helpers.env_for(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def _logged_steps(workdir) -> list[int]:
  """The steps of metrics.jsonl's rows (a line being written, or cut by a kill, left out)."""
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  steps = []
  for line in path.read_text().splitlines() if path.exists() else ():
    try:
      steps.append(json.loads(line)['step'])
    except ValueError:
      pass
  return steps


def _wait_for_step(workdir, step, proc, timeout=120):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None:
      pytest.fail(f'run ended before step {step}: {proc.stderr.read()}')
    if any(s >= step for s in _logged_steps(workdir)):
      return
    time.sleep(0.05)
  pytest.fail(f'no step {step} within {timeout} s')


def _finish(workdir, tfds_data_dir, *extra):
  result = helpers.deepl(f'--workdir={workdir}', f'--config.data.data_dir={tfds_data_dir}',
                         *RESUME_ARGS, *extra)
  assert result.returncode == 0, result.stderr
  return result


def _finish_here(workdir, tfds_data_dir, *extra):
  """_finish in this interpreter: for the runs whose process is not what is tested."""
  result = helpers.deepl_here(f'--workdir={workdir}', f'--config.data.data_dir={tfds_data_dir}',
                              *RESUME_ARGS, *extra)
  assert result.returncode == 0, result.stderr
  return result


def test_sigterm_then_kill_9_twice_then_rerun_is_bitwise_identical(reference_run, tfds_data_dir,
                                                                    tmp_path):
  """One run stopped three times on its way: SIGTERM (it saves where it is, exits 0), then
  kill -9 past steps 47 and 103 (each rerun goes on from the last periodic checkpoint). Its
  metrics and final state are the uninterrupted run's, bit for bit. (Each stop had a run of
  its own; stopping one run three times proves the same for 4 processes instead of 6.)"""
  workdir = tmp_path / 'run'
  # No periodic checkpoint before the end: whatever step the signal lands on,
  # only the preemption save can make the resume start there.
  proc = _start(workdir, tfds_data_dir, '--config.checkpoint.every_steps=1000')
  _wait_for_step(workdir, 13, proc)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err
  assert 'rerun the same command to resume' in out
  stopped = int(out.split('stopped at step ')[1].split(';')[0])
  assert [p.name for p in (workdir / 'checkpoints').iterdir()] == [str(stopped)]
  # The reruns checkpoint every 20 again (a change that needs no flag).
  for kill_at in (47, 103):
    proc = _start(workdir, tfds_data_dir)
    # Past rows the killed run logged beyond its last checkpoint, too: this run's own.
    _wait_for_step(workdir, max([kill_at] + [s + 7 for s in _logged_steps(workdir)]), proc)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert 'resuming from step' in out, err
    if kill_at == 47:
      assert f'resuming from step {stopped} ' in out
      assert 'WARNING' not in err, err  # a clean resume is quiet
  result = _finish(workdir, tfds_data_dir)
  assert 'resuming from step' in result.stdout
  assert rows(workdir) == rows(reference_run)
  assert_same_state(final_state(workdir), final_state(reference_run))


def test_a_second_run_on_a_busy_workdir_is_refused(tfds_data_dir, tmp_path):
  # Before, both trained: each deleted the other's checkpoints (keep=2) and
  # their metrics interleaved. A later run, once the first has stopped, resumes.
  workdir = tmp_path / 'run'
  first = _start(workdir, tfds_data_dir)
  _wait_for_step(workdir, 10, first)
  first.send_signal(signal.SIGSTOP)  # it holds the workdir, and cannot finish meanwhile
  try:
    second = helpers.deepl_here(f'--workdir={workdir}', f'--config.data.data_dir={tfds_data_dir}',
                                *RESUME_ARGS, '--config.optim.lr=0.5')
  finally:
    first.send_signal(signal.SIGCONT)
  first.send_signal(signal.SIGTERM)
  out, err = first.communicate(timeout=120)
  assert second.returncode == 2, second.stderr
  assert f'is in use by another deepl train (pid {first.pid})' in second.stderr
  assert first.returncode == 0, err
  assert json.loads((workdir / 'config.json').read_text())['optim']['lr'] == 0.1  # untouched
  stopped = int(out.split('stopped at step ')[1].split(';')[0])
  # Another seed: a change of the training, so allowed with the flag only.
  finish = _finish_here(workdir, tfds_data_dir, '--config.seed=1', '--allow_config_change')
  assert f'resuming from step {stopped} ' in finish.stdout
  assert 'seed: 0 -> 1' in finish.stdout


def test_damaged_latest_checkpoint_falls_back(reference_run, tfds_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(reference_run, workdir)
  latest = workdir / 'checkpoints' / '160'
  for f in (latest / 'state').rglob('*'):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(b'\0garbage' * 8)
  # Its own process: the tracebacks this guards against came seconds later, from
  # TensorStore's callbacks, where only the process's own stderr would see them.
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
  result = _finish_here(workdir, tfds_data_dir)
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
  events, = (reference_run / 'tensorboard').glob('events.out.tfevents.*')
  assert _scalar_steps(events, 'test/accuracy') == [40, 80, 120, 160]
  kept = sorted(int(p.name) for p in (reference_run / 'checkpoints').iterdir()
                if p.name.isdigit())
  assert kept == [140, 160]


def test_mnist_end_to_end_on_the_real_files(tfds_data_dir, shared_data, tmp_path):
  workdir = tmp_path / 'mnist'
  result = helpers.deepl_here(f'--config={helpers.EXPERIMENTS}/mnist_cnn.py',
                              f'--workdir={workdir}', f'--config.data.data_dir={tfds_data_dir}',
                              f'--config.data.manual_dir={shared_data}/mnist',
                              '--config.train.num_steps=60', '--config.train.log_every_steps=20',
                              '--config.optim.warmup_steps=10',
                              '--config.eval.every_steps=60', '--config.eval.batch_size=2000')
  assert result.returncode == 0, result.stderr
  assert 'test accuracy' in result.stdout and str(workdir) in result.stdout
  test = rows(workdir, 'test')
  assert test[-1]['step'] == 60 and test[-1]['accuracy'] > 0.85


# Shared by the runs on other device and process counts, and their one-device reference.
EQUIVALENCE_ARGS = ('--config.train.num_steps=12', '--config.train.log_every_steps=1',
                    '--config.eval.every_steps=12', '--config.checkpoint.every_steps=6',
                    '--config.train.batch_size=32')


@pytest.fixture(scope='module')
def one_device_run(tmp_path_factory, tfds_data_dir):
  workdir = tmp_path_factory.mktemp('one') / 'run'
  result = helpers.deepl_here(f'--workdir={workdir}', f'--config.data.data_dir={tfds_data_dir}',
                              *EQUIVALENCE_ARGS)
  assert result.returncode == 0, result.stderr
  assert '1 cpu device(s), parallel=jit' in result.stdout
  return workdir


def _deepl_runs_in_one_process(runs, devices: int):
  """`deepl train` with each of `runs` (lists of arguments), one after the other in one fresh
  interpreter with `devices` CPU devices (helpers.deepl_here there): one start for them all."""
  code = ('import json, sys\n'
          'from tests import helpers\n'
          'results = [helpers.deepl_here(*args) for args in json.loads(sys.argv[1])]\n'
          'print(json.dumps([(r.returncode, r.stdout, r.stderr) for r in results]))\n')
  proc = subprocess.run([sys.executable, '-c', code, json.dumps(runs)], capture_output=True,
                        text=True, timeout=600, cwd=helpers.ROOT, env=helpers.env_for(devices))
  assert proc.returncode == 0, proc.stderr
  return [subprocess.CompletedProcess(args, *result)
          for args, result in zip(runs, json.loads(proc.stdout.splitlines()[-1]))]


def test_jit_sharded_pmap_and_one_device_agree(one_device_run, tfds_data_dir, tmp_path):
  modes = ('jit', 'pmap')
  results = _deepl_runs_in_one_process(
      [[f'--workdir={tmp_path / mode}', f'--config.data.data_dir={tfds_data_dir}',
        f'--config.parallel={mode}', *EQUIVALENCE_ARGS] for mode in modes], devices=4)
  one = np.array([r['loss'] for r in rows(one_device_run, 'train')])
  assert len(one) == 12
  for mode, result in zip(modes, results):
    assert result.returncode == 0, result.stderr
    assert f'4 cpu device(s), parallel={mode}' in result.stdout
    np.testing.assert_allclose([r['loss'] for r in rows(tmp_path / mode, 'train')], one,
                               rtol=2e-5, err_msg=mode)


def test_two_processes_match_one(one_device_run, tfds_data_dir, tmp_path):
  # Started as tools/tpu_vm.py --local=2 starts them: this is also the test of that plan
  # (tests/test_launch.py: its own run of it is slow), logs and all.
  multi = tmp_path / 'multi'
  launch = subprocess.run(
      [sys.executable, str(helpers.ROOT / 'tools' / 'tpu_vm.py'), '--local=2',
       f'--logs={tmp_path}/logs', '--', f'--workdir={multi}',
       f'--config.data.data_dir={tfds_data_dir}', *EQUIVALENCE_ARGS],
      capture_output=True, text=True, timeout=300, cwd=helpers.ROOT, env=helpers.env_for())
  assert launch.returncode == 0, launch.stdout + launch.stderr
  logs = [(tmp_path / 'logs' / f'worker-{i}.log').read_text() for i in range(2)]
  assert '2 cpu device(s)' in logs[0] and 'deepl: done' in logs[0], logs
  assert (multi / 'checkpoints' / '12').is_dir()
  one = np.array([r['loss'] for r in rows(one_device_run, 'train')])
  two = np.array([r['loss'] for r in rows(multi, 'train')])
  assert len(one) == len(two) == 12
  np.testing.assert_allclose(two, one, rtol=2e-5)
  assert rows(multi, 'test')[-1]['accuracy'] == pytest.approx(
      rows(one_device_run, 'test')[-1]['accuracy'], abs=1e-6)


def test_bfloat16_compute_follows_the_float32_loss_curve(reference_run, tfds_data_dir, tmp_path):
  workdir = tmp_path / 'bf16'
  result = helpers.deepl_here(f'--workdir={workdir}', f'--config.data.data_dir={tfds_data_dir}',
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


def test_compilation_cache_is_written_and_reused(reference_run, tfds_data_dir, tmp_path):
  # The reference run, in a process of its own, wrote the cache: now a second process.
  cache = reference_run.parent / 'cache'
  entries = sorted(p.name for p in cache.iterdir())
  assert any(e.startswith('jit_train_step') for e in entries), entries
  workdir = tmp_path / 'again'
  result = helpers.deepl(f'--workdir={workdir}', f'--config.data.data_dir={tfds_data_dir}',
                         *RESUME_ARGS, f'--compilation_cache={cache}', env=OWN_CACHE_ENV)
  assert result.returncode == 0, result.stderr
  assert sorted(p.name for p in cache.iterdir()) == entries  # all reused, nothing new
  assert rows(workdir) == rows(reference_run)
