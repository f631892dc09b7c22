"""deepl/run_lock.py: one train per workdir and process index; the same process may take it again."""

import os
import subprocess
import sys

from deepl import run_lock
from tests import helpers

_TAKE = 'import sys; from deepl import run_lock; run_lock.hold(sys.argv[1], int(sys.argv[2]))'


def _other_process_takes(workdir, process_index=0):
  return subprocess.run([sys.executable, '-c', _TAKE, str(workdir), str(process_index)],
                        capture_output=True, text=True, cwd=helpers.ROOT, timeout=60)


def test_held_lock_refuses_other_processes_until_released(tmp_path):
  run_lock.hold(str(tmp_path))
  run_lock.hold(str(tmp_path))  # this process again (its earlier run is over): no error
  try:
    refused = _other_process_takes(tmp_path)
    assert refused.returncode != 0
    assert f'is in use by another deepl train (pid {os.getpid()})' in refused.stderr
    assert _other_process_takes(tmp_path, process_index=1).returncode == 0  # another host's
  finally:
    run_lock.release(str(tmp_path))
  assert _other_process_takes(tmp_path).returncode == 0
