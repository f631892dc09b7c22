"""Models by name: a plain dict from name to flax.linen Module class.

  from deepl import models
  model = models.build('resnet20', num_classes=100, dtype='bfloat16')

Every Module's configurable fields are its dataclass fields, so a config can
set any of them and a typo is caught here with a suggestion, before any JAX
code runs. A new family registers by adding its classes to `MODELS`.

The model files themselves import only jax/flax/numpy and can be used without
this registry; only this file knows about `UserError`.
"""

import dataclasses

from deepl.errors import suggest
from deepl.errors import UserError
from deepl.models import bert
from deepl.models import cnn
from deepl.models import gpt
from deepl.models import resnet
from deepl.models import rnn
from deepl.models import seq2seq
from deepl.models import speech
from deepl.models import transformer
from deepl.models import vit

MODELS = {
    'cnn': cnn.CNN,
    'resnet18': resnet.ResNet18,
    'resnet34': resnet.ResNet34,
    'resnet50': resnet.ResNet50,
    'resnet20': resnet.ResNet20,
    'resnet56': resnet.ResNet56,
    'rnn_classifier': rnn.RNNClassifier,
    'rnn_lm': rnn.RNNLM,
    'gpt': gpt.GPT,
    'vit': vit.ViT,
    'seq2seq': seq2seq.EncoderDecoder,
    'bert_mlm': bert.BertMLM,
    'bert_classifier': bert.BertClassifier,
    'bert_token_classifier': bert.BertTokenClassifier,
    'speech_cnn': speech.SpeechCNN,
    'speech_ctc': speech.SpeechCTC,
}

# Fields every flax Module has that describe its place in a module tree, not
# the model.
_FLAX_INTERNAL_FIELDS = frozenset({'parent', 'name'})


def names() -> list[str]:
  """The registered model names, sorted."""
  return sorted(MODELS)


def get(name: str) -> type:
  """The Module class registered as `name`; UserError if there is none."""
  if name not in MODELS:
    raise UserError(f'unknown model {name!r}{suggest(name, MODELS) or ";"} '
                    f'known: {", ".join(names())}')
  return MODELS[name]


def field_names(name: str) -> list[str]:
  """The fields of model `name` that a config may set, in declaration order."""
  return [f.name for f in _fields(get(name))]


def check_config(name: str, kwargs: dict) -> list[str]:
  """The fields of model `name`, once `kwargs` are checked against them.

  Needs no data, so a run can call it before preparing any.

  Raises:
    UserError: for an unknown model or field, a size that is not positive
      (a layer count, width, ...; 0 where 0 is the field's default, meaning
      "derived"), a dropout rate outside [0, 1), or a width (given or
      default) that does not split into num_heads heads.
  """
  fields = _fields(get(name))
  known = [f.name for f in fields]
  for key in kwargs:
    if key not in known:
      raise UserError(
          f'unknown field {key!r} for model {name!r}'
          f'{suggest(key, known) or ";"} fields: {", ".join(known)}')
  value = {f.name: kwargs.get(f.name, f.default) for f in fields}
  for f in fields:  # the models would fail deep in init, or (dropout) train on nonsense
    problem = _bad_value(f, value[f.name])
    if problem:
      raise UserError(f'model {name!r}: {f.name}={value[f.name]!r} {problem}')
  if 'num_heads' in known and 'width' in known and dataclasses.MISSING not in (
      value['width'], value['num_heads']):
    try:  # the models' own check would raise deep in init
      transformer.check_heads(value['width'], value['num_heads'])
    except ValueError as err:
      raise UserError(f'model {name!r}: {err}') from None
  return known


def build(name: str, **kwargs):
  """An instance of model `name` with `kwargs` as its fields.

  Raises:
    UserError: what `check_config` raises, or a required field without a value.
  """
  check_config(name, kwargs)
  missing = [f.name for f in _fields(get(name)) if f.name not in kwargs and
             f.default is dataclasses.MISSING and
             f.default_factory is dataclasses.MISSING]
  if missing:
    raise UserError(f'model {name!r} needs a value for: {", ".join(missing)}')
  return get(name)(**kwargs)


def _bad_value(field: dataclasses.Field, value) -> str | None:
  """What is wrong with `value` for a size or dropout field, or None."""
  if field.name == 'dropout':
    ok = isinstance(value, (int, float)) and 0 <= value < 1
    return None if ok else 'must be a rate in [0, 1)'
  least = 0 if field.default == 0 else 1
  if isinstance(value, int) and not isinstance(value, bool):
    sizes = [value]
  elif isinstance(value, (tuple, list)) and value and all(
      isinstance(v, int) and not isinstance(v, bool) for v in value):
    sizes = list(value)  # stage sizes, widths
  else:
    return None
  if min(sizes) >= least:
    return None
  return 'must be >= 0 (0: derived)' if least == 0 else 'must be positive'


def _fields(cls) -> list[dataclasses.Field]:
  return [f for f in dataclasses.fields(cls)
          if f.init and f.name not in _FLAX_INTERNAL_FIELDS]




# Registers kernels='cpu' (deepl/kernels/cpu), so every model built through
# deepl.models can take it; the models themselves import only jax, flax and
# numpy. Last: the kernels import this package's layer registry.
import deepl.kernels.cpu  # pylint: disable=g-import-not-at-top,unused-import,wrong-import-position
