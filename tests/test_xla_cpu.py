"""deepl/xla_cpu.py: the XLA:CPU flags, each checked in a fresh process."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

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


def _run(script: str, *args: str, xla_flags: str | None = None) -> list[str]:
  """The words `script` prints, run in a fresh process (XLA_FLAGS as given)."""
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  if xla_flags is not None:
    env['XLA_FLAGS'] = xla_flags
  return subprocess.run([sys.executable, '-c', script, *args], env=env, capture_output=True,
                        text=True, check=True, timeout=120).stdout.split()


def _probe(models: str, xla_flags: str | None = None) -> tuple[bool, bool, list[str]]:
  """(XLA_FLAGS changed, barrier kept in the compiled step, XLA_FLAGS entries)."""
  out = _run(_PROBE, models, xla_flags=xla_flags)
  return out[0] == 'True', out[1] == 'True', out[2:]


# A jaxlib that lacks a flag does not get it (XLA would abort on it).
_KNOWN = {flag: f'--{flag}={value}' for flag, value, _ in xla_cpu.FLAGS
          if xla_cpu._jaxlib_knows(flag, value)}  # pylint: disable=protected-access
_CONV = _KNOWN.get('xla_cpu_experimental_ynn_fusion_type')
_BARRIERS = _KNOWN.get('xla_disable_hlo_passes')


def _expected(*flags: str | None, before: tuple[str, ...] = ()):
  added = [f for f in flags if f]
  return bool(added), _BARRIERS in added, [*before, *added]


def test_convolutional_models_get_both_flags_keep_barriers_and_compute_right():
  assert _probe('cnn,resnet20') == _expected(_CONV, _BARRIERS)


def test_other_or_mixed_models_keep_barriers_only():
  assert _probe('gpt') == _expected(_BARRIERS)
  assert _probe('cnn,rnn_lm') == _expected(_BARRIERS)


def test_a_users_own_values_win_and_other_flags_are_kept():
  own = ['--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE',
         '--xla_disable_hlo_passes=algsimp']
  assert _probe('cnn', ' '.join(own)) == (False, False, own)
  assert _probe('cnn', own[0]) == _expected(_BARRIERS, before=own[:1])
  assert _probe('cnn', '--xla_cpu_enable_fast_math=false') == _expected(
      _CONV, _BARRIERS, before=('--xla_cpu_enable_fast_math=false',))


_REMAT_PROBE = '''
import jax, jax.numpy as jnp
from deepl import xla_cpu
from deepl.models.gpt import GPT
xla_cpu.configure(['gpt'])
tokens = jnp.zeros((8, 128), jnp.int32)
def temp_bytes(remat):
  model = GPT(vocab_size=65, num_layers=4, num_heads=2, width=64, max_len=128, remat=remat)
  params = model.init(jax.random.key(0), tokens, train=False)
  loss = lambda p: model.apply(p, tokens, train=False).mean()
  return jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes
print(temp_bytes(False), temp_bytes(True))
'''


def test_kept_barriers_make_remat_save_memory():
  if not _BARRIERS:
    pytest.skip('this jaxlib cannot keep optimization barriers: remat saves nothing on its CPU')
  plain, remat = map(int, _run(_REMAT_PROBE))
  assert remat < plain / 2, (plain, remat)


def test_too_late_once_the_backend_runs(monkeypatch):
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  jnp.ones(1).block_until_ready()  # this process's backend is up
  assert jax.default_backend()
  assert not xla_cpu.configure(['cnn'])
  assert 'XLA_FLAGS' not in os.environ


def test_nothing_is_added_where_an_accelerator_will_run(monkeypatch):
  # XLA_FLAGS reaches every backend's compiler: the CPU's flags stay off GPU/TPU runs.
  for platforms, accelerator in (('cuda', True), ('tpu,cpu', True), ('cpu', False),
                                 ('cpu,cuda', False)):
    monkeypatch.setenv('JAX_PLATFORMS', platforms)
    assert xla_cpu._accelerator_expected() == accelerator, platforms  # pylint: disable=protected-access
  script = ('import os; from deepl import xla_cpu; '
            'print(xla_cpu.configure(["cnn"]), os.environ.get("XLA_FLAGS", "unset"))')
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda')
  assert _run(script) == ['False', 'unset']
