"""`deepl inspect`: what a person asks first about a run.

  deepl inspect --workdir=runs/mnist_cnn [--json]

Its config (and the changes recorded on resumes), the checkpoints on disk
(step, size, eval metrics, whether every parameter is finite), the parameters
(path, shape, dtype, count, as `model.tabulate` lists them; the totals), the
last train and eval rows, and whether a `deepl train` holds the workdir now.
--json prints the same as one JSON object. It builds no model and reads no
data (the shapes come from the newest readable checkpoint), and writes nothing.
"""

import json
import os

import jax
import numpy as np

from deepl import checkpoint
from deepl import config as config_lib
from deepl import metrics
from deepl import run_lock
from deepl import workdir as workdir_lib

READS_A_RUN = '<a run>, e.g. --workdir=runs/mnist_cnn'


def run(config, workdir: str, flags) -> None:
  report = inspect_run(config, workdir)
  print(json.dumps(report, indent=1) if flags.json else format_report(report))


def inspect_run(config, workdir: str) -> dict:
  """The run in `workdir` as one JSON-able dict; `config` is its config.json."""
  root = workdir_lib.path(workdir)
  rows = metrics.read_rows(workdir)
  ckpt_dir = root / 'checkpoints'
  entries = list(ckpt_dir.iterdir()) if ckpt_dir.is_dir() else []
  steps = sorted(int(p.name) for p in entries if p.name.isdigit())
  checkpoints = [_checkpoint(ckpt_dir, step, rows) for step in steps]
  readable = [c['step'] for c in checkpoints if c['readable']]
  last = lambda keep: next((r for r in reversed(rows) if keep(r['split'])), None)
  return {
      'workdir': str(root),
      'config': json.loads(config_lib.to_json(config)),
      'config_history': workdir_lib.read_history(workdir),
      'checkpoints': checkpoints,
      'unfinished_saves': sorted(p.name for p in entries if 'orbax-checkpoint-tmp' in p.name),
      'parameters': _parameters(ckpt_dir, readable[-1]) if readable else None,
      'last_train_row': last(lambda split: split == 'train'),
      'last_eval_row': last(lambda split: split != 'train'),
      'in_use_by_pid': None if workdir_lib.is_remote(workdir) else run_lock.holder(workdir),
  }


def _checkpoint(ckpt_dir, step: int, rows) -> dict:
  folder = ckpt_dir / str(step)
  entry = {'step': step, 'bytes': _size(folder), 'readable': True, 'finite': None,
           'eval': {r['split']: {k: v for k, v in r.items() if k not in ('step', 'split')}
                    for r in rows if r['step'] == step and r['split'] != 'train'}}
  try:
    # The model's variables (not the optimizer's state: twice as many bytes for AdamW).
    state = checkpoint.read_state(folder / 'state', keys=('params', 'model_state'))
    entry['finite'] = all(bool(np.isfinite(x).all()) for x in jax.tree.leaves(state)
                          if np.issubdtype(np.asarray(x).dtype, np.inexact))
  except Exception as err:  # pylint: disable=broad-except
    entry.update(readable=False, error=checkpoint.first_line(err))
  return entry


def _size(folder) -> int | None:
  if workdir_lib.is_remote(folder):
    return None
  return sum(os.path.getsize(os.path.join(base, name))
             for base, _, names in os.walk(str(folder)) for name in names)


def _parameters(ckpt_dir, step: int) -> dict:
  """Every saved array of the model (params, and e.g. batch statistics), from the metadata."""
  saved = checkpoint.saved_tree(ckpt_dir / str(step) / 'state')
  arrays = []
  for group in ('params', 'model_state'):
    for path, leaf in jax.tree_util.tree_leaves_with_path(saved.get(group) or {}):
      arrays.append({'group': group, 'path': '/'.join(str(getattr(k, 'key', k)) for k in path),
                     'shape': list(leaf.shape), 'dtype': str(np.dtype(leaf.dtype)),
                     'count': int(np.prod(leaf.shape))})
  params = [a for a in arrays if a['group'] == 'params']
  return {'step': step, 'arrays': arrays, 'total_params': sum(a['count'] for a in params),
          'total_param_bytes': sum(a['count'] * np.dtype(a['dtype']).itemsize for a in params)}


def _megabytes(n) -> str:
  return '?' if n is None else f'{n / 2**20:,.2f} MB'


def format_report(report: dict) -> str:
  config = report['config']
  lines = [f"run {report['workdir']}: {config['model']['name']} on {config['data']['name']} "
           f"({config['task']}), {config['train']['num_steps']:,} steps"]
  pid = report['in_use_by_pid']
  lines.append(f'in use by a deepl train (pid {pid})' if pid else 'not in use by a deepl train')

  lines += ['', 'config (config.json):']
  flat = workdir_lib.flatten_json(config)
  lines += [f'  {key}: {value!r}' for key, value in sorted(flat.items())]
  if report['config_history']:
    lines += ['', 'config changes (config_history.jsonl):']
    lines += [f"  from step {entry['step']} ({entry['time']}): "
              f"{workdir_lib.format_changes(entry['changes'])}"
              for entry in report['config_history']]

  lines += ['', 'checkpoints:']
  if not report['checkpoints']:
    lines.append('  none')
  for c in report['checkpoints']:
    state = ('finite' if c['finite'] else 'NOT FINITE') if c['readable'] else \
        f"unreadable: {c['error']}"
    evals = '; '.join(f'{split} {metrics.format_metrics(m)}' for split, m in c['eval'].items())
    lines.append(f"  step {c['step']:>8,} | {_megabytes(c['bytes']):>11} | {state}"
                 + (f' | {evals}' if evals else ''))
  for name in report['unfinished_saves']:
    lines.append(f'  {name}: an unfinished save (the next deepl train removes it)')

  params = report['parameters']
  if params:
    lines += ['', f"parameters (checkpoint {params['step']}):"]
    width = max(len(a['path']) for a in params['arrays']) + 2
    for a in params['arrays']:
      prefix = '' if a['group'] == 'params' else f"({a['group']}) "
      lines.append(f"  {prefix + a['path']:<{width}} {str(tuple(a['shape'])):<18} "
                   f"{a['dtype']:<9} {a['count']:>12,}")
    lines.append(f"  total: {params['total_params']:,} parameters, "
                 f"{_megabytes(params['total_param_bytes'])}")

  lines += ['', 'last rows (metrics.jsonl):']
  total = config['train']['num_steps']
  for key in ('last_train_row', 'last_eval_row'):
    row = report[key]
    if row:
      values = {k: v for k, v in row.items() if k not in ('step', 'split')}
      lines.append('  ' + metrics.format_row(row['step'], total, row['split'], values))
  if not (report['last_train_row'] or report['last_eval_row']):
    lines.append('  none')
  return '\n'.join(lines)
