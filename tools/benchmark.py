"""Throughput and MFU of an experiment's train step, on synthetic batches.

  python tools/benchmark.py --config=experiments/benchmarks.py:gpt_mini
      [--steps=20 --windows=3 --warmup=2 --vocab_size=65 --json=out.json]
      [--config.train.batch_size=32 ...]

The step is the one `deepl train` compiles: the experiment's task, model and
optimizer (`experiment.make_task`, `optim.make_optimizer`), `train.train_step`
through the runner of config.parallel, the state from the experiment's
`initial_state`. Only the data is made up: random examples of the shapes and
dtypes the task's `batch_spec` gives (images uint8 with random labels; text
full-length token ids drawn Zipf-distributed, as text repeats its ids), so
nothing is downloaded or prepared. A text model's vocabulary is --vocab_size, else the config's
model.vocab_size, else sentencepiece's data.vocab_size, else 65 for char
(Tiny Shakespeare) or 16384 for word.

Timing: `warmup` steps after compiling, then `windows` windows of `steps`
steps on one device-resident batch; steps/s is the median window. Printed and
(--json) written: compile_seconds, steps_per_sec, examples_per_sec,
tokens_per_sec, flops_per_step (deepl.flops: XLA's cost analysis with scanned
loops counted per iteration; xla_flops_per_step is XLA's own number),
flops_per_sec, peak_flops and mfu (CPU: the faster of a matmul timed before
and after the windows in this run; GPU/TPU: the chip's published dense peak;
null if unknown), and memory: the compiled step's argument/output/temp sizes,
the device's peak_bytes_in_use where it reports one, and the process's max RSS.

Bad input (a missing config, an unknown flag or key) is one `deepl: error:`
line and exit code 2, as for `deepl train`.
"""

import dataclasses
import functools
import json
import resource
import statistics
import sys
import time

from absl import flags
from absl import logging
import jax
import numpy as np

from deepl import config as config_lib
from deepl import data as data_lib
from deepl import experiment
from deepl import kernels
from deepl import metering
from deepl import optim
from deepl import parallel
from deepl import sharding
from deepl import tasks
from deepl import train
from deepl.cli import main as cli
from deepl.errors import UserError

flags.DEFINE_integer('steps', 20, 'Steps per timed window.')
flags.DEFINE_integer('windows', 3, 'Timed windows; steps/s is their median.')
flags.DEFINE_integer('warmup', 2, 'Untimed steps after compiling.')
flags.DEFINE_integer('vocab_size', None, 'Text models: token ids to draw from '
                     '(default: the config\'s, else 65 for char, 16384 for word).')
flags.DEFINE_string('json', None, 'Also write the figures here.')
flags.DEFINE_bool('state_only', False, 'Only create the sharded train state and report its '
                  'memory (state_bytes, state_bytes_per_device); compile no step.')
FLAGS = flags.FLAGS

DEFAULT_VOCAB = {'char': 65, 'word': 16384}


# --------------------------------------------------------------- synthetic data


@dataclasses.dataclass(frozen=True)
class SyntheticTokenizer:
  """What the task and model need to know of a tokenizer: its vocabulary."""
  vocab_size: int
  kind: str = 'char'
  pad_id: int | None = 0  # as deepl's own tokenizers


def zipf_tokens(rng: np.random.Generator, low: int, high: int, shape) -> np.ndarray:
  """Token ids in [low, high) drawn as text's are, P(id) ~ 1 / (id - low + 1).

  Not uniform: how often one id repeats in a batch changes speed where the
  embedding's gradient adds many rows into one (a GPU's scatter). Uniform ids
  timed nanoGPT's char GPT at 134 steps/s on an H200 while `deepl train` on
  Tiny Shakespeare ran at 22-39; the trace put most of the gap in that
  bfloat16 scatter (see deepl/models/embed.py). The most frequent id takes
  21% of a 64-id draw (Tiny Shakespeare's space: 15%) and 10% of a 16,383-id
  one.
  """
  p = 1.0 / np.arange(1, high - low + 1)
  return (low + rng.choice(high - low, size=shape, p=p / p.sum())).astype(np.int32)


