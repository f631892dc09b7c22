"""Launch a `deepl train` on every worker of a Cloud TPU VM or pod slice, with gcloud.

  python tools/tpu_vm.py --name=my-tpu --zone=us-central2-b --accelerator=v4-32 --create \
      --delete -- --config=experiments/mnist_cnn.py --workdir=gs://my-bucket/runs/mnist
  python tools/tpu_vm.py ... --dry_run            # print every gcloud command, run none
  python tools/tpu_vm.py --local=2 -- --config=... --workdir=runs/x   # the same plan, here

The plan, each step a gcloud command:
  1. create the TPU VM (--create; else it must exist);
  2. put the code on every worker: this checkout's tracked files as a tarball
     (default), or `git clone` of --repo at --ref;
  3. install it on every worker with the README's command, `pip install .`,
     plus `jax[tpu]` and the `gcs` extra (gs:// workdirs), in a virtual
     environment;
  4. run `deepl train --distributed ARGS` on every worker at once (one ssh per
     worker; jax.distributed.initialize() finds the slice's coordinator
     itself), each worker's output in runs/launch/NAME/worker-I.log. If one
     worker fails, the others are stopped (here and, by `pkill`, on the VM)
     and the launch exits with that worker's code;
  5. delete the VM (--delete), whether the run succeeded or not.

--local=N runs step 4 as N processes on this machine instead, with a real
`jax.distributed` coordinator on 127.0.0.1 (CPU devices): the same fail-fast
watch and per-worker logs, nothing in the cloud. The number of workers of a
slice comes from --accelerator (v4-32: 4 hosts, ...) unless --workers says.

Workdirs on gs:// are read and written through etils.epath, as local ones
are. Bad input is one `deepl: error:` line and exit code 2.
"""

import dataclasses
import os
import pathlib
import re
import shlex
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

from absl import flags

ROOT = pathlib.Path(__file__).resolve().parents[1]

flags.DEFINE_string('name', None, 'The TPU VM (or pod slice) name.')
flags.DEFINE_string('zone', None, 'Its zone, e.g. us-central2-b.')
flags.DEFINE_string('project', None, 'The Google Cloud project (default: gcloud\'s).')
flags.DEFINE_string('accelerator', 'v4-8', 'The accelerator type, e.g. v4-8, v4-32, v5litepod-16.')
flags.DEFINE_string('version', 'tpu-ubuntu2204-base', 'The TPU VM software version (--create).')
flags.DEFINE_bool('create', False, 'Create the VM first.')
flags.DEFINE_bool('spot', False, 'Create it as a spot VM.')
flags.DEFINE_bool('delete', False, 'Delete the VM when the run ends, however it ends.')
flags.DEFINE_string('repo', None, 'git URL to clone on the workers instead of copying this '
                    'checkout.')
flags.DEFINE_string('ref', 'main', 'The branch or tag of --repo.')
flags.DEFINE_integer('workers', None, 'Workers (hosts) in the slice (default: from --accelerator).')
flags.DEFINE_bool('dry_run', False, 'Print every gcloud command instead of running it.')
flags.DEFINE_integer('local', 0, 'Run the training as this many local processes (no cloud).')
flags.DEFINE_string('logs', None, 'Where worker logs go (default runs/launch/NAME).')
FLAGS = flags.FLAGS

VENV = '~/deepl-venv'
CODE = '~/deepl'
# TensorCores (v2-v4, v5p) or chips (v5e, v6e) per host: the number in the type is in those units.
_PER_HOST = {'v2': 8, 'v3': 8, 'v4': 8, 'v5p': 8, 'v5litepod': 4, 'v5e': 4, 'v6e': 4}
_SINGLE_HOST_UP_TO = {'v5litepod': 8, 'v5e': 8, 'v6e': 8}


class LaunchError(Exception):
  """Bad input to the launcher: one line, exit code 2."""


def workers_of(accelerator: str) -> int:
  """Hosts in a slice of `accelerator` (e.g. 'v4-32' -> 4), as Cloud TPU lays them out."""
  match = re.fullmatch(r'(v\d+[a-z]*|v5litepod)-(\d+)', accelerator)
  if not match or match.group(1) not in _PER_HOST:
    raise LaunchError(f'--accelerator={accelerator!r}: use a type such as v4-8, v4-32, '
                      'v5litepod-16 or v6e-8, or give --workers')
  family, size = match.group(1), int(match.group(2))
  if size <= _SINGLE_HOST_UP_TO.get(family, _PER_HOST[family]):
    return 1
  return size // _PER_HOST[family]


@dataclasses.dataclass
class Plan:
  """The gcloud commands of a launch, in order, and the training command of each worker."""
  setup: list[list[str]]    # create, copy, install: run one after another
  workers: list[list[str]]  # one per worker, run at once
  stop: list[str]           # stops the training on every worker
  teardown: list[list[str]]  # delete


def _gcloud(*args: str) -> list[str]:
  command = ['gcloud', 'compute', 'tpus', 'tpu-vm', *args, f'--zone={FLAGS.zone}']
  return command + ([f'--project={FLAGS.project}'] if FLAGS.project else [])


def _ssh(command: str, worker='all') -> list[str]:
  return _gcloud('ssh', FLAGS.name, f'--worker={worker}', f'--command={command}')


