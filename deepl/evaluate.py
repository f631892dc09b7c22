"""`deepl evaluate`: a finished (or running) run's checkpoint on any split.

  deepl evaluate --workdir=runs/dates_seq2seq --split=test
  deepl evaluate --workdir=runs/sst2_bert --step=1000

The run's own config.json, tokenizer and eval step are used, so the numbers
are the ones `deepl train` would log for that split. Nothing in the workdir
is written.
"""

import functools
import os

import numpy as np

from deepl import checkpoint as checkpoint_lib
from deepl import config as config_lib
from deepl import kernels
from deepl import parallel
from deepl import train
from deepl.errors import UserError


def evaluate_run(workdir: str, *, split: str | None = None,
                 step: int | None = None) -> tuple[str, int, dict]:
  """(split, step, metrics) of checkpoint `step` (default latest) on `split`.

  `split` defaults to the split `deepl train` evaluates on.
  """
  config = config_lib.load_run_config(workdir)
  kernels.resolve_config(config, again=True)  # this process's platform picks
  # Whatever mesh trained it, the run is read onto this process's devices, data parallel.
  runner = parallel.make_runner(config.parallel, kernels.compiler_options(config.kernels),
                                model=config.model.name)
  setup = train.build(config, workdir)
  split = split or setup.dataset.eval_split
  if split not in setup.splits:
    raise UserError(f'{config.data.name} has no split {split!r}: use one of '
                    f'{", ".join(setup.splits)}')
  labels = getattr(setup.splits[split], 'labels', None)
  if labels is not None and len(labels) and (np.asarray(labels) < 0).all():
    # TFDS marks hidden labels -1 (GLUE's test splits): the metrics would be noise.
    raise UserError(f'the {split} split of {config.data.name} has no labels (all -1: '
                    f'held back by its authors); evaluate on {setup.dataset.eval_split}')
  saveable = runner.to_saveable(train.initial_state(setup, config, runner))
  step, saved = checkpoint_lib.restore_state(
      os.path.join(workdir, 'checkpoints'), runner.abstract(saveable), step)
  p_eval_step = runner.compile_eval(functools.partial(train.eval_step, task=setup.task))
  metrics = train.evaluate_split(
      runner.from_saveable(saved), source=setup.splits[split],
      batch_size=config.eval.batch_size or config.train.batch_size, task=setup.task,
      runner=runner, p_eval_step=p_eval_step)
  return split, step, metrics


def format_metrics(split: str, step: int, metrics: dict) -> str:
  shown = ', '.join(f'{k} {v:.4f}' for k, v in metrics.items())
  return f'{split} at step {step}: {shown}'
