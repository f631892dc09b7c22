"""tools/tpu_vm.py: the gcloud commands of a launch, and the same plan run here as processes."""

import os
import re
import shlex
import signal
import subprocess
import sys

import pytest

from tests import helpers

TOOL = str(helpers.ROOT / 'tools' / 'tpu_vm.py')
TRAIN = ['--', '--config=experiments/mnist_cnn.py', '--workdir=gs://bucket/runs/mnist']


def _launch(*args, timeout=300, **popen):
  return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                        timeout=timeout, cwd=helpers.ROOT, env=helpers.env_for(), **popen)


def _dry_run(*args) -> list[list[str]]:
  result = _launch('--name=my-tpu', '--zone=us-central2-b', '--dry_run', *args)
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.strip().splitlines()]


def test_single_host_plan():
  commands = _dry_run('--accelerator=v4-8', *TRAIN)
  assert all(c[:4] == ['gcloud', 'compute', 'tpus', 'tpu-vm'] for c in commands)
  assert [c[4] for c in commands] == ['scp', 'ssh', 'ssh', 'ssh']  # copy, unpack, install, run
  assert commands[0][5:7] == ['deepl.tar.gz', 'my-tpu:~/deepl.tar.gz']
  install = commands[2][commands[2].index('--worker=all') + 1]
  assert 'pip install -q . ' in install and "'jax[tpu]'" in install
  run = commands[3]
  assert '--worker=0' in run and '--zone=us-central2-b' in run
  assert run[-2].endswith('deepl train --distributed --config=experiments/mnist_cnn.py '
                          '--workdir=gs://bucket/runs/mnist')


def test_pod_slice_plan_runs_every_worker_and_can_create_and_delete():
  commands = _dry_run('--accelerator=v4-32', '--create', '--spot', '--delete',
                      '--repo=https://example.org/deepl.git', '--ref=v1', '--project=p', *TRAIN)
  assert commands[0][4:6] == ['create', 'my-tpu']
  assert {'--accelerator-type=v4-32', '--spot', '--project=p'} <= set(commands[0])
  assert 'git clone --depth=1 --branch=v1 https://example.org/deepl.git ~/deepl' in ' '.join(
      commands[1])
  runs = [c for c in commands if any('deepl train' in part for part in c)]
  assert [next(p for p in c if p.startswith('--worker=')) for c in runs] == [
      '--worker=0', '--worker=1', '--worker=2', '--worker=3']
  assert commands[-1][4:] == ['delete', 'my-tpu', '--quiet', '--zone=us-central2-b', '--project=p']


@pytest.mark.parametrize('args,message', [
    (('--name=t', '--zone=z', '--accelerator=v9-8'), "--accelerator='v9-8'"),
    (('--zone=z',), 'give --name and --zone'),
    (('--name=t', '--zone=z', '--dry_run'), 'give the deepl train flags after --'),
])
def test_bad_input_is_one_line(args, message):
  result = _launch(*args, *(TRAIN if '--dry_run' not in args else ()))
  assert result.returncode == 2
  assert result.stderr.strip().startswith('deepl: error:') and message in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1


# tests/test_train.py::test_two_processes_match_one starts its two processes with --local=2
# and checks the same logs and checkpoint: a second two-process run adds nothing by default.
@pytest.mark.slow
def test_local_plan_trains_with_two_processes(tfds_data_dir, tmp_path):
  result = _launch('--local=2', f'--logs={tmp_path}/logs', '--', f'--workdir={tmp_path}/run',
                   f'--config.data.data_dir={tfds_data_dir}', '--config.train.num_steps=6',
                   '--config.checkpoint.every_steps=6', '--config.eval.every_steps=6')
  assert result.returncode == 0, result.stdout + result.stderr
  logs = [(tmp_path / 'logs' / f'worker-{i}.log').read_text() for i in range(2)]
  assert '2 cpu device(s)' in logs[0] and 'deepl: done' in logs[0]
  assert (tmp_path / 'run' / 'checkpoints' / '6').is_dir()


def test_one_failed_worker_stops_the_others(tfds_data_dir, tmp_path):
  launcher = subprocess.Popen(
      [sys.executable, TOOL, '--local=2', f'--logs={tmp_path}/logs', '--',
       f'--workdir={tmp_path}/run', f'--config.data.data_dir={tfds_data_dir}',
       '--config.train.num_steps=100000', '--config.train.log_every_steps=1'],
      cwd=helpers.ROOT, env=helpers.env_for(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)
  pids = []
  while len(pids) < 2:
    line = launcher.stdout.readline()
    assert line, 'the launcher ended early'
    pids += [int(p) for p in re.findall(r'worker \d: pid (\d+)', line)]
  # A worker dies while the other starts up (waiting for it is a compile's worth of CPU).
  os.kill(pids[1], signal.SIGKILL)
  out, _ = launcher.communicate(timeout=60)
  assert launcher.returncode == 128 + signal.SIGKILL
  assert 'worker 1 was killed by SIGKILL: stopping the others' in out
  for pid in pids:  # no process left behind
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)
