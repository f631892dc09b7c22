"""What each of deepl's CPU kernels buys: the train step with and without it, side by side.

  python tools/kernel_gains.py --config=experiments/benchmarks.py:resnet20 \
      [--without=conv,batch_norm,xla --steps=5 --rounds=8 --json=gains.json]

Builds, in one process, the experiment's real train step (tools/benchmark.py's
Harness) with kernels='cpu', and once more for each piece in --without with
that piece swapped for its stock form; then alternates one window of each,
`rounds` times. Prints each variant's median steps/s and the gain of the
piece: steps/s with it over steps/s without it, as the median of the rounds'
ratios, with their range and in how many rounds the full set was ahead.

Pieces (deepl/kernels/cpu):
  conv          every convolution rewrite and the kept input buffer (nn.Conv instead)
  conv_shift    first layers as shifted multiply-adds
  conv_pairs    16-channel 3x3 convolutions as column pairs
  conv_buffer   the convolution's input kept as a buffer (materialize)
  conv_bias     the bias gradient as a channel sum of one kept buffer
  batch_norm    the batch norm with its own VJP (nn.BatchNorm instead)
  dense         Dense layers as 2-D matmuls (nn.Dense, nn.DenseGeneral instead)
  attention     blocked head-major causal attention (jax.nn.dot_product_attention)
  recurrence    the RNN time loop's hand-written backward pass (autodiff of lax.scan)
  table         an RNN LM's first layer projecting the embedding table, not every token
  barriers      the compiler option that keeps optimization barriers
  ynn           the compiler option giving YNNPACK matmuls only; the set gives it to
                steps that convolve: elsewhere this variant adds it (gain: not having it)
  layers        every layer swap at once: flax's stock layers, the compiler options kept
  xla           all of them: flax's stock layers, no options (kernels='xla')
"""

import contextlib
import dataclasses
import json
import statistics
import sys

from absl import flags
import flax.linen as nn

import benchmark  # tools/benchmark.py: the harness and the shared flags
from deepl.kernels import cpu
from deepl.kernels.cpu import conv
from deepl.cli.main import fail
from deepl.models import layers

PIECES = ('conv', 'conv_shift', 'conv_pairs', 'conv_buffer', 'conv_bias', 'batch_norm',
          'dense', 'attention', 'recurrence', 'table', 'barriers', 'ynn', 'layers', 'xla')
flags.DEFINE_list('without', ['xla'], f'Pieces to time without, one variant each: {PIECES}.')
flags.DEFINE_integer('rounds', 8, 'Alternating rounds of one window per variant.')
FLAGS = flags.FLAGS

_SWAPS = {  # LayerSet fields of the stock set
    'conv': {'Conv': nn.Conv}, 'batch_norm': {'BatchNorm': nn.BatchNorm},
    'dense': {'Dense': nn.Dense, 'DenseGeneral': nn.DenseGeneral},
    'attention': {'attention': None}, 'recurrence': {'recurrence': None},
    'table': {'project_embedding_table': False},
}
_CONV_PATCHES = {  # module attributes of deepl/kernels/cpu/conv.py, read when the step is traced
    'conv_shift': ('_MAX_SHIFT_TAPS', 0), 'conv_pairs': ('_MAX_PAIRED_CHANNELS', 0),
    'conv_buffer': ('materialize', lambda x: x),
    'conv_bias': ('add_bias', lambda y, bias: y + bias),
}
_OPTIONS = {'barriers': 'xla_disable_hlo_passes', 'ynn': 'xla_cpu_experimental_ynn_fusion_type'}


@contextlib.contextmanager
def _without(piece: str, config, options: dict):
  """Yields (config, compiler options) of the step built without `piece`; `options`: the set's."""
  config = config.copy_and_resolve_references()
  config.kernels = 'cpu'
  if piece in ('xla', 'layers'):
    config.kernels = 'xla'
    options = {} if piece == 'xla' else options
  elif piece in _SWAPS:
    config.kernels = f'cpu_without_{piece}'
    layers.register(config.kernels, dataclasses.replace(cpu.LAYERS, **_SWAPS[piece]))
  elif piece == 'ynn' and _OPTIONS[piece] not in options:
    options = {**options, **cpu.compiler_options(convolutional=True)}
  elif piece in _OPTIONS:
    options = {k: v for k, v in options.items() if k != _OPTIONS[piece]}
  saved = None
  if piece in _CONV_PATCHES:
    name, value = _CONV_PATCHES[piece]
    saved = (name, getattr(conv, name))
    setattr(conv, name, value)
  try:
    yield config, options
  finally:
    if saved:
      setattr(conv, *saved)


def main(argv):
  config = benchmark.parse_flags(argv, (sys.modules[__name__], benchmark))
  unknown = [p for p in FLAGS.without if p not in PIECES]
  if unknown or not FLAGS.without:
    fail(f'--without: unknown {", ".join(unknown) or "(none given)"}; choose from '
         f'{", ".join(PIECES)}')
  if FLAGS.rounds < 1:
    fail(f'--rounds={FLAGS.rounds} must be a positive integer')
  build = lambda config, options: benchmark.Harness(
      config, vocab_size=FLAGS.vocab_size, warmup=FLAGS.warmup, compiler_options=options)
  cpu_config = config.copy_and_resolve_references()
  cpu_config.kernels = 'cpu'
  harnesses = {'cpu': build(cpu_config, None)}  # the set's own options, as deepl train's
  for piece in FLAGS.without:
    with _without(piece, config, harnesses['cpu'].runner.compiler_options) as (variant, options):
      harnesses[piece] = build(variant, options)  # traced and compiled here, patches in force
  rates = benchmark.alternate(harnesses, rounds=FLAGS.rounds, steps=FLAGS.steps)
  full = rates['cpu']
  print(f'{config.model.name}, kernels=cpu: {statistics.median(full):.3f} steps/s '
        f'({FLAGS.rounds} rounds of {FLAGS.steps} steps)')
  rows = []
  for piece in FLAGS.without:
    ratios = [a / b for a, b in zip(full, rates[piece])]
    rows.append({'piece': piece, 'steps_per_sec_without': statistics.median(rates[piece]),
                 'gain': statistics.median(ratios), 'ratios': ratios})
    print(f'  without {piece:<13} {statistics.median(rates[piece]):8.3f} steps/s   gain '
          f'{benchmark.ratio_summary(ratios)}')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({'model': config.model.name, 'steps_per_sec': full, 'rows': rows}, f, indent=2)


if __name__ == '__main__':
  main(sys.argv)
