"""deepl/metering.py: the loop's throughput and MFU figures, on a clock the test sets.

Real time plays no part: every figure is checked exactly against the
timestamps given, so a busy machine cannot make these fail.
"""

import functools

import jax
import numpy as np
import optax
import pytest

from deepl import config as config_lib
from deepl import experiment
from deepl import metering
from deepl import models
from deepl import parallel
from deepl import train
from deepl.state import init_state
from deepl.tasks.classification import ClassificationTask


class Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


def _steps(meter, clock, batch, n, *, input_s=0.1, dispatch_s=0.2, wait_s=0.3):
  """n steps, each taking input_s + dispatch_s + wait_s on the clock."""
  for _ in range(n):
    start = clock.now
    clock.now += input_s + dispatch_s + wait_s
    meter.step(batch, {'loss': np.float32(0)},
               (start, start + input_s, start + input_s + dispatch_s))


def test_steps_per_second_and_where_the_time_went():
  clock = Clock()
  meter = metering.Meter(batch_size=8, clock=clock)
  batch = {'image': np.zeros((8, 8, 8, 1), np.uint8)}
  _steps(meter, clock, batch, 1, wait_s=30.0)  # the compile: left out, whatever it took
  clock.now += 0.4                             # the loop's own bookkeeping counts as wall time
  _steps(meter, clock, batch, 4)
  row = meter.row()
  assert row['steps_per_sec'] == pytest.approx(4 / 2.8)
  assert row['examples_per_sec'] == pytest.approx(8 * 4 / 2.8)
  assert (row['input_ms'], row['dispatch_ms'], row['wait_ms']) == pytest.approx((100, 200, 300))
  assert 'flops_per_sec' not in row and 'tokens_per_sec' not in row  # no cost: no such figures
  # row() starts a new window; reset() leaves out time that is not training (an eval).
  _steps(meter, clock, batch, 2)
  clock.now += 50.0
  meter.reset()
  _steps(meter, clock, batch, 1)
  assert meter.row()['steps_per_sec'] == pytest.approx(1 / 0.6)
  assert meter.row() == {}  # an empty window has no figures


def test_flops_and_mfu_are_the_counted_step_over_the_window():
  config = config_lib.default_config()
  config.train.batch_size = 4
  task = ClassificationTask(models.build('cnn', num_classes=3))
  batch = {'image': np.zeros((4, 8, 8, 1), np.uint8), 'label': np.zeros((4,), np.int32)}
  exp = experiment.Experiment(config, dataset=None, splits={}, tokenizer=None, task=task,
                              init_task=task, tx=optax.sgd(0.1))
  runner = parallel.make_runner(config)
  state = runner.init(functools.partial(init_state, task=task, tx=exp.tx),
                      jax.random.PRNGKey(0), batch)
  cost = metering.StepCost(train.train_step, exp, state, runner)
  tokens, flops = cost(batch)
  assert tokens == 0 and flops > 0 and cost.peak > 0
  clock = Clock()
  meter = metering.Meter(batch_size=4, cost=cost, clock=clock)
  _steps(meter, clock, batch, 3)
  row = meter.row()
  # FLOP/s over steps/s is the step's count, however long the steps took.
  assert row['flops_per_sec'] / row['steps_per_sec'] == pytest.approx(flops)
  assert row['mfu'] == pytest.approx(row['flops_per_sec'] / cost.peak)
