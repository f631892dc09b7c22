"""The eval step and a whole split's metrics, for the train loop and `deepl evaluate` alike.

Apart from the loop (deepl/train.py), so that evaluating a saved run needs no
trainer: the numbers `deepl evaluate` prints are the ones training logged.
"""

import functools

import jax

from deepl import data as data_lib
from deepl import metrics as metrics_lib


def eval_step(state, batch, *, task, axis_name=None):
  """The task's metric sums of one batch. Pure; under pmap, summed over its axis."""
  sums = task.eval_sums(state.params, state.model_state, batch)
  return jax.lax.psum(sums, axis_name) if axis_name else sums


class Evaluator:
  """`evaluator(state, source)`: the task's metrics over all of `source`, each example once."""

  def __init__(self, task, runner, batch_size: int, workers: int = 0):
    self._task, self._runner, self._batch_size = task, runner, batch_size
    self._workers = workers  # data.workers: decode a streamed split's batches in parallel
    self._step = runner.compile_eval(functools.partial(eval_step, task=task))

  def __call__(self, state, source) -> dict:
    sums = None
    for batch in data_lib.eval_batches(source, global_batch_size=self._batch_size,
                                       process_index=jax.process_index(),
                                       process_count=jax.process_count(),
                                       workers=self._workers):
      out = self._step(state, self._runner.put_batch(batch))
      if self._runner.sync_each_step:
        jax.block_until_ready(out)
      sums = metrics_lib.add_sums(sums, out)
    return self._task.summarize(metrics_lib.summarize(self._runner.fetch(sums)))
