"""deepl/metrics.py: the rows a person reads, and the train sums a resume adds to."""

import numpy as np

from deepl import metrics


def test_train_row_reads_with_units():
  row = {'accuracy': 0.98812, 'loss': 0.037912, 'steps_per_sec': 1071.1013,
         'examples_per_sec': 68550.48, 'flops_per_sec': 119586262006.3454, 'mfu': 0.26,
         'input_ms': 0.3, 'dispatch_ms': 0.1, 'wait_ms': 0.5}
  assert metrics.format_row(300, 1500, 'train', row) == (
      'step 300/1500 | loss 0.0379 | accuracy 98.81% | 1,071 steps/s | 120 GFLOP/s | MFU 26%')


def test_eval_and_language_model_rows():
  assert metrics.format_row(500, 1500, 'test', {'accuracy': 0.98333, 'loss': 0.0512}) == (
      'step 500/1500 | test | loss 0.0512 | accuracy 98.33%')
  lm = {'loss': 1.4581, 'accuracy': 0.55, 'perplexity': 4.2977, 'bits_per_char': 2.1036,
        'steps_per_sec': 3.8512, 'tokens_per_sec': 15800.2, 'flops_per_sec': 8.7e10,
        'mfu': 0.0451}
  assert metrics.format_row(2500, 2500, 'train', lm) == (
      'step 2500/2500 | loss 1.4581 | accuracy 55.00% | perplexity 4.2977 | '
      'bits_per_char 2.1036 | 3.85 steps/s | 15,800 tokens/s | 87.0 GFLOP/s | MFU 4.5%')
  seq2seq = {'loss': 0.01, 'accuracy': 1.0, 'exact_match': 1.0, 'bleu': 1.0}
  assert metrics.format_metrics(seq2seq) == (
      'loss 0.0100 | accuracy 100.00% | exact_match 100.00% | bleu 1.0000')
  assert metrics.format_metrics({'loss': 12345.6, 'steps_per_sec': 25.31,
                                 'flops_per_sec': 4.2e14}) == (
      'loss 12,346 | 25.3 steps/s | 420 TFLOP/s')


def test_train_sums_add_in_step_order_across_a_save():
  steps = [{'loss': np.float32(x), 'count': np.float32(2)} for x in (0.1, 0.2, 0.7, 1e-8)]
  straight = metrics.TrainSums(None, fetch=lambda xs: xs)
  for s in steps:
    straight.add(s)
  saved = metrics.TrainSums(None, fetch=lambda xs: xs)
  for s in steps[:2]:
    saved.add(s)
  resumed = metrics.TrainSums(saved.total(), fetch=lambda xs: xs)  # a checkpoint between
  for s in steps[2:]:
    resumed.add(s)
  assert resumed.total() == straight.total()
  assert straight.last is steps[-1]
  straight.clear()
  assert straight.total() is None and straight.last is steps[-1]
