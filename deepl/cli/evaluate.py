"""`deepl evaluate`: a finished (or running) run's checkpoint on any split.

  deepl evaluate --workdir=runs/dates_seq2seq --split=test
  deepl evaluate --workdir=runs/sst2_bert --step=1000

The run's own config.json, tokenizer and eval step are used, so the numbers
are the ones `deepl train` would log for that split. Nothing in the workdir
is written.
"""


import numpy as np
import optax

from deepl import checkpoint
from deepl import workdir as workdir_lib
from deepl import evaluation
from deepl import experiment
from deepl import kernels
from deepl import metrics
from deepl import parallel
from deepl.errors import UserError

READS_A_RUN = '<a run>, e.g. --workdir=runs/mnist_cnn'


def run(config, workdir: str, flags) -> None:
  print(format_result(*evaluate_run(config, workdir, split=flags.split, step=flags.step)))


def evaluate_run(config, workdir: str, *, split: str | None = None,
                 step: int | None = None) -> tuple[str, int, dict]:
  """(split, step, metrics) of the run's checkpoint `step` (default latest) on `split`.

  `config` is the run's config.json; `split` defaults to the split `deepl
  train` evaluates on.
  """
  kernels.resolve_config(config, again=True)  # this process's platform picks
  # Whatever mesh trained it, the run is read onto this process's devices, data parallel.
  runner = parallel.make_runner(config, for_training=False)
  exp = experiment.build(config, workdir)
  split = split or exp.dataset.eval_split
  if split not in exp.splits:
    raise UserError(f'{config.data.name} has no split {split!r}: use one of '
                    f'{", ".join(exp.splits)}')
  labels = getattr(exp.splits[split], 'labels', None)
  if labels is not None and len(labels) and (np.asarray(labels) < 0).all():
    # TFDS marks hidden labels -1 (GLUE's test splits): the metrics would be noise.
    raise UserError(f'the {split} split of {config.data.name} has no labels (all -1: '
                    f'held back by its authors); evaluate on {exp.dataset.eval_split}')
  # The model's variables placed as the runner places them, and no optimizer
  # state (optax.identity keeps none): evaluation reads params and model state only.
  fresh = runner.to_saveable(exp.initial_state(runner, tx=optax.identity()))
  step, variables = checkpoint.read_variables(workdir_lib.path(workdir) / 'checkpoints', step,
                                              like=fresh.params)
  params = variables.pop('params')
  state = runner.from_saveable(fresh.replace(step=np.int32(step), params=params,
                                             model_state=variables))
  evaluate = evaluation.Evaluator(exp.task, runner,
                                  config.eval.batch_size or config.train.batch_size,
                                  workers=config.data.workers)
  return split, step, evaluate(state, exp.splits[split])


def format_result(split: str, step: int, metrics_row: dict) -> str:
  return f'{split} at step {step} | {metrics.format_metrics(metrics_row)}'