class SyntheticSource:
  """Random examples with the shapes and dtypes of a real source; `gather` like one.

  spec: a task's `batch_spec`, field -> (per-example shape, dtype, low, high),
  values in [low, high); dtype 'token' draws int32 ids with `zipf_tokens`.
  """

  def __init__(self, spec: dict, size: int = 1 << 20, seed: int = 0):
    self.spec, self.size, self.seed = spec, size, seed

  def __len__(self) -> int:
    return self.size

  def gather(self, indices) -> dict:
    indices = np.asarray(indices, np.int64)
    rng = np.random.default_rng([self.seed, len(indices), int(indices[:1].sum())])
    def draw(shape, dtype, low, high):
      shape = (len(indices),) + shape
      if dtype == 'token':
        return zipf_tokens(rng, low, high, shape)
      return rng.integers(low, high, shape).astype(dtype)
    return {k: draw(*spec) for k, spec in self.spec.items()}


def text_vocab_size(config, vocab_size: int | None = None) -> int:
  if vocab_size:
    return vocab_size
  if config.model.get('vocab_size'):
    return config.model.vocab_size
  if config.data.tokenizer == 'sentencepiece':
    return config.data.vocab_size
  return DEFAULT_VOCAB.get(config.data.tokenizer, 65)


def synthetic_experiment(config, vocab_size: int | None = None) -> experiment.Experiment:
  """The `experiment.build` of `config` with random data in place of the data set."""
  image_shape, num_classes, _, _ = experiment.declared_data(config)  # no download
  tokenizer = None if image_shape else SyntheticTokenizer(text_vocab_size(config, vocab_size),
                                                          config.data.tokenizer)
  spec = tasks.get(config.task).batch_spec(config, image_shape=image_shape,
                                           num_classes=num_classes,
                                           vocab_size=tokenizer and tokenizer.vocab_size)
  dataset = data_lib.Dataset(name=config.data.name, splits={'train': SyntheticSource(spec)},
                             num_classes=num_classes, image_shape=image_shape)
  task, init_task = experiment.make_task(config, num_classes=num_classes, tokenizer=tokenizer)
  tx = optim.make_optimizer(config.optim, config.train.num_steps)
  return experiment.Experiment(config, dataset, dataset.splits, tokenizer, task, init_task, tx)


# --------------------------------------------------------------------- harness


