"""Runs that survive their operators (issue 25), mostly through the real command
line: divergence, a changed config on resume, full and unwritable disks, damaged
files, signals, and `deepl inspect` / `deepl plot` on the run they leave.

Every `deepl` start costs seconds of CPU here, so the module shares one run (it
diverges, then resumes with a sane learning rate), the runs whose process is not
what is tested run in this interpreter (helpers.deepl_here), and the repeats and
the rarer faults are marked slow (pass --runslow)."""

import functools
import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import optax
import pytest

from deepl import checkpoint
from deepl import config as config_lib
from deepl import data as data_lib
from deepl import experiment
from deepl import parallel
from deepl import run_lock
from deepl import train
from deepl.cli import inspect
from deepl.cli import plot
from deepl.errors import UserError
from deepl.state import TrainState
from tests import helpers

pytestmark = pytest.mark.usefixtures('fast_compile')  # short runs, compared among themselves

# Steps 1-20 at lr 0.1, then 1e29 (the step schedule's factor): a run that blows up midway.
BLOW_UP = ('--config.optim.schedule=step', '--config.optim.step_boundaries=(0.5,)',
           '--config.optim.warmup_steps=0', '--config.train.num_steps=40',
           '--config.checkpoint.every_steps=5', '--config.checkpoint.keep=2',
           '--config.train.log_every_steps=5', '--config.eval.every_steps=20')


def _train(workdir, data_dir, *args, **kwargs):
  return helpers.deepl(f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', *args,
                       **kwargs)


def _train_here(workdir, data_dir, *args):
  """_train in this interpreter: for the runs whose process is not what is tested."""
  return helpers.deepl_here(f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', *args)


def _steps(workdir) -> list[int]:
  return sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir() if p.name.isdigit())


def _leftovers(workdir) -> list[str]:
  return [p.name for p in (workdir / 'checkpoints').iterdir() if 'tmp' in p.name]


def _finite(workdir, step) -> bool:
  state = checkpoint.read_state(workdir / 'checkpoints' / str(step) / 'state',
                                keys=('params', 'model_state', 'opt_state'))
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state))


def _rows(workdir) -> list[dict]:
  return [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]


@pytest.fixture(scope='module')
def run(tmp_path_factory, tfds_data_dir):
  """The shared run. It blows up at step 21 and stops. Then, its metrics.jsonl damaged and
  a save's temporary folder left behind, it resumes with a sane lr (--allow_config_change)
  and another checkpoint.keep, and finishes. Returns (workdir, what the first run left,
  both results)."""
  workdir = tmp_path_factory.mktemp('faults') / 'run'
  diverged = _train_here(workdir, tfds_data_dir, *BLOW_UP, '--config.optim.step_factor=1e30')
  lines = (workdir / 'metrics.jsonl').read_text().splitlines()
  left = {'steps': _steps(workdir), 'leftovers': _leftovers(workdir), 'rows': lines,
          'finite': [_finite(workdir, step) for step in _steps(workdir)]}
  # A garbage line in the middle, and a last line cut short (a kill, a full disk).
  damaged = lines[:2] + ['\x00\x00 not json'] + lines[2:] + [lines[-1][:17]]
  (workdir / 'metrics.jsonl').write_text('\n'.join(damaged))
  (workdir / 'checkpoints' / '25.orbax-checkpoint-tmp-1234567' / 'state').mkdir(parents=True)
  resumed = _train_here(workdir, tfds_data_dir, *BLOW_UP, '--config.optim.step_factor=1.0',
                        '--config.checkpoint.keep=3', '--allow_config_change')
  return workdir, left, diverged, resumed


# --- 1. Never save non-finite state ----------------------------------------


def test_divergence_stops_keeping_only_finite_checkpoints(run):
  _, left, diverged, _ = run
  line = helpers.assert_user_error(diverged, 'non-finite (inf or nan) by step 25',
                                   'the last checkpoint, step 20, is finite')
  assert (left['steps'], left['leftovers'], left['finite']) == ([15, 20], [], [True, True]), line


