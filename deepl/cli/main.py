"""The `deepl` command line: the flags, and which command runs.

  deepl train --config=experiments/mnist_cnn.py[:variant] --workdir=runs/mnist
      [--config.optim.lr=0.1 ...]
  deepl sample --workdir=runs/shakespeare_lstm --prompt="ROMEO:" --length=500
      [--temperature=0.8 --top_k=40 --top_p=0.9 --seed=0]
  deepl evaluate --workdir=runs/dates_seq2seq [--split=test --step=1000]
  deepl predict --workdir=runs/dates_seq2seq --input="07/04/2023" [--beam_size=4 --step=1000]
      (--input=- reads one input per line from stdin; seq2seq models, classifiers and CTC
      recognizers; an image classifier reads image files, --input=digit.png, a speech run
      WAV files, --input=clip.wav)
  deepl export --workdir=runs/sst2_bert_hf --out=DIR [--step=1000]
      (a GPT or BERT run as a Hugging Face folder: AutoModel*.from_pretrained(DIR))
  deepl inspect --workdir=runs/mnist [--json]
  deepl plot --workdir=runs/a,runs/b --out=curves.png

`python -m deepl.cli.main ...` is the same. Without a command it trains; without
--config the embedded default experiment (a CNN on scikit-learn's 8x8 digits)
runs. Any config key can be overridden, --config.section.key=value; the
experiments are the files in experiments/. Bad input ends with one line on
stderr and exit code 2; Ctrl-C is one line and exit code 130 (during training it
saves first). `deepl --help` (or -h, or `deepl help`) prints this and the flags.
"""

import os
import signal
import sys

from deepl import errors

# Ctrl-C or SIGTERM while the command starts (importing JAX takes seconds): one
# line, not a traceback. Only where this file is the program, not imported by one.
if __name__ == '__main__' or os.path.basename(sys.argv[0]) == 'deepl':
  for _signal in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signal, errors.stop_on_signal)

# pylint: disable=g-import-not-at-top,wrong-import-position
import socket
import time

from absl import flags
from absl import logging
from ml_collections import config_flags

from deepl import config as config_lib
from deepl.cli import evaluate
from deepl.cli import export
from deepl.cli import inspect
from deepl.cli import plot
from deepl.cli import predict
from deepl.cli import sample
from deepl.cli import train
from deepl.data.tokenizers import HF_PREFIX
from deepl.errors import suggest
from deepl.errors import UserError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Experiment file defining get_config(arg=None); '
    '`file.py:arg` selects a variant.', lock_config=True)
flags.DEFINE_string('workdir', None, 'Where checkpoints, metrics and the '
                    'resolved config go. Default: runs/<experiment name>.')
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() with '
                  'auto-detection (TPU VM slices, SLURM, ...): every host runs the same command.')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, '
                    'for multi-process runs outside TPU/SLURM auto-detection.')
flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-process runs).')
flags.DEFINE_integer('process_id', None, 'This process\'s index (multi-process runs).')
flags.DEFINE_integer('distributed_timeout', 300, 'Seconds to wait for the coordinator of a '
                     'multi-process run before giving up.')

flags.DEFINE_string('compilation_cache', os.path.join('~', '.cache', 'deepl', 'xla'),
                    'Persistent XLA compilation cache: a rerun or resume of the same '
                    'experiment skips compiling. "" turns it off; JAX_COMPILATION_CACHE_DIR '
                    'wins if set.')
flags.DEFINE_bool('allow_config_change', False, 'train: resume a run with a config that '
                  'changes its training (optim.lr, seed, ...); the change is recorded in '
                  'workdir/config_history.jsonl.')
flags.DEFINE_string('prompt', None, 'sample: the text to continue.')
flags.DEFINE_integer('length', 500, f'sample: how many tokens to generate (at most '
                     f'{sample.MAX_LENGTH:,}).')
flags.DEFINE_float('temperature', 1.0, 'sample: softmax temperature (finite, > 0).')
flags.DEFINE_integer('top_k', 0, 'sample: keep the k most likely tokens (0: all).')
flags.DEFINE_float('top_p', 1.0, 'sample: nucleus sampling mass (1: off).')
flags.DEFINE_integer('seed', 0, 'sample: the same seed gives the same text.')

flags.DEFINE_string('split', None, 'evaluate: the split (default: the one training evaluates on).')
flags.DEFINE_integer('step', None, 'evaluate, sample, predict, export: the checkpoint step '
                     '(default: the latest).')
flags.DEFINE_string('out', None, 'export: the folder to write the Hugging Face model into; '
                    'plot: the PNG file to write (default curves.png).')

flags.DEFINE_string('input', None, 'predict: the text (or an image classifier: the image file; '
                    'a speech run: the .wav file) to run the model on; - reads one input per '
                    'line from stdin.')
