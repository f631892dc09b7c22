"""`deepl export`: a trained GPT or BERT run as a Hugging Face model folder.

  deepl export --workdir=runs/sst2_bert_hf --out=sst2_bert_hf [--step=1000]

  # then, with transformers (PyTorch):
  model = AutoModelForSequenceClassification.from_pretrained('sst2_bert_hf')
  tokenizer = AutoTokenizer.from_pretrained('sst2_bert_hf')

Writes config.json and model.safetensors (deepl.interop.huggingface.save:
transformers loads them with no missing or unexpected key), with the data
set's label names where it has them, and the run's tokenizer as AutoTokenizer
reads it where it has a Hugging Face equivalent: one read from an HF folder
(data.tokenizer or init_from 'hf:PATH'), or a char or word tokenizer, as the
same vocabulary (hf_tokenizer.from_deepl); not sentencepiece. A model with no HF equivalent (a
rotary GPT, deepl's own pre-LN BERT) is one line naming the fields that keep
it from one, and nothing is written.
"""

import os

from deepl.data import datasets
from deepl.data import hf_tokenizer
from deepl.errors import UserError
from deepl.inference import trained_run

READS_A_RUN = '<a gpt or bert run>, e.g. --workdir=runs/sst2_bert_hf'


def run(config, workdir: str, flags) -> None:
  if not flags.out:
    raise UserError('deepl export needs --out=DIR: the folder to write the Hugging Face '
                    'model into')
  print(export(config, workdir, os.path.expanduser(flags.out), step=flags.step))


def export(config, workdir: str, out: str, *, step: int | None = None) -> str:
  """Writes the run's checkpoint `step` (default the newest) into `out`; returns what it wrote.

  `config` is the run's config.json.
  """
  from deepl.interop import huggingface  # pylint: disable=g-import-not-at-top  # safetensors
  trained = trained_run.load(workdir, config, step)
  model, tokenizer = trained.task.model, trained.tokenizer
  overrides = {}
  names = datasets.LABEL_NAMES.get(config.data.name)
  if names and len(names) == getattr(model, 'num_classes', None):
    overrides = {'id2label': dict(enumerate(names)),
                 'label2id': {name: i for i, name in enumerate(names)}}
  hf = tokenizer and hf_tokenizer.from_deepl(tokenizer)
  end = hf.token_to_id(hf_tokenizer.GPT2_END) if hf else None
  if end is not None:  # a GPT-2 vocabulary: its documents' end
    overrides.update(bos_token_id=end, eos_token_id=end)
  huggingface.save(model, trained.variables, out, config_overrides=overrides)
  written = ['config.json', huggingface.WEIGHTS_FILE]
  if hf:
    hf.save_pretrained(out)
    written.append('the tokenizer')
  note = '' if hf or tokenizer is None else (
      f"; the run's {tokenizer.kind} tokenizer has no Hugging Face equivalent, so none "
      'was written')
  return (f'deepl: wrote {out}: {", ".join(written)} of {type(model).__name__} at step '
          f'{trained.step}{note}')
