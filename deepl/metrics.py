"""Metric sums, and where logged rows go: workdir/metrics.jsonl, TensorBoard, the terminal.

Each row is one JSON object at full precision: {"step": 100, "split": "train",
"loss": ...}. On stdout it is one line a person reads, rounded and with units:

  step 300/1500 | loss 0.0379 | accuracy 98.81% | 1,071 steps/s | 120 GFLOP/s | MFU 26%
  step 500/1500 | test | loss 0.0512 | accuracy 98.33%

and on a terminal a live progress bar runs below the lines (never in a log
file or CI output). Only process 0 writes. On resume, rows past the restored
step are dropped: the resumed run logs them again, identically. A damaged
metrics.jsonl (a last line cut short by a kill or a full disk, a garbage
line) is read with a warning for each line left out, and written back without.
"""

import contextlib
import json
import sys

import numpy as np
import tqdm

from deepl import workdir as workdir_lib


# Counts of steps, not sums over examples: never divided by the example count.
STEP_COUNTS = ('nonfinite',)


def summarize(sums: dict) -> dict:
  """Metric sums (with a 'count' of examples) -> per-example means."""
  count = max(float(sums['count']), 1.0)
  return {k: float(v) / count for k, v in sums.items() if k != 'count' and k not in STEP_COUNTS}


def add_sums(a: dict | None, b: dict) -> dict:
  # b's keys: a window carried from a checkpoint of an earlier deepl may lack a newer one.
  return dict(b) if a is None else {k: a.get(k, 0) + b[k] for k in b}


class TrainSums:
  """The train steps' metric sums since the last logged row.

  Each step's sums stay on the device until a row or a checkpoint needs them
  (fetching every step would wait for every step). `total` brings them to the
  host as Python floats (float64) and adds them in step order, so the total a
  checkpoint saves, added to after a resume, gives the same row bit for bit.
  """

  def __init__(self, carried: dict | None, fetch):
    self._total = carried  # host sums, e.g. restored from a checkpoint
    self._pending = []     # device sums of the steps since
    self._fetch = fetch
    self.last = None       # the newest step's sums (device), whatever was cleared

  def add(self, sums) -> None:
    self._pending.append(sums)
    self.last = sums

  def total(self) -> dict | None:
    for sums in self._fetch(self._pending):
      self._total = add_sums(self._total, {k: float(v) for k, v in sums.items()})
    self._pending = []
    return self._total

  def clear(self) -> None:
    self._total, self._pending = None, []


def _number(value: float) -> str:
  return f'{value:,.0f}' if abs(value) >= 1000 else f'{value:.4f}'


def _rate(value: float) -> str:
  """Three significant figures, thousands separated: 1,071 / 25.3 / 3.85."""
  if value >= 100:
    return f'{value:,.0f}'
  return f'{value:.1f}' if value >= 10 else f'{value:.2f}'


def _flops(value: float) -> str:
  for scale, unit in ((1e15, 'PFLOP/s'), (1e12, 'TFLOP/s'), (1e9, 'GFLOP/s')):
    if value >= scale:
      return f'{_rate(value / scale)} {unit}'
  return f'{_rate(value / 1e6)} MFLOP/s'


def _percent(value: float, decimals: int = 2) -> str:
  return f'{100 * value:.{decimals}f}%'


# How a row's values read: the shares as percentages, the speeds (from
# steps_per_sec on, in this order) with units.
# examples_per_sec (steps/s times the batch) and the *_ms host times stay in
# metrics.jsonl only.
_SHOWN = {
    'accuracy': lambda v: f'accuracy {_percent(v)}',
    'exact_match': lambda v: f'exact_match {_percent(v)}',
    'cer': lambda v: f'CER {_percent(v)}',
    'wer': lambda v: f'WER {_percent(v)}',
    'steps_per_sec': lambda v: f'{_rate(v)} steps/s',
    'tokens_per_sec': lambda v: f'{v:,.0f} tokens/s',
    'flops_per_sec': _flops,
    'mfu': lambda v: f'MFU {_percent(v, 0 if v >= 0.1 else 1)}',
    'skipped': lambda v: f'{v:,.0f} non-finite steps skipped',
    'examples_per_sec': None, 'input_ms': None, 'dispatch_ms': None, 'wait_ms': None,
}


