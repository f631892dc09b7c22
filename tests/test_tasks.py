"""The task protocol: a fifth task added in deepl/tasks/ alone trains end to end;
task_options are each task's own; config.json files of earlier runs still load."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepl import checkpoint
from deepl import config as config_lib
from deepl import metrics
from deepl import tasks
from deepl import train
from deepl.errors import UserError
from deepl.tasks import common
from deepl.tasks.classification import ClassificationTask
from tests import helpers

pytestmark = pytest.mark.usefixtures('fast_compile')  # short runs, compared among themselves


class DigitResidueTask(ClassificationTask):
  """A fifth task, as a user would add one: the digit's residue modulo an option."""

  OPTIONS = {'modulus': 2}

  def __init__(self, model, *, modulus: int = 2):
    super().__init__(model)
    self.modulus = modulus

  @classmethod
  def from_config(cls, model, config, tokenizer):
    del tokenizer
    return cls(model, **cls.options(config))

  @classmethod
  def check(cls, config):
    if config.task_options.modulus < 2:
      raise UserError(f'task_options.modulus={config.task_options.modulus}: use 2 or more')

  @classmethod
  def model_defaults(cls, config, *, num_classes, tokenizer):
    return {'num_classes': config.task_options.modulus}

  def _batch(self, batch):
    return {**batch, 'label': batch['label'] % self.modulus}

  def train_sums(self, params, model_state, batch, rng):
    return super().train_sums(params, model_state, self._batch(batch), rng)

  def eval_sums(self, params, model_state, batch):
    return super().eval_sums(params, model_state, self._batch(batch))


@pytest.fixture
def residue_task(monkeypatch):
  monkeypatch.setitem(tasks.TASKS, 'digit_residue', DigitResidueTask)


def _config(**task_options):
  config = config_lib.default_config()
  config.update_from_flattened_dict({f'task_options.{k}': v for k, v in task_options.items()})
  return config


def test_a_fifth_task_trains_end_to_end(residue_task, tfds_data_dir, tmp_path, capsys):
  config = _config(modulus=3)
  config.task = 'digit_residue'
  config.data.data_dir = str(tfds_data_dir)
  config.train.num_steps, config.train.log_every_steps = 60, 20
  config.eval.every_steps = config.checkpoint.every_steps = 60
  config_lib.validate(config)
  final = train.train_and_evaluate(config, str(tmp_path))
  assert set(final) == {'loss', 'accuracy'}
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert saved['task'] == 'digit_residue' and saved['task_options'] == {'modulus': 3}
  loss = [r['loss'] for r in metrics.read_rows(str(tmp_path)) if r['split'] == 'train']
  assert len(loss) == 3 and loss[-1] < loss[0]
  # Off a terminal, the rows are plain lines: no progress bar in a log.
  out = capsys.readouterr()
  rows = [l for l in out.out.splitlines() if l.startswith('step ')]
  assert rows[0].startswith('step 20/60 | loss ') and rows[-1].startswith('step 60/60 | test | ')
  assert '\r' not in out.out + out.err and '%|' not in out.err
  # The task decided the model's classes: three.
  _, variables = checkpoint.read_variables(str(tmp_path / 'checkpoints'))
  assert {x.shape[-1] for x in jax.tree.leaves(variables['params']) if x.ndim == 1} >= {3}


def test_task_options_are_the_union_of_the_tasks(residue_task):
  options = config_lib.default_config().task_options.to_dict()
  assert options == {'label_smoothing': 0.0, 'mask_rate': 0.15, 'beam_size': 1,
                     'length_penalty': 0.6, 'modulus': 2}


def test_tasks_must_agree_on_a_shared_option_default(monkeypatch):
  class Other(ClassificationTask):
    OPTIONS = {'beam_size': 4}
  monkeypatch.setitem(tasks.TASKS, 'other', Other)
  with pytest.raises(ValueError, match="option 'beam_size'"):
    tasks.option_defaults()