def test_the_rerun_with_a_sane_lr_resumes_from_the_named_checkpoint(run):
  workdir, left, _, resumed = run
  assert resumed.returncode == 0, resumed.stderr
  assert 'resuming from step 20' in resumed.stdout
  assert ('config change from step 20 (--allow_config_change): optim.step_factor: 1e+30 -> 1.0'
          in resumed.stdout)
  history = [json.loads(l) for l in (workdir / 'config_history.jsonl').read_text().splitlines()]
  assert [(h['step'], h['changes']) for h in history] == [
      (20, {'checkpoint.keep': [2, 3], 'optim.step_factor': [1e30, 1.0]})]
  assert json.loads((workdir / 'config.json').read_text())['optim']['step_factor'] == 1.0
  assert _steps(workdir) == [30, 35, 40] and _finite(workdir, 40)
  rows = _rows(workdir)
  assert [r['step'] for r in rows if r['split'] == 'train'] == list(range(5, 41, 5))
  assert rows[:len(left['rows'])] == [json.loads(l) for l in left['rows']]


def test_skip_drops_a_non_finite_update_and_counts_it(tfds_data_dir, tmp_path):
  """train_step itself, on real digits batches: an update at lr 1e30 is dropped whole."""
  config = config_lib.default_config()
  config.data.data_dir = str(tfds_data_dir)
  exp = experiment.build(config, str(tmp_path))
  runner = parallel.make_runner(config)
  tx = optax.sgd(1e30)
  state = exp.initial_state(runner, tx=tx)
  step = runner.compile_train(functools.partial(train.train_step, task=exp.task, tx=tx,
                                                skip_nonfinite=True))
  batch = runner.put_batch(exp.train_source.gather(np.arange(64)))
  counts, params = [], []
  for _ in range(4):
    state, sums = step(state, batch)
    counts.append((int(sums['nonfinite']), float(sums['count'])))
    params.append(jax.tree.map(np.asarray, state.params))
  # The first update is finite (if absurd); from then on each is dropped: params stay.
  assert counts[0] == (0, 64.0) and counts[1:] == [(1, 0.0)] * 3, counts
  assert int(state.step) == 4
  for later in params[1:]:
    jax.tree.map(np.testing.assert_array_equal, later, params[0])


def test_a_loss_100x_its_first_row_warns_once(capsys):
  warning = train._DivergenceWarning(None)  # pylint: disable=protected-access
  for step, loss in [(50, 2.3), (100, 0.5), (150, 200.0), (200, 231.0), (250, 1e33)]:
    warning.check({'loss': loss}, step)
  err = capsys.readouterr().err
  assert err.count('warning') == 1, err
  assert ('the run is diverging: the train loss of the window to step 200 is 231, over 100x '
          'its first logged value (2.3 at step 50)') in err
  resumed = train._DivergenceWarning((2.3, 50))  # pylint: disable=protected-access
  resumed.check({'loss': 100.0}, 300)
  assert capsys.readouterr().err == ''