def format_metrics(metrics: dict) -> str:
  """'loss 0.0379 | accuracy 98.81% | ...': a row's metrics, rounded, with units.

  The loss first, the task's other metrics as they come, then the speeds.
  """
  speeds = list(_SHOWN)[2:]
  order = lambda key: (key != 'loss', speeds.index(key) if key in speeds else -1)
  shown = []
  for key, value in sorted(metrics.items(), key=lambda item: order(item[0])):
    form = _SHOWN.get(key, lambda v, key=key: f'{key} {_number(v)}')
    if form is not None:
      shown.append(form(float(value)))
  return ' | '.join(shown)


def format_row(step: int, total_steps: int, split: str, metrics: dict) -> str:
  """The line a logged row prints: train rows unlabelled, eval rows named by their split."""
  head = [f'step {step}/{total_steps}'] + ([] if split == 'train' else [split])
  return ' | '.join(head + [format_metrics(metrics)])


def read_rows(workdir: str) -> list[dict]:
  """The rows of workdir/metrics.jsonl; a damaged line is left out with a warning."""
  path = workdir_lib.path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  lines = path.read_bytes().decode('utf-8', errors='replace').split('\n')
  rows = []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      if not (isinstance(row, dict) and isinstance(row.get('step'), int) and 'split' in row):
        raise ValueError('not a row')
    except ValueError:
      what = ('cut its last line, written only in part' if number == len(lines) else
              f'skipped line {number}, which is not a metrics row')
      print(f'deepl: warning: {path}: {what}', file=sys.stderr, flush=True)
      continue
    rows.append(row)
  return rows


def _summary_writer():
  """tensorboardX's SummaryWriter, imported without torch.

  Its writer imports torch wherever torch is installed (the hf and test extras), only to
  accept torch tensors: 1.7 s of every `deepl train` start here, and deepl hands it floats.
  """
  if 'torch' in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    return SummaryWriter
  sys.modules['torch'] = None  # `import torch` raises ImportError: tensorboardX goes without
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    del sys.modules['torch']
  return SummaryWriter


class MetricWriter:

  def __init__(self, workdir: str, *, total_steps: int, start_step: int, enabled: bool):
    self.enabled = enabled
    self.path = workdir_lib.path(workdir) / 'metrics.jsonl'
    self._remote = workdir_lib.is_remote(workdir)
    self._rows = []
    self._total_steps = total_steps
    self._tb = None
    self._bar = None
    if not enabled:
      return
    self._rows = [json.dumps(r) + '\n' for r in read_rows(workdir) if r['step'] <= start_step]
    self.path.write_text(''.join(self._rows))
    if not self._remote:  # tensorboardX writes to a bucket only with its own cloud clients
      self._tb = _summary_writer()(str(workdir_lib.path(workdir) / 'tensorboard'))
    # A live bar on a terminal; plain lines in a log file or a CI log.
    self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit='step',
                          dynamic_ncols=True, file=sys.stderr, mininterval=0.5,
                          disable=not sys.stderr.isatty())

  def first_value(self, split: str, key: str):
    """(value, step) of `key` in the first row of `split` logged so far, or None."""
    for line in self._rows:
      row = json.loads(line)
      if row['split'] == split and key in row:
        return row[key], row['step']
    return None

  def advance(self, steps: int = 1):
    if self._bar is not None:
      self._bar.update(steps)

  def write(self, step: int, split: str, metrics: dict):
    if not self.enabled:
      return
    row = {'step': int(step), 'split': split}
    row.update({k: float(np.asarray(v)) for k, v in metrics.items()})
    line = json.dumps(row) + '\n'
    self._rows.append(line)
    if self._remote:  # a bucket's objects cannot be appended to: the file is written anew
      self.path.write_text(''.join(self._rows))
    else:
      with self.path.open('a') as f:
        f.write(line)
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(f'{split}/{k}', float(v), int(step))
    # tqdm.write keeps the bar below the line on a terminal.
    tqdm.tqdm.write(format_row(step, self._total_steps, split, metrics), file=sys.stdout)
    sys.stdout.flush()  # a log file sees each row as it happens

  @contextlib.contextmanager
  def closed_on_error(self):
    """Closes the writer (its TensorBoard thread, its bar) if the block raises."""
    try:
      yield
    except BaseException:
      self.close()
      raise

  def close(self):
    if self._tb is not None:
      self._tb.close()
    if self._bar is not None:
      self._bar.close()
    self._tb = self._bar = None
