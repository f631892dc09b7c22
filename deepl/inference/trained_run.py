"""A trained run's pieces for inference: its config, tokenizer, task and parameters.

  run = trained_run.load('runs/dates_seq2seq')
  run.task.model, run.variables, run.tokenizer, run.step

`deepl sample` and `deepl predict` read runs through here. The task (and its
model) is built exactly as `deepl train` built it, from the run's own
config.json and saved tokenizer, without reading its data: the number of
classes comes from the data set's name.
"""

import dataclasses
from typing import Any

from deepl import checkpoint
from deepl import workdir as workdir_lib
from deepl import config as config_lib
from deepl import experiment
from deepl import kernels
from deepl.data import datasets
from deepl.data import tokenizers

# The tasks `deepl predict` runs on a user's input.
PREDICTS = ('seq2seq', 'classification', 'ctc')


@dataclasses.dataclass(frozen=True)
class TrainedRun:
  config: Any
  tokenizer: Any  # None for image runs and speech classifiers
  image_shape: tuple[int, int, int] | None  # (H, W, C) of an image run's data
  task: Any       # task.model is the model
  variables: Any  # {'params': ..., and e.g. 'batch_stats': ...}, numpy arrays
  step: int
  is_audio: bool = False  # a speech run: its inputs are waveforms
  # Encoded-image runs (image_folder): how an image file becomes a model input
  # (the eval crop and normalisation); None for arrays.
  preprocess: Any = None
  label_names: tuple[str, ...] | None = None


def load(workdir: str, config=None, step: int | None = None) -> TrainedRun:
  """Checkpoint `step` (default the newest that reads) of the run in `workdir`.

  `config` is the run's config.json where the caller has read it already.
  """
  config = config or config_lib.load_run_config(workdir)
  kernels.resolve_config(config, again=True)  # this process's platform picks
  image_shape, num_classes, label_names, preprocess = experiment.declared_data(config, workdir)
  # The builder's declared features (no data is read or prepared): a speech run's inputs
  # are waveforms, and every run on texts or transcripts saved its tokenizer (one without
  # fails here, saying so).
  features = ({} if config.data.name in datasets.OWN_DATA else
              datasets.get_builder(config.data.name, config.data.data_dir).info.features)
  is_audio = 'audio' in features
  has_texts = not image_shape and (not is_audio or 'text' in features)
  tokenizer = tokenizers.load(workdir_lib.path(workdir) / 'tokenizer') if has_texts else None
  task, _ = experiment.make_task(config, num_classes=num_classes, tokenizer=tokenizer)
  step, variables = checkpoint.read_variables(workdir_lib.path(workdir) / 'checkpoints', step)
  return TrainedRun(config, tokenizer, image_shape, task, variables, step, is_audio, preprocess,
                    label_names)
