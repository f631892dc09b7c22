"""Tasks by name: what differs between kinds of problem (deepl/tasks/base.py).

A task turns (model, batch) into a loss and metric sums and says what it
makes of a data set; the one train loop in `deepl.train` does everything
else. A new task is a `Task` subclass in its own file here and one entry in
`TASKS`: nothing else in deepl names tasks.
"""

from deepl.errors import suggest
from deepl.errors import UserError
from deepl.tasks.base import Task
from deepl.tasks.causal_lm import CausalLMTask
from deepl.tasks.classification import ClassificationTask
from deepl.tasks.ctc import CTCTask
from deepl.tasks.masked_lm import MaskedLMTask
from deepl.tasks.seq2seq import Seq2SeqTask

TASKS = {'classification': ClassificationTask, 'causal_lm': CausalLMTask,
         'masked_lm': MaskedLMTask, 'seq2seq': Seq2SeqTask, 'ctc': CTCTask}


def get(name: str) -> type[Task]:
  if name not in TASKS:
    raise UserError(f"unknown task '{name}'{suggest(name, TASKS)}; known: {', '.join(TASKS)}")
  return TASKS[name]


def option_defaults() -> dict:
  """Every registered task's options with their defaults: the config's `task_options`.

  Tasks that share an option name must share its default, or a config could
  not say which one it left alone.
  """
  out = {}
  for name, task in TASKS.items():
    for option, default in task.OPTIONS.items():
      if option in out and out[option] != default:
        raise ValueError(f'task {name!r} gives option {option!r} the default {default!r}; '
                         f'another task gives it {out[option]!r}')
      out[option] = default
  return out