flags.DEFINE_integer('beam_size', None, 'predict: beams for a seq2seq or CTC model (1: greedy; '
                     'default: the run\'s task_options.beam_size).')
# The tools (tools/benchmark.py, ...) import this file and define their own --json=FILE:
# theirs takes the name there.
flags.DEFINE_bool('json', False, 'inspect: print one JSON object instead of text.',
                  allow_override=True)

# One file per command, deepl/cli/<command>.py, each with run(config, workdir, flags):
# train's config is the one the flags give; the others get the config.json of the
# run they read, and name what --workdir must hold (READS_A_RUN).
COMMANDS = {'train': train, 'evaluate': evaluate, 'sample': sample, 'predict': predict,
            'export': export, 'inspect': inspect, 'plot': plot}
# (section, key) of the config's file paths (init_from and data.tokenizer may be 'hf:PATH').
PATH_KEYS = (('data', 'manual_dir'), ('data', 'data_dir'), ('', 'init_from'),
             ('data', 'tokenizer'))
HELP = ('-h', '-help', '--help', '--helpshort', '--helpfull')


def usage(modules) -> str:
  """The first module's docstring less its title, then each module's flags with their help."""
  text = modules[0].__doc__.strip().split('\n\n', 1)[-1]
  # absl heads each module's flags with the module's name ('__main__' for a script): dropped.
  flag_help = '\n'.join(line for module in modules
                        for line in FLAGS.module_help(module).splitlines() if line.startswith(' '))
  return f'usage:\n{text}\n\nflags:\n{flag_help}'


def fail(message: str) -> None:
  """Bad input: one line on stderr, exit code 2 (the tools use it too)."""
  print(f'deepl: error: {message}', file=sys.stderr)
  sys.exit(2)


def _config_path(argv):
  for arg in argv:
    if arg.startswith('--config='):
      return arg.split('=', 1)[1].split(':', 1)[0]
  return None


def _explain_flag_error(err: Exception, argv) -> str:
  """One readable line for what config_flags raises while loading a config."""
  path = _config_path(argv)
  text = str(err)
  if path and not os.path.isfile(path):
    return f'config file {path} does not exist: pass --config=path/to/experiment.py'
  if "no attribute 'get_config'" in text:
    return f'{path} defines no get_config(): an experiment file must define get_config(arg=None)'
  defaults = config_lib.flatten(config_lib.default_config())
  for arg in argv:
    if arg.startswith('--config.'):
      key = arg[len('--config.'):].split('=', 1)[0]
      if key not in defaults and not key.startswith('model.'):
        return config_lib.unknown_key(key, defaults)
      if key.startswith('model.') and key.split('.', 1)[1] in text:
        return (f"this experiment sets no '{key}': add it to the experiment's "
                'get_config() (model keys are the model\'s fields)')
  lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
  if not lines:
    return type(err).__name__
  # config_flags wraps an error raised by get_config(): its last line says what.
  message = lines[-1] if lines[0].endswith(':') else lines[0]
  return f'{path}: {message}' if path and lines[0].endswith(':') else message.strip('\'"\\')


def _not_a_config(err, argv) -> str | None:
  """The error for a get_config() that returned something else than a ConfigDict, if it did."""
  text = str(err)
  if not (isinstance(err, AttributeError) and text.endswith(("has no attribute 'to_dict'",
                                                              "has no attribute 'lock'"))):
    return None
  kind = text.split("'")[1] if text.startswith("'") else 'something else'
  kind = 'None' if kind == 'NoneType' else f'a {kind}'
  return (f'{_config_path(argv)}: get_config() returned {kind}, not an ml_collections '
          'ConfigDict: start from deepl.config.default_config() and return it')


def _stray_argument(arg: str) -> str:
  if arg.endswith('.py') or '.py:' in arg:
    hint = f'did you mean --config={arg}?'
  elif os.path.isdir(arg):
    hint = f'did you mean --workdir={arg}?'
  else:
    hint = 'e.g. --config=experiments/mnist_cnn.py --workdir=runs/mnist'
  return f"unexpected argument '{arg}': pass flags only ({hint})"


