"""One `deepl train` per workdir at a time (per process index, for multi-host runs).

Two runs writing one workdir delete each other's checkpoints (each keeps its
own last N) and interleave their metrics, so the second launch is refused
instead. The guard is an flock on a file in the workdir: the kernel drops it
when the process ends, however it ends (kill -9 included), so no stale lock
outlives its run. Where the filesystem or OS has no flock, runs go unguarded.
"""

import os

try:
  import fcntl
except ImportError:  # not POSIX
  fcntl = None

from deepl.errors import UserError

_held = {}  # lock file path -> the open file holding its lock, in this process


def _path(workdir: str, process_index: int) -> str:
  return os.path.join(os.path.abspath(workdir), f'.train-{process_index}.lock')


def hold(workdir: str, process_index: int = 0) -> None:
  """Takes the workdir's lock for this process, or raises UserError naming the holder's pid."""
  if fcntl is None:
    return
  path = _path(workdir, process_index)
  release(workdir, process_index)  # this process's earlier run (a test, a notebook) is over
  f = open(path, 'a+')
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    pid = f.read().strip() or '?'
    f.close()
    raise UserError(f'workdir {workdir} is in use by another deepl train (pid {pid}): let it '
                    'finish or stop it, or pass another --workdir') from None
  except OSError:  # no flock on this filesystem
    f.close()
    return
  f.seek(0)
  f.truncate()
  f.write(f'{os.getpid()}\n')
  f.flush()
  _held[path] = f


def release(workdir: str, process_index: int = 0) -> None:
  f = _held.pop(_path(workdir, process_index), None)
  if f is not None:
    f.close()  # closing the file drops the flock


def holder(workdir: str, process_index: int = 0) -> str | None:
  """The pid (as written) of the process holding the workdir's lock, or None if none does.

  Only looks: a free lock is let go at once, and nothing is written.
  """
  path = _path(workdir, process_index)
  if fcntl is None or not os.path.exists(path):
    return None
  with open(path, 'r') as f:
    try:
      fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
      return f.read().strip() or '?'
    except OSError:  # no flock on this filesystem
      return None
    fcntl.flock(f, fcntl.LOCK_UN)
  return None