def make_plan(train_args: list[str], tarball: str = 'deepl.tar.gz') -> Plan:
  workers = FLAGS.workers or workers_of(FLAGS.accelerator)
  setup = []
  if FLAGS.create:
    setup.append(_gcloud('create', FLAGS.name, f'--accelerator-type={FLAGS.accelerator}',
                         f'--version={FLAGS.version}', *(['--spot'] if FLAGS.spot else [])))
  if FLAGS.repo:
    setup.append(_ssh(f'rm -rf {CODE} && git clone --depth=1 --branch={shlex.quote(FLAGS.ref)} '
                      f'{shlex.quote(FLAGS.repo)} {CODE}'))
  else:
    setup.append(_gcloud('scp', tarball, f'{FLAGS.name}:~/deepl.tar.gz', '--worker=all'))
    setup.append(_ssh(f'rm -rf {CODE} && mkdir -p {CODE} && tar xzf ~/deepl.tar.gz -C {CODE}'))
  # The README's install command, then the TPU runtime for JAX and gs:// paths.
  setup.append(_ssh(f'python3 -m venv {VENV} && . {VENV}/bin/activate && cd {CODE} && '
                    "pip install -q . && pip install -q 'jax[tpu]' '.[gcs]'"))
  train = ' '.join(shlex.quote(a) for a in ['deepl', 'train', '--distributed', *train_args])
  run = f'. {VENV}/bin/activate && cd {CODE} && {train}'
  return Plan(setup=setup, workers=[_ssh(run, worker=i) for i in range(workers)],
              stop=_ssh("pkill -f 'deepl train' || true"),
              teardown=[_gcloud('delete', FLAGS.name, '--quiet')] if FLAGS.delete else [])


def local_plan(train_args: list[str], processes: int) -> Plan:
  """Step 4 as `processes` local processes around a coordinator on 127.0.0.1."""
  with socket.socket() as s:  # a free port for the coordinator
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  workers = [[sys.executable, '-m', 'deepl.main', 'train', *train_args,
              f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={processes}',
              f'--process_id={i}'] for i in range(processes)]
  return Plan(setup=[], workers=workers, stop=[], teardown=[])


def _tarball(path: str) -> None:
  """This checkout's tracked files (what `git ls-files` lists), gzipped."""
  files = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
  with tarfile.open(path, 'w:gz') as tar:
    for name in files:
      tar.add(ROOT / name, arcname=name)


def run_workers(commands: list[list[str]], logs: pathlib.Path, *, env=None,
                stop: list[str] = (), poll: float = 0.2) -> int:
  """Runs every worker command at once, each logged to logs/worker-I.log; fail-fast.

  Returns 0 when all succeed, else the first failing worker's exit code, after
  stopping the others.
  """
  logs.mkdir(parents=True, exist_ok=True)
  procs, files = [], []
  for i, command in enumerate(commands):
    log = open(logs / f'worker-{i}.log', 'w')  # pylint: disable=consider-using-with
    files.append(log)
    procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  cwd=ROOT, start_new_session=True))
    print(f'launch: worker {i}: pid {procs[-1].pid}, log {logs / f"worker-{i}.log"}', flush=True)
  code = 0
  try:
    while any([p.poll() is None for p in procs]):  # a list: every worker polled
      failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode not in (None, 0)]
      if failed:
        i, code = failed[0]
        how = (f'was killed by {signal.Signals(-code).name}' if code < 0 else
               f'exited with code {code}')
        print(f'launch: worker {i} {how}: stopping the others', flush=True)
        code = 128 - code if code < 0 else code  # a shell's code for a signal
        break
      time.sleep(poll)
    else:
      code = next((p.returncode for p in procs if p.returncode), 0)
      code = 128 - code if code < 0 else code
  except KeyboardInterrupt:
    code = 130
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
      try:
        p.wait(timeout=30)
      except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    for log in files:
      log.close()
  if code and stop:
    subprocess.run(stop, check=False)
  return code


def main(argv) -> int:
  args = argv[1:]
  train_args = args[args.index('--') + 1:] if '--' in args else []
  try:
    FLAGS([argv[0], *(args[:args.index('--')] if '--' in args else args)])
  except flags.Error as err:
    raise LaunchError(str(err)) from None
  if not train_args:
    raise LaunchError('give the deepl train flags after --, e.g. -- '
                      '--config=experiments/mnist_cnn.py --workdir=gs://bucket/runs/mnist')
  if FLAGS.local:
    if FLAGS.local < 1:
      raise LaunchError(f'--local={FLAGS.local}: give a number of processes >= 1')
    plan = local_plan(train_args, FLAGS.local)
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    logs = pathlib.Path(FLAGS.logs or ROOT / 'runs' / 'launch' / 'local')
  else:
    if not FLAGS.name or not FLAGS.zone:
      raise LaunchError('give --name and --zone of the TPU VM (or --local=N to run here)')
    plan = make_plan(train_args)
    env = None
    logs = pathlib.Path(FLAGS.logs or ROOT / 'runs' / 'launch' / FLAGS.name)
  if FLAGS.dry_run:
    for command in [*plan.setup, *plan.workers, *plan.teardown]:
      print(shlex.join(command))
    return 0
  with tempfile.TemporaryDirectory() as tmp:
    code = 0
    try:
      if plan.setup and not FLAGS.repo:
        tarball = os.path.join(tmp, 'deepl.tar.gz')
        _tarball(tarball)
        plan = make_plan(train_args, tarball=tarball)
      for command in plan.setup:
        print(f'launch: {shlex.join(command)}', flush=True)
        code = subprocess.run(command, check=False).returncode
        if code:
          print(f'launch: that step failed with code {code}', flush=True)
          break
      else:
        code = run_workers(plan.workers, logs, env=env, stop=plan.stop)
    finally:
      for command in plan.teardown:
        print(f'launch: {shlex.join(command)}', flush=True)
        subprocess.run(command, check=False)
  print(f'launch: {"done" if code == 0 else f"failed ({code})"}; logs in {logs}', flush=True)
  return code


if __name__ == '__main__':
  try:
    sys.exit(main(sys.argv))
  except LaunchError as err:
    print(f'deepl: error: {err}', file=sys.stderr)
    sys.exit(2)