def parse(argv, help_modules=None):
  """Parses flags; returns (command, config, workdir).

  With --help (-h, or the command `help`) it prints `usage(help_modules)`,
  by default this module's, and exits 0.
  """
  args = list(argv[1:])
  if args[:1] == ['help'] or any(arg in HELP for arg in args):
    print(usage(help_modules or (sys.modules[__name__],)))
    sys.exit(0)
  command = 'train'
  if args and not args[0].startswith('-'):
    command = args.pop(0)
    if command not in COMMANDS:
      fail(f"unknown command '{command}'{suggest(command, COMMANDS)}; "
            f"commands: {', '.join(COMMANDS)}")
  if _config_path(args) is None:  # the embedded default experiment
    args.insert(0, f'--config={config_lib.__file__}')
  # config_flags takes --config.key=value overrides only after --config itself,
  # and looks for them in sys.argv: --config goes first, wherever it was typed
  # (the last one, as absl would take), and sys.argv is the argv parsed here.
  config_arg = [a for a in args if a.startswith('--config=')][-1]
  argv = [argv[0], config_arg] + [a for a in args if not a.startswith('--config=')]
  sys.argv = argv
  verbosity = logging.get_verbosity()
  # config_flags logs a warning of its own for a get_config() returning None: the error says it.
  logging.set_verbosity(logging.ERROR)
  try:
    extra = FLAGS(argv)[1:]
    config = FLAGS.config
    config.to_dict()  # config_flags defers load errors to the first access
  except flags.Error as err:
    fail(_explain_flag_error(err, argv) if 'config' in str(err) else str(err))
  except (OSError, AttributeError, KeyError, TypeError, ValueError, SyntaxError,
          ImportError) as err:
    fail(_not_a_config(err, argv) or _explain_flag_error(err, argv))
  except Exception as err:  # pylint: disable=broad-except
    fail(f'{_config_path(argv)}: get_config() raised {type(err).__name__}: '
         f'{str(err).strip().splitlines()[0] if str(err).strip() else "(no message)"}')
  finally:
    logging.set_verbosity(verbosity)
  if extra:  # absl leaves what is not a flag; a stray word would otherwise go unnoticed
    fail(_stray_argument(extra[0]))
  path = _config_path(argv)
  name = 'digits_cnn' if path == config_lib.__file__ else os.path.splitext(os.path.basename(path))[0]
  # The shell leaves ~ alone in --workdir=~/runs/x: without this the run would
  # land in a folder named '~'. Likewise in the config's paths.
  workdir = os.path.expanduser(FLAGS.workdir or os.path.join('runs', name))
  for section, key in PATH_KEYS:
    holder = config[section] if section else config
    if isinstance(holder.get(key), str):
      holder[key] = _expand_home(holder[key])
  return command, config, workdir


def _expand_home(value: str) -> str:
  prefix = HF_PREFIX if value.startswith(HF_PREFIX) else ''
  return prefix + os.path.expanduser(value[len(prefix):])


def _use_compilation_cache(folder: str) -> None:
  if not folder or os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_compilation_cache_dir', os.path.expanduser(folder))


def _initialize_distributed(address, num_processes, process_id, timeout: int) -> None:
  """jax.distributed.initialize, with a coordinator that never answers as one line.

  JAX aborts the process when its deadline passes; so a process that is not
  the coordinator first waits, at most `timeout` s, for the coordinator's
  port to accept a connection. TPU VMs and SLURM find the address themselves
  (address None): there JAX's own deadline is the bound.
  """
  import jax  # pylint: disable=g-import-not-at-top
  # SIGTERM is JAX's on several processes: its coordination service tells every
  # process (deepl/preemption.py). The startup's one-line handler steps aside.
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  if address and process_id:
    host, _, port = address.rpartition(':')
    deadline = time.monotonic() + timeout
    while True:
      try:
        socket.create_connection((host or 'localhost', int(port)), timeout=2).close()
        break
      except (OSError, ValueError):
        if time.monotonic() > deadline:
          raise UserError(f'no coordinator answered at {address} within {timeout} s: start '
                          'process 0 there, or fix --coordinator_address') from None
        time.sleep(0.5)
  jax.distributed.initialize(address, num_processes, process_id,
                             initialization_timeout=timeout)


def run(argv=None):
  argv = sys.argv if argv is None else argv
  command, config, workdir = parse(argv)
  logging.set_verbosity(logging.WARNING)
  module = COMMANDS[command]
  if getattr(module, 'READS_A_RUN', None) and not FLAGS.workdir:
    fail(f'deepl {command} needs --workdir={module.READS_A_RUN}')
  try:
    config_lib.validate(config)
    # sample, evaluate, predict and inspect run the saved run's model; plot reads several runs.
    run_config = (config if command == 'train' else None if command == 'plot' else
                  config_lib.load_run_config(workdir))
    _use_compilation_cache(FLAGS.compilation_cache)
    if FLAGS.distributed or FLAGS.coordinator_address or FLAGS.num_processes:
      _initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                              FLAGS.distributed_timeout)
    module.run(run_config, workdir, FLAGS)
  except UserError as err:
    fail(str(err))


def program():
  """The `deepl` command itself (console script, `python -m deepl.cli.main`)."""
  run()


if __name__ == '__main__':
  program()
