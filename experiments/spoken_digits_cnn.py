"""Spoken digits with a small CNN on log-mel features, tested on voices it never heard.

The synthesized `spoken_digits` set (deepl/data/builders/spoken.py: espeak-ng voices, split by
voice variant); features computed in the step (deepl/data/audio_features.py).

  deepl train --config=experiments/spoken_digits_cnn.py --workdir=runs/spoken_digits_cnn
  deepl evaluate --workdir=runs/spoken_digits_cnn --split=test
  deepl predict --workdir=runs/spoken_digits_cnn --input=clip.wav       # 7<TAB>1.0000

Test accuracy 99.17% (test loss 0.0199; validation 97.29%) after 1,000 steps, 1,267 s wall on
2 CPU cores shared with other jobs (load average 10-14; 0.7-0.95 steps/s, 5.2 min of CPU),
2026-12-06, preparing the data set (once) included. History: docs/experiments.md.

`:tiny` is a small model of the same shape on the 40-clip tiny config, a few steps, for tests.
"""

from ml_collections import config_dict

from deepl.config import default_config
from deepl.config import variant


def get_config(arg=None):
  arg = variant(arg, ('tiny',))
  c = default_config()
  c.model = config_dict.ConfigDict({'name': 'speech_cnn', 'widths': (16, 32, 64),
                                    'hidden_dim': 64, 'dropout': 0.2})
  c.data.name = 'spoken_digits'
  c.data.max_seconds = 2.0  # the set's clips last 0.27-1.25 s
  c.train.batch_size = 32
  c.train.num_steps = 1000
  c.train.log_every_steps = 100
  c.optim.name = 'adamw'
  c.optim.lr = 2e-3
  c.optim.weight_decay = 1e-4
  c.optim.warmup_steps = 50
  c.eval.every_steps = 500
  c.eval.batch_size = 240
  c.checkpoint.every_steps = 500
  c.checkpoint.best_metric = 'accuracy'
  if arg == 'tiny':
    c.model.widths, c.model.hidden_dim = (4, 8), 16
    c.data.name = 'spoken_digits/tiny'
    c.train.batch_size = 8
    c.train.num_steps = 6
    c.train.log_every_steps = 3
    c.eval.every_steps = c.checkpoint.every_steps = 6
    c.eval.batch_size = 20  # each eval split in one batch: one compiled shape
  return c
