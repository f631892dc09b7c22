"""Shared by the tests: running the real `deepl` command line, and the matmuls a function traces."""

import contextlib
import io
import os
import pathlib
import subprocess
import sys
import traceback
from unittest import mock

import jax

from deepl import jaxprs

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / 'experiments'


FAST_COMPILE = 'JAX_DISABLE_MOST_OPTIMIZATIONS'  # JAX's variable for its jax.config option


@contextlib.contextmanager
def fast_compile():
  """What compiles inside, in this process and in the processes it starts, compiles without
  most of XLA's optimizations (jax_disable_most_optimizations: LLVM at -O0, its expensive
  passes off): about half the compile time, slower code, some float ops rounded otherwise than
  at the default -O2. For programs whose time is compiling and whose results are compared only
  among themselves: the models' math, a short training run that tests then read."""
  saved, saved_option = (os.environ.get(FAST_COMPILE),
                         jax.config.values['jax_disable_most_optimizations'])
  os.environ[FAST_COMPILE] = '1'
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    yield
  finally:  # as it was: a file's fast_compile fixture may hold it around this one
    jax.config.update('jax_disable_most_optimizations', saved_option)
    if saved is None:
      del os.environ[FAST_COMPILE]
    else:
      os.environ[FAST_COMPILE] = saved


def env_for(devices: int | None = None, fast_compile: bool = False, **extra) -> dict:  # pylint: disable=redefined-outer-name
  """The environment of a subprocess on `devices` forced CPU devices; fast_compile: as
  fast_compile() does (the environment of this process may say so already)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(ROOT))
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}' if devices else ''
  if fast_compile:
    env[FAST_COMPILE] = '1'
  env.update(extra)
  return env


def deepl(*args, devices: int | None = None, timeout: float = 300, command: str = 'train',
          env: dict | None = None, fast_compile: bool = False, **popen):  # pylint: disable=redefined-outer-name
  """`deepl <command> args...` in a fresh interpreter; returns CompletedProcess."""
  return subprocess.run([sys.executable, '-m', 'deepl.cli.main', command, *args],
                        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                        env=env_for(devices, fast_compile, **(env or {})), **popen)


def deepl_here(*args, command: str = 'train', env: dict | None = None, input: str = ''):  # pylint: disable=redefined-builtin
  """`deepl <command> args...` run in this interpreter; returns a CompletedProcess as `deepl`.

  A fresh interpreter spends ~4 s of CPU importing before it does anything: the tests of
  what the command line says (bad input, a run it refuses) and short one-device runs are
  run here. What needs its own process stays on `deepl`: other device counts, signals,
  and anything where the process's own exit is the point.
  """
  from deepl.cli import main as cli_main  # pylint: disable=g-import-not-at-top  (imports JAX's users)
  argv = ['deepl', command, *args]
  out, err, code = io.StringIO(), io.StringIO(), 0
  saved_argv = list(sys.argv)  # parse() sets sys.argv, as config_flags reads it
  with mock.patch.dict(os.environ, env or {}), mock.patch.object(sys, 'stdin', io.StringIO(input)), \
      contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    _forget_flags(cli_main.FLAGS)
    try:
      cli_main.run(argv)
    except SystemExit as exit_:
      code = exit_.code if isinstance(exit_.code, int) else 1
    except Exception:  # pylint: disable=broad-except  (as the interpreter would: a traceback, exit 1)
      traceback.print_exc(file=err)
      code = 1
    finally:
      _forget_flags(cli_main.FLAGS)
      sys.argv = saved_argv
  return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def _forget_flags(flag_values) -> None:
  """Back to a fresh process's flags: absl keeps the values of the last parse, and
  config_flags defines one --config.<key> flag per field of the config it loaded."""
  for name in [n for n in flag_values if n.startswith('config.')]:
    delattr(flag_values, name)
  flag_values.unparse_flags()


def train_digits(workdir, data_dir, *, steps: int, eval_every: int | None = None,
                 checkpoint_every: int | None = None, extra=()):
  """A short run of the default experiment (sklearn digits) in `workdir`, in this interpreter;
  returns workdir."""
  result = deepl_here(f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
                      f'--config.train.num_steps={steps}',
                      f'--config.eval.every_steps={eval_every or steps}',
                      f'--config.checkpoint.every_steps={checkpoint_every or steps}', *extra)
  assert result.returncode == 0, result.stderr
  return workdir


def assert_user_error(result, *needles, code: int = 2) -> str:
  """`result` ended with exactly one 'deepl: error:' line holding every needle, exit `code`,
  and no traceback; returns that line."""
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode == code, result.stderr
  assert 'Traceback' not in result.stderr, result.stderr
  errors = [l for l in lines if l.startswith('deepl: error:')]
  assert len(errors) == 1, result.stderr
  for needle in needles:
    assert needle.lower() in errors[0].lower(), errors[0]
  return errors[0]


def dot_operands(fn, *args) -> list[tuple]:
  """The operand avals of every dot_general `fn(*args)` traces, in order.

  Nested jaxprs (scans, jits, custom VJPs) included.
  """
  return [tuple(v.aval for v in eqn.invars)
          for eqn in jaxprs.equations(jax.make_jaxpr(fn)(*args).jaxpr)
          if eqn.primitive.name == 'dot_general']
