"""What a run is made of, before its first step: data, tokenizer, task, model, optimizer.

  experiment = build(config, workdir)
  state = experiment.initial_state(runner)

Shared by the train loop, `deepl evaluate` and the tools (tools/benchmark.py
swaps the data for synthetic batches). Every decision that depends on the
kind of problem is the task's (deepl/tasks/): this file names none.
"""

import dataclasses
import functools
import json
import math
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

from deepl import config as config_lib
from deepl import data as data_lib
from deepl import kernels
from deepl import models
from deepl import optim
from deepl import parallel
from deepl import pretrained
from deepl import tasks
from deepl import workdir as workdir_lib
from deepl.data import datasets
from deepl.data import tokenizers
from deepl.errors import UserError
from deepl.state import init_state
from deepl.state import TrainState


@dataclasses.dataclass
class Experiment:
  config: Any
  dataset: Any      # deepl.data.Dataset (or, in tools/, a synthetic stand-in)
  splits: dict      # split name -> random-access source (len, gather), in the task's batch spec
  tokenizer: Any    # None for image data
  task: Any         # what the step runs
  init_task: Any    # the same task to initialise with (see make_task)
  tx: Any           # the optax optimizer

  @property
  def train_source(self):
    return self.splits[self.dataset.train_split]

  @property
  def eval_source(self):
    """The split training evaluates on."""
    return self.splits[self.dataset.eval_split]

  def train_iterator(self):
    """This process's train batches, endless and checkpointable (deepl.data.train_iterator)."""
    data = self.config.data
    return data_lib.train_iterator(
        self.train_source, global_batch_size=self.config.train.batch_size,
        seed=self.config.seed, sort_window=data.sort_window, prefetch=data.prefetch,
        workers=data.workers, process_index=jax.process_index(),
        process_count=jax.process_count())

  def initial_state(self, runner, tx=None) -> TrainState:
    """The state at step 0, from config.seed, placed by `runner` (tx: default the experiment's)."""
    init_fn = functools.partial(init_state, task=self.init_task, tx=tx or self.tx)
    example = self.train_source.gather(np.zeros(1, np.int64))
    return runner.init(init_fn, jax.random.PRNGKey(self.config.seed), example)


def build(config, workdir: str) -> Experiment:
  """The experiment `config` describes; runs on texts (or transcripts) keep their tokenizer
  in workdir/tokenizer."""
  dataset = _prepare_dataset(config)
  tokenizer = _tokenizer(config, dataset, workdir) if dataset.has_texts else None
  # Process 0 first: a big text_files corpus is tokenized once, then read by all.
  splits = _process_0_first(
      lambda: tasks.get(config.task).make_sources(config, dataset, tokenizer), 'sources made')
  task, init_task = make_task(config, num_classes=dataset.num_classes, tokenizer=tokenizer)
  tx = optim.make_optimizer(config.optim, config.train.num_steps)
  return Experiment(config, dataset, splits, tokenizer, task, init_task, tx)


def make_task(config, *, num_classes: int | None, tokenizer) -> tuple[Any, Any]:
  """(task, init_task): the task the step runs around its model, and the one to initialise with.

  They differ only under pmap, where BatchNorm averages statistics over the
  pmap axis, which does not exist outside pmap: init uses the same module
  minus the axis name (identical parameters). Needs no data: `deepl sample`
  and `predict` build a trained run's task from its config.json and tokenizer.
  """
  task_cls = tasks.get(config.task)
  fields = models.field_names(config.model.name)
  kwargs = config_lib.model_kwargs(config)
  for key, value in task_cls.model_defaults(config, num_classes=num_classes,
                                            tokenizer=tokenizer).items():
    if key in fields:
      kwargs.setdefault(key, value)
  if tokenizer is not None and tokenizer.vocab_size > kwargs.get('vocab_size', math.inf):
    raise UserError(f'the tokenizer has {tokenizer.vocab_size} ids, more than the model\'s '
                    f'vocab_size of {kwargs["vocab_size"]}: use the tokenizer the model was '
                    'trained with (data.tokenizer), or leave model.vocab_size to the tokenizer')
  if 'dtype' in fields:
    kwargs.setdefault('dtype', jax.numpy.dtype(config.train.compute_dtype))
  if config.train.remat:
    kwargs.setdefault('remat', True)
  # The layer set and attention as deepl.kernels resolves them for this process.
  resolved = config.copy_and_resolve_references()
  kernels.resolve_config(resolved)
  if 'kernels' in fields:
    kwargs.setdefault('kernels', resolved.kernels)
  if 'attention_implementation' in fields:
    kwargs.setdefault('attention_implementation', resolved.attention)
  init_task = task_cls.from_config(models.build(config.model.name, **kwargs), config, tokenizer)
  if config.parallel == 'pmap' and 'bn_axis_name' in fields:
    model = models.build(config.model.name, **kwargs, bn_axis_name=parallel.PMAP_AXIS)
    return task_cls.from_config(model, config, tokenizer), init_task
  return init_task, init_task