@pytest.mark.parametrize('task,options,needle', [
    ('classification', dict(beam_size=4),
     "config.task_options.beam_size=4: task 'classification' does not take it (its options: "
     'label_smoothing)'),
    ('classification', dict(label_smoothing=1.0), 'task_options.label_smoothing=1.0: use a share'),
    ('masked_lm', dict(length_penalty=1.0),
     "task 'masked_lm' does not take it (its options: mask_rate)"),
    ('seq2seq', dict(beam_size=0), 'task_options.beam_size=0: use 1'),
    ('seq2seq', dict(length_penalty=float('nan')),
     'task_options.length_penalty=nan must be a finite number'),
    ('masked_lm', dict(mask_rate=0.0), 'task_options.mask_rate=0.0: use a share of the tokens'),
])
def test_bad_task_options(task, options, needle):
  config = _config(**options)
  config.task = task
  with pytest.raises(UserError, match=re.escape(needle)):
    config_lib.validate(config)


def test_task_options_from_the_command_line():
  result = helpers.deepl_here('--config.task_options.beam_size=4')
  assert result.returncode == 2 and result.stderr.count('\n') == 1, result.stderr
  assert "task 'classification' does not take it" in result.stderr
  moved = helpers.deepl_here('--config.eval.beam_size=4')
  assert moved.returncode == 2 and "'eval.beam_size' is now 'task_options.beam_size'" in (
      moved.stderr), moved.stderr


def test_config_json_records_the_task_own_options():
  config = _config(mask_rate=0.4)
  config.task = 'masked_lm'
  assert json.loads(config_lib.to_json(config))['task_options'] == {'mask_rate': 0.4}
  config.task = 'classification'
  assert json.loads(config_lib.to_json(config))['task_options'] == {'label_smoothing': 0.0}


# What deepl wrote before task_options and data.max_source (a dates run's config.json).
OLD_SEQ2SEQ = {
    'task': 'seq2seq', 'model': {'name': 'seq2seq', 'num_layers': 2, 'num_heads': 4, 'width': 64},
    'data': {'name': 'dates', 'max_length': 20, 'max_target': 18, 'tokenizer': 'char'},
    'train': {'mask_rate': 0.15, 'num_steps': 300},
    'eval': {'beam_size': 3, 'length_penalty': 0.8, 'every_steps': 300},
}


def test_an_earlier_config_json_loads(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps(OLD_SEQ2SEQ))
  config = config_lib.load_run_config(str(tmp_path))
  assert config.data.max_source == 20 and config.data.max_target == 18
  assert (config.task_options.beam_size, config.task_options.length_penalty) == (3, 0.8)
  assert 'beam_size' not in config.eval and 'mask_rate' not in config.train
  config_lib.validate(config)
  # data.max_length kept its meaning for the other tasks.
  classifier = dict(OLD_SEQ2SEQ, task='classification')
  (tmp_path / 'config.json').write_text(json.dumps(classifier))
  assert config_lib.load_run_config(str(tmp_path)).data.max_source == 64


def test_every_task_shares_the_cross_entropy_sums():
  logits = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.25, 0.25]]))
  sums = common.cross_entropy_sums(logits, jnp.array([0, 1, 2]), jnp.array([1.0, 1.0, 0.0]))
  assert float(sums['count']) == 2 and float(sums['accuracy']) == 1
  np.testing.assert_allclose(sums['loss'], -np.log(0.7) - np.log(0.3), rtol=1e-6)
  for name, task in tasks.TASKS.items():
    assert issubclass(task, tasks.Task), name
  # Label smoothing 0.1 over 3 classes: targets (0.9 + 0.1/3) on the label, 0.1/3 elsewhere.
  smoothed = common.cross_entropy_sums(logits[:1], jnp.array([0]), jnp.ones(1), label_smoothing=0.1)
  targets = np.array([0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3])
  np.testing.assert_allclose(smoothed['loss'], -(targets * np.log([0.7, 0.2, 0.1])).sum(), rtol=1e-6)


def test_every_task_declares_its_batch_spec():
  config = config_lib.default_config()
  config.data.max_source, config.data.max_target, config.data.context = 7, 5, 9
  specs = {name: task.batch_spec(config, image_shape=None, num_classes=2, vocab_size=11)
           for name, task in tasks.TASKS.items()}
  assert specs['causal_lm'] == {'tokens': ((10,), 'token', 1, 11)}
  assert specs['seq2seq']['inputs'][0] == (7,) and specs['seq2seq']['targets'][0] == (7,)
  assert set(specs['classification']) == {'tokens', 'length', 'label'}
  image = tasks.get('classification').batch_spec(config, image_shape=(8, 8, 1), num_classes=10,
                                                  vocab_size=None)
  assert image['image'][0] == (8, 8, 1) and image['label'][3] == 10
