"""Transparent huge pages for XLA's host buffers: restart once with glibc asking for them.

Where Linux's transparent huge pages are in `madvise` mode (the default of
Debian, Ubuntu and most cloud images), memory gets 2 MiB pages only where the
program asks. NumPy and PyTorch ask for their big arrays; XLA:CPU's buffers go
through plain malloc and get 4 KiB pages. XLA:CPU maps each step's temporaries
as one buffer and unmaps it after the step (580 MiB for GPT-mini: ~162,000
page faults per step in 4 KiB pages, 289 in 2 MiB ones), and every access
to them pays for TLB misses. glibc 2.35+ asks for huge pages on every allocation it maps when
GLIBC_TUNABLES holds `glibc.malloc.hugetlb=1`. Measured on this project's
2-core CPU, same losses: 300 steps of `deepl train` on shakespeare_gpt:cpu ran
at 2.70 and 2.89 steps/s without, 3.66 and 3.68 with; `tools/benchmark.py`,
processes alternated (steps/s, without then with): GPT-mini 1.26 / 1.44,
1.17 / 1.43; ResNet-20 2.52 / 2.81, 2.58 / 3.05; the LSTM 1.38 / 1.66, 1.47 /
1.76, 1.62 / 1.56; the MNIST CNN (small buffers) about the same.

glibc reads GLIBC_TUNABLES only when a process starts, so `restart()` execs the
same command line again with the tunable added, before anything else has run.
Nothing happens where it would not help or is not ours to decide: not Linux
with glibc 2.35+, huge pages `always` (every big mapping gets them already) or
`never`, or GLIBC_TUNABLES already names the tunable (a user's own value wins:
`GLIBC_TUNABLES=glibc.malloc.hugetlb=0` turns this off). That last check also
makes the restart happen once. Only the command-line entry points call it,
never library code: it replaces the running process.
"""

import os
import sys

TUNABLE = 'glibc.malloc.hugetlb'
THP_MODE = '/sys/kernel/mm/transparent_hugepage/enabled'


def glibc_has_tunable() -> bool:
  """Whether this process runs on Linux with glibc 2.35+, which knows TUNABLE."""
  if sys.platform != 'linux':
    return False
  try:
    name, _, version = (os.confstr('CS_GNU_LIBC_VERSION') or '').partition(' ')  # 'glibc 2.36'
    return name == 'glibc' and tuple(int(p) for p in version.split('.')[:2]) >= (2, 35)
  except ValueError:  # no such confstr name (musl), or an odd version string
    return False


def wanted(environ=os.environ, thp_mode: str = THP_MODE) -> bool:
  """Whether restarting with TUNABLE=1 would give this process huge pages it lacks."""
  if TUNABLE in environ.get('GLIBC_TUNABLES', '') or not glibc_has_tunable():
    return False
  try:
    with open(thp_mode) as f:
      return '[madvise]' in f.read()  # 'always [madvise] never'
  except OSError:
    return False


def restart() -> None:
  """Re-execs this command line with TUNABLE=1 added to GLIBC_TUNABLES, if `wanted`."""
  if not wanted() or not sys.executable or len(sys.orig_argv) < 2:
    return
  tunables = os.environ.get('GLIBC_TUNABLES')
  os.environ['GLIBC_TUNABLES'] = f'{tunables}:{TUNABLE}=1' if tunables else f'{TUNABLE}=1'
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
