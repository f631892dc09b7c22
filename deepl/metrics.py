"""Where logged rows go: workdir/metrics.jsonl, TensorBoard, and the terminal.

Each row is one JSON object: {"step": 100, "split": "train", "loss": ...}.
Only process 0 writes. On resume, rows past the restored step are dropped:
the resumed run logs them again, identically.
"""

import json
import os
import sys

import numpy as np
import tqdm


def summarize(sums: dict) -> dict:
  """Metric sums (with a 'count' of examples) -> per-example means."""
  count = max(float(sums['count']), 1.0)
  return {k: float(v) / count for k, v in sums.items() if k != 'count'}


def add_sums(a: dict | None, b: dict) -> dict:
  return dict(b) if a is None else {k: a[k] + b[k] for k in a}


def read_rows(workdir: str) -> list[dict]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricWriter:

  def __init__(self, workdir: str, *, total_steps: int, start_step: int, enabled: bool):
    self.enabled = enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    self._bar = None
    if not enabled:
      return
    kept = [r for r in read_rows(workdir) if r['step'] <= start_step]
    with open(self.path, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'))
    # A live bar on a terminal; plain lines in a log file or a CI log.
    self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                          dynamic_ncols=True, file=sys.stderr, mininterval=0.5,
                          disable=not sys.stderr.isatty())

  def advance(self, steps: int = 1):
    if self._bar is not None:
      self._bar.update(steps)

  def write(self, step: int, split: str, metrics: dict):
    if not self.enabled:
      return
    row = {'step': int(step), 'split': split}
    row.update({k: float(np.asarray(v)) for k, v in metrics.items()})
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    for k, v in metrics.items():
      self._tb.add_scalar(f'{split}/{k}', float(v), int(step))
    if split == 'train' and not self._bar.disable:
      self._bar.set_postfix(loss=f"{row['loss']:.4f}",
                            steps_per_s=f"{row.get('steps_per_sec', 0):.2f}")
    else:
      shown = ' '.join(f'{k}={v:.4f}' for k, v in row.items() if k not in ('step', 'split'))
      tqdm.tqdm.write(f'step {step} {split}: {shown}', file=sys.stderr)

  def close(self):
    if self._tb is not None:
      self._tb.close()
    if self._bar is not None:
      self._bar.close()
