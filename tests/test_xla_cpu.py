"""deepl/xla_cpu.py: the XLA:CPU flags for convolutional models."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp

from deepl import xla_cpu

_PROBE = '''
import os, sys
import jax
import numpy as np
from deepl import xla_cpu
from deepl.models.fusion import materialize
changed = xla_cpu.configure(sys.argv[1].split(','))
# A convolution's weight gradient through a materialized input, so the flags
# (if set) are used by a real compile; it must equal numpy's.
x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
def loss(w):
  y = jax.lax.conv_general_dilated(materialize(jax.nn.relu(x)), w, (1, 1), 'VALID',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return y.sum()
step = jax.jit(jax.grad(loss))
grad = step(np.zeros((3, 3, 3, 4), np.float32))
windows = np.lib.stride_tricks.sliding_window_view(np.maximum(x, 0), (3, 3), axis=(1, 2))
want = windows.sum(axis=(0, 1, 2)).transpose(1, 2, 0)[..., None].repeat(4, -1)
np.testing.assert_allclose(grad, want, rtol=1e-5)
kept = 'opt-barrier' in step.lower(np.zeros((3, 3, 3, 4), np.float32)).compile().as_text()
print(changed, kept, os.environ.get('XLA_FLAGS', ''))
'''


def _probe(models: str, xla_flags: str | None = None) -> tuple[bool, bool, list[str]]:
  """(XLA_FLAGS changed, barrier kept in the compiled step, XLA_FLAGS entries)."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  if xla_flags is not None:
    env['XLA_FLAGS'] = xla_flags
  out = subprocess.run([sys.executable, '-c', _PROBE, models], env=env, capture_output=True,
                       text=True, check=True, timeout=120).stdout.split()
  return out[0] == 'True', out[1] == 'True', out[2:]


# A jaxlib that lacks a flag does not get it (XLA would abort on it).
_SET = [f'--{flag}={value}' for flag, value in xla_cpu.FLAGS
        if xla_cpu._jaxlib_knows(flag, value)]  # pylint: disable=protected-access
_BARRIERS_KEPT = '--xla_disable_hlo_passes=cse_barrier_expander' in _SET


def test_convolutional_models_get_the_flags_keep_barriers_and_compute_right():
  assert _probe('cnn,resnet20') == (bool(_SET), _BARRIERS_KEPT, _SET)


def test_other_or_mixed_models_and_a_users_own_value_are_left_alone():
  assert _probe('gpt') == (False, False, [])
  assert _probe('cnn,rnn_lm') == (False, False, [])
  own = [f'--{flag}={value}' for flag, value in (
      ('xla_cpu_experimental_ynn_fusion_type', 'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE'),
      ('xla_disable_hlo_passes', 'algsimp'))]
  assert _probe('cnn', ' '.join(own)) == (False, False, own)
  # Other flags of the user's are kept, the new ones appended.
  others = [f for f in _SET if not f.startswith('--xla_cpu_experimental_ynn_fusion_type=')]
  assert _probe('cnn', own[0]) == (bool(others), _BARRIERS_KEPT, own[:1] + others)
  assert _probe('cnn', '--xla_cpu_enable_fast_math=false') == (
      bool(_SET), _BARRIERS_KEPT, ['--xla_cpu_enable_fast_math=false'] + _SET)


def test_too_late_once_the_backend_runs(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  jnp.ones(1).block_until_ready()  # this process's backend is up
  assert jax.default_backend()
  assert not xla_cpu.configure(['cnn'])
  assert 'XLA_FLAGS' not in os.environ