@pytest.mark.slow
def test_lr_1e30_saves_only_finite_checkpoints(tfds_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  result = _train(workdir, tfds_data_dir, '--config.optim.lr=1e30', '--config.train.num_steps=30',
                  '--config.checkpoint.every_steps=1', '--config.train.log_every_steps=200',
                  '--config.eval.every_steps=200')
  line = helpers.assert_user_error(result, 'non-finite')
  kept = _steps(workdir)
  assert not _leftovers(workdir) and all(_finite(workdir, step) for step in kept)
  named = int(line.split('the last checkpoint, step ')[1].split(',')[0]) if kept else None
  assert named == (kept[-1] if kept else None), line


@pytest.mark.slow
def test_skip_on_the_command_line(tfds_data_dir, tmp_path):
  workdir = tmp_path / 'run'
  result = _train(workdir, tfds_data_dir, '--config.train.on_nonfinite=skip',
                  '--config.optim.lr=1e30', '--config.train.num_steps=20',
                  '--config.train.log_every_steps=5', '--config.checkpoint.every_steps=10')
  assert result.returncode == 0, result.stderr
  train_rows = [r for r in _rows(workdir) if r['split'] == 'train']
  assert [r['step'] for r in train_rows] == [5, 10, 15, 20]
  assert sum(r['skipped'] for r in train_rows) > 0, train_rows
  assert all(_finite(workdir, step) for step in _steps(workdir))
  assert 'non-finite steps skipped' in result.stdout


# --- 4. Damaged files; 3. a stale temporary folder; 2. a free config key ----


def _copy(run, tmp_path) -> pathlib.Path:
  workdir = tmp_path / 'run'
  shutil.copytree(run[0], workdir)
  return workdir


def test_damaged_metrics_and_a_stale_save_do_not_block_a_resume(run):
  workdir, _, _, resumed = run
  assert 'Traceback' not in resumed.stderr
  assert 'cut its last line, written only in part' in resumed.stderr
  assert 'skipped line 3, which is not a metrics row' in resumed.stderr
  # checkpoint.keep changes nothing in the training: allowed without the flag, and said.
  assert 'config change from step 20: checkpoint.keep: 2 -> 3' in resumed.stdout
  assert not _leftovers(workdir)


@pytest.mark.slow
def test_every_checkpoint_unreadable_is_one_line(run, tfds_data_dir, tmp_path):
  workdir = _copy(run, tmp_path)
  for f in (workdir / 'checkpoints').rglob('*'):
    if f.is_file():
      f.write_bytes(b'')
  result = _train(workdir, tfds_data_dir, *BLOW_UP, '--config.optim.step_factor=1.0')
  helpers.assert_user_error(result, 'no checkpoint in', 'can be restored')
  assert _steps(workdir) == [30, 35, 40]  # nothing moved: the fault may not be in the files


@pytest.mark.slow
def test_evaluate_falls_back_from_a_damaged_newest_with_one_warning(run, tmp_path):
  workdir = _copy(run, tmp_path)
  for f in (workdir / 'checkpoints' / '40' / 'state').rglob('*'):
    if f.is_file() and f.parent.name == 'd':  # the arrays' data; their metadata intact
      f.write_bytes(b'\0' * f.stat().st_size)
  result = helpers.deepl(f'--workdir={workdir}', command='evaluate')
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith('test at step 35 | ')
  assert [l for l in result.stderr.splitlines() if l.strip()] == [
      'deepl: warning: checkpoint 40 is unreadable; trying an earlier one']


# --- 3. Disk faults -----------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path):
  """mount(folder, size, read_only=False): a tmpfs there, unmounted after the test."""
  mounted = []

  def mount(folder, size='2m', read_only=False):
    folder.mkdir(parents=True, exist_ok=True)
    options = f'size={size}' + (',ro' if read_only else '')
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(folder)],
                            capture_output=True, text=True, check=False)
    if result.returncode:
      pytest.skip(f'cannot mount a tmpfs here (root and mount(8) needed): '
                  f'{result.stderr.strip()}')
    mounted.append(folder)
    return folder

  try:
    yield mount
  finally:
    for folder in reversed(mounted):
      subprocess.run(['umount', '-l', str(folder)], check=False)


def test_full_disk_is_one_line_and_keeps_the_last_checkpoint(run, tmpfs, tfds_data_dir,
                                                             tmp_path):
  del run  # it prepared the data: the 2 MB disk holds the run only
  workdir = tmpfs(tmp_path / 'disk') / 'run'
  # The shared run's second half (its programs are compiled), keeping every checkpoint:
  # ~0.7 MB each, the disk is full long before step 40.
  args = (*BLOW_UP, '--config.optim.step_factor=1.0', '--config.checkpoint.keep=10')
  start = time.monotonic()
  result = _train_here(workdir, tfds_data_dir, *args)
  helpers.assert_user_error(result, 'not enough space in', str(workdir / 'checkpoints'),
                            'MB are free')
  kept = _steps(workdir)
  assert kept and not _leftovers(workdir)
  assert _finite(workdir, kept[-1])  # the last complete checkpoint reads back
  # Then full to the last byte (as a save cut short leaves it): one line at the start.
  with pytest.raises(OSError):
    with (workdir.parent / 'filler').open('wb') as f:
      while True:
        f.write(b'\0' * 65536)
        f.flush()
  result = _train_here(workdir, tfds_data_dir, *args)
  helpers.assert_user_error(result, 'no space left writing', str(workdir))
  assert time.monotonic() - start < 120  # both runs
  assert _steps(workdir) == kept and _finite(workdir, kept[-1])


@pytest.mark.slow
def test_unwritable_checkpoints_folder_is_one_line(run, tmpfs, tfds_data_dir, tmp_path):
  workdir = _copy(run, tmp_path)
  shutil.rmtree(workdir / 'checkpoints')
  tmpfs(workdir / 'checkpoints', size='1m', read_only=True)
  start = time.monotonic()
  result = _train(workdir, tfds_data_dir, *BLOW_UP, '--config.optim.step_factor=1.0')
  helpers.assert_user_error(result, f'cannot write to {workdir}/checkpoints',
                            'read-only file system')
  assert time.monotonic() - start < 60  # Orbax alone waited ~5 minutes


