"""One experiment's train step on several meshes, side by side: steps/s and the ratio to the first.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tools/compare_meshes.py \\
      --config=experiments/benchmarks.py:gpt_mini --mesh=data=8 --mesh=fsdp=8 \\
      [--mesh=data=2,fsdp=2,tensor=2 --steps=5 --rounds=6 --json=meshes.json]

Builds the real `deepl train` step (tools/benchmark.py's Harness) once per
--mesh, each with its state created sharded on that mesh, then alternates one
window of each, `rounds` times, so that all see the same machine load. Prints
each mesh's median steps/s, its per-device state, and its speed relative to
the first mesh as the median of the rounds' ratios with their range.

On forced host devices all "devices" share this machine's cores, so the ratio
measures what a mesh costs in collectives and bookkeeping, not what it gains
on real chips.
"""

import json
import statistics
import sys

from absl import flags

import benchmark  # tools/benchmark.py: the harness and the shared flags
from deepl import sharding
from deepl.cli.main import fail
from deepl.errors import UserError

flags.DEFINE_multi_string('mesh', None, 'A mesh, e.g. data=8 or data=2,fsdp=2,tensor=2 (the '
                          'others 1); give two or more. The first is the baseline.')
flags.DEFINE_integer('rounds', 6, 'Alternating rounds of one window per mesh.')
FLAGS = flags.FLAGS


def _mesh(text: str) -> dict[str, int]:
  sizes = {'data': 1, 'fsdp': 1, 'tensor': 1}
  for part in text.split(','):
    name, _, value = part.partition('=')
    if name.strip() not in sizes or not value.strip().lstrip('-').isdigit():
      fail(f'--mesh={text!r}: write axis=size pairs over data, fsdp, tensor, e.g. data=2,fsdp=4')
    sizes[name.strip()] = int(value)
  return sizes


def main(argv):
  config = benchmark.parse_flags(argv, (sys.modules[__name__], benchmark))
  if len(FLAGS.mesh or ()) < 2:
    fail('--mesh: give two or more meshes to compare, e.g. --mesh=data=8 --mesh=fsdp=8')
  if FLAGS.rounds < 1:
    fail(f'--rounds={FLAGS.rounds} must be a positive integer')
  harnesses = {}
  try:
    for text in FLAGS.mesh:
      variant = config.copy_and_resolve_references()
      variant.mesh.update(_mesh(text))
      harnesses[text] = benchmark.Harness(variant, vocab_size=FLAGS.vocab_size,
                                          warmup=FLAGS.warmup)
  except UserError as err:
    fail(str(err))
  rates = benchmark.alternate(harnesses, rounds=FLAGS.rounds, steps=FLAGS.steps)
  base = FLAGS.mesh[0]
  rows = []
  print(f'{config.model.name}: {FLAGS.rounds} rounds of {FLAGS.steps} steps per mesh')
  for text, harness in harnesses.items():
    ratios = [a / b for a, b in zip(rates[text], rates[base])]
    per_device = sharding.state_bytes_per_device(harness.state)
    rows.append({'mesh': text, 'steps_per_sec': rates[text], 'ratio_to_first': ratios,
                 'state_bytes_per_device': per_device})
    print(f'  {text:<24} {statistics.median(rates[text]):8.3f} steps/s   state '
          f'{per_device / 2**20:8.1f} MiB/device   x {benchmark.ratio_summary(ratios)}')
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({'model': config.model.name, 'rows': rows}, f, indent=2)


if __name__ == '__main__':
  main(sys.argv)
