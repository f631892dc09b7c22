"""Where a fresh run's parameters and tokenizer come from: config.init_from.

  init_from='runs/x'        another deepl run, or one of its checkpoints/<step>
                            folders (deepl.checkpoint.init_from)
  init_from='hf:PATH'       a Hugging Face GPT-2 or BERT folder
                            (deepl.interop.huggingface)

Either way every parameter whose path and shape match is copied, new heads
keep their fresh init, and the run prints which. The source's tokenizer
comes along (a run's workdir/tokenizer, an HF folder's tokenizer files)
unless data.tokenizer names an HF folder of its own. An HF folder also gives the model the fields the config
leaves out (`resolve_config`, before the run writes its config.json, so the
run's own files describe its model without the folder).
"""

from deepl import checkpoint
from deepl import models
from deepl.data import hf_tokenizer
from deepl.data import tokenizers
from deepl.errors import UserError


def hf_folder(config) -> str | None:
  """PATH of init_from='hf:PATH', else None."""
  return hf_tokenizer.folder_of(config.init_from)


def resolve_config(config) -> None:
  """Fills config.model from init_from='hf:PATH' where the config leaves a field out.

  UserError if the folder is no model of this kind, or a field the config
  sets differs from the folder's in a way that changes the parameters.
  """
  folder = hf_folder(config)
  if folder is None:
    return
  from deepl.interop import huggingface  # pylint: disable=g-import-not-at-top  # safetensors
  given = {key: value for key, value in config.model.items() if key != 'name'}
  fields = huggingface.fields_for(folder, models.get(config.model.name), given)
  huggingface.check_weights(folder)
  with config.unlocked():
    for key, value in fields.items():
      if key not in given:
        config.model[key] = value


def init_params(config, model, params):
  """(params with init_from's copied in, keystr paths of those left fresh)."""
  folder = hf_folder(config)
  if folder is None:
    return checkpoint.init_from(config.init_from, params)
  from deepl.interop import huggingface  # pylint: disable=g-import-not-at-top  # safetensors
  return huggingface.load_params(folder, model, params)


def tokenizer(config):
  """init_from's tokenizer; None where the run builds its own from data.tokenizer.

  data.tokenizer='hf:PATH' is the run's own choice, and wins. An HF model
  folder without a tokenizer is refused otherwise: a tokenizer built from the
  data would feed its embeddings ids that mean nothing to them.
  """
  if not config.init_from or hf_tokenizer.folder_of(config.data.tokenizer):
    return None
  folder = hf_folder(config)
  if folder is None:
    saved = checkpoint.tokenizer_dir(config.init_from)
    return saved and tokenizers.load(saved)
  if not hf_tokenizer.has_tokenizer(folder):
    raise UserError(f'init_from={config.init_from} holds no tokenizer, and the model\'s token '
                    'ids need its own: save the tokenizer into the folder, or name one with '
                    "data.tokenizer='hf:PATH'")
  return hf_tokenizer.from_folder(folder)