CLASSES_FILE = 'classes.json'


def save_classes(names, workdir: str) -> None:
  """workdir/classes.json: the class names in label order, for `deepl predict`."""
  (workdir_lib.path(workdir) / CLASSES_FILE).write_text(json.dumps(list(names), indent=1))


def load_classes(workdir: str):
  """The class names a run saved, else None."""
  path = workdir_lib.path(workdir) / CLASSES_FILE
  return json.loads(path.read_text()) if path.exists() else None


def declared_data(config, workdir: str | None = None):
  """(image shape or None, number of classes or None, class names or None, ImagePreprocess or
  None) of config's data, from its builder's declared features: nothing is read or prepared.

  An image_folder's classes are those the run in `workdir` saved (else
  config.model.num_classes); its images are stored encoded, and the
  ImagePreprocess (eval crop) makes them the model's input.
  """
  name = config.data.name
  features = ({} if name in datasets.OWN_DATA else datasets.get_builder(
      name, config.data.data_dir, config.data.manual_dir).info.features)
  image_shape = tuple(features['image'].shape) if 'image' in features else None
  preprocess = None
  if image_shape == ():
    preprocess = image_preprocess(config).replace(augment='none')
    image_shape = preprocess.shape
  names = datasets.LABEL_NAMES.get(name) or (load_classes(workdir) if workdir else None)
  num_classes = datasets.NUM_CLASSES.get(name) or (len(names) if names else None)
  if image_shape and not num_classes:
    num_classes = config.model.get('num_classes')
  return image_shape, num_classes, tuple(names) if names else None, preprocess


def image_preprocess(config) -> data_lib.ImagePreprocess:
  """How encoded images become arrays for this config (the train split's augmentation)."""
  data = config.data
  augment = data.augment if data.augment in data_lib.HOST_AUGMENTATIONS else 'none'
  return data_lib.ImagePreprocess(size=data.image_size, augment=augment, normalize=data.normalize)


def _prepare_dataset(config):
  """Process 0 prepares first, so hosts sharing a data_dir never race on it."""
  data = config.data
  get = functools.partial(
      data_lib.get_dataset, data.name, data_dir=data.data_dir, manual_dir=data.manual_dir,
      in_memory_max_mb=data.in_memory_max_mb, image=image_preprocess(config),
      max_unreadable=data.max_unreadable, tokenizer_sample_mb=data.tokenizer_sample_mb)
  return _process_0_first(get, 'dataset prepared')


def _process_0_first(make, what: str):
  """make() on process 0, then, once it is done, on the others (which find its files)."""
  if jax.process_count() == 1:
    return make()
  made = make() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices(f'deepl: {what}')
  return made if jax.process_index() == 0 else make()


def _tokenizer(config, dataset, workdir: str):
  """The run's tokenizer: the one in workdir/tokenizer, else init_from's, else built from train.

  A fine-tuning run must see the token ids its parameters were trained on;
  a resumed run, the ids it started with.
  """
  path = workdir_lib.path(workdir) / 'tokenizer'
  if path.is_dir():
    return tokenizers.load(path)
  tokenizer = pretrained.tokenizer(config)
  if tokenizer is None:
    tokenizer = tokenizers.build(
        config.data.tokenizer, dataset.texts(dataset.train_split),
        vocab_size=config.data.vocab_size, min_count=config.data.min_count)
  _save_tokenizer(tokenizer, path)
  return tokenizer


def _save_tokenizer(tokenizer, path) -> None:
  """Process 0 saves aside and renames: other processes see all of it or none."""
  if jax.process_index() != 0:
    return
  aside = path.parent / (path.name + '.tmp')
  if aside.exists():
    aside.rmtree()
  tokenizer.save(aside)
  aside.rename(path)
