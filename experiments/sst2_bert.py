"""SST-2 sentiment with a small BERT: masked-LM pre-training, then fine-tuning.

Pre-train the encoder on SST-2's own train sentences (labels unused), then
fine-tune the same encoder with a [CLS] classifier head, starting from the
pre-trained parameters and tokenizer (only the pooler and head start fresh):

  deepl train --config=experiments/sst2_bert.py:pretrain \
      --workdir=runs/sst2_bert_pretrain
  deepl train --config=experiments/sst2_bert.py --workdir=runs/sst2_bert
  # offline, from the GLUE TSVs: add to both
  #   --config.data.manual_dir=../shared/data/sst2
  # a pre-training run elsewhere: --config.init_from=<its workdir>

The encoder is BERT-Mini's shape (4 layers, 4 heads, width 256) with a
64-token context: about 3.2M parameters plus the word embeddings.

Measured here: not yet measured end to end (issue 4 is open)
"""

from ml_collections import config_dict

from deepl.config import default_config

# The encoder, identical in both variants: init_from copies parameters by path
# and shape, so any difference here would leave them fresh or fail.
ENCODER = {'num_layers': 4, 'num_heads': 4, 'width': 256, 'mlp_dim': 0,
           'max_len': 64, 'dropout': 0.1}
VARIANTS = ('pretrain', 'finetune')


def get_config(arg=None):
  variant = arg or 'finetune'
  if variant not in VARIANTS:
    raise ValueError(f'sst2_bert variant must be one of {VARIANTS}, '
                     f'got {variant!r}')
  c = default_config()
  c.data.name = 'glue/sst2'
  c.data.tokenizer = 'word'
  c.data.min_count = 2
  c.data.max_length = 64             # = max_len: every sentence fits
  c.train.batch_size = 64
  c.train.log_every_steps = 100
  c.optim.name = 'adamw'
  c.optim.b2 = 0.98
  c.optim.weight_decay = 0.01
  c.optim.schedule = 'warmup_cosine'
  c.optim.clip_norm = 1.0
  c.eval.batch_size = 64
  if variant == 'pretrain':
    c.model = config_dict.ConfigDict({'name': 'bert_mlm', **ENCODER})
    c.task = 'masked_lm'
    c.train.num_steps = 5000
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 300
    c.eval.every_steps = 1000
    c.checkpoint.every_steps = 1000
  else:
    c.model = config_dict.ConfigDict({'name': 'bert_classifier', **ENCODER})
    c.task = 'classification'
    c.init_from = 'runs/sst2_bert_pretrain'
    c.train.num_steps = 1500
    c.optim.lr = 2e-4
    c.optim.warmup_steps = 150
    c.eval.every_steps = 500
    c.checkpoint.every_steps = 500
    c.checkpoint.best_metric = 'accuracy'
  return c
