"""Loop overhead: the whole `deepl train` loop against its bare compiled step.

  python tools/loop_overhead.py --config=experiments/mnist_cnn.py \
      --config.data.manual_dir=../shared/data/mnist [--steps=300 --rounds=3]

Side by side in one process, alternating, `rounds` times:
  loop: `train.train_and_evaluate` for `steps` steps in a fresh workdir — real
        data loading, metric logging, async checkpoints every
        checkpoint.every_steps — timed by the loop's own steps_per_sec rows
        (compile and eval excluded, as the loop reports them);
  bare: the identical jitted train step on one device-resident batch of the
        same shapes, timed over `steps` steps after a warm-up.
Prints the median steps/s of each and their ratio (goal >= 0.90).
"""

import functools
import json
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from deepl import config as config_lib
from deepl import experiment
from deepl import kernels
from deepl import metrics as metrics_lib
from deepl import parallel
from deepl import train

config_flags.DEFINE_config_file('config', None, 'Experiment file.', lock_config=True)
flags.DEFINE_integer('steps', 300, 'Steps per timed run.')
flags.DEFINE_integer('rounds', 3, 'Alternating loop/bare rounds.')
flags.DEFINE_string('json', None, 'Also write the figures here.')
FLAGS = flags.FLAGS


def loop_steps_per_sec(config) -> float:
  with tempfile.TemporaryDirectory() as workdir:
    train.train_and_evaluate(config, workdir)
    rows = [r for r in metrics_lib.read_rows(workdir)
            if r['split'] == 'train' and 'steps_per_sec' in r]
  # The first window holds the warm-up; every later one is log_every steps.
  rows = rows[1:]
  seconds = sum(config.train.log_every_steps / r['steps_per_sec'] for r in rows)
  return len(rows) * config.train.log_every_steps / seconds


def bare_steps_per_sec(config, steps: int) -> float:
  kernels.resolve_config(config)  # as deepl train does
  runner = parallel.make_runner(config)
  with tempfile.TemporaryDirectory() as workdir:
    exp = experiment.build(config, workdir)
  state = exp.initial_state(runner)
  step = runner.compile_train(functools.partial(train.train_step, task=exp.task, tx=exp.tx))
  batch = runner.put_batch(next(exp.train_iterator()))
  for _ in range(3):  # compile and warm up
    state, sums = step(state, batch)
  jax.block_until_ready(sums)
  start = time.perf_counter()
  for _ in range(steps):
    state, sums = step(state, batch)
    if runner.sync_each_step:
      jax.block_until_ready(sums)
  jax.block_until_ready(sums)
  return steps / (time.perf_counter() - start)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = FLAGS.config or config_lib.default_config()
  config.unlock()
  config.train.num_steps = FLAGS.steps
  config.eval.every_steps = FLAGS.steps          # one eval, at the end (not timed)
  config_lib.validate(config)
  loop, bare = [], []
  for r in range(FLAGS.rounds):
    loop.append(loop_steps_per_sec(config))
    bare.append(bare_steps_per_sec(config, FLAGS.steps))
    print(f'round {r}: loop {loop[-1]:.2f} steps/s, bare step {bare[-1]:.2f} steps/s',
          file=sys.stderr, flush=True)
  result = {'model': config.model.name, 'data': config.data.name,
            'batch_size': config.train.batch_size, 'steps': FLAGS.steps,
            'loop_steps_per_sec': statistics.median(loop),
            'bare_steps_per_sec': statistics.median(bare)}
  result['ratio'] = result['loop_steps_per_sec'] / result['bare_steps_per_sec']
  print(json.dumps(result, indent=2))
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  app.run(main)
