"""deepl.huge_pages: when the command restarts itself, and that XLA's buffers get huge pages."""

import json
import subprocess
import sys

import pytest

from deepl import huge_pages
from tests import helpers


def _thp(tmp_path, mode: str) -> str:
  path = tmp_path / 'enabled'
  path.write_text(mode + '\n')
  return str(path)


needs_glibc = pytest.mark.skipif(
    not huge_pages.glibc_has_tunable(),
    reason='glibc.malloc.hugetlb needs Linux with glibc 2.35 or later')


@needs_glibc
def test_wanted_only_in_madvise_mode_and_when_the_user_has_not_chosen(tmp_path):
  madvise = _thp(tmp_path, 'always [madvise] never')
  assert huge_pages.wanted({}, madvise)
  assert huge_pages.wanted({'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'}, madvise)
  # The user's own value wins, and it is what stops a second restart.
  assert not huge_pages.wanted({'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}, madvise)
  assert not huge_pages.wanted({}, _thp(tmp_path, '[always] madvise never'))
  assert not huge_pages.wanted({}, _thp(tmp_path, 'always madvise [never]'))
  assert not huge_pages.wanted({}, str(tmp_path / 'missing'))


def test_the_restarted_process_keeps_its_command_line_and_gets_huge_pages():
  if not huge_pages.wanted():
    pytest.skip('this machine would not restart (huge pages not in madvise mode, no glibc 2.35+, '
                'or GLIBC_TUNABLES already names glibc.malloc.hugetlb)')
  code = '\n'.join([
      'import json, os, sys',
      'from deepl import huge_pages',
      'huge_pages.restart()',
      'import jax.numpy as jnp',
      'x = jnp.ones((64 << 18,), jnp.float32).block_until_ready()  # 64 MiB in an XLA buffer',
      'huge = [l for l in open("/proc/self/smaps_rollup") if l.startswith("AnonHugePages")]',
      'print(json.dumps([os.environ["GLIBC_TUNABLES"], sys.argv[1:], int(huge[0].split()[1])]))',
  ])
  env = helpers.env_for()
  env.pop('GLIBC_TUNABLES', None)
  result = subprocess.run([sys.executable, '-c', code, 'an', 'argument'], capture_output=True,
                          text=True, timeout=120, env=env, cwd=helpers.ROOT)
  assert result.returncode == 0, result.stderr
  tunables, args, huge_kib = json.loads(result.stdout.strip().splitlines()[-1])
  assert tunables == 'glibc.malloc.hugetlb=1'
  assert args == ['an', 'argument']
  assert huge_kib >= 32 << 10, result.stdout  # at least half the buffer in 2 MiB pages
