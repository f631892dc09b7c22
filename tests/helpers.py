"""Shared by the tests: running the real `deepl` command line, and the matmuls a function traces."""

import os
import pathlib
import subprocess
import sys

import jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / 'experiments'


def env_for(devices: int | None = None, **extra) -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT))
  env.pop('XLA_FLAGS', None)
  if devices:
    env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env.update(extra)
  return env


def deepl(*args, devices: int | None = None, timeout: float = 300, command: str = 'train',
          env: dict | None = None, **popen):
  """`deepl <command> args...` in a fresh interpreter; returns CompletedProcess."""
  return subprocess.run([sys.executable, '-m', 'deepl.cli.main', command, *args],
                        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                        env=env_for(devices, **(env or {})), **popen)


def train_digits(workdir, data_dir, *, steps: int, eval_every: int | None = None,
                 checkpoint_every: int | None = None):
  """A short run of the default experiment (sklearn digits) in `workdir`; returns workdir."""
  result = deepl(f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
                 f'--config.train.num_steps={steps}',
                 f'--config.eval.every_steps={eval_every or steps}',
                 f'--config.checkpoint.every_steps={checkpoint_every or steps}')
  assert result.returncode == 0, result.stderr
  return workdir


def dot_operands(fn, *args) -> list[tuple]:
  """The operand avals of every dot_general `fn(*args)` traces, in order.

  Nested jaxprs (scans, jits, custom VJPs) included.
  """
  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == 'dot_general':
        yield tuple(v.aval for v in eqn.invars)
      for param in eqn.params.values():
        inner = getattr(param, 'jaxpr', param)
        if hasattr(inner, 'eqns'):
          yield from walk(inner)

  return list(walk(jax.make_jaxpr(fn)(*args).jaxpr))
