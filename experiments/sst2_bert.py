"""SST-2 sentiment with a small BERT: masked-LM pre-training, then fine-tuning.

  deepl train --config=experiments/sst2_bert.py:pretrain --workdir=runs/sst2_bert_pretrain
  deepl train --config=experiments/sst2_bert.py --workdir=runs/sst2_bert
  # offline, add to both: --config.data.manual_dir=../shared/data/sst2
  # a pre-training run elsewhere: --config.init_from=<its workdir>

BERT-Mini's shape (4 layers, 4 heads, width 256), 64-token context, mean pooling; fine-tuning
starts from the pre-trained encoder and tokenizer (only the pooler and head start fresh).
80.85% validation accuracy (GLUE dev) after 4,000 pre-training + 2,000 fine-tuning steps,
2,105 + 576 s on 2 CPU cores. History and the recipes tried: docs/experiments.md.
"""

from ml_collections import config_dict

from deepl.config import default_config
from deepl.config import variant as check_variant

# The encoder, identical in both variants: init_from copies parameters by path
# and shape, so any difference here would leave them fresh or fail.
ENCODER = {'num_layers': 4, 'num_heads': 4, 'width': 256, 'mlp_dim': 0,
           'max_len': 64, 'dropout': 0.1}
VARIANTS = ('pretrain', 'finetune')


def get_config(arg=None):
  variant = check_variant(arg, VARIANTS, default='finetune')
  c = default_config()
  c.data.name = 'glue/sst2'
  c.data.tokenizer = 'word'
  c.data.min_count = 2
  c.data.max_length = 64             # = max_len: every sentence fits
  c.data.sort_window = 16            # batches of similar lengths: ~4x less padding
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
    c.task_options.mask_rate = 0.4
    c.train.num_steps = 4000
    c.optim.lr = 1e-3
    c.optim.warmup_steps = 200
    c.eval.every_steps = 1000
    c.checkpoint.every_steps = 1000
  else:
    c.model = config_dict.ConfigDict({'name': 'bert_classifier', **ENCODER,
                                      'pool': 'mean'})
    c.task = 'classification'
    c.init_from = 'runs/sst2_bert_pretrain'
    c.train.num_steps = 2000
    c.optim.lr = 5e-4
    c.optim.warmup_steps = 100
    c.eval.every_steps = 250
    c.checkpoint.every_steps = 250
    c.checkpoint.best_metric = 'accuracy'
  return c
