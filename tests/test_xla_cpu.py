"""deepl/xla_cpu.py: the XLA:CPU flag for convolutional models."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp

from deepl import xla_cpu

_PROBE = '''
import os, sys
import jax
from deepl import xla_cpu
changed = xla_cpu.configure(sys.argv[1].split(','))
# A convolution's gradient, so the flag (if set) is used by a real compile.
x, w = jax.numpy.ones((2, 8, 8, 3)), jax.numpy.ones((3, 3, 3, 4))
conv = lambda w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME',
                                              dimension_numbers=('NHWC', 'HWIO', 'NHWC')).sum()
assert float(jax.grad(conv)(w).sum()) > 0
print(changed, os.environ.get('XLA_FLAGS', ''))
'''


def _probe(models: str, xla_flags: str | None = None) -> tuple[bool, str]:
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  if xla_flags is not None:
    env['XLA_FLAGS'] = xla_flags
  out = subprocess.run([sys.executable, '-c', _PROBE, models], env=env, capture_output=True,
                       text=True, check=True, timeout=120).stdout.strip()
  changed, _, flags = out.partition(' ')
  return changed == 'True', flags


# A jaxlib without the flag gets nothing (XLA would abort on it); this one has it.
_KNOWN = xla_cpu._jaxlib_knows(xla_cpu.FLAG, xla_cpu.MATMULS_ONLY)  # pylint: disable=protected-access
_SET = f'--{xla_cpu.FLAG}={xla_cpu.MATMULS_ONLY}'


def test_convolutional_models_get_the_flag_and_compile():
  assert _probe('cnn,resnet20') == ((True, _SET) if _KNOWN else (False, ''))


def test_other_or_mixed_models_and_a_users_own_value_are_left_alone():
  assert _probe('gpt') == (False, '')
  assert _probe('cnn,rnn_lm') == (False, '')
  own = f'--{xla_cpu.FLAG}=LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE'
  assert _probe('cnn', own) == (False, own)
  # Other flags of the user's are kept, the new one appended.
  changed, flags = _probe('cnn', '--xla_cpu_enable_fast_math=false')
  assert changed == _KNOWN
  assert flags.split() == ['--xla_cpu_enable_fast_math=false'] + ([_SET] if _KNOWN else [])


def test_too_late_once_the_backend_runs(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  jnp.ones(1).block_until_ready()  # this process's backend is up
  assert jax.default_backend()
  assert not xla_cpu.configure(['cnn'])
  assert 'XLA_FLAGS' not in os.environ