# --- 5. Signals ----------------------------------------------------------------


def _start(workdir, data_dir, *args):
  return subprocess.Popen(
      [sys.executable, '-m', 'deepl.cli.main', 'train', f'--workdir={workdir}',
       f'--config.data.data_dir={data_dir}', *args],
      cwd=helpers.ROOT, env=helpers.env_for(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def _read_until(proc, needle: str) -> None:
  for line in proc.stdout:
    if needle in line:
      return
  pytest.fail(f'the run ended before printing {needle!r}: {proc.stderr.read()}')


def _second_signal_tries(data_dir, tmp_path, tries) -> None:
  """Each try: a run that trains, one signal (it starts saving), a second (it stops at once).

  The runs start one after the other; each is frozen (SIGSTOP) once it trains, so the
  waiting ones cost no CPU, and woken for its turn. They train as the shared run's second
  half did (its programs are in the compilation cache), logging each step and saving only
  when signalled: frozen at its first steps, none can reach its last, step 40, unsignalled.
  """
  args = (*BLOW_UP, '--config.optim.step_factor=1.0', '--config.train.log_every_steps=1',
          '--config.checkpoint.every_steps=1000000')
  procs = []
  try:
    for i, sig in enumerate(tries):
      procs.append((_start(tmp_path / f'run{i}-{sig.name}', data_dir, *args), sig))
      _read_until(procs[-1][0], 'step 1/')
      procs[-1][0].send_signal(signal.SIGSTOP)
    for proc, sig in procs:
      proc.send_signal(signal.SIGCONT)
      proc.send_signal(sig)
      _read_until(proc, 'saving a checkpoint, then exiting')
      proc.send_signal(sig)
      sent = time.monotonic()
      _, err = proc.communicate(timeout=60)
      assert time.monotonic() - sent < 10
      assert proc.returncode == 128 + sig, err
      assert 'Traceback' not in err and 'Segmentation' not in err, err
      assert f'deepl: {sig.name}: stop' in err  # 'stopping without saving' or, saved, 'stopped'
  finally:
    for proc, _ in procs:
      proc.kill()
      proc.wait()


def test_a_second_sigterm_or_ctrl_c_exits_at_once(run, tfds_data_dir, tmp_path):
  del run  # it prepared the data set, and compiled the runs' programs
  _second_signal_tries(tfds_data_dir, tmp_path, [signal.SIGTERM, signal.SIGINT])


@pytest.mark.slow
def test_a_second_signal_exits_at_once_ten_times(run, tfds_data_dir, tmp_path):
  del run
  for half in range(2):  # five runs at a time
    _second_signal_tries(tfds_data_dir, tmp_path / str(half), [signal.SIGTERM, signal.SIGINT,
                                                                signal.SIGTERM, signal.SIGINT,
                                                                signal.SIGTERM])
    del half


def test_ctrl_c_during_startup_is_one_line(tfds_data_dir, tmp_path):
  proc = _start(tmp_path / 'run', tfds_data_dir)
  time.sleep(1.5)  # importing JAX, preparing data or compiling: before any step
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=30)
  assert proc.returncode == 130, err
  assert [l for l in err.splitlines() if l.strip()] == ['deepl: SIGINT: stopped (Ctrl-C)']


# --- 6. The smaller ones (sample's options: tests/test_sampling.py; get_config:
# tests/test_cli_errors.py) ----------------------------------------------------


def test_a_batch_larger_than_the_train_split_is_refused(tfds_data_dir, tmp_path):
  config = config_lib.default_config()
  config.data.data_dir = str(tfds_data_dir)
  config.train.batch_size = 4096
  with pytest.raises(UserError, match='config.train.batch_size=4096 is larger than the 1,'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run' / 'checkpoints').exists()


# --- 7. deepl inspect -----------------------------------------------------------


def test_inspect_reports_what_a_run_holds(run):
  workdir = run[0]
  report = inspect.inspect_run(config_lib.load_run_config(workdir), str(workdir))
  assert report['config']['optim']['step_factor'] == 1.0
  assert [h['step'] for h in report['config_history']] == [20]
  assert [c['step'] for c in report['checkpoints']] == [30, 35, 40]
  assert all(c['readable'] and c['finite'] and c['bytes'] > 10_000
             for c in report['checkpoints'])
  test_rows = [r for r in _rows(workdir) if r['split'] == 'test']
  assert report['checkpoints'][2]['eval']['test']['accuracy'] == test_rows[-1]['accuracy']
  assert report['last_train_row']['step'] == 40 and report['last_eval_row']['split'] == 'test'
  assert report['in_use_by_pid'] is None and report['unfinished_saves'] == []
  # The parameter table adds up to the arrays the checkpoint holds.
  _, variables = checkpoint.read_variables(workdir / 'checkpoints')
  params = report['parameters']
  assert params['total_params'] == sum(x.size for x in jax.tree.leaves(variables['params']))
  assert params['total_param_bytes'] == 4 * params['total_params']
  assert {'group': 'params', 'path': 'Conv_0/kernel', 'shape': [3, 3, 1, 32],
          'dtype': 'float32', 'count': 288} in params['arrays']
  text = inspect.format_report(report)
  for needle in ('not in use', 'optim.lr: 0.1', 'from step 20 (', 'step       40 |',
                 '| finite | test loss', f"total: {params['total_params']:,} parameters",
                 'step 40/40 | loss'):
    assert needle in text, text


class _Source:
  def __len__(self):
    return 8

  def gather(self, idx):
    return {'x': np.asarray(idx)}


def test_inspect_sees_a_live_run_and_a_non_finite_checkpoint(run, tmp_path):
  workdir = _copy(run, tmp_path)
  # Checkpoint 50 of another state, with a nan: as an earlier deepl could save.
  ckpt = checkpoint.Checkpointer(str(workdir / 'checkpoints'), keep=5)
  ckpt.save(50, TrainState(step=np.int32(50), params={'w': np.array([1.0, np.nan], np.float32)},
                           model_state={}, opt_state=(), rng=np.zeros(2, np.uint32)),
            data_lib.train_iterator(_Source(), global_batch_size=2, seed=0), {'window': None})
  ckpt.close()
  run_lock.hold(str(workdir))
  try:
    report = inspect.inspect_run(config_lib.load_run_config(workdir), str(workdir))
  finally:
    run_lock.release(str(workdir))
  assert report['in_use_by_pid'] == str(os.getpid())
  assert [(c['step'], c['finite']) for c in report['checkpoints']] == [
      (30, True), (35, True), (40, True), (50, False)]
  assert report['parameters']['arrays'] == [
      {'group': 'params', 'path': 'w', 'shape': [2], 'dtype': 'float32', 'count': 2}]
  assert 'NOT FINITE' in inspect.format_report(report)


@pytest.mark.slow
def test_inspect_json_on_the_command_line(run):
  result = helpers.deepl(f'--workdir={run[0]}', '--json', command='inspect')
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout)
  assert set(report) >= {'config', 'config_history', 'checkpoints', 'parameters',
                         'last_train_row', 'last_eval_row', 'in_use_by_pid'}


# --- 8. deepl plot --------------------------------------------------------------


def _png_size(path):
  data = path.read_bytes()
  assert data[:8] == b'\x89PNG\r\n\x1a\n' and data[12:16] == b'IHDR'
  return struct.unpack('>II', data[16:24])


def test_plot_draws_one_line_per_run(run, tmp_path):
  other = _copy(run, tmp_path)
  out = tmp_path / 'curves.png'
  plot.plot_runs([str(run[0]), str(other)], str(out))
  width, height = _png_size(out)
  assert 1000 <= width <= 2000 and 300 <= height <= 600  # three panels side by side
  assert 20_000 < out.stat().st_size < 1_000_000
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  pixels = plt.imread(out)
  assert pixels.shape[:2] == (height, width) and pixels.std() > 0.05  # drawn on, not blank


@pytest.mark.parametrize('runs,out,needle', [
    (['{tmp}/nothing'], '{tmp}/c.png', 'holds no logged rows'),
    (['{run}'], '{tmp}/c.jpg', 'name a .png file'),
    (['{run}'], '{tmp}/no/such/c.png', 'does not exist'),
])
def test_plot_bad_input(run, tmp_path, runs, out, needle):
  fill = lambda s: s.format(tmp=tmp_path, run=run[0])
  with pytest.raises(UserError, match=needle):
    plot.plot_runs([fill(r) for r in runs], fill(out))
