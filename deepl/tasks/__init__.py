"""Tasks: what differs between kinds of problem — loss, metrics, batch spec.

A task turns (model, batch) into a loss and metric sums; the one train loop in
`deepl.train` does everything else.
"""

from deepl.errors import suggest
from deepl.errors import UserError
from deepl.tasks.causal_lm import CausalLMTask
from deepl.tasks.classification import ClassificationTask
from deepl.tasks.masked_lm import MaskedLMTask
from deepl.tasks.seq2seq import Seq2SeqTask

_TASKS = {'classification': ClassificationTask, 'causal_lm': CausalLMTask,
          'masked_lm': MaskedLMTask, 'seq2seq': Seq2SeqTask}


def get(name: str):
  if name not in _TASKS:
    raise UserError(f"unknown task '{name}'{suggest(name, _TASKS)}; known: {', '.join(_TASKS)}")
  return _TASKS[name]
