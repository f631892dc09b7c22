"""The task protocol: what differs between kinds of problem, and nothing else.

The one train loop (deepl/train.py) and the experiment builder
(deepl/experiment.py) only call these methods; they never ask which task
runs. A new kind of problem is a subclass in its own file here plus one line
in the registry (deepl/tasks/__init__.py).

Before any model exists (class methods, from the config):
  OPTIONS          the task's own settings and their defaults; a config sets
                   them as `task_options.<name>` (deepl/config.py builds that
                   node from every registered task's OPTIONS).
  check            bad option values and config keys the task reads differently.
  make_sources     the split name -> source dict the pipeline batches, made from
                   the data set and (text) the run's tokenizer.
  model_defaults   model fields the data decides (num_classes, vocab_size, ...).
  batch_spec       the shapes of one example, for synthetic batches (tools/).
  from_config      the task itself, around a built model.

In the jitted step (pure functions of arrays):
  init, loss, eval_sums; then, on the host, summarize and tokens_per_example.
"""

import abc
from typing import Any, ClassVar

import jax.numpy as jnp

from deepl.errors import UserError
from deepl.tasks import common


class Task(abc.ABC):
  """One kind of problem around one model; see the module docstring."""

  OPTIONS: ClassVar[dict[str, Any]] = {}
  # The metric sum the train loss is a mean over: examples, or (seq2seq) target tokens.
  LOSS_PER: ClassVar[str] = 'count'

  def __init__(self, model):
    self.model = model

  # --- From the config -------------------------------------------------------

  @classmethod
  def options(cls, config) -> dict:
    """This task's options as the config sets them."""
    return {name: config.task_options[name] for name in cls.OPTIONS}

  @classmethod
  def check(cls, config) -> None:
    """Raises UserError for a value this task cannot run with."""

  @classmethod
  @abc.abstractmethod
  def make_sources(cls, config, dataset, tokenizer) -> dict:
    """split name -> a source (`len`, `gather`) of batches in this task's batch spec."""

  @classmethod
  def model_defaults(cls, config, *, num_classes: int | None, tokenizer) -> dict:
    """Model fields the data decides; the builder sets those the model has and the config leaves."""
    del config, num_classes
    return {} if tokenizer is None else {'vocab_size': tokenizer.vocab_size}

  @classmethod
  @abc.abstractmethod
  def batch_spec(cls, config, *, image_shape, num_classes: int | None,
                 vocab_size: int | None) -> dict:
    """field -> (shape, kind, low, high) of one example at its longest.

    kind is a numpy dtype, or 'token' for int32 token ids (which repeat as
    text's do); values lie in [low, high).
    """

  @classmethod
  def from_config(cls, model, config, tokenizer) -> 'Task':
    del tokenizer
    return cls(model, **cls.options(config))

  @staticmethod
  def require_text(config, dataset) -> None:
    if not dataset.is_text:
      raise UserError(f"task {config.task!r} needs a text data set; {dataset.name} holds "
                      "images: use task='classification'")

  # --- In the step -----------------------------------------------------------

  @abc.abstractmethod
  def model_inputs(self, batch) -> tuple:
    """The positional arguments of the model's call on `batch`."""

  def init(self, rng, batch) -> dict:
    """The model's variables: {'params': ..., and e.g. 'batch_stats': ...}."""
    return common.init_variables(self.model, rng, *self.model_inputs(batch))

  @abc.abstractmethod
  def train_sums(self, params, model_state, batch, rng) -> tuple[dict, Any]:
    """(metric sums, updated model state) of a training call; `rng` drives dropout and noise."""

  def loss(self, params, model_state, batch, rng):
    """The mean loss to differentiate, and (metric sums, updated model state)."""
    sums, new_model_state = self.train_sums(params, model_state, batch, rng)
    return sums['loss'] / jnp.maximum(sums[self.LOSS_PER], 1.0), (sums, new_model_state)

  @abc.abstractmethod
  def eval_sums(self, params, model_state, batch) -> dict:
    """Metric sums of an evaluation call; rows whose 'mask' is 0 count for nothing."""

  def summarize(self, means: dict) -> dict:
    """Per-'count' means (deepl.metrics.summarize) -> the metrics a row shows."""
    return means

  def tokens_per_example(self, example) -> int | None:
    """For tokens/s: the (padded) tokens one example of `example`'s shape costs; None: not text."""
    del example
    return None
