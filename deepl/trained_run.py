"""A trained run's pieces for inference: its config, tokenizer, task and parameters.

  run = trained_run.load('runs/dates_seq2seq')
  run.task.model, run.params, run.tokenizer, run.step

`deepl sample` and `deepl predict` read runs through here. The task (and its
model) is built exactly as `deepl train` built it, from the run's own
config.json and saved tokenizer, without reading its data: the number of
classes comes from the data set's name.
"""

import dataclasses
import os
from typing import Any

from deepl import checkpoint
from deepl import config as config_lib
from deepl import train
from deepl.data import datasets
from deepl.data import tokenizers

# The tasks `deepl predict` runs on a user's input (text classifiers only, of 'classification').
PREDICTS = ('seq2seq', 'classification')


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  config: Any
  tokenizer: Any  # None for image runs
  task: Any       # task.model is the model
  params: Any     # numpy arrays
  step: int


def load(workdir: str, config=None, step: int | None = None) -> TrainedRun:
  """Checkpoint `step` (default the newest that reads) of the run in `workdir`.

  `config` is the run's config.json where the caller has read it already.
  """
  config = config or config_lib.load_run_config(workdir)
  tokenizer_dir = os.path.join(workdir, 'tokenizer')
  # Only image classifiers have none: any other run without one fails here, saying so.
  tokenizer = (tokenizers.load(tokenizer_dir)
               if os.path.isdir(tokenizer_dir) or config.task != 'classification' else None)
  task, _ = train.make_task(config, datasets.NUM_CLASSES.get(config.data.name), tokenizer)
  step, params = checkpoint.restore_params(os.path.join(workdir, 'checkpoints'), step)
  return TrainedRun(config, tokenizer, task, params, step)