class Harness:
  """One experiment's compiled train step, ready to time window by window.

  Built once (compile timed); `window(steps)` returns steps/s; `report(rates)`
  gives every figure. Side-by-side tools alternate windows of several.
  """

  def __init__(self, config, *, vocab_size: int | None = None, warmup: int = 2,
               compiler_options: dict | None = None):
    """compiler_options: XLA's options for the step; default the layer set's, as deepl train's."""
    self.config = config = config.copy_and_resolve_references()
    kernels.resolve_config(config)  # as deepl train does
    self.runner = runner = parallel.make_runner(config, compiler_options=compiler_options)
    batch_size = config.train.batch_size
    exp = synthetic_experiment(config, vocab_size)
    self.state = exp.initial_state(runner)
    host_batch = exp.train_source.gather(np.arange(batch_size // jax.process_count()))
    # The counts `deepl train` logs: the global step's tokens and FLOPs (scans
    # counted per trip, and XLA's own number), and the device peak.
    self.cost = metering.StepCost(train.train_step, exp, self.state, runner)
    self.tokens_per_step, self.flops_per_step, self.xla_flops_per_step = self.cost.counts(
        host_batch)
    self.num_params = sum(x.size for x in jax.tree.leaves(runner.to_saveable(self.state).params))

    self.batch = runner.put_batch(host_batch)
    step = runner.compile_train(functools.partial(train.train_step, task=exp.task, tx=exp.tx))
    start = time.perf_counter()
    self.step = step.lower(self.state, self.batch).compile()
    self.compile_seconds = time.perf_counter() - start
    if warmup:
      self.window(warmup)

  def window(self, steps: int) -> float:
    """Runs `steps` steps; returns steps/s (dispatch to the last result)."""
    start = time.perf_counter()
    for _ in range(steps):
      self.state, sums = self.step(self.state, self.batch)
      if self.runner.sync_each_step:
        jax.block_until_ready(sums)
    jax.block_until_ready((self.state, sums))
    return steps / (time.perf_counter() - start)

  def memory(self) -> dict:
    out = {}
    try:
      analysis = self.step.memory_analysis()
    except Exception:  # pylint: disable=broad-except
      analysis = None  # not every backend / runner reports it
    if analysis is not None:
      for name in ('argument', 'output', 'temp', 'alias', 'generated_code'):
        out[f'{name}_bytes'] = int(getattr(analysis, f'{name}_size_in_bytes', 0))
      # Arguments, outputs and temporaries live at once; donated (aliased)
      # outputs reuse their arguments' buffers.
      out['compiled_peak_bytes'] = (out['argument_bytes'] + out['output_bytes'] +
                                    out['temp_bytes'] - out['alias_bytes'])
    try:
      stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # pylint: disable=broad-except
      stats = {}
    if 'peak_bytes_in_use' in stats:
      out['device_peak_bytes_in_use'] = int(stats['peak_bytes_in_use'])
    # The train state: all of it, and the most any one device holds of it.
    out['state_bytes'] = sum(x.nbytes for x in jax.tree.leaves(self.state))
    out['state_bytes_per_device'] = sharding.state_bytes_per_device(self.state)
    # Linux reports kilobytes.
    out['host_max_rss_bytes'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out

  def report(self, rates) -> dict:
    config = self.config
    device = jax.devices()[0]
    dtype = config_lib.compute_dtype(config)
    steps_per_sec = statistics.median(rates)
    examples_per_sec = steps_per_sec * config.train.batch_size
    flops_per_sec = self.flops_per_step * steps_per_sec
    self.cost.second_look()  # after the windows, with the device idle
    peak = self.cost.peak
    return {
        'model': config.model.name, 'task': config.task, 'data': config.data.name,
        'batch_size': config.train.batch_size, 'num_params': int(self.num_params),
        'dtype': dtype, 'parallel': config.parallel, 'kernels': config.kernels,
        'mesh': dict(getattr(self.runner, 'mesh', None).shape) if config.parallel == 'jit' else None,
        'attention': config.attention, 'platform': device.platform,
        'device_kind': device.device_kind, 'device_count': jax.device_count(),
        'compile_seconds': self.compile_seconds,
        'steps_per_sec': steps_per_sec, 'steps_per_sec_windows': list(rates),
        'examples_per_sec': examples_per_sec,
        'tokens_per_sec': self.tokens_per_step * steps_per_sec or None,
        'flops_per_step': self.flops_per_step,
        'xla_flops_per_step': self.xla_flops_per_step,
        'flops_per_sec': flops_per_sec,
        'peak_flops': peak,
        'peak_source': 'measured matmul' if device.platform == 'cpu' else 'published',
        'mfu': flops_per_sec / peak if peak else None,
        **self.memory(),
    }


def state_memory(config, *, vocab_size: int | None = None) -> dict:
  """The train state's bytes, all and per device, created sharded as `deepl train` creates it.

  No step is compiled: for models whose steps would take minutes here.
  """
  config = config.copy_and_resolve_references()
  kernels.resolve_config(config)
  runner = parallel.make_runner(config)
  state = synthetic_experiment(config, vocab_size).initial_state(runner)
  return {'model': config.model.name, 'num_params': int(sum(x.size for x in jax.tree.leaves(
              runner.to_saveable(state).params))),
          'mesh': dict(runner.mesh.shape) if config.parallel == 'jit' else None,
          'device_count': jax.device_count(),
          'state_bytes': sum(x.nbytes for x in jax.tree.leaves(state)),
          'state_bytes_per_device': sharding.state_bytes_per_device(state)}


def benchmark(config, *, steps: int = 20, windows: int = 3, warmup: int = 2,
              vocab_size: int | None = None) -> dict:
  """Every figure for `config`'s train step: see the module docstring."""
  harness = Harness(config, vocab_size=vocab_size, warmup=warmup)
  return harness.report([harness.window(steps) for _ in range(windows)])


def format_report(r: dict) -> str:
  g = lambda x: f'{x / 1e9:.2f}' if x else '?'
  lines = [
      f"{r['model']} on {r['data']} ({r['num_params']:,} params, {r['dtype']}), batch "
      f"{r['batch_size']}, {r['device_count']} {r['device_kind']} device(s), parallel={r['parallel']}, "
      f"kernels={r['kernels']}, attention={r['attention']}",
      f"  compile {r['compile_seconds']:.1f} s; {r['steps_per_sec']:.3f} steps/s (median of "
      f"{', '.join(f'{x:.3f}' for x in r['steps_per_sec_windows'])}), "
      f"{r['examples_per_sec']:.1f} examples/s" +
      (f", {r['tokens_per_sec']:.0f} tokens/s" if r['tokens_per_sec'] else ''),
      f"  {g(r['flops_per_step'])} GFLOP/step (XLA alone: {g(r['xla_flops_per_step'])}), "
      f"{g(r['flops_per_sec'])} GFLOP/s of {g(r['peak_flops'])} peak ({r['peak_source']}): "
      + (f"MFU {100 * r['mfu']:.1f}%" if r['mfu'] else 'MFU unknown'),
      '  memory: ' + ', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in r.items()
                               if k.endswith('_bytes')),
  ]
  return '\n'.join(lines)


def alternate(harnesses: dict, *, rounds: int, steps: int) -> dict[str, list[float]]:
  """Each harness's steps/s in `rounds` windows, taken in turn so that all see the same load."""
  rates = {name: [] for name in harnesses}
  for _ in range(rounds):
    for name, harness in harnesses.items():
      rates[name].append(harness.window(steps))
  return rates


def ratio_summary(ratios: list[float]) -> str:
  """'1.234 (1.10-1.30, ahead in 7 of 8)': the median round's ratio, its range, the rounds above 1."""
  return (f'{statistics.median(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f}, ahead in '
          f'{sum(r > 1 for r in ratios)} of {len(ratios)})')


# --------------------------------------------------------------------- command


def parse_flags(argv, help_modules=None):
  """The config (--config and overrides), as `deepl train` reads it; exits 2 on bad input.

  --help prints the usage of `help_modules` (default: this file's) and exits 0.
  """
  if any(not a.startswith('-') for a in argv[1:]):
    cli.fail(f'unexpected argument {next(a for a in argv[1:] if not a.startswith("-"))!r}: '
         'pass flags only, e.g. --config=experiments/benchmarks.py:cnn')
  _, config, _ = cli.parse(argv, help_modules or (sys.modules[__name__],))
  for name in ('steps', 'windows'):
    if FLAGS[name].value < 1:
      cli.fail(f'--{name}={FLAGS[name].value} must be a positive integer')
  if FLAGS.warmup < 0 or (FLAGS.vocab_size is not None and FLAGS.vocab_size < 2):
    cli.fail('--warmup must be >= 0 and --vocab_size >= 2')
  try:
    config_lib.validate(config)
  except UserError as err:
    cli.fail(str(err))
  return config


def run(argv=None):
  config = parse_flags(sys.argv if argv is None else argv)
  logging.set_verbosity(logging.WARNING)
  try:
    if FLAGS.state_only:
      result = state_memory(config, vocab_size=FLAGS.vocab_size)
    else:
      result = benchmark(config, steps=FLAGS.steps, windows=FLAGS.windows, warmup=FLAGS.warmup,
                         vocab_size=FLAGS.vocab_size)
  except UserError as err:
    cli.fail(str(err))
  if FLAGS.state_only:
    print(f"{result['model']} ({result['num_params']:,} params) on {result['mesh']}: state "
          f"{result['state_bytes'] / 2**20:.1f} MiB, at most {result['state_bytes_per_device'] / 2**20:.1f} "
          'MiB on one device', flush=True)
  else:
    print(format_report(result), flush=True)
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  run()
